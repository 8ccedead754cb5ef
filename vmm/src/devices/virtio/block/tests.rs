//! virtio-blk driven by a (hostile) driver through a queue in guest memory; no KVM needed.

use std::io::Write;
use std::sync::Arc;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::proto::*;
use super::{Block, DiskFile, ID_BYTES};
use crate::devices::virtio::test_ring::*;
use crate::devices::virtio::{ActivateContext, Interrupt, VirtioDevice};

const SECTORS: u64 = 8;
const HDR: u64 = DATA;
const BUF: u64 = DATA + 0x1000;
const STATUS: u64 = DATA + 0x100;

struct Fixture {
    ring: TestRing,
    block: Block,
    interrupt: Arc<Interrupt>,
    file: tempfile::NamedTempFile,
}

/// A disk of 8 sectors, sector i filled with byte i, activated on a 16-entry queue.
fn fixture(read_only: bool) -> Fixture {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    for i in 0..SECTORS {
        file.write_all(&[i as u8; 512]).unwrap();
    }
    let disk = DiskFile::open(file.path(), read_only).unwrap();
    let mut block = Block::new(disk).unwrap();
    let ring = TestRing::new(16);
    let interrupt = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    block
        .activate(ActivateContext {
            mem: ring.mem.clone(),
            queues: vec![ring.queue()],
            interrupt: interrupt.clone(),
            acked_features: 0,
        })
        .unwrap();
    Fixture {
        ring,
        block,
        interrupt,
        file,
    }
}

impl Fixture {
    fn header(&self, kind: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&kind.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        self.ring.write_bytes(HDR, &h);
    }

    /// Header, one data buffer (device-writable for reads), status: descriptors 0, 1, 2.
    fn request(&mut self, kind: u32, sector: u64, data_len: u32) {
        self.header(kind, sector);
        let data_flags = if kind == VIRTIO_BLK_T_OUT {
            F_NEXT
        } else {
            F_NEXT | F_WRITE
        };
        self.ring.set_desc(0, HDR, 16, F_NEXT, 1);
        self.ring.set_desc(1, BUF, data_len, data_flags, 2);
        self.ring.set_desc(2, STATUS, 1, F_WRITE, 0);
        self.ring.write_bytes(STATUS, &[0xee]);
        self.ring.publish(0);
    }

    /// Runs the queue; returns (status byte, used length) of the last completion.
    fn run(&mut self) -> (u8, u32) {
        let before = self.ring.used_idx();
        let run = self.block.process_queue();
        let after = self.ring.used_idx();
        assert_eq!(usize::from(after.wrapping_sub(before)), run.completed);
        assert!(run.completed > 0, "nothing completed");
        (self.ring.read_byte(STATUS), self.ring.used(after - 1).1)
    }

    fn file_bytes(&self) -> Vec<u8> {
        std::fs::read(self.file.path()).unwrap()
    }
}

#[test]
fn reads_sectors_into_guest_memory() {
    let mut f = fixture(true);
    f.request(VIRTIO_BLK_T_IN, 2, 1024);
    assert_eq!(f.run(), (VIRTIO_BLK_S_OK, 1025));
    assert_eq!(f.ring.read_bytes(BUF, 512), vec![2u8; 512]);
    assert_eq!(f.ring.read_bytes(BUF + 512, 512), vec![3u8; 512]);
    assert_eq!(f.interrupt.status(), 1);
    assert_eq!(f.interrupt.irqfd().read().unwrap(), 1);
}

#[test]
fn writes_reach_the_file_and_flush_succeeds() {
    let mut f = fixture(false);
    f.ring.write_bytes(BUF, &[0xab; 512]);
    f.request(VIRTIO_BLK_T_OUT, 7, 512);
    assert_eq!(f.run(), (VIRTIO_BLK_S_OK, 1));
    assert_eq!(&f.file_bytes()[7 * 512..], &[0xab; 512]);
    f.request(VIRTIO_BLK_T_FLUSH, 0, 0);
    assert_eq!(f.run().0, VIRTIO_BLK_S_OK);
}

#[test]
fn writes_to_a_read_only_disk_fail() {
    let mut f = fixture(true);
    f.ring.write_bytes(BUF, &[0xab; 512]);
    f.request(VIRTIO_BLK_T_OUT, 0, 512);
    assert_eq!(f.run(), (VIRTIO_BLK_S_IOERR, 1));
    assert_eq!(&f.file_bytes()[..512], &[0u8; 512]);
    assert_ne!(
        f.block.avail_features() & (1 << 5),
        0,
        "VIRTIO_BLK_F_RO offered"
    );
}

#[test]
fn sectors_beyond_the_end_fail() {
    let mut f = fixture(false);
    for (sector, len) in [(8, 512), (7, 1024), (u64::MAX, 512), (u64::MAX >> 9, 512)] {
        f.request(VIRTIO_BLK_T_IN, sector, len);
        assert_eq!(f.run().0, VIRTIO_BLK_S_IOERR, "read {sector}+{len}");
        f.request(VIRTIO_BLK_T_OUT, sector, len);
        assert_eq!(f.run().0, VIRTIO_BLK_S_IOERR, "write {sector}+{len}");
    }
    assert_eq!(f.file_bytes().len(), 8 * 512, "the file did not grow");
}

#[test]
fn get_id_and_capacity() {
    let mut f = fixture(true);
    f.request(VIRTIO_BLK_T_GET_ID, 0, ID_BYTES as u32);
    assert_eq!(f.run(), (VIRTIO_BLK_S_OK, ID_BYTES as u32 + 1));
    let name = f
        .file
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .as_bytes();
    let n = name.len().min(ID_BYTES);
    assert_eq!(f.ring.read_bytes(BUF, n), name[..n].to_vec());
    f.request(VIRTIO_BLK_T_GET_ID, 0, 8);
    assert_eq!(f.run().0, VIRTIO_BLK_S_IOERR, "buffer too short for the id");
    let mut capacity = [0u8; 8];
    f.block.read_config(0, &mut capacity);
    assert_eq!(u64::from_le_bytes(capacity), SECTORS);
    let mut seg_max = [0u8; 4];
    f.block.read_config(12, &mut seg_max);
    assert_eq!(u32::from_le_bytes(seg_max), 254);
    assert_ne!(
        f.block.avail_features() & (1 << 2),
        0,
        "VIRTIO_BLK_F_SEG_MAX offered"
    );
}

#[test]
fn a_request_with_many_segments() {
    let mut f = fixture(true);
    f.header(VIRTIO_BLK_T_IN, 0);
    // Header, 8 one-sector segments in reverse sector order of memory, status: 10 descriptors
    // in an indirect table.
    let table = DATA + 0x8000;
    let at = |i: u64| vm_memory::GuestAddress(table + 16 * i);
    f.ring.write_desc(at(0), HDR, 16, F_NEXT, 1);
    for i in 0..8u16 {
        let buf = BUF + 512 * u64::from(7 - i);
        f.ring
            .write_desc(at(u64::from(i) + 1), buf, 512, F_NEXT | F_WRITE, i + 2);
    }
    f.ring.write_desc(at(9), STATUS, 1, F_WRITE, 0);
    f.ring.set_desc(0, table, 160, F_INDIRECT, 0);
    f.ring.publish(0);
    assert_eq!(f.run(), (VIRTIO_BLK_S_OK, 8 * 512 + 1));
    for sector in 0..8u64 {
        let buf = BUF + 512 * (7 - sector);
        assert_eq!(
            f.ring.read_bytes(buf, 512),
            vec![sector as u8; 512],
            "sector {sector}"
        );
    }
}

#[test]
fn unknown_request_types_are_unsupported() {
    let mut f = fixture(false);
    for kind in [2u32, 11, 0xffff_ffff] {
        f.request(kind, 0, 512);
        assert_eq!(f.run().0, VIRTIO_BLK_S_UNSUPP, "type {kind}");
    }
}

#[test]
fn bad_data_lengths_fail() {
    let mut f = fixture(false);
    for len in [1u32, 511, 513, u32::MAX - 17] {
        f.request(VIRTIO_BLK_T_IN, 0, len);
        assert_eq!(f.run().0, VIRTIO_BLK_S_IOERR, "length {len}");
    }
    // A chain longer than 4 GiB in all ends before its status: no status, nothing read.
    f.request(VIRTIO_BLK_T_IN, 0, u32::MAX);
    assert_eq!(f.run(), (0xee, 0));
    // A zero-length buffer is no data at all.
    f.request(VIRTIO_BLK_T_IN, 0, 0);
    assert_eq!(f.run(), (VIRTIO_BLK_S_OK, 1));
}

#[test]
fn buffers_outside_guest_memory_fail() {
    let mut f = fixture(false);
    for addr in [
        MEM_SIZE,
        MEM_SIZE - 256,
        u64::MAX - 100,
        0xffff_ffff_0000_0000,
    ] {
        f.request(VIRTIO_BLK_T_IN, 0, 512);
        f.ring.set_desc(1, addr, 512, F_NEXT | F_WRITE, 2);
        assert_eq!(f.run().0, VIRTIO_BLK_S_IOERR, "read into {addr:#x}");
        f.request(VIRTIO_BLK_T_OUT, 0, 512);
        f.ring.set_desc(1, addr, 512, F_NEXT, 2);
        assert_eq!(f.run().0, VIRTIO_BLK_S_IOERR, "write from {addr:#x}");
    }
    // The header outside memory, or overflowing.
    for addr in [MEM_SIZE, u64::MAX - 4] {
        f.request(VIRTIO_BLK_T_IN, 0, 512);
        f.ring.set_desc(0, addr, 16, F_NEXT, 1);
        assert_eq!(f.run().0, VIRTIO_BLK_S_IOERR, "header at {addr:#x}");
    }
    assert_eq!(&f.file_bytes()[..512], &[0u8; 512]);
}

#[test]
fn status_outside_memory_or_missing_completes_without_a_status() {
    let mut f = fixture(false);
    let cases: [(u64, u32, u16); 4] = [
        (MEM_SIZE, 1, F_WRITE), // outside memory
        (u64::MAX, 1, F_WRITE), // addr + len overflows
        (STATUS, 0, F_WRITE),   // too short
        (STATUS, 1, 0),         // not writable
    ];
    for (addr, len, flags) in cases {
        f.request(VIRTIO_BLK_T_IN, 0, 512);
        f.ring.set_desc(2, addr, len, flags, 0);
        let before = f.ring.used_idx();
        f.block.process_queue();
        assert_eq!(
            f.ring.used_idx(),
            before.wrapping_add(1),
            "{addr:#x}/{len}/{flags}"
        );
        assert!(f.ring.used(before).1 <= 512);
        assert_eq!(f.ring.read_byte(STATUS), 0xee, "no status was written");
    }
    // The device still works.
    f.request(VIRTIO_BLK_T_IN, 1, 512);
    assert_eq!(f.run(), (VIRTIO_BLK_S_OK, 513));
}

#[test]
fn bad_headers_fail() {
    let mut f = fixture(false);
    // Too short, device-writable, or the whole chain is one descriptor.
    f.request(VIRTIO_BLK_T_IN, 0, 512);
    f.ring.set_desc(0, HDR, 15, F_NEXT, 1);
    assert_eq!(f.run().0, VIRTIO_BLK_S_IOERR);
    f.request(VIRTIO_BLK_T_IN, 0, 512);
    f.ring.set_desc(0, HDR, 16, F_NEXT | F_WRITE, 1);
    assert_eq!(f.run().0, VIRTIO_BLK_S_IOERR);
    f.header(VIRTIO_BLK_T_FLUSH, 0);
    f.ring.set_desc(0, STATUS, 16, F_WRITE, 0);
    f.ring.publish(0);
    f.block.process_queue();
    // Data in the wrong direction.
    f.request(VIRTIO_BLK_T_IN, 0, 512);
    f.ring.set_desc(1, BUF, 512, F_NEXT, 2);
    assert_eq!(f.run().0, VIRTIO_BLK_S_IOERR);
    f.request(VIRTIO_BLK_T_OUT, 0, 512);
    f.ring.set_desc(1, BUF, 512, F_NEXT | F_WRITE, 2);
    assert_eq!(f.run().0, VIRTIO_BLK_S_IOERR);
    assert_eq!(&f.file_bytes()[..512], &[0u8; 512]);
}

#[test]
fn next_index_out_of_range_ends_the_chain() {
    let mut f = fixture(false);
    f.request(VIRTIO_BLK_T_IN, 0, 512);
    f.ring.set_desc(1, BUF, 512, F_NEXT | F_WRITE, 16);
    let before = f.ring.used_idx();
    f.block.process_queue();
    assert_eq!(f.ring.used_idx(), before.wrapping_add(1));
    // The chain ended at the data buffer: its last byte is taken as the status.
    assert_eq!(f.ring.read_byte(BUF + 511), VIRTIO_BLK_S_IOERR);
    f.request(VIRTIO_BLK_T_IN, 0, 512);
    f.ring.set_desc(1, BUF, 512, F_NEXT | F_WRITE, u16::MAX);
    f.block.process_queue();
    assert_eq!(f.ring.used_idx(), before.wrapping_add(2));
}

#[test]
fn looping_chains_end() {
    let mut f = fixture(false);
    // 0 -> 1 -> 2 -> 1 -> 2 -> ... and a descriptor pointing at itself.
    f.request(VIRTIO_BLK_T_IN, 0, 512);
    f.ring.set_desc(2, STATUS, 1, F_WRITE | F_NEXT, 1);
    f.block.process_queue();
    f.ring.set_desc(5, HDR, 16, F_NEXT, 5);
    f.ring.publish(5);
    f.block.process_queue();
    assert_eq!(f.ring.used_idx(), 2);
    f.request(VIRTIO_BLK_T_IN, 3, 512);
    assert_eq!(f.run(), (VIRTIO_BLK_S_OK, 513));
}

#[test]
fn indirect_tables_are_checked() {
    let mut f = fixture(true);
    f.header(VIRTIO_BLK_T_IN, 4);
    let table = DATA + 0x8000;
    let at = |i: u64| vm_memory::GuestAddress(table + 16 * i);
    f.ring.write_desc(at(0), HDR, 16, F_NEXT, 1);
    f.ring.write_desc(at(1), BUF, 512, F_NEXT | F_WRITE, 2);
    f.ring.write_desc(at(2), STATUS, 1, F_WRITE, 0);
    f.ring.set_desc(0, table, 48, F_INDIRECT, 0);
    f.ring.publish(0);
    assert_eq!(f.run(), (VIRTIO_BLK_S_OK, 513));
    assert_eq!(f.ring.read_bytes(BUF, 4), vec![4u8; 4]);
    // A table outside memory, of a length that is no multiple of 16, or of 0 entries.
    for (addr, len) in [(MEM_SIZE, 48), (u64::MAX - 20, 48), (table, 47), (table, 0)] {
        f.ring.write_bytes(STATUS, &[0xee]);
        f.ring.set_desc(0, addr, len, F_INDIRECT, 0);
        f.ring.publish(0);
        f.block.process_queue();
        assert_eq!(f.ring.read_byte(STATUS), 0xee, "{addr:#x}/{len}");
    }
}

#[test]
fn avail_index_jumping_past_the_queue_size_breaks_the_device_until_reset() {
    let mut f = fixture(false);
    f.request(VIRTIO_BLK_T_IN, 0, 512);
    f.ring.set_avail_idx(100);
    let run = f.block.process_queue();
    assert_eq!(run.completed, 0);
    assert!(f.block.is_broken());
    assert!(f.interrupt.needs_reset());
    assert_eq!(f.ring.used_idx(), 0);
    // Further notifications do nothing.
    assert_eq!(f.block.process_queue().completed, 0);
    f.block.reset();
    assert!(!f.block.is_broken() && !f.block.is_activated());
}

#[test]
fn not_activated_serves_nothing() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut block = Block::new(DiskFile::open(file.path(), true).unwrap()).unwrap();
    assert_eq!(block.process_queue().completed, 0);
    let mut capacity = [0xffu8; 8];
    block.read_config(0, &mut capacity);
    assert_eq!(capacity, [0; 8], "an empty file has no sectors");
}

#[test]
fn several_requests_in_one_notification() {
    let mut f = fixture(true);
    f.header(VIRTIO_BLK_T_IN, 5);
    for i in 0..4u16 {
        let base = 3 * i;
        f.ring.set_desc(base, HDR, 16, F_NEXT, base + 1);
        f.ring.set_desc(
            base + 1,
            BUF + 512 * u64::from(i),
            512,
            F_NEXT | F_WRITE,
            base + 2,
        );
        f.ring
            .set_desc(base + 2, STATUS + u64::from(i), 1, F_WRITE, 0);
        f.ring.publish(base);
    }
    assert_eq!(f.block.process_queue().completed, 4);
    assert_eq!(f.ring.used_idx(), 4);
    for i in 0..4u16 {
        assert_eq!(f.ring.used(i), (u32::from(3 * i), 513));
    }
    // One interrupt for the batch.
    assert_eq!(f.interrupt.irqfd().read().unwrap(), 1);
}

#[test]
fn a_driver_brings_the_disk_up_through_the_mmio_transport() {
    use crate::devices::virtio::mmio::{regs, status, MmioTransport};
    use std::sync::Mutex;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), [3u8; 1024]).unwrap();
    let block = Arc::new(Mutex::new(
        Block::new(DiskFile::open(file.path(), true).unwrap()).unwrap(),
    ));
    let mut ring = TestRing::new(16);
    let interrupt = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    let mut t = MmioTransport::new(block.clone(), ring.mem.clone(), interrupt.clone()).unwrap();
    let mut w = |offset: u64, value: u32| t.write(offset, &value.to_le_bytes());
    w(regs::STATUS, status::ACKNOWLEDGE);
    w(regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    w(regs::DRIVER_FEATURES_SEL, 1);
    w(regs::DRIVER_FEATURES, 1);
    w(regs::DRIVER_FEATURES_SEL, 0);
    w(regs::DRIVER_FEATURES, 1 << 5);
    let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
    w(regs::STATUS, s);
    w(regs::QUEUE_SEL, 0);
    w(regs::QUEUE_NUM, 16);
    w(regs::QUEUE_DESC_LOW, DESC as u32);
    w(regs::QUEUE_AVAIL_LOW, AVAIL as u32);
    w(regs::QUEUE_USED_LOW, USED as u32);
    w(regs::QUEUE_READY, 1);
    w(regs::STATUS, s | status::DRIVER_OK);
    let mut capacity = [0u8; 8];
    t.read(regs::CONFIG, &mut capacity);
    assert_eq!(u64::from_le_bytes(capacity), 2);
    assert!(block.lock().unwrap().is_activated());
    // A read of sector 1, notified through QueueNotify.
    let mut h = [0u8; 16];
    h[8..].copy_from_slice(&1u64.to_le_bytes());
    ring.write_bytes(HDR, &h);
    ring.set_desc(0, HDR, 16, F_NEXT, 1);
    ring.set_desc(1, BUF, 512, F_NEXT | F_WRITE, 2);
    ring.set_desc(2, STATUS, 1, F_WRITE, 0);
    ring.publish(0);
    t.write(regs::QUEUE_NOTIFY, &0u32.to_le_bytes());
    let mut dev = block.lock().unwrap();
    // The activation and the notification both woke the queue's eventfd.
    assert!(dev.queue_events()[0].read().unwrap() >= 1);
    assert_eq!(dev.process_queue().completed, 1);
    assert_eq!(ring.read_byte(STATUS), VIRTIO_BLK_S_OK);
    assert_eq!(ring.read_bytes(BUF, 512), vec![3u8; 512]);
    drop(dev);
    let mut isr = [0u8; 4];
    t.read(regs::INTERRUPT_STATUS, &mut isr);
    assert_eq!(isr, [1, 0, 0, 0]);
    // Reset: the device stops serving.
    t.write(regs::STATUS, &0u32.to_le_bytes());
    assert!(!block.lock().unwrap().is_activated());
}

/// Found by the virtio_mmio_queue fuzz target (a hang): with the used ring's flags laid over
/// the available index, disabling and enabling notifications moves the index, so "more
/// arrived" stays true while no chain can be taken. The device must give up, not spin.
#[test]
fn rings_laid_over_each_other_do_not_hang_the_device() {
    use virtio_queue::{Queue, QueueT};
    use vm_memory::GuestAddress;
    let file = tempfile::NamedTempFile::new().unwrap();
    file.as_file().set_len(4096).unwrap();
    let mut block = Block::new(DiskFile::open(file.path(), false).unwrap()).unwrap();
    let ring = TestRing::new(16);
    let mut queue = Queue::new(16).unwrap();
    queue
        .try_set_desc_table_address(GuestAddress(DESC))
        .unwrap();
    queue
        .try_set_avail_ring_address(GuestAddress(0x2002))
        .unwrap();
    queue
        .try_set_used_ring_address(GuestAddress(0x2004))
        .unwrap();
    queue.set_ready(true);
    let interrupt = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    block
        .activate(ActivateContext {
            mem: ring.mem.clone(),
            queues: vec![queue],
            interrupt: interrupt.clone(),
            acked_features: 0,
        })
        .unwrap();
    let run = block.process_queue();
    assert!(run.completed <= 1, "{run:?}");
    assert!(block.is_broken());
    assert!(interrupt.needs_reset());
    assert_eq!(block.process_queue().completed, 0);
}
