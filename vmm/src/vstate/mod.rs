//! KVM state: the VM (memory, irqchip, PIT), its vCPUs and what their exits mean.

pub mod exit;
pub mod vcpu;
pub mod vm;
