//! Test helper: a split virtqueue laid out in guest memory the way a driver would, with
//! raw access so tests can write what a hostile driver would.

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest memory size of the helper.
pub const MEM_SIZE: u64 = 0x10_0000;
/// Descriptor table.
pub const DESC: u64 = 0x1000;
/// Available ring.
pub const AVAIL: u64 = 0x2000;
/// Used ring.
pub const USED: u64 = 0x3000;
/// Where tests put request buffers.
pub const DATA: u64 = 0x1_0000;

/// VIRTQ_DESC_F_NEXT.
pub const F_NEXT: u16 = 1;
/// VIRTQ_DESC_F_WRITE.
pub const F_WRITE: u16 = 2;
/// VIRTQ_DESC_F_INDIRECT.
pub const F_INDIRECT: u16 = 4;

/// A queue of `size` entries in its own guest memory.
pub struct TestRing {
    pub mem: GuestMemoryMmap,
    pub size: u16,
    avail_idx: u16,
}

impl TestRing {
    pub fn new(size: u16) -> Self {
        let mem =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap();
        Self {
            mem,
            size,
            avail_idx: 0,
        }
    }

    /// The device's view of it, ready.
    pub fn queue(&self) -> Queue {
        let mut q = Queue::new(self.size).unwrap();
        q.try_set_desc_table_address(GuestAddress(DESC)).unwrap();
        q.try_set_avail_ring_address(GuestAddress(AVAIL)).unwrap();
        q.try_set_used_ring_address(GuestAddress(USED)).unwrap();
        q.set_ready(true);
        q
    }

    /// Writes descriptor `index` (the index is not checked: tests write past the table too).
    pub fn set_desc(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        self.write_desc(
            GuestAddress(DESC + 16 * u64::from(index)),
            addr,
            len,
            flags,
            next,
        );
    }

    /// Writes a descriptor at any address (indirect tables).
    pub fn write_desc(&self, at: GuestAddress, addr: u64, len: u32, flags: u16, next: u16) {
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..].copy_from_slice(&next.to_le_bytes());
        self.mem.write_slice(&raw, at).unwrap();
    }

    /// Offers the chain starting at `head`.
    pub fn publish(&mut self, head: u16) {
        let slot = u64::from(self.avail_idx % self.size);
        self.mem
            .write_obj(head.to_le(), GuestAddress(AVAIL + 4 + 2 * slot))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.set_avail_idx(self.avail_idx);
    }

    /// Writes the available index as a driver (or a liar) would.
    pub fn set_avail_idx(&self, idx: u16) {
        self.mem
            .write_obj(idx.to_le(), GuestAddress(AVAIL + 2))
            .unwrap();
    }

    /// The used index the device wrote.
    pub fn used_idx(&self) -> u16 {
        u16::from_le(self.mem.read_obj(GuestAddress(USED + 2)).unwrap())
    }

    /// Used element `i`: (head id, length).
    pub fn used(&self, i: u16) -> (u32, u32) {
        let at = USED + 4 + 8 * u64::from(i % self.size);
        let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
        (u32::from_le(id), u32::from_le(len))
    }

    pub fn read_byte(&self, addr: u64) -> u8 {
        self.mem.read_obj(GuestAddress(addr)).unwrap()
    }

    pub fn write_bytes(&self, addr: u64, bytes: &[u8]) {
        self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
    }

    pub fn read_bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        self.mem.read_slice(&mut out, GuestAddress(addr)).unwrap();
        out
    }
}
