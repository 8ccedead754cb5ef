//! condo's virtual machine monitor: KVM setup, guest memory, vCPUs, devices and boot.

pub mod jail;
