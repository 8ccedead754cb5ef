//! The KVM VM: guest memory (with the 32-bit MMIO hole), in-kernel irqchip and PIT.

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use vm_memory::{
    Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    MemoryRegionAddress,
};

use crate::arch::x86_64::layout::{ram_ranges, KVM_TSS_ADDR};

/// Creating the VM failed.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A KVM ioctl failed.
    #[error("{what}: {source}")]
    Kvm {
        /// The operation.
        what: &'static str,
        /// KVM's error.
        source: kvm_ioctls::Error,
    },
    /// A setup thread failed.
    #[error("VM setup: {0}")]
    Thread(String),
    /// Guest memory could not be mapped.
    #[error("cannot map {mib} MiB of guest memory: {reason}")]
    Memory {
        /// Size asked for.
        mib: u64,
        /// Why.
        reason: String,
    },
}

/// A VM with its memory.
pub struct Vm {
    fd: VmFd,
    memory: GuestMemoryMmap,
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

impl Vm {
    /// Creates the VM, `mem_size` bytes of guest memory and the in-kernel irqchip (PIC,
    /// IOAPIC, LAPICs). The PIT comes later ([`Vm::create_pit`]), once the vCPUs exist.
    pub fn new(kvm: &Kvm, mem_size: u64) -> Result<Self, VmError> {
        let fd = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        let ranges: Vec<(GuestAddress, usize)> = ram_ranges(mem_size)
            .into_iter()
            .map(|(start, len)| (GuestAddress(start), len as usize))
            .collect();
        let memory = GuestMemoryMmap::from_ranges(&ranges).map_err(|e| VmError::Memory {
            mib: mem_size >> 20,
            reason: e.to_string(),
        })?;
        let vm = Self { fd, memory };
        // Memory first, then the irqchip, one after the other. Each step waits for an SRCU
        // grace period of the VM; asked for while another one is still running (two threads at
        // once, or memory after the irqchip), KVM defers it by whole jiffies. Waits measured on
        // the PVM build host, medians: this order 0.2 ms, irqchip then memory 5.5 ms, both on
        // threads of their own 5-25 ms (README "Performance notes").
        vm.register_memory()?;
        vm.create_irqchip()?;
        Ok(vm)
    }

    fn create_irqchip(&self) -> Result<(), VmError> {
        self.fd
            .set_tss_address(KVM_TSS_ADDR as usize)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
        self.fd
            .create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))
    }

    /// Creates the in-kernel PIT (after the irqchip, which it needs). It takes ~1 ms, mostly
    /// waiting for the kernel to start the PIT's worker thread, and holds the VM's lock that
    /// vCPU creation takes too: the builder runs it on a thread of its own once the vCPUs exist
    /// (as QEMU creates its PIT after its vCPUs).
    pub fn create_pit(&self) -> Result<(), VmError> {
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        self.fd.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))
    }

    fn register_memory(&self) -> Result<(), VmError> {
        for (slot, region) in self.memory.iter().enumerate() {
            let host = region
                .get_host_address(MemoryRegionAddress(0))
                .map_err(|e| VmError::Memory {
                    mib: region.len() >> 20,
                    reason: e.to_string(),
                })?;
            let mem_region = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().raw_value(),
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: the region is a live mapping of exactly `memory_size` bytes owned by
            // `self.memory`, which lives as long as the VM fd (both are dropped together).
            unsafe { self.fd.set_user_memory_region(mem_region) }
                .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
        }
        Ok(())
    }

    /// Closes the VM (KVM tears it down during the call), then unmaps guest memory.
    ///
    /// The call is made off the boot CPU when this thread may run elsewhere. Tearing down the
    /// PIT removes two interrupt notifiers, each after an SRCU grace period of the VM. A fresh
    /// VM's SRCU runs its callbacks on the boot CPU: a closing thread there is woken within
    /// SRCU's 25 us hold-off for expedited grace periods, so the second grace period is a
    /// normal one of 3-4 jiffies (16 ms at HZ=250, every time on CPU 0 of the PVM build host);
    /// woken from another CPU it comes later and the second one is expedited too (~1 ms). The
    /// thread's CPU affinity is restored afterwards.
    pub fn close(self) {
        let pid = Pid::from_raw(0);
        let saved = sched_getaffinity(pid).ok();
        let moved = saved
            .as_ref()
            .and_then(without_boot_cpu)
            .is_some_and(|away| sched_setaffinity(pid, &away).is_ok());
        drop(self);
        if let (true, Some(saved)) = (moved, saved) {
            let _ = sched_setaffinity(pid, &saved);
        }
    }

    /// The KVM VM file descriptor.
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// Guest memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }
}

/// `allowed` without CPU 0 (the boot CPU on x86), or `None` if no other CPU is in it.
fn without_boot_cpu(allowed: &CpuSet) -> Option<CpuSet> {
    let mut away = CpuSet::new();
    let mut any = false;
    for cpu in 1..CpuSet::count() {
        if allowed.is_set(cpu).unwrap_or(false) {
            away.set(cpu).ok()?;
            any = true;
        }
    }
    any.then_some(away)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_cpu_is_left_out_when_another_cpu_is_allowed() {
        let mut allowed = CpuSet::new();
        allowed.set(0).unwrap();
        assert!(without_boot_cpu(&allowed).is_none());
        allowed.set(3).unwrap();
        let away = without_boot_cpu(&allowed).unwrap();
        assert!(!away.is_set(0).unwrap());
        assert!(away.is_set(3).unwrap());
        assert!(!away.is_set(1).unwrap());
    }
}
