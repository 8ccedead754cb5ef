//! Shared by the fuzz targets: guest memory filled from the input, a small disk image.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::OnceLock;

use condo_vmm::devices::virtio::block::DiskFile;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest memory of the fuzzed VM: small, so random addresses often land inside it.
pub const MEM_SIZE: usize = 0x1_0000;
/// Sectors of the fuzzed disk.
pub const DISK_SECTORS: u64 = 16;

/// Guest memory holding `bytes` from address 0 (the rest zero).
pub fn guest_memory(bytes: &[u8]) -> GuestMemoryMmap {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let n = bytes.len().min(MEM_SIZE);
    mem.write_slice(&bytes[..n], GuestAddress(0)).unwrap();
    mem
}

fn disk_path() -> &'static PathBuf {
    // An unlinked file kept open, reopened through /proc/self/fd: nothing is left in /tmp
    // when libFuzzer exits.
    static FILE: OnceLock<(std::fs::File, PathBuf)> = OnceLock::new();
    &FILE
        .get_or_init(|| {
            let path = std::env::temp_dir().join(format!("condo-fuzz-disk-{}", std::process::id()));
            std::fs::write(&path, vec![0x5a; (DISK_SECTORS * 512) as usize]).unwrap();
            let file = std::fs::File::open(&path).unwrap();
            std::fs::remove_file(&path).unwrap();
            let proc_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
            (file, proc_path)
        })
        .1
}

/// The fuzz disk, read-only or not. Its size never changes: the device refuses requests
/// past the end, and a target asserts that.
pub fn disk(read_only: bool) -> DiskFile {
    let disk = DiskFile::open(disk_path(), read_only).unwrap();
    assert_eq!(disk.size(), DISK_SECTORS * 512, "the disk grew");
    disk
}

/// Little-endian reader over the fuzz input that yields zeros once it runs out.
pub struct Input<'a>(pub &'a [u8]);

impl Input<'_> {
    pub fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        head
    }
    pub fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }
    pub fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }
    pub fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | (u32::from(self.u16()) << 16)
    }
    pub fn rest(&self) -> &[u8] {
        self.0
    }
}
