//! virtio-blk backed by a raw image file: read-only (VIRTIO_BLK_F_RO) or read-write, with
//! flush (fsync) and GET_ID. One device per disk; in the guest they appear as /dev/vda,
//! /dev/vdb, ... in registration order.

pub mod device;
pub mod disk;
pub mod event_handler;
pub mod request;

pub use device::Block;
pub use disk::{DiskError, DiskFile};

/// Sector size of the virtio-blk protocol.
pub const SECTOR_SIZE: u64 = 512;
/// log2(SECTOR_SIZE).
pub const SECTOR_SHIFT: u32 = 9;
/// Size of the one request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Data segments a request may have (seg_max): without it Linux sends one segment (one page
/// for O_DIRECT user buffers) per request. With indirect descriptors a request takes one
/// ring slot whatever its segment count.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Length of the GET_ID answer (VIRTIO_BLK_ID_BYTES).
pub const ID_BYTES: usize = 20;

/// Feature bits (virtio 1.x, 5.2.3).
pub mod features {
    /// The config space's seg_max says how many data segments a request may have.
    pub const VIRTIO_BLK_F_SEG_MAX: u32 = 2;
    /// The disk is read-only.
    pub const VIRTIO_BLK_F_RO: u32 = 5;
    /// The device supports the FLUSH command.
    pub const VIRTIO_BLK_F_FLUSH: u32 = 9;
}

/// Request types and status codes (virtio 1.x, 5.2.6).
pub mod proto {
    /// Read.
    pub const VIRTIO_BLK_T_IN: u32 = 0;
    /// Write.
    pub const VIRTIO_BLK_T_OUT: u32 = 1;
    /// Flush.
    pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
    /// Device id string.
    pub const VIRTIO_BLK_T_GET_ID: u32 = 8;
    /// Success.
    pub const VIRTIO_BLK_S_OK: u8 = 0;
    /// I/O error (also: bad request, write to a read-only disk, out of range).
    pub const VIRTIO_BLK_S_IOERR: u8 = 1;
    /// Request type not supported.
    pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;
}

#[cfg(test)]
mod tests;
