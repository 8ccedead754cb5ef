//! Devices the guest reaches through port I/O and MMIO exits.

pub mod bus;
pub mod legacy;
pub mod virtio;

pub use bus::{DeviceAction, IoHandler, LegacyBus, MmioBus};
