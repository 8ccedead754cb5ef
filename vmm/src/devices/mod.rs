//! Devices the guest reaches through port I/O and MMIO exits.

pub mod bus;
pub mod legacy;

pub use bus::{DeviceAction, IoHandler, LegacyBus};
