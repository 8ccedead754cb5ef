//! The VM's I/O bus as seen from vCPU exits: legacy ports (serial, i8042) and the
//! virtio-mmio windows.

use std::sync::{Arc, Mutex};

use super::legacy::{SerialConsole, I8042};
use super::virtio::MmioTransport;
use crate::arch::x86_64::layout::{VIRTIO_MMIO_BASE, VIRTIO_MMIO_SLOT};

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

/// The virtio-mmio windows: transport i answers at VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_SLOT.
#[derive(Default)]
pub struct MmioBus {
    slots: Vec<Mutex<MmioTransport>>,
}

impl MmioBus {
    /// Adds a transport in the next slot; returns the slot's index.
    pub fn push(&mut self, transport: MmioTransport) -> usize {
        self.slots.push(Mutex::new(transport));
        self.slots.len() - 1
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there is no device.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The transport whose window holds `addr`, and the offset in it.
    fn find(&self, addr: u64) -> Option<(&Mutex<MmioTransport>, u64)> {
        let rel = addr.checked_sub(VIRTIO_MMIO_BASE)?;
        let slot = usize::try_from(rel / VIRTIO_MMIO_SLOT).ok()?;
        Some((self.slots.get(slot)?, rel % VIRTIO_MMIO_SLOT))
    }

    /// A read in a virtio window; false if no device is there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        let Some((slot, offset)) = self.find(addr) else {
            return false;
        };
        // An access that runs past the window is not a register access the spec allows.
        if offset + data.len() as u64 > VIRTIO_MMIO_SLOT {
            data.fill(0);
            return true;
        }
        let mut transport = slot.lock().unwrap_or_else(|p| p.into_inner());
        transport.read(offset, data);
        true
    }

    /// A write in a virtio window; false if no device is there.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        let Some((slot, offset)) = self.find(addr) else {
            return false;
        };
        if offset + data.len() as u64 <= VIRTIO_MMIO_SLOT {
            let mut transport = slot.lock().unwrap_or_else(|p| p.into_inner());
            transport.write(offset, data);
        }
        true
    }
}

/// Serial console, i8042 and the virtio-mmio devices, shared by all vCPU threads.
pub struct LegacyBus {
    serial: Arc<Mutex<SerialConsole>>,
    i8042: Mutex<I8042>,
    mmio: MmioBus,
}

impl LegacyBus {
    /// A bus with the console UART at COM1, the i8042 controller and the virtio windows.
    pub fn new(serial: Arc<Mutex<SerialConsole>>, i8042: I8042, mmio: MmioBus) -> Self {
        Self {
            serial,
            i8042: Mutex::new(i8042),
            mmio,
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

    fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        if !self.mmio.read(addr, data) {
            data.fill(0xff);
        }
    }

    fn mmio_write(&self, addr: u64, data: &[u8]) -> DeviceAction {
        self.mmio.write(addr, data);
        DeviceAction::None
    }
}
