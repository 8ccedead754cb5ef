//! The transport driven like a (hostile) guest driver would, without KVM.

use std::sync::{Arc, Mutex};

use virtio_queue::QueueT;
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::mmio::{regs, status, MmioTransport, MMIO_MAGIC_VALUE, VENDOR_ID};
use super::{
    read_config_bytes, ActivateContext, ActivateError, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1,
    VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING,
};

const MEM_SIZE: usize = 0x10_0000;
const FEATURE_X: u64 = 1 << 5;

/// A queue as the device got it: ready, size, descriptor table, avail ring, used ring.
type QueueSeen = (bool, u16, u64, u64, u64);
/// What `activate` received: the queues and the accepted features.
type Activation = (Vec<QueueSeen>, u64);

/// Records what the transport asks of it.
struct MockDevice {
    queue_evts: Vec<EventFd>,
    config: [u8; 8],
    activated: Option<Activation>,
    resets: usize,
}

impl MockDevice {
    fn new() -> Self {
        Self {
            queue_evts: (0..2)
                .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
                .collect(),
            config: [1, 2, 3, 4, 5, 6, 7, 8],
            activated: None,
            resets: 0,
        }
    }
}

impl VirtioDevice for MockDevice {
    fn device_type(&self) -> u32 {
        42
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16, 8]
    }
    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }
    fn avail_features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1) | FEATURE_X
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        if let (Ok(o), [b]) = (usize::try_from(offset), data) {
            if let Some(slot) = self.config.get_mut(o) {
                *slot = *b;
            }
        }
    }
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        let queues = ctx
            .queues
            .iter()
            .map(|q| {
                (
                    q.ready(),
                    q.size(),
                    q.desc_table(),
                    q.avail_ring(),
                    q.used_ring(),
                )
            })
            .collect();
        self.activated = Some((queues, ctx.acked_features));
        Ok(())
    }
    fn reset(&mut self) {
        self.activated = None;
        self.resets += 1;
    }
}

struct Fixture {
    transport: MmioTransport,
    device: Arc<Mutex<MockDevice>>,
    interrupt: Arc<Interrupt>,
}

fn fixture() -> Fixture {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let device = Arc::new(Mutex::new(MockDevice::new()));
    let interrupt = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    let transport = MmioTransport::new(device.clone(), mem, interrupt.clone()).unwrap();
    Fixture {
        transport,
        device,
        interrupt,
    }
}

impl Fixture {
    fn read(&mut self, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        self.transport.read(offset, &mut data);
        u32::from_le_bytes(data)
    }
    fn write(&mut self, offset: u64, value: u32) {
        self.transport.write(offset, &value.to_le_bytes());
    }
    fn set_status(&mut self, bits: u32) {
        let s = self.read(regs::STATUS);
        self.write(regs::STATUS, s | bits);
    }
    /// ACKNOWLEDGE, DRIVER, features (VERSION_1 and X), FEATURES_OK.
    fn negotiate(&mut self) {
        self.set_status(status::ACKNOWLEDGE);
        self.set_status(status::DRIVER);
        self.write(regs::DRIVER_FEATURES_SEL, 1);
        self.write(regs::DRIVER_FEATURES, 1 << (VIRTIO_F_VERSION_1 - 32));
        self.write(regs::DRIVER_FEATURES_SEL, 0);
        self.write(regs::DRIVER_FEATURES, FEATURE_X as u32);
        self.set_status(status::FEATURES_OK);
    }
    /// Queue `index` with `size` entries at `base` (descriptors, avail, used 4 KiB apart).
    fn setup_queue(&mut self, index: u32, size: u32, base: u64) {
        self.write(regs::QUEUE_SEL, index);
        self.write(regs::QUEUE_NUM, size);
        for (low, addr) in [
            (regs::QUEUE_DESC_LOW, base),
            (regs::QUEUE_AVAIL_LOW, base + 0x1000),
            (regs::QUEUE_USED_LOW, base + 0x2000),
        ] {
            self.write(low, addr as u32);
            self.write(low + 4, (addr >> 32) as u32);
        }
        self.write(regs::QUEUE_READY, 1);
    }
    fn activated(&self) -> Option<Activation> {
        self.device.lock().unwrap().activated.clone()
    }
}

#[test]
fn identification_registers() {
    let mut f = fixture();
    assert_eq!(f.read(regs::MAGIC_VALUE), MMIO_MAGIC_VALUE);
    assert_eq!(f.read(regs::VERSION), 2);
    assert_eq!(f.read(regs::DEVICE_ID), 42);
    assert_eq!(f.read(regs::VENDOR_ID), VENDOR_ID);
    assert_eq!(f.read(regs::DEVICE_FEATURES), FEATURE_X as u32);
    f.write(regs::DEVICE_FEATURES_SEL, 1);
    assert_eq!(f.read(regs::DEVICE_FEATURES), 1);
    f.write(regs::DEVICE_FEATURES_SEL, 7);
    assert_eq!(f.read(regs::DEVICE_FEATURES), 0);
    f.write(regs::QUEUE_SEL, 1);
    assert_eq!(f.read(regs::QUEUE_NUM_MAX), 8);
    f.write(regs::QUEUE_SEL, 2);
    assert_eq!(f.read(regs::QUEUE_NUM_MAX), 0);
    assert_eq!(f.read(regs::CONFIG_GENERATION), 0);
}

#[test]
fn full_driver_sequence_activates_with_the_queues_set_up() {
    let mut f = fixture();
    f.negotiate();
    assert_eq!(
        f.read(regs::STATUS),
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK
    );
    f.setup_queue(0, 16, 0x1_0000);
    f.set_status(status::DRIVER_OK);
    assert_eq!(f.read(regs::STATUS) & status::DRIVER_OK, status::DRIVER_OK);
    let (queues, features) = f.activated().unwrap();
    assert_eq!(features, (1 << VIRTIO_F_VERSION_1) | FEATURE_X);
    assert_eq!(queues[0], (true, 16, 0x1_0000, 0x1_1000, 0x1_2000));
    assert!(!queues[1].0, "queue 1 was never made ready");
}

#[test]
fn config_space_reads_and_writes_at_any_width() {
    let mut f = fixture();
    let mut data = [0u8; 2];
    f.transport.read(regs::CONFIG + 2, &mut data);
    assert_eq!(data, [3, 4]);
    let mut wide = [0xffu8; 8];
    f.transport.read(regs::CONFIG + 4, &mut wide);
    assert_eq!(wide, [5, 6, 7, 8, 0, 0, 0, 0]);
    // Config writes need a driver.
    f.transport.write(regs::CONFIG, &[9]);
    assert_eq!(f.device.lock().unwrap().config[0], 1);
    f.set_status(status::ACKNOWLEDGE);
    f.set_status(status::DRIVER);
    f.transport.write(regs::CONFIG, &[9]);
    assert_eq!(f.device.lock().unwrap().config[0], 9);
}

#[test]
fn notify_written_through_mmio_wakes_the_queue_handler() {
    let mut f = fixture();
    f.negotiate();
    f.setup_queue(0, 16, 0x1_0000);
    f.set_status(status::DRIVER_OK);
    f.write(regs::QUEUE_NOTIFY, 1);
    f.write(regs::QUEUE_NOTIFY, 9); // no such queue: ignored
    let dev = f.device.lock().unwrap();
    assert_eq!(dev.queue_evts[1].read().unwrap(), 1);
    assert!(
        dev.queue_evts[0].read().is_err(),
        "queue 0 was not notified"
    );
}

#[test]
fn interrupt_status_and_ack() {
    let mut f = fixture();
    f.interrupt.signal_used_queue().unwrap();
    assert_eq!(f.read(regs::INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);
    f.write(regs::INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
    assert_eq!(f.read(regs::INTERRUPT_STATUS), 0);
}

#[test]
fn reset_returns_to_the_initial_state_and_resets_the_device() {
    let mut f = fixture();
    f.negotiate();
    f.setup_queue(0, 8, 0x1_0000);
    f.set_status(status::DRIVER_OK);
    f.write(regs::STATUS, 0);
    assert_eq!(f.read(regs::STATUS), 0);
    assert_eq!(f.transport.acked_features(), 0);
    assert!(f.activated().is_none());
    assert_eq!(f.device.lock().unwrap().resets, 1);
    f.write(regs::QUEUE_SEL, 0);
    assert_eq!(f.read(regs::QUEUE_READY), 0);
    // And it can be brought up again.
    f.negotiate();
    f.setup_queue(0, 4, 0x2_0000);
    f.set_status(status::DRIVER_OK);
    assert_eq!(f.activated().unwrap().0[0].1, 4);
}

// --- A hostile driver ---

#[test]
fn unknown_offsets_read_zero_and_writes_change_nothing() {
    let mut f = fixture();
    for offset in [0x018, 0x028, 0x03c, 0x040, 0x0b0, 0x0f8, 0x0fd] {
        assert_eq!(f.read(offset), 0, "offset {offset:#x}");
        f.write(offset, 0xffff_ffff);
    }
    // Writes to read-only registers are ignored too.
    for offset in [
        regs::MAGIC_VALUE,
        regs::VERSION,
        regs::DEVICE_ID,
        regs::QUEUE_NUM_MAX,
    ] {
        f.write(offset, 0);
    }
    assert_eq!(f.read(regs::MAGIC_VALUE), MMIO_MAGIC_VALUE);
    assert_eq!(f.read(regs::STATUS), 0);
    assert_eq!(f.read(regs::INTERRUPT_STATUS), 0);
}

#[test]
fn register_accesses_with_odd_widths_are_ignored() {
    let mut f = fixture();
    for width in [1usize, 2, 3, 8] {
        let mut data = vec![0xaa; width];
        f.transport.read(regs::MAGIC_VALUE, &mut data);
        assert!(data.iter().all(|b| *b == 0), "width {width}: {data:?}");
        f.transport
            .write(regs::STATUS, &vec![status::ACKNOWLEDGE as u8; width]);
        assert_eq!(f.read(regs::STATUS), 0, "width {width}");
    }
    let mut empty: [u8; 0] = [];
    f.transport.read(regs::STATUS, &mut empty);
    f.transport.write(regs::STATUS, &empty);
    assert_eq!(f.read(regs::STATUS), 0);
}

#[test]
fn features_ok_without_version_1_is_refused() {
    let mut f = fixture();
    f.set_status(status::ACKNOWLEDGE);
    f.set_status(status::DRIVER);
    f.write(regs::DRIVER_FEATURES, FEATURE_X as u32);
    f.set_status(status::FEATURES_OK);
    assert_eq!(f.read(regs::STATUS) & status::FEATURES_OK, 0);
    f.set_status(status::DRIVER_OK);
    assert!(f.activated().is_none());
}

#[test]
fn features_written_out_of_order_are_ignored() {
    let mut f = fixture();
    // Before DRIVER.
    f.write(regs::DRIVER_FEATURES, FEATURE_X as u32);
    assert_eq!(f.transport.acked_features(), 0);
    f.negotiate();
    // After FEATURES_OK the accepted set is frozen.
    f.write(regs::DRIVER_FEATURES, 0);
    assert_eq!(
        f.transport.acked_features(),
        (1 << VIRTIO_F_VERSION_1) | FEATURE_X
    );
}

#[test]
fn features_not_offered_cannot_be_accepted() {
    let mut f = fixture();
    f.set_status(status::ACKNOWLEDGE);
    f.set_status(status::DRIVER);
    f.write(regs::DRIVER_FEATURES, 0xffff_ffff);
    f.write(regs::DRIVER_FEATURES_SEL, 1);
    f.write(regs::DRIVER_FEATURES, 0xffff_ffff);
    f.write(regs::DRIVER_FEATURES_SEL, 2); // no such page
    f.write(regs::DRIVER_FEATURES, 0xffff_ffff);
    assert_eq!(
        f.transport.acked_features(),
        (1 << VIRTIO_F_VERSION_1) | FEATURE_X
    );
}

#[test]
fn status_steps_cannot_be_skipped() {
    let mut f = fixture();
    // FEATURES_OK before DRIVER, DRIVER_OK before FEATURES_OK, everything at once.
    f.write(regs::STATUS, status::FEATURES_OK);
    assert_eq!(f.read(regs::STATUS), 0);
    f.write(
        regs::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
    );
    assert_eq!(f.read(regs::STATUS), 0);
    f.set_status(status::ACKNOWLEDGE);
    f.set_status(status::DRIVER);
    f.write(regs::DRIVER_FEATURES_SEL, 1);
    f.write(regs::DRIVER_FEATURES, 1);
    f.set_status(status::DRIVER_OK);
    assert_eq!(f.read(regs::STATUS), status::ACKNOWLEDGE | status::DRIVER);
    assert!(f.activated().is_none());
    // Clearing a bit takes a reset.
    f.write(regs::STATUS, status::ACKNOWLEDGE);
    assert_eq!(f.read(regs::STATUS), status::ACKNOWLEDGE | status::DRIVER);
}

#[test]
fn failed_sticks_until_reset() {
    let mut f = fixture();
    f.negotiate();
    f.set_status(status::FAILED);
    f.setup_queue(0, 16, 0x1_0000);
    f.set_status(status::DRIVER_OK);
    assert!(f.activated().is_none());
    assert_eq!(f.read(regs::STATUS) & status::FAILED, status::FAILED);
    f.write(regs::STATUS, 0);
    assert_eq!(f.read(regs::STATUS), 0);
}

#[test]
fn queue_setup_before_features_ok_or_after_driver_ok_is_ignored() {
    let mut f = fixture();
    f.set_status(status::ACKNOWLEDGE);
    f.set_status(status::DRIVER);
    f.write(regs::QUEUE_SEL, 0);
    f.write(regs::QUEUE_NUM, 4);
    f.write(regs::QUEUE_READY, 1);
    assert_eq!(f.read(regs::QUEUE_READY), 0);
    f.write(regs::DRIVER_FEATURES_SEL, 1);
    f.write(regs::DRIVER_FEATURES, 1);
    f.set_status(status::FEATURES_OK);
    f.setup_queue(0, 8, 0x1_0000);
    f.set_status(status::DRIVER_OK);
    // Moving the rings now must not reach the device or the transport's state.
    f.setup_queue(0, 16, 0x8_0000);
    f.write(regs::QUEUE_READY, 0);
    assert_eq!(f.read(regs::QUEUE_READY), 1);
    assert_eq!(
        f.activated().unwrap().0[0],
        (true, 8, 0x1_0000, 0x1_1000, 0x1_2000)
    );
}

/// Sets queue 0 up with `write_bad`, then DRIVER_OK: activation must fail with
/// DEVICE_NEEDS_RESET and a config interrupt, and the device must stay inactive.
fn assert_refused(what: &str, write_bad: impl FnOnce(&mut Fixture)) {
    let mut f = fixture();
    f.negotiate();
    f.setup_queue(0, 16, 0x1_0000);
    write_bad(&mut f);
    f.set_status(status::DRIVER_OK);
    let s = f.read(regs::STATUS);
    assert_eq!(s & status::DRIVER_OK, 0, "{what}: status {s:#x}");
    assert_eq!(
        s & status::DEVICE_NEEDS_RESET,
        status::DEVICE_NEEDS_RESET,
        "{what}"
    );
    assert_eq!(
        f.read(regs::INTERRUPT_STATUS),
        VIRTIO_MMIO_INT_CONFIG,
        "{what}"
    );
    assert!(f.activated().is_none(), "{what}");
    // Only a reset gets out of it.
    f.set_status(status::DRIVER_OK);
    assert!(f.activated().is_none(), "{what}");
    f.write(regs::STATUS, 0);
    assert_eq!(f.read(regs::STATUS), 0, "{what}");
}

#[test]
fn bad_queue_sizes_fail_activation() {
    for size in [0u32, 3, 12, 32, 0x1_0000, u32::MAX] {
        assert_refused(&format!("size {size}"), |f| f.write(regs::QUEUE_NUM, size));
    }
}

#[test]
fn misaligned_rings_fail_activation() {
    assert_refused("descriptors at +8", |f| {
        f.write(regs::QUEUE_DESC_LOW, 0x1_0008)
    });
    assert_refused("avail at +1", |f| f.write(regs::QUEUE_AVAIL_LOW, 0x1_1001));
    assert_refused("used at +2", |f| f.write(regs::QUEUE_USED_LOW, 0x1_2002));
}

#[test]
fn rings_outside_guest_memory_fail_activation() {
    let end = MEM_SIZE as u32;
    assert_refused("descriptors past the end", |f| {
        f.write(regs::QUEUE_DESC_LOW, end)
    });
    assert_refused("descriptors straddling the end", |f| {
        f.write(regs::QUEUE_DESC_LOW, end - 0x10)
    });
    assert_refused("avail in the high half", |f| {
        f.write(regs::QUEUE_AVAIL_HIGH, 0xffff_ffff)
    });
    assert_refused("used at the top of the address space", |f| {
        f.write(regs::QUEUE_USED_LOW, 0xffff_fffc);
        f.write(regs::QUEUE_USED_HIGH, 0xffff_ffff);
    });
}

#[test]
fn a_disabled_queue_may_hold_garbage() {
    let mut f = fixture();
    f.negotiate();
    f.setup_queue(0, 16, 0x1_0000);
    f.write(regs::QUEUE_SEL, 1);
    f.write(regs::QUEUE_DESC_HIGH, 0xffff_ffff);
    f.set_status(status::DRIVER_OK);
    assert!(f.activated().is_some());
}

#[test]
fn queue_select_out_of_range_is_harmless() {
    let mut f = fixture();
    f.negotiate();
    f.write(regs::QUEUE_SEL, u32::MAX);
    f.write(regs::QUEUE_NUM, 4);
    f.write(regs::QUEUE_READY, 1);
    assert_eq!(f.read(regs::QUEUE_NUM_MAX), 0);
    assert_eq!(f.read(regs::QUEUE_READY), 0);
}

#[test]
fn notify_before_driver_ok_is_ignored() {
    let mut f = fixture();
    f.negotiate();
    f.write(regs::QUEUE_NOTIFY, 0);
    assert!(f.device.lock().unwrap().queue_evts[0].read().is_err());
}

#[test]
fn the_bus_routes_each_window_to_its_transport() {
    use crate::arch::x86_64::layout::{VIRTIO_MMIO_BASE, VIRTIO_MMIO_SLOT};
    use crate::devices::MmioBus;
    let mut bus = MmioBus::default();
    bus.push(fixture().transport);
    bus.push(fixture().transport);
    let mut data = [0u8; 4];
    for slot in 0..2 {
        let base = VIRTIO_MMIO_BASE + slot * VIRTIO_MMIO_SLOT;
        assert!(bus.read(base + regs::MAGIC_VALUE, &mut data));
        assert_eq!(u32::from_le_bytes(data), MMIO_MAGIC_VALUE);
    }
    // Nothing in the third slot, nor below the first.
    assert!(!bus.read(VIRTIO_MMIO_BASE + 2 * VIRTIO_MMIO_SLOT, &mut data));
    assert!(!bus.read(VIRTIO_MMIO_BASE - 4, &mut data));
    assert!(!bus.write(u64::MAX - 3, &[0; 4]));
    // An access running past the end of a window reads zero.
    let mut wide = [0xffu8; 8];
    assert!(bus.read(VIRTIO_MMIO_BASE + VIRTIO_MMIO_SLOT - 4, &mut wide));
    assert_eq!(wide, [0; 8]);
    // A status write lands in slot 1 only.
    assert!(bus.write(
        VIRTIO_MMIO_BASE + VIRTIO_MMIO_SLOT + regs::STATUS,
        &[1, 0, 0, 0]
    ));
    bus.read(
        VIRTIO_MMIO_BASE + VIRTIO_MMIO_SLOT + regs::STATUS,
        &mut data,
    );
    assert_eq!(data, [1, 0, 0, 0]);
    bus.read(VIRTIO_MMIO_BASE + regs::STATUS, &mut data);
    assert_eq!(data, [0; 4]);
}
