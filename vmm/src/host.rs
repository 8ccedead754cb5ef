//! Whether this host's KVM can run the guest: device present and usable, the capabilities
//! the VMM relies on, and the PVM nested hypervisor, which hangs stock Linux kernels.

use std::path::Path;

use kvm_ioctls::{Cap, Kvm};

use crate::image::KernelFormat;

/// Set to 1 to boot a Linux kernel on PVM anyway (for kernels built with CONFIG_PVM_GUEST).
pub const ALLOW_PVM_LINUX_ENV: &str = "CONDO_ALLOW_PVM_LINUX";
const KVM_DEVICE: &str = "/dev/kvm";
const PVM_MODULE: &str = "/sys/module/kvm_pvm";
const KVM_API_VERSION: i32 = 12;
const REQUIRED_CAPS: [(Cap, &str); 6] = [
    (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
    (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
    (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
    (Cap::Pit2, "KVM_CAP_PIT2"),
    (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
    (Cap::Irqfd, "KVM_CAP_IRQFD"),
];

/// The host cannot run the VM.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// No KVM device.
    #[error("{KVM_DEVICE} does not exist: this host has no KVM (load kvm_intel/kvm_amd, or run on a host with hardware virtualization)")]
    NoKvm,
    /// Not allowed to open it.
    #[error("{KVM_DEVICE}: permission denied (run as root or add this user to the group owning {KVM_DEVICE})")]
    KvmPermission,
    /// Other open failure.
    #[error("cannot open {KVM_DEVICE}: {0}")]
    KvmOpen(kvm_ioctls::Error),
    /// Unexpected API version.
    #[error("{KVM_DEVICE} speaks KVM API version {0}, condo needs {KVM_API_VERSION}")]
    ApiVersion(i32),
    /// Missing capability.
    #[error("this host's KVM lacks {0}, which condo needs")]
    MissingCap(&'static str),
    /// Too many vCPUs for this KVM.
    #[error("--vcpus {requested}: this host's KVM allows at most {max}")]
    TooManyVcpus {
        /// Asked for.
        requested: u8,
        /// KVM's recommended maximum.
        max: usize,
    },
    /// PVM cannot boot stock Linux.
    #[error("{KVM_DEVICE} here is PVM (the paging-based nested hypervisor, {PVM_MODULE} exists): stock Linux kernels hang on it, and kernel {kernel} is a Linux kernel. Run it on a host with hardware virtualization (VMX/SVM), or inside the emulated KVM host (scripts/emulated-kvm-host, scripts/real-guest-tests); set {ALLOW_PVM_LINUX_ENV}=1 to try anyway with a PVM guest kernel")]
    PvmRefusesLinux {
        /// The kernel's path.
        kernel: String,
    },
}

/// Opens /dev/kvm and checks that it can run condo's VMs with `vcpus` vCPUs.
pub fn open_kvm(vcpus: u8) -> Result<Kvm, HostError> {
    if !Path::new(KVM_DEVICE).exists() {
        return Err(HostError::NoKvm);
    }
    let kvm = Kvm::new().map_err(|e| match e.errno() {
        libc::EACCES | libc::EPERM => HostError::KvmPermission,
        libc::ENOENT | libc::ENODEV | libc::ENXIO => HostError::NoKvm,
        _ => HostError::KvmOpen(e),
    })?;
    let version = kvm.get_api_version();
    if version != KVM_API_VERSION {
        return Err(HostError::ApiVersion(version));
    }
    if let Some((_, name)) = REQUIRED_CAPS
        .iter()
        .find(|(cap, _)| !kvm.check_extension(*cap))
    {
        return Err(HostError::MissingCap(name));
    }
    let max = kvm.get_max_vcpus();
    if usize::from(vcpus) > max {
        return Err(HostError::TooManyVcpus {
            requested: vcpus,
            max,
        });
    }
    Ok(kvm)
}

/// Whether /dev/kvm is PVM.
pub fn is_pvm() -> bool {
    Path::new(PVM_MODULE).exists()
}

/// Refuses a Linux kernel on PVM unless overridden; small test payloads run fine there.
pub fn check_guest_runs(
    pvm: bool,
    allow_override: bool,
    format: KernelFormat,
    kernel: &Path,
) -> Result<(), HostError> {
    if pvm && format.is_linux() && !allow_override {
        return Err(HostError::PvmRefusesLinux {
            kernel: kernel.display().to_string(),
        });
    }
    Ok(())
}

/// Whether the override environment variable is set to 1.
pub fn pvm_override_set() -> bool {
    std::env::var(ALLOW_PVM_LINUX_ENV).is_ok_and(|v| v == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvm_refuses_linux_but_not_payloads() {
        let linux = KernelFormat::BzImage { cmdline_max: 2047 };
        let vmlinux = KernelFormat::Elf {
            linux_notes: true,
            pvh: true,
        };
        let payload = KernelFormat::Elf {
            linux_notes: false,
            pvh: true,
        };
        let path = Path::new("/k");
        let err = check_guest_runs(true, false, linux, path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("PVM") && err.contains("scripts/emulated-kvm-host") && err.contains("/k"),
            "{err}"
        );
        assert!(check_guest_runs(true, false, vmlinux, path).is_err());
        assert!(check_guest_runs(true, false, payload, path).is_ok());
        assert!(check_guest_runs(true, true, linux, path).is_ok());
        assert!(check_guest_runs(false, false, linux, path).is_ok());
    }
}
