//! Virtio devices over the virtio-mmio transport (virtio 1.x, MMIO version 2).
//!
//! A device implements [`VirtioDevice`]: what it is (type, queues, features, config space)
//! and what it does once the driver is ready ([`VirtioDevice::activate`]). The transport
//! ([`mmio::MmioTransport`]) owns the register state machine the guest drives and hands the
//! device its queues on DRIVER_OK. The device's own event handler (a
//! `MutEventSubscriber` in `<dev>/event_handler.rs`) serves the queue eventfds from the VMM's
//! event loop; KVM signals them directly on a QueueNotify write (ioeventfd), and the device
//! interrupts the guest through [`Interrupt`] (irqfd).
//!
//! Every device treats the guest as hostile: guest memory is only touched through
//! vm-memory's checked accessors, and bad rings or requests fail the request, never the VMM.

pub mod block;
pub mod mmio;
pub mod net;
pub mod vsock;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

pub use mmio::MmioTransport;

/// Device type of virtio-net.
pub const TYPE_NET: u32 = 1;
/// Device type of virtio-blk.
pub const TYPE_BLOCK: u32 = 2;
/// Device type of virtio-vsock.
pub const TYPE_VSOCK: u32 = 19;

/// Feature bit every device offers: the driver speaks virtio 1.x (required by MMIO v2).
pub const VIRTIO_F_VERSION_1: u32 = 32;

/// Interrupt status bit: a queue has new used buffers.
pub const VIRTIO_MMIO_INT_VRING: u32 = 0x1;
/// Interrupt status bit: the configuration space changed.
pub const VIRTIO_MMIO_INT_CONFIG: u32 = 0x2;

/// The device's interrupt line: the status bits the guest reads at InterruptStatus, and the
/// irqfd that KVM turns into an interrupt on the device's GSI.
#[derive(Debug)]
pub struct Interrupt {
    status: AtomicU32,
    irqfd: EventFd,
    needs_reset: AtomicBool,
}

impl Interrupt {
    /// An interrupt raised through `irqfd` (registered with KVM by the builder).
    pub fn new(irqfd: EventFd) -> Self {
        Self {
            status: AtomicU32::new(0),
            irqfd,
            needs_reset: AtomicBool::new(false),
        }
    }

    /// Sets `reason` (`VIRTIO_MMIO_INT_*`) in the status and raises the interrupt.
    pub fn trigger(&self, reason: u32) -> std::io::Result<()> {
        self.status.fetch_or(reason, Ordering::SeqCst);
        self.irqfd.write(1)
    }

    /// Tells the guest a queue has new used buffers.
    pub fn signal_used_queue(&self) -> std::io::Result<()> {
        self.trigger(VIRTIO_MMIO_INT_VRING)
    }

    /// The InterruptStatus register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// InterruptACK: clears the bits the driver has handled.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// The device cannot go on (the guest broke a queue): the transport shows
    /// DEVICE_NEEDS_RESET and the guest gets a configuration interrupt.
    pub fn device_needs_reset(&self) {
        self.needs_reset.store(true, Ordering::SeqCst);
        let _ = self.trigger(VIRTIO_MMIO_INT_CONFIG);
    }

    /// Whether the device asked for a reset.
    pub fn needs_reset(&self) -> bool {
        self.needs_reset.load(Ordering::SeqCst)
    }

    /// Clears every bit (device reset).
    pub fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
        self.needs_reset.store(false, Ordering::SeqCst);
    }

    /// The irqfd, to register with KVM.
    pub fn irqfd(&self) -> &EventFd {
        &self.irqfd
    }
}

/// What a device gets when the driver sets DRIVER_OK.
pub struct ActivateContext {
    /// Guest memory (cheap clone of the VM's mapping).
    pub mem: GuestMemoryMmap,
    /// The queues as the driver configured them, one per `queue_max_sizes` entry. A queue
    /// the driver left disabled is passed with `ready() == false`.
    pub queues: Vec<Queue>,
    /// The device's interrupt.
    pub interrupt: Arc<Interrupt>,
    /// Features the driver accepted (a subset of `avail_features`).
    pub acked_features: u64,
}

/// Activation failed: the transport sets DEVICE_NEEDS_RESET.
#[derive(Debug, thiserror::Error)]
#[error("activating virtio device: {0}")]
pub struct ActivateError(pub String);

/// A virtio device as the transport sees it. Kept small: everything about registers and the
/// driver's state machine lives in the transport.
pub trait VirtioDevice: Send {
    /// Virtio device type (`TYPE_*`).
    fn device_type(&self) -> u32;

    /// Maximum size of each queue (powers of two); the number of entries is the number of
    /// queues.
    fn queue_max_sizes(&self) -> &[u16];

    /// One eventfd per queue, written by KVM when the guest writes that queue's index to
    /// QueueNotify (the builder registers them as ioeventfds). The device's event handler
    /// reads them.
    fn queue_events(&self) -> &[EventFd];

    /// Feature bits the device offers (including `1 << VIRTIO_F_VERSION_1`).
    fn avail_features(&self) -> u64;

    /// Reads the device configuration space at `offset`; bytes past its end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Writes the device configuration space; writes to read-only or unknown fields are
    /// ignored.
    fn write_config(&mut self, offset: u64, data: &[u8]);

    /// Starts serving the queues (the driver set DRIVER_OK).
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError>;

    /// Drops the activated state (queues, memory, interrupt): the driver reset the device.
    /// The queue eventfds stay.
    fn reset(&mut self);
}

/// Copies the part of `config` at `offset` into `data` (zeros past the end): the common body
/// of `read_config` for devices whose config space is a byte image.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(start..) {
        let n = src.len().min(data.len());
        if let (Some(dst), Some(src)) = (data.get_mut(..n), src.get(..n)) {
            dst.copy_from_slice(src);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[test]
    fn config_bytes_read_in_range_and_zero_past_the_end() {
        let config = [1u8, 2, 3, 4, 5, 6];
        let mut data = [0xffu8; 4];
        read_config_bytes(&config, 4, &mut data);
        assert_eq!(data, [5, 6, 0, 0]);
        read_config_bytes(&config, 100, &mut data);
        assert_eq!(data, [0; 4]);
        read_config_bytes(&config, u64::MAX, &mut data);
        assert_eq!(data, [0; 4]);
        read_config_bytes(&config, 1, &mut data);
        assert_eq!(data, [2, 3, 4, 5]);
    }

    #[test]
    fn interrupt_sets_status_and_signals_the_irqfd() {
        let irqfd = EventFd::new(EFD_NONBLOCK).unwrap();
        let interrupt = Interrupt::new(irqfd);
        interrupt.signal_used_queue().unwrap();
        interrupt.trigger(VIRTIO_MMIO_INT_CONFIG).unwrap();
        assert_eq!(interrupt.status(), 3);
        assert_eq!(interrupt.irqfd().read().unwrap(), 2);
        interrupt.ack(VIRTIO_MMIO_INT_VRING);
        assert_eq!(interrupt.status(), VIRTIO_MMIO_INT_CONFIG);
        interrupt.clear();
        assert_eq!(interrupt.status(), 0);
    }
}

#[cfg(test)]
mod mmio_tests;
#[cfg(test)]
pub(crate) mod test_ring;
