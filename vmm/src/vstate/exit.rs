//! What a vCPU does after KVM_RUN returns: a pure function of the exit and the I/O bus, so
//! every case is unit-tested without KVM.

use crate::devices::{DeviceAction, IoHandler};

const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const KVM_SYSTEM_EVENT_RESET: u32 = 2;

/// A KVM exit, detached from the `kvm_run` page (see `vcpu::exit_event`).
#[derive(Debug)]
pub enum ExitEvent<'a> {
    /// `in` from a port.
    IoIn(u16, &'a mut [u8]),
    /// `out` to a port.
    IoOut(u16, &'a [u8]),
    /// Read from an address without RAM.
    MmioRead(u64, &'a mut [u8]),
    /// Write to an address without RAM.
    MmioWrite(u64, &'a [u8]),
    /// HLT reached user space (it should not with the in-kernel irqchip).
    Hlt,
    /// KVM_EXIT_SHUTDOWN: triple fault.
    Shutdown,
    /// Hardware refused to enter the guest.
    FailEntry(u64),
    /// KVM could not handle the exit (often an instruction it cannot emulate).
    InternalError,
    /// KVM_EXIT_SYSTEM_EVENT with its type.
    SystemEvent(u32),
    /// KVM_RUN was interrupted by a signal (a kick from the VMM).
    Interrupted,
    /// Anything else, named.
    Other(String),
}

/// Why a VM stopped, as seen by one vCPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The guest reset or shut the machine down on purpose.
    Reset,
    /// The guest cannot go on; the text says why.
    GuestDied(String),
}

/// Next step of the vCPU loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VcpuAction {
    /// Run the guest again.
    Continue,
    /// Stop this vCPU and the VM.
    Stop(StopReason),
}

/// Decides what follows `exit` on vCPU `cpu`, doing the device access it asks for.
pub fn handle_exit(cpu: u8, exit: ExitEvent<'_>, bus: &dyn IoHandler) -> VcpuAction {
    let died = |why: String| VcpuAction::Stop(StopReason::GuestDied(format!("vCPU {cpu}: {why}")));
    match exit {
        ExitEvent::IoIn(port, data) => {
            bus.pio_read(port, data);
            VcpuAction::Continue
        }
        ExitEvent::IoOut(port, data) => device_action(bus.pio_write(port, data)),
        ExitEvent::MmioRead(addr, data) => {
            bus.mmio_read(addr, data);
            VcpuAction::Continue
        }
        ExitEvent::MmioWrite(addr, data) => device_action(bus.mmio_write(addr, data)),
        ExitEvent::Interrupted => VcpuAction::Continue,
        ExitEvent::SystemEvent(KVM_SYSTEM_EVENT_RESET | KVM_SYSTEM_EVENT_SHUTDOWN) => {
            VcpuAction::Stop(StopReason::Reset)
        }
        ExitEvent::SystemEvent(kind) => died(format!("guest crash (KVM system event {kind})")),
        ExitEvent::Hlt => died("halted with interrupts off (HLT exit)".into()),
        ExitEvent::Shutdown => died("triple fault (KVM_EXIT_SHUTDOWN)".into()),
        ExitEvent::FailEntry(reason) => died(format!(
            "KVM could not enter the guest (hardware reason {reason:#x})"
        )),
        ExitEvent::InternalError => {
            died("KVM internal error (instruction KVM cannot emulate)".into())
        }
        ExitEvent::Other(what) => died(format!("unexpected exit {what}")),
    }
}

fn device_action(action: DeviceAction) -> VcpuAction {
    match action {
        DeviceAction::None => VcpuAction::Continue,
        DeviceAction::Reset => VcpuAction::Stop(StopReason::Reset),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Records accesses; a write of 0xfe to port 0x64 asks for a reset.
    #[derive(Default)]
    struct Recorder {
        log: RefCell<Vec<String>>,
    }

    impl IoHandler for Recorder {
        fn pio_read(&self, port: u16, data: &mut [u8]) {
            self.log
                .borrow_mut()
                .push(format!("in {port:#x} {}", data.len()));
            data.fill(0x42);
        }
        fn pio_write(&self, port: u16, data: &[u8]) -> DeviceAction {
            self.log
                .borrow_mut()
                .push(format!("out {port:#x} {data:?}"));
            if port == 0x64 && data == [0xfe] {
                DeviceAction::Reset
            } else {
                DeviceAction::None
            }
        }
        fn mmio_read(&self, addr: u64, data: &mut [u8]) {
            self.log
                .borrow_mut()
                .push(format!("mmio read {addr:#x} {}", data.len()));
            data.fill(0x17);
        }
        fn mmio_write(&self, addr: u64, data: &[u8]) -> DeviceAction {
            self.log
                .borrow_mut()
                .push(format!("mmio write {addr:#x} {data:?}"));
            DeviceAction::None
        }
    }

    #[test]
    fn port_io_goes_to_the_bus() {
        let bus = Recorder::default();
        let mut buf = [0u8; 2];
        assert_eq!(
            handle_exit(0, ExitEvent::IoIn(0x3fd, &mut buf), &bus),
            VcpuAction::Continue
        );
        assert_eq!(buf, [0x42, 0x42]);
        assert_eq!(
            handle_exit(0, ExitEvent::IoOut(0x3f8, b"A"), &bus),
            VcpuAction::Continue
        );
        assert_eq!(
            *bus.log.borrow(),
            vec!["in 0x3fd 2".to_string(), "out 0x3f8 [65]".to_string()]
        );
    }

    #[test]
    fn mmio_goes_to_the_bus() {
        let bus = Recorder::default();
        let mut buf = [0u8; 4];
        assert_eq!(
            handle_exit(1, ExitEvent::MmioRead(0xd000_0000, &mut buf), &bus),
            VcpuAction::Continue
        );
        assert_eq!(buf, [0x17; 4]);
        assert_eq!(
            handle_exit(1, ExitEvent::MmioWrite(0xd000_0008, &[1, 2]), &bus),
            VcpuAction::Continue
        );
        assert_eq!(bus.log.borrow()[1], "mmio write 0xd0000008 [1, 2]");
    }

    #[test]
    fn i8042_reset_stops_cleanly() {
        let bus = Recorder::default();
        assert_eq!(
            handle_exit(0, ExitEvent::IoOut(0x64, &[0xfe]), &bus),
            VcpuAction::Stop(StopReason::Reset)
        );
    }

    #[test]
    fn system_reset_and_shutdown_are_clean() {
        let bus = Recorder::default();
        for kind in [KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN] {
            assert_eq!(
                handle_exit(0, ExitEvent::SystemEvent(kind), &bus),
                VcpuAction::Stop(StopReason::Reset)
            );
        }
    }

    #[test]
    fn triple_fault_kills_the_guest_with_reason() {
        let bus = Recorder::default();
        let action = handle_exit(2, ExitEvent::Shutdown, &bus);
        assert_eq!(
            action,
            VcpuAction::Stop(StopReason::GuestDied(
                "vCPU 2: triple fault (KVM_EXIT_SHUTDOWN)".into()
            ))
        );
    }

    #[test]
    fn unrecoverable_exits_kill_the_guest() {
        let bus = Recorder::default();
        for exit in [
            ExitEvent::Hlt,
            ExitEvent::FailEntry(0x21),
            ExitEvent::InternalError,
            ExitEvent::SystemEvent(3),
            ExitEvent::Other("Debug".into()),
        ] {
            let action = handle_exit(0, exit, &bus);
            assert!(
                matches!(action, VcpuAction::Stop(StopReason::GuestDied(ref why)) if why.starts_with("vCPU 0: ")),
                "{action:?}"
            );
        }
        assert!(bus.log.borrow().is_empty());
    }

    #[test]
    fn signal_kick_continues() {
        let bus = Recorder::default();
        assert_eq!(
            handle_exit(0, ExitEvent::Interrupted, &bus),
            VcpuAction::Continue
        );
    }
}
