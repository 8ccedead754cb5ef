//! One vCPU: its boot register state, and its thread as a small state machine
//! (Paused -> Running -> Exited) that reports to the main thread over a channel.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use kvm_bindings::{kvm_lapic_state, CpuId};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::cpuid::{filter_cpuid, VcpuTopology};
use crate::arch::x86_64::{msr, regs};
use crate::devices::IoHandler;
use crate::hooks::{run_thread_hook, ThreadHook, ThreadKind};
use crate::loader::BootEntry;
use crate::vstate::exit::{handle_exit, ExitEvent, StopReason, VcpuAction};

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// Setting up a vCPU failed.
#[derive(Debug, thiserror::Error)]
#[error("vCPU {cpu}: {what}: {reason}")]
pub struct VcpuError {
    cpu: u8,
    what: &'static str,
    reason: String,
}

/// A vCPU before its thread starts.
pub struct Vcpu {
    id: u8,
    fd: VcpuFd,
}

impl Vcpu {
    /// Creates vCPU `id` (its APIC id too).
    pub fn new(vm: &VmFd, id: u8) -> Result<Self, VcpuError> {
        let fd = vm.create_vcpu(u64::from(id)).map_err(|e| VcpuError {
            cpu: id,
            what: "KVM_CREATE_VCPU",
            reason: e.to_string(),
        })?;
        Ok(Self { id, fd })
    }

    /// The vCPU's index (and APIC id).
    pub fn id(&self) -> u8 {
        self.id
    }

    fn err(&self, what: &'static str) -> impl FnOnce(String) -> VcpuError + '_ {
        move |reason| VcpuError {
            cpu: self.id,
            what,
            reason,
        }
    }

    /// CPUID, MSRs, FPU and local APIC; for the boot vCPU also the entry registers.
    pub fn configure(
        &self,
        supported: &CpuId,
        count: u8,
        tsc_deadline: bool,
        boot: Option<&BootEntry>,
    ) -> Result<(), VcpuError> {
        let mut cpuid = supported.clone();
        let topology = VcpuTopology {
            cpu_id: self.id,
            cpu_count: count,
            tsc_deadline,
        };
        filter_cpuid(cpuid.as_mut_slice(), topology);
        self.fd
            .set_cpuid2(&cpuid)
            .map_err(|e| e.to_string())
            .map_err(self.err("KVM_SET_CPUID2"))?;
        let msrs = msr::boot_msrs()
            .map_err(|e| format!("{e:?}"))
            .map_err(self.err("building MSRs"))?;
        let set = self
            .fd
            .set_msrs(&msrs)
            .map_err(|e| e.to_string())
            .map_err(self.err("KVM_SET_MSRS"))?;
        if set != msrs.as_slice().len() {
            let index = msrs
                .as_slice()
                .get(set)
                .map(|m| m.index)
                .unwrap_or_default();
            return Err(self.err("KVM_SET_MSRS")(format!(
                "KVM refused MSR {index:#x}"
            )));
        }
        self.fd
            .set_fpu(&regs::boot_fpu())
            .map_err(|e| e.to_string())
            .map_err(self.err("KVM_SET_FPU"))?;
        let mut lapic = self
            .fd
            .get_lapic()
            .map_err(|e| e.to_string())
            .map_err(self.err("KVM_GET_LAPIC"))?;
        set_lint_modes(&mut lapic);
        self.fd
            .set_lapic(&lapic)
            .map_err(|e| e.to_string())
            .map_err(self.err("KVM_SET_LAPIC"))?;
        if let Some(boot) = boot {
            let sregs = self
                .fd
                .get_sregs()
                .map_err(|e| e.to_string())
                .map_err(self.err("KVM_GET_SREGS"))?;
            let sregs = regs::boot_sregs(sregs, boot.mode);
            self.fd
                .set_sregs(&sregs)
                .map_err(|e| e.to_string())
                .map_err(self.err("KVM_SET_SREGS"))?;
            let regs = regs::boot_regs(boot.mode, boot.entry, boot.boot_info);
            self.fd
                .set_regs(&regs)
                .map_err(|e| e.to_string())
                .map_err(self.err("KVM_SET_REGS"))?;
        }
        Ok(())
    }
}

fn lapic_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let b = |i: usize| lapic.regs[offset + i] as u8;
    u32::from_le_bytes([b(0), b(1), b(2), b(3)])
}

fn set_lapic_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (i, byte) in value.to_le_bytes().into_iter().enumerate() {
        lapic.regs[offset + i] = byte as _;
    }
}

/// LINT0 delivers the legacy PIC's interrupts (ExtINT), LINT1 the NMI, as firmware sets them.
fn set_lint_modes(lapic: &mut kvm_lapic_state) {
    for (offset, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
        let value = (lapic_reg(lapic, offset) & !0x700) | (mode << 8);
        set_lapic_reg(lapic, offset, value);
    }
}

/// What a vCPU thread tells the main thread.
#[derive(Debug, PartialEq, Eq)]
pub enum VcpuMessage {
    /// Ran its thread hook; waits to be released.
    Ready(u8),
    /// Its thread hook failed; the thread has ended.
    HookFailed(u8, String),
    /// The guest stopped on this vCPU.
    Stopped(u8, StopReason),
    /// The thread has ended.
    Finished(u8),
}

/// What a vCPU thread shares with the VMM.
pub struct VcpuShared {
    /// The I/O bus.
    pub bus: Arc<dyn IoHandler + Send + Sync>,
    /// Set when the VM is stopping; the thread leaves at its next exit.
    pub stop: Arc<AtomicBool>,
    /// Written when a vCPU stops the VM (wakes the main loop).
    pub stop_evt: Arc<EventFd>,
    /// Per-thread hook (jail).
    pub hook: Option<ThreadHook>,
}

/// Thread states.
enum VcpuState {
    Paused,
    Running,
    Exited,
}

/// Starts the vCPU thread in the Paused state. `release` receives true to run, false to quit.
pub fn spawn(
    mut vcpu: Vcpu,
    shared: VcpuShared,
    release: Receiver<bool>,
    events: Sender<VcpuMessage>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("vcpu{}", vcpu.id))
        .spawn(move || {
            let cpu = vcpu.id;
            let mut state = match run_thread_hook(shared.hook.as_ref(), ThreadKind::Vcpu) {
                Ok(()) => {
                    let _ = events.send(VcpuMessage::Ready(cpu));
                    VcpuState::Paused
                }
                Err(e) => {
                    let _ = events.send(VcpuMessage::HookFailed(cpu, e));
                    VcpuState::Exited
                }
            };
            loop {
                state = match state {
                    VcpuState::Paused => match release.recv() {
                        Ok(true) => VcpuState::Running,
                        _ => VcpuState::Exited,
                    },
                    // Another vCPU or a signal ended the VM; whoever did reports why.
                    VcpuState::Running if shared.stop.load(Ordering::Acquire) => VcpuState::Exited,
                    VcpuState::Running => match run_once(&mut vcpu, &shared) {
                        VcpuAction::Continue => VcpuState::Running,
                        VcpuAction::Stop(reason) => {
                            let _ = events.send(VcpuMessage::Stopped(cpu, reason));
                            let _ = shared.stop_evt.write(1);
                            VcpuState::Exited
                        }
                    },
                    VcpuState::Exited => break,
                };
            }
            // Close the vCPU fd before saying so: the main thread may tear the VM down next.
            drop(vcpu);
            let _ = events.send(VcpuMessage::Finished(cpu));
        })
}

fn run_once(vcpu: &mut Vcpu, shared: &VcpuShared) -> VcpuAction {
    let cpu = vcpu.id;
    match vcpu.fd.run() {
        Ok(exit) => match handle_exit(cpu, exit_event(exit), shared.bus.as_ref()) {
            VcpuAction::Stop(StopReason::GuestDied(why)) => VcpuAction::Stop(
                StopReason::GuestDied(format!("{why}; {}", describe_state(&vcpu.fd))),
            ),
            action => action,
        },
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
            handle_exit(cpu, ExitEvent::Interrupted, shared.bus.as_ref())
        }
        Err(e) => VcpuAction::Stop(StopReason::GuestDied(format!(
            "vCPU {cpu}: KVM_RUN failed: {e}"
        ))),
    }
}

/// Where a dead guest was: the registers that tell the mode and the faulting code.
fn describe_state(fd: &VcpuFd) -> String {
    match (fd.get_regs(), fd.get_sregs()) {
        (Ok(r), Ok(s)) => format!(
            "RIP={:#x} RSP={:#x} RFLAGS={:#x} CS={:#x} CR0={:#x} CR2={:#x} CR3={:#x} CR4={:#x} EFER={:#x}",
            r.rip, r.rsp, r.rflags, s.cs.selector, s.cr0, s.cr2, s.cr3, s.cr4, s.efer
        ),
        (Err(e), _) | (_, Err(e)) => format!("registers unreadable: {e}"),
    }
}

/// Turns KVM's exit into the form `handle_exit` takes.
fn exit_event(exit: VcpuExit<'_>) -> ExitEvent<'_> {
    match exit {
        VcpuExit::IoIn(port, data) => ExitEvent::IoIn(port, data),
        VcpuExit::IoOut(port, data) => ExitEvent::IoOut(port, data),
        VcpuExit::MmioRead(addr, data) => ExitEvent::MmioRead(addr, data),
        VcpuExit::MmioWrite(addr, data) => ExitEvent::MmioWrite(addr, data),
        VcpuExit::Hlt => ExitEvent::Hlt,
        VcpuExit::Shutdown => ExitEvent::Shutdown,
        VcpuExit::FailEntry(reason, _) => ExitEvent::FailEntry(reason),
        VcpuExit::InternalError => ExitEvent::InternalError,
        VcpuExit::SystemEvent(kind, _) => ExitEvent::SystemEvent(kind),
        VcpuExit::Intr => ExitEvent::Interrupted,
        other => ExitEvent::Other(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lint_modes_are_extint_and_nmi() {
        let mut lapic = kvm_lapic_state::default();
        set_lapic_reg(&mut lapic, APIC_LVT0, 0x0001_0700);
        set_lint_modes(&mut lapic);
        assert_eq!(lapic_reg(&lapic, APIC_LVT0), 0x0001_0700);
        assert_eq!(lapic_reg(&lapic, APIC_LVT1), 0x400);
    }
}
