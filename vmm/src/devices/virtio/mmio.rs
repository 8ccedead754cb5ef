//! The virtio-mmio transport, version 2 (virtio 1.x spec, section 4.2.2): the registers the
//! guest driver reads and writes in the device's 4 KiB window, and the driver state machine
//! (ACKNOWLEDGE -> DRIVER -> FEATURES_OK -> DRIVER_OK) that ends in activating the device.
//!
//! The guest is hostile: accesses at unknown offsets or with a width other than 4 bytes
//! (outside the config space) read as zero and are otherwise ignored, writes out of order are
//! ignored, and a queue set up badly (size not a power of two, misaligned or unmapped rings)
//! makes activation fail with DEVICE_NEEDS_RESET instead of reaching the device.

use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::{ActivateContext, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1, VIRTIO_MMIO_INT_CONFIG};

/// "virt" in little endian.
pub const MMIO_MAGIC_VALUE: u32 = 0x7472_6976;
/// The transport version this implements (virtio 1.x, no legacy).
pub const MMIO_VERSION: u32 = 2;
/// Vendor id reported to the guest ("QEMU"'s id is also common; ours is "cndo").
pub const VENDOR_ID: u32 = 0x6f64_6e63;
/// Size of each device's MMIO window.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;

/// Register offsets (virtio 1.x, 4.2.2).
pub mod regs {
    /// R: magic value.
    pub const MAGIC_VALUE: u64 = 0x000;
    /// R: version.
    pub const VERSION: u64 = 0x004;
    /// R: device type.
    pub const DEVICE_ID: u64 = 0x008;
    /// R: vendor id.
    pub const VENDOR_ID: u64 = 0x00c;
    /// R: 32 feature bits of the page selected by DEVICE_FEATURES_SEL.
    pub const DEVICE_FEATURES: u64 = 0x010;
    /// W: device feature page.
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    /// W: 32 accepted feature bits of the page selected by DRIVER_FEATURES_SEL.
    pub const DRIVER_FEATURES: u64 = 0x020;
    /// W: driver feature page.
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    /// W: queue the QUEUE_* registers refer to.
    pub const QUEUE_SEL: u64 = 0x030;
    /// R: maximum size of the selected queue (0: no such queue).
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    /// W: size of the selected queue.
    pub const QUEUE_NUM: u64 = 0x038;
    /// RW: the selected queue is ready.
    pub const QUEUE_READY: u64 = 0x044;
    /// W: the queue with this index has new buffers.
    pub const QUEUE_NOTIFY: u64 = 0x050;
    /// R: why the device interrupted.
    pub const INTERRUPT_STATUS: u64 = 0x060;
    /// W: interrupt causes handled.
    pub const INTERRUPT_ACK: u64 = 0x064;
    /// RW: device status (driver state machine); writing 0 resets.
    pub const STATUS: u64 = 0x070;
    /// W: descriptor table address, low 32 bits.
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    /// W: descriptor table address, high 32 bits.
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    /// W: available ring address, low.
    pub const QUEUE_AVAIL_LOW: u64 = 0x090;
    /// W: available ring address, high.
    pub const QUEUE_AVAIL_HIGH: u64 = 0x094;
    /// W: used ring address, low.
    pub const QUEUE_USED_LOW: u64 = 0x0a0;
    /// W: used ring address, high.
    pub const QUEUE_USED_HIGH: u64 = 0x0a4;
    /// R: changes when the config space changes.
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    /// Start of the device configuration space.
    pub const CONFIG: u64 = 0x100;
}

/// Device status bits (virtio 1.x, 2.1).
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready: the device may use its queues.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is done.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 0x80;
}

/// Transport state of one queue: virtio-queue's `Queue` plus whether the driver wrote a
/// value the queue refused (kept so activation fails instead of using a stale value).
struct QueueSlot {
    queue: Queue,
    rejected: bool,
}

/// One virtio device behind its MMIO register window.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    queues: Vec<QueueSlot>,
    queue_select: u32,
    device_features_select: u32,
    driver_features_select: u32,
    acked_features: u64,
    status: u32,
    config_generation: u32,
}

/// The device's queue sizes cannot make a virtio queue.
#[derive(Debug, thiserror::Error)]
#[error("virtio device type {device_type}: queue {index} has invalid maximum size {max_size}")]
pub struct TransportError {
    device_type: u32,
    index: usize,
    max_size: u16,
}

impl MmioTransport {
    /// A transport for `device`, raising interrupts through `interrupt`.
    pub fn new(
        device: Arc<Mutex<dyn VirtioDevice>>,
        mem: GuestMemoryMmap,
        interrupt: Arc<Interrupt>,
    ) -> Result<Self, TransportError> {
        let (device_type, max_sizes) = match device.lock() {
            Ok(d) => (d.device_type(), d.queue_max_sizes().to_vec()),
            Err(poisoned) => {
                let d = poisoned.into_inner();
                (d.device_type(), d.queue_max_sizes().to_vec())
            }
        };
        let queues = max_sizes
            .iter()
            .enumerate()
            .map(|(index, &max_size)| {
                Queue::new(max_size)
                    .map(|queue| QueueSlot {
                        queue,
                        rejected: false,
                    })
                    .map_err(|_| TransportError {
                        device_type,
                        index,
                        max_size,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            device,
            mem,
            interrupt,
            queues,
            queue_select: 0,
            device_features_select: 0,
            driver_features_select: 0,
            acked_features: 0,
            status: 0,
            config_generation: 0,
        })
    }

    /// The device behind the transport.
    pub fn device(&self) -> &Arc<Mutex<dyn VirtioDevice>> {
        &self.device
    }

    /// The device's interrupt.
    pub fn interrupt(&self) -> &Arc<Interrupt> {
        &self.interrupt
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    fn with_device<R>(&self, f: impl FnOnce(&mut dyn VirtioDevice) -> R) -> R {
        // A poisoned lock means a device thread panicked; the device state is still the
        // best there is, and the guest must not be able to bring the VMM down through it.
        let mut guard = self.device.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut *guard)
    }

    fn selected_queue(&mut self) -> Option<&mut QueueSlot> {
        let index = usize::try_from(self.queue_select).ok()?;
        self.queues.get_mut(index)
    }

    fn has_status(&self, set: u32, clear: u32) -> bool {
        self.status & set == set && self.status & clear == 0
    }

    /// A guest read of `data.len()` bytes at `offset` in the window.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= regs::CONFIG {
            self.with_device(|d| d.read_config(offset - regs::CONFIG, data));
            return;
        }
        data.fill(0);
        let Ok(out) = <&mut [u8; 4]>::try_from(data) else {
            return; // Registers are 32 bits wide; other widths read as zero.
        };
        let value = match offset {
            regs::MAGIC_VALUE => MMIO_MAGIC_VALUE,
            regs::VERSION => MMIO_VERSION,
            regs::DEVICE_ID => self.with_device(|d| d.device_type()),
            regs::VENDOR_ID => VENDOR_ID,
            regs::DEVICE_FEATURES => {
                let features = self.with_device(|d| d.avail_features());
                match self.device_features_select {
                    0 => features as u32,
                    1 => (features >> 32) as u32,
                    _ => 0,
                }
            }
            regs::QUEUE_NUM_MAX => self
                .selected_queue()
                .map_or(0, |q| q.queue.max_size().into()),
            regs::QUEUE_READY => self
                .selected_queue()
                .map_or(0, |q| u32::from(q.queue.ready())),
            regs::INTERRUPT_STATUS => self.interrupt.status(),
            regs::STATUS if self.interrupt.needs_reset() => {
                self.status | status::DEVICE_NEEDS_RESET
            }
            regs::STATUS => self.status,
            regs::CONFIG_GENERATION => self.config_generation,
            _ => 0,
        };
        *out = value.to_le_bytes();
    }

    /// A guest write of `data` at `offset` in the window.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= regs::CONFIG {
            if self.has_status(status::DRIVER, status::FAILED) {
                self.with_device(|d| d.write_config(offset - regs::CONFIG, data));
            }
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return; // Registers are 32 bits wide; other widths are ignored.
        };
        let value = u32::from_le_bytes(bytes);
        match offset {
            regs::DEVICE_FEATURES_SEL => self.device_features_select = value,
            regs::DRIVER_FEATURES_SEL => self.driver_features_select = value,
            regs::DRIVER_FEATURES => self.write_driver_features(value),
            regs::QUEUE_SEL => self.queue_select = value,
            regs::QUEUE_NUM
            | regs::QUEUE_READY
            | regs::QUEUE_DESC_LOW
            | regs::QUEUE_DESC_HIGH
            | regs::QUEUE_AVAIL_LOW
            | regs::QUEUE_AVAIL_HIGH
            | regs::QUEUE_USED_LOW
            | regs::QUEUE_USED_HIGH => self.write_queue_register(offset, value),
            regs::QUEUE_NOTIFY => self.notify(value),
            regs::INTERRUPT_ACK => self.interrupt.ack(value),
            regs::STATUS => self.write_status(value),
            _ => {}
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        // Only between DRIVER and FEATURES_OK (virtio 1.x, 3.1.1).
        if !self.has_status(
            status::ACKNOWLEDGE | status::DRIVER,
            status::FEATURES_OK | status::FAILED,
        ) {
            return;
        }
        let offered = self.with_device(|d| d.avail_features());
        let (shift, mask) = match self.driver_features_select {
            0 => (0, 0xffff_ffffu64),
            1 => (32, 0xffff_ffff_0000_0000u64),
            _ => return,
        };
        // The driver may only accept what the device offered.
        let accepted = (u64::from(value) << shift) & offered;
        self.acked_features = (self.acked_features & !mask) | accepted;
    }

    fn write_queue_register(&mut self, offset: u64, value: u32) {
        // Queues are set up after FEATURES_OK and before DRIVER_OK (virtio 1.x, 3.1.1).
        if !self.has_status(status::FEATURES_OK, status::DRIVER_OK | status::FAILED) {
            return;
        }
        let Some(slot) = self.selected_queue() else {
            return;
        };
        let q = &mut slot.queue;
        let result = match offset {
            regs::QUEUE_NUM => match u16::try_from(value) {
                Ok(size) => q.try_set_size(size),
                Err(_) => Err(virtio_queue::Error::InvalidSize),
            },
            regs::QUEUE_READY => {
                q.set_ready(value == 1);
                Ok(())
            }
            regs::QUEUE_DESC_LOW => q.try_set_desc_table_address(with_low(q.desc_table(), value)),
            regs::QUEUE_DESC_HIGH => q.try_set_desc_table_address(with_high(q.desc_table(), value)),
            regs::QUEUE_AVAIL_LOW => q.try_set_avail_ring_address(with_low(q.avail_ring(), value)),
            regs::QUEUE_AVAIL_HIGH => {
                q.try_set_avail_ring_address(with_high(q.avail_ring(), value))
            }
            regs::QUEUE_USED_LOW => q.try_set_used_ring_address(with_low(q.used_ring(), value)),
            regs::QUEUE_USED_HIGH => q.try_set_used_ring_address(with_high(q.used_ring(), value)),
            _ => Ok(()),
        };
        if result.is_err() {
            slot.rejected = true;
        }
    }

    /// A QueueNotify that reached user space (KVM serves the ioeventfd case): wake the
    /// queue's handler the same way.
    fn notify(&mut self, index: u32) {
        if !self.has_status(status::DRIVER_OK, status::FAILED) {
            return;
        }
        let Ok(index) = usize::try_from(index) else {
            return;
        };
        self.with_device(|d| {
            if let Some(evt) = d.queue_events().get(index) {
                let _ = evt.write(1);
            }
        });
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        if value & status::FAILED != 0 {
            self.status |= status::FAILED;
            return;
        }
        // Bits are only ever added one step at a time; clearing one takes a reset.
        if self.status & (status::FAILED | status::DEVICE_NEEDS_RESET) != 0
            || value & self.status != self.status
        {
            return;
        }
        use status::{ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK};
        match (self.status, value & !self.status) {
            (0, ACKNOWLEDGE) => self.status = ACKNOWLEDGE,
            (s, DRIVER) if s == ACKNOWLEDGE => self.status |= DRIVER,
            // MMIO v2 has no legacy interface: without VERSION_1 the features are not OK,
            // and the driver sees FEATURES_OK unset when it reads the status back.
            (s, FEATURES_OK)
                if s == ACKNOWLEDGE | DRIVER
                    && self.acked_features & (1 << VIRTIO_F_VERSION_1) != 0 =>
            {
                self.status |= FEATURES_OK
            }
            (s, DRIVER_OK) if s == ACKNOWLEDGE | DRIVER | FEATURES_OK => self.activate(),
            _ => {}
        }
    }

    fn activate(&mut self) {
        let queues: Option<Vec<Queue>> = self
            .queues
            .iter()
            .map(|slot| {
                let usable =
                    !slot.queue.ready() || (!slot.rejected && slot.queue.is_valid(&self.mem));
                usable
                    .then(|| Queue::try_from(slot.queue.state()).ok())
                    .flatten()
            })
            .collect();
        let event_idx =
            self.acked_features & (1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX) != 0;
        let result = match queues {
            Some(mut queues) => {
                for q in &mut queues {
                    q.set_event_idx(event_idx);
                }
                let ctx = ActivateContext {
                    mem: self.mem.clone(),
                    queues,
                    interrupt: self.interrupt.clone(),
                    acked_features: self.acked_features,
                };
                self.with_device(|d| d.activate(ctx)).is_ok()
            }
            None => false,
        };
        if result {
            self.status |= status::DRIVER_OK;
        } else {
            self.status |= status::DEVICE_NEEDS_RESET;
            let _ = self.interrupt.trigger(VIRTIO_MMIO_INT_CONFIG);
        }
    }

    fn reset(&mut self) {
        if self.status & status::DRIVER_OK != 0 {
            self.with_device(|d| d.reset());
        }
        for slot in &mut self.queues {
            slot.queue.reset();
            slot.rejected = false;
        }
        self.interrupt.clear();
        self.queue_select = 0;
        self.device_features_select = 0;
        self.driver_features_select = 0;
        self.acked_features = 0;
        self.status = 0;
    }
}

fn with_low(addr: u64, low: u32) -> GuestAddress {
    GuestAddress((addr & 0xffff_ffff_0000_0000) | u64::from(low))
}

fn with_high(addr: u64, high: u32) -> GuestAddress {
    GuestAddress((addr & 0xffff_ffff) | (u64::from(high) << 32))
}
