//! Just enough of the i8042 keyboard controller for a guest to reset the machine: Linux's
//! `reboot=k` writes the "pulse reset line" command (0xfe) to the command port.

use crate::devices::DeviceAction;

const OFFSET_DATA: u16 = 0;
const OFFSET_COMMAND: u16 = 4;
const CMD_RESET_CPU: u8 = 0xfe;
const CMD_READ_COMMAND_BYTE: u8 = 0x20;
const STATUS_OUTPUT_FULL: u8 = 0x01;

/// The controller: no keyboard attached; answers a command-byte read, honours reset.
#[derive(Debug, Default)]
pub struct I8042 {
    output: Option<u8>,
}

impl I8042 {
    /// Read at `offset` from the data port (0x60).
    pub fn read(&mut self, offset: u16) -> u8 {
        match offset {
            OFFSET_DATA => self.output.take().unwrap_or(0),
            OFFSET_COMMAND => {
                if self.output.is_some() {
                    STATUS_OUTPUT_FULL
                } else {
                    0
                }
            }
            _ => 0xff,
        }
    }

    /// Write at `offset` from the data port (0x60).
    pub fn write(&mut self, offset: u16, value: u8) -> DeviceAction {
        match (offset, value) {
            (OFFSET_COMMAND, CMD_RESET_CPU) => DeviceAction::Reset,
            (OFFSET_COMMAND, CMD_READ_COMMAND_BYTE) => {
                self.output = Some(0);
                DeviceAction::None
            }
            _ => DeviceAction::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_requests_reset() {
        let mut kbd = I8042::default();
        assert_eq!(
            kbd.write(OFFSET_COMMAND, CMD_RESET_CPU),
            DeviceAction::Reset
        );
    }

    #[test]
    fn other_writes_do_not_reset() {
        let mut kbd = I8042::default();
        assert_eq!(kbd.write(OFFSET_DATA, CMD_RESET_CPU), DeviceAction::None);
        assert_eq!(kbd.write(OFFSET_COMMAND, 0xad), DeviceAction::None);
    }

    #[test]
    fn status_is_ready_and_command_byte_readable() {
        let mut kbd = I8042::default();
        assert_eq!(kbd.read(OFFSET_COMMAND), 0);
        kbd.write(OFFSET_COMMAND, CMD_READ_COMMAND_BYTE);
        assert_eq!(kbd.read(OFFSET_COMMAND), STATUS_OUTPUT_FULL);
        assert_eq!(kbd.read(OFFSET_DATA), 0);
        assert_eq!(kbd.read(OFFSET_COMMAND), 0);
    }
}
