//! The i8042 keyboard controller, as far as a Linux guest needs it: the probe sequence
//! (self tests, control byte, AUX checks) gets quick, truthful answers, a keyboard answers its
//! commands, and the "pulse reset line" command (0xfe, sent by `reboot=k`) resets the machine.
//! Without answers every probe step waits for a 0.5 s timeout (8 s of boot seen).

use std::collections::VecDeque;

use vmm_sys_util::eventfd::EventFd;

use crate::devices::DeviceAction;

const OFFSET_DATA: u16 = 0;
const OFFSET_COMMAND: u16 = 4;

const STATUS_OUTPUT_FULL: u8 = 0x01;
const STATUS_SYSTEM_FLAG: u8 = 0x04;
const STATUS_LAST_WAS_COMMAND: u8 = 0x08;
const STATUS_UNLOCKED: u8 = 0x10;

const CTR_KBD_INT: u8 = 0x01;
const CTR_SYSTEM_FLAG: u8 = 0x04;
const CTR_KBD_DISABLED: u8 = 0x10;
const CTR_AUX_DISABLED: u8 = 0x20;

const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_AUX_DISABLE: u8 = 0xa7;
const CMD_AUX_ENABLE: u8 = 0xa8;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_WRITE_KBD_OUTPUT: u8 = 0xd2;
const CMD_WRITE_AUX_OUTPUT: u8 = 0xd3;
const CMD_WRITE_AUX: u8 = 0xd4;
const CMD_RESET_CPU: u8 = 0xfe;

const SELF_TEST_OK: u8 = 0x55;
const INTERFACE_OK: u8 = 0x00;
/// AUX interface test result "clock line stuck low": there is no mouse.
const AUX_ABSENT: u8 = 0x01;
/// What the AUX loopback returns: not the byte sent, so Linux knows there is no AUX port.
const AUX_NO_LOOPBACK: u8 = 0x00;
const KBD_ACK: u8 = 0xfa;
const KBD_SELF_TEST_PASSED: u8 = 0xaa;
const KBD_CMD_RESET: u8 = 0xff;
const KBD_CMD_GET_ID: u8 = 0xf2;
const KBD_ID: [u8; 2] = [0xab, 0x83];

/// The controller with a keyboard that answers but never types.
#[derive(Debug)]
pub struct I8042 {
    control: u8,
    output: VecDeque<u8>,
    /// A controller command waiting for its data byte.
    pending: Option<u8>,
    last_was_command: bool,
    /// Raises IRQ 1 (through an irqfd) when the keyboard has data and interrupts are on.
    irq: Option<EventFd>,
}

impl Default for I8042 {
    fn default() -> Self {
        Self::new(None)
    }
}

impl I8042 {
    /// A controller raising IRQ 1 through `irq` (none: polled only).
    pub fn new(irq: Option<EventFd>) -> Self {
        Self {
            control: CTR_KBD_INT | CTR_SYSTEM_FLAG,
            output: VecDeque::new(),
            pending: None,
            last_was_command: false,
            irq,
        }
    }

    fn status(&self) -> u8 {
        let mut status = STATUS_SYSTEM_FLAG | STATUS_UNLOCKED;
        if !self.output.is_empty() {
            status |= STATUS_OUTPUT_FULL;
        }
        if self.last_was_command {
            status |= STATUS_LAST_WAS_COMMAND;
        }
        status
    }

    /// Queues a byte for the guest; from the keyboard it also raises IRQ 1 if enabled.
    fn push(&mut self, byte: u8, from_keyboard: bool) {
        self.output.push_back(byte);
        if from_keyboard && self.control & CTR_KBD_INT != 0 {
            if let Some(irq) = &self.irq {
                let _ = irq.write(1);
            }
        }
    }

    /// Read at `offset` from the data port (0x60).
    pub fn read(&mut self, offset: u16) -> u8 {
        match offset {
            OFFSET_DATA => self.output.pop_front().unwrap_or(0),
            OFFSET_COMMAND => self.status(),
            _ => 0xff,
        }
    }

    /// Write at `offset` from the data port (0x60).
    pub fn write(&mut self, offset: u16, value: u8) -> DeviceAction {
        match offset {
            OFFSET_COMMAND => {
                self.last_was_command = true;
                self.command(value)
            }
            OFFSET_DATA => {
                self.last_was_command = false;
                self.data(value);
                DeviceAction::None
            }
            _ => DeviceAction::None,
        }
    }

    fn command(&mut self, command: u8) -> DeviceAction {
        self.pending = None;
        match command {
            CMD_RESET_CPU => return DeviceAction::Reset,
            CMD_READ_CTR => self.push(self.control, false),
            CMD_SELF_TEST => self.push(SELF_TEST_OK, false),
            CMD_KBD_TEST => self.push(INTERFACE_OK, false),
            CMD_AUX_TEST => self.push(AUX_ABSENT, false),
            CMD_AUX_DISABLE => self.control |= CTR_AUX_DISABLED,
            CMD_AUX_ENABLE => self.control &= !CTR_AUX_DISABLED,
            CMD_KBD_DISABLE => self.control |= CTR_KBD_DISABLED,
            CMD_KBD_ENABLE => self.control &= !CTR_KBD_DISABLED,
            CMD_WRITE_CTR | CMD_WRITE_KBD_OUTPUT | CMD_WRITE_AUX_OUTPUT | CMD_WRITE_AUX => {
                self.pending = Some(command)
            }
            _ => {}
        }
        DeviceAction::None
    }

    fn data(&mut self, value: u8) {
        match self.pending.take() {
            Some(CMD_WRITE_CTR) => self.control = value,
            Some(CMD_WRITE_KBD_OUTPUT) => self.push(value, true),
            Some(CMD_WRITE_AUX_OUTPUT) => self.push(AUX_NO_LOOPBACK, false),
            Some(_) => {} // bytes for the absent AUX device are dropped
            None => self.keyboard_command(value),
        }
    }

    /// A byte for the keyboard itself: acknowledge, and answer reset and identify.
    fn keyboard_command(&mut self, command: u8) {
        self.output.clear();
        self.push(KBD_ACK, true);
        match command {
            KBD_CMD_RESET => self.push(KBD_SELF_TEST_PASSED, true),
            KBD_CMD_GET_ID => KBD_ID.iter().for_each(|b| self.push(*b, true)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(kbd: &mut I8042, cmd: u8) -> Option<u8> {
        kbd.write(OFFSET_COMMAND, cmd);
        (kbd.read(OFFSET_COMMAND) & STATUS_OUTPUT_FULL != 0).then(|| kbd.read(OFFSET_DATA))
    }

    #[test]
    fn reset_command_requests_reset() {
        let mut kbd = I8042::default();
        assert_eq!(
            kbd.write(OFFSET_COMMAND, CMD_RESET_CPU),
            DeviceAction::Reset
        );
        assert_eq!(kbd.write(OFFSET_DATA, CMD_RESET_CPU), DeviceAction::None);
    }

    #[test]
    fn status_says_unlocked_and_empty() {
        let mut kbd = I8042::default();
        let status = kbd.read(OFFSET_COMMAND);
        assert_eq!(status & STATUS_OUTPUT_FULL, 0);
        assert_ne!(
            status & STATUS_UNLOCKED,
            0,
            "Linux would warn 'Keylock active'"
        );
    }

    #[test]
    fn linux_probe_gets_answers() {
        let mut kbd = I8042::default();
        assert_eq!(command(&mut kbd, CMD_SELF_TEST), Some(SELF_TEST_OK));
        assert_eq!(command(&mut kbd, CMD_KBD_TEST), Some(INTERFACE_OK));
        assert_eq!(
            command(&mut kbd, CMD_READ_CTR),
            Some(CTR_KBD_INT | CTR_SYSTEM_FLAG)
        );
        kbd.write(OFFSET_COMMAND, CMD_WRITE_CTR);
        kbd.write(OFFSET_DATA, 0x47);
        assert_eq!(command(&mut kbd, CMD_READ_CTR), Some(0x47));
        kbd.write(OFFSET_COMMAND, CMD_AUX_DISABLE);
        assert_eq!(
            command(&mut kbd, CMD_READ_CTR),
            Some(0x47 | CTR_AUX_DISABLED)
        );
    }

    #[test]
    fn aux_port_is_reported_absent() {
        let mut kbd = I8042::default();
        kbd.write(OFFSET_COMMAND, CMD_WRITE_AUX_OUTPUT);
        kbd.write(OFFSET_DATA, 0x5a);
        assert_eq!(kbd.read(OFFSET_DATA), AUX_NO_LOOPBACK);
        assert_eq!(command(&mut kbd, CMD_AUX_TEST), Some(AUX_ABSENT));
    }

    #[test]
    fn keyboard_acknowledges_and_identifies_with_irq() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut kbd = I8042::new(Some(irq.try_clone().unwrap()));
        kbd.write(OFFSET_DATA, KBD_CMD_GET_ID);
        let answer: Vec<u8> = (0..3).map(|_| kbd.read(OFFSET_DATA)).collect();
        assert_eq!(answer, [KBD_ACK, 0xab, 0x83]);
        assert_eq!(irq.read().unwrap(), 3);
        kbd.write(OFFSET_DATA, KBD_CMD_RESET);
        assert_eq!(
            (kbd.read(OFFSET_DATA), kbd.read(OFFSET_DATA)),
            (KBD_ACK, KBD_SELF_TEST_PASSED)
        );
    }

    #[test]
    fn no_keyboard_irq_while_disabled() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut kbd = I8042::new(Some(irq.try_clone().unwrap()));
        kbd.write(OFFSET_COMMAND, CMD_WRITE_CTR);
        kbd.write(OFFSET_DATA, 0);
        kbd.write(OFFSET_DATA, 0xf4);
        assert_eq!(kbd.read(OFFSET_DATA), KBD_ACK);
        assert!(irq.read().is_err(), "no interrupt with CTR_KBD_INT clear");
    }
}
