//! The VM's I/O bus as seen from vCPU exits: legacy ports today; virtio-mmio devices will
//! register on the MMIO side.

use std::sync::{Arc, Mutex};

use super::legacy::{SerialConsole, I8042};

/// COM1 ports 0x3f8..=0x3ff.
pub const COM1_BASE: u16 = 0x3f8;
const COM1_LEN: u16 = 8;
/// i8042 data port.
pub const I8042_DATA_PORT: u16 = 0x60;
/// i8042 command/status port.
pub const I8042_COMMAND_PORT: u16 = 0x64;

/// What a device asks of the VM after an access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceAction {
    /// Nothing: resume the guest.
    None,
    /// The guest asked for a system reset (i8042 pulse of the reset line).
    Reset,
}

/// Accesses a vCPU exit turns into. Implemented by the real bus and by test recorders.
pub trait IoHandler {
    /// Port read of `data.len()` bytes.
    fn pio_read(&self, port: u16, data: &mut [u8]);
    /// Port write.
    fn pio_write(&self, port: u16, data: &[u8]) -> DeviceAction;
    /// MMIO read of `data.len()` bytes.
    fn mmio_read(&self, addr: u64, data: &mut [u8]);
    /// MMIO write.
    fn mmio_write(&self, addr: u64, data: &[u8]) -> DeviceAction;
}

/// Serial console and i8042, shared by all vCPU threads.
pub struct LegacyBus {
    serial: Arc<Mutex<SerialConsole>>,
    i8042: Mutex<I8042>,
}

impl LegacyBus {
    /// A bus with the console UART at COM1 and the i8042 controller.
    pub fn new(serial: Arc<Mutex<SerialConsole>>, i8042: I8042) -> Self {
        Self {
            serial,
            i8042: Mutex::new(i8042),
        }
    }

    fn com1_offset(port: u16) -> Option<u8> {
        port.checked_sub(COM1_BASE)
            .filter(|o| *o < COM1_LEN)
            .map(|o| o as u8)
    }
}

impl IoHandler for LegacyBus {
    fn pio_read(&self, port: u16, data: &mut [u8]) {
        // Absent hardware reads as all ones, as on a real ISA bus.
        data.fill(0xff);
        let Some(first) = data.first_mut() else {
            return;
        };
        if let Some(offset) = Self::com1_offset(port) {
            if let Ok(mut serial) = self.serial.lock() {
                *first = serial.read(offset);
            }
        } else if port == I8042_DATA_PORT || port == I8042_COMMAND_PORT {
            if let Ok(mut kbd) = self.i8042.lock() {
                *first = kbd.read(port - I8042_DATA_PORT);
            }
        }
    }

    fn pio_write(&self, port: u16, data: &[u8]) -> DeviceAction {
        let Some(value) = data.first().copied() else {
            return DeviceAction::None;
        };
        if let Some(offset) = Self::com1_offset(port) {
            if let Ok(mut serial) = self.serial.lock() {
                serial.write(offset, value);
            }
        } else if port == I8042_DATA_PORT || port == I8042_COMMAND_PORT {
            if let Ok(mut kbd) = self.i8042.lock() {
                return kbd.write(port - I8042_DATA_PORT, value);
            }
        }
        DeviceAction::None
    }

    fn mmio_read(&self, _addr: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn mmio_write(&self, _addr: u64, _data: &[u8]) -> DeviceAction {
        DeviceAction::None
    }
}
