//! The disk behind a virtio-blk device: a raw image file, moved to and from guest memory
//! with pread64/pwrite64 straight into the guest's pages (no bounce buffer).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::{ID_BYTES, SECTOR_SIZE};

/// A disk image that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// Opening or inspecting the file failed.
    #[error("disk {path}: {source}", path = path.display())]
    Open {
        /// The path given.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Not a regular file.
    #[error("disk {path}: not a regular file (raw image files only)", path = path.display())]
    NotAFile {
        /// The path given.
        path: PathBuf,
    },
}

/// Why one I/O between the disk and guest memory failed (the request gets IOERR).
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The guest buffer is not (entirely) guest memory.
    #[error("guest buffer {addr:#x}+{len:#x}: {reason}")]
    GuestMemory {
        /// Buffer start.
        addr: u64,
        /// Buffer length.
        len: u64,
        /// vm-memory's reason.
        reason: String,
    },
    /// The file ended early (it shrank under us).
    #[error("short transfer at disk offset {0}")]
    Short(u64),
    /// The OS refused.
    #[error("disk I/O at offset {offset}: {source}")]
    Os {
        /// Disk offset.
        offset: u64,
        /// The error.
        source: io::Error,
    },
}

/// An open raw disk image.
#[derive(Debug)]
pub struct DiskFile {
    file: File,
    read_only: bool,
    size: u64,
    id: [u8; ID_BYTES],
}

impl DiskFile {
    /// Opens `path` (read-only if `read_only`, else read-write). A directory, a device or
    /// anything but a regular file is refused.
    pub fn open(path: &Path, read_only: bool) -> Result<Self, DiskError> {
        let open_err = |source| DiskError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            // A FIFO given as a disk must not block the VMM here; regular files ignore it.
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        if !meta.is_file() {
            return Err(DiskError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        Ok(Self {
            file,
            read_only,
            size: meta.len(),
            id: disk_id(path),
        })
    }

    /// Whether the guest may only read.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Size of the file in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whole sectors the guest sees (a tail shorter than a sector is not visible).
    pub fn sectors(&self) -> u64 {
        self.size / SECTOR_SIZE
    }

    /// The GET_ID answer: the file name, cut to 20 bytes, zero padded.
    pub fn id(&self) -> &[u8; ID_BYTES] {
        &self.id
    }

    /// Reads `len` bytes at disk `offset` into guest memory at `addr`.
    pub fn read_to_guest(
        &self,
        offset: u64,
        mem: &GuestMemoryMmap,
        addr: GuestAddress,
        len: u32,
    ) -> Result<(), IoError> {
        self.transfer(offset, mem, addr, len, Direction::ToGuest)
    }

    /// Writes `len` bytes of guest memory at `addr` to disk `offset`.
    pub fn write_from_guest(
        &self,
        offset: u64,
        mem: &GuestMemoryMmap,
        addr: GuestAddress,
        len: u32,
    ) -> Result<(), IoError> {
        self.transfer(offset, mem, addr, len, Direction::FromGuest)
    }

    /// fsync: the data written so far is on stable storage.
    pub fn flush(&self) -> Result<(), IoError> {
        self.file
            .sync_all()
            .map_err(|source| IoError::Os { offset: 0, source })
    }

    fn transfer(
        &self,
        mut offset: u64,
        mem: &GuestMemoryMmap,
        addr: GuestAddress,
        len: u32,
        direction: Direction,
    ) -> Result<(), IoError> {
        let mem_err = |reason: String| IoError::GuestMemory {
            addr: addr.0,
            len: u64::from(len),
            reason,
        };
        for slice in mem.get_slices(addr, len as usize) {
            let slice = slice.map_err(|e| mem_err(e.to_string()))?;
            let guard = slice.ptr_guard_mut();
            let mut done = 0usize;
            while done < guard.len() {
                let want = guard.len() - done;
                let file_offset = i64::try_from(offset).map_err(|_| IoError::Short(offset))?;
                // SAFETY: `guard` pins a live mapping of `guard.len()` bytes of guest memory
                // (vm-memory checked the range); `done < len`, so the pointer and `want` stay
                // inside it. The fd is owned by `self.file`. Guest memory may change under
                // the call, which is fine for raw bytes.
                let n = unsafe {
                    let ptr = guard.as_ptr().add(done);
                    match direction {
                        Direction::ToGuest => {
                            libc::pread64(self.file.as_raw_fd(), ptr.cast(), want, file_offset)
                        }
                        Direction::FromGuest => libc::pwrite64(
                            self.file.as_raw_fd(),
                            ptr.cast_const().cast(),
                            want,
                            file_offset,
                        ),
                    }
                };
                match n {
                    0 => return Err(IoError::Short(offset)),
                    n if n < 0 => {
                        let source = io::Error::last_os_error();
                        if source.kind() != io::ErrorKind::Interrupted {
                            return Err(IoError::Os { offset, source });
                        }
                    }
                    n => {
                        let n = n.unsigned_abs();
                        done += n;
                        offset += n as u64;
                    }
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Direction {
    ToGuest,
    FromGuest,
}

fn disk_id(path: &Path) -> [u8; ID_BYTES] {
    let mut id = [0u8; ID_BYTES];
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for (dst, src) in id.iter_mut().zip(name.bytes()) {
        *dst = src;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use vm_memory::Bytes;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    #[test]
    fn reads_and_writes_move_bytes_between_file_and_guest() {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(&[7u8; 1024]).unwrap();
        let disk = DiskFile::open(tmp.path(), false).unwrap();
        assert_eq!((disk.size(), disk.sectors()), (1024, 2));
        let mem = mem();
        disk.read_to_guest(512, &mem, GuestAddress(0x1000), 512)
            .unwrap();
        let mut back = [0u8; 512];
        mem.read_slice(&mut back, GuestAddress(0x1000)).unwrap();
        assert_eq!(back, [7u8; 512]);
        mem.write_slice(&[9u8; 512], GuestAddress(0x2000)).unwrap();
        disk.write_from_guest(0, &mem, GuestAddress(0x2000), 512)
            .unwrap();
        disk.flush().unwrap();
        let content = std::fs::read(tmp.path()).unwrap();
        assert_eq!(&content[..512], &[9u8; 512]);
        assert_eq!(&content[512..], &[7u8; 512]);
    }

    #[test]
    fn guest_buffers_outside_memory_fail_without_touching_anything() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.as_file().set_len(4096).unwrap();
        let disk = DiskFile::open(tmp.path(), false).unwrap();
        let mem = mem();
        for (addr, len) in [(0x10000u64, 512u32), (0xfe00, 1024), (u64::MAX - 10, 512)] {
            let err = disk.read_to_guest(0, &mem, GuestAddress(addr), len);
            assert!(matches!(err, Err(IoError::GuestMemory { .. })), "{addr:#x}");
            let err = disk.write_from_guest(0, &mem, GuestAddress(addr), len);
            assert!(err.is_err(), "{addr:#x}");
        }
    }

    #[test]
    fn reading_past_the_end_of_the_file_is_a_short_transfer() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.as_file().set_len(512).unwrap();
        let disk = DiskFile::open(tmp.path(), true).unwrap();
        let err = disk.read_to_guest(512, &mem(), GuestAddress(0), 512);
        assert!(matches!(err, Err(IoError::Short(512))));
    }

    #[test]
    fn bad_paths_are_named() {
        let err = DiskFile::open(Path::new("/nonexistent/disk.img"), true).unwrap_err();
        assert!(
            err.to_string().starts_with("disk /nonexistent/disk.img: "),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let err = DiskFile::open(dir.path(), true).unwrap_err();
        assert!(err
            .to_string()
            .ends_with("not a regular file (raw image files only)"));
    }

    #[test]
    fn a_read_only_disk_is_opened_read_only() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.as_file().set_len(512).unwrap();
        let disk = DiskFile::open(tmp.path(), true).unwrap();
        let err = disk
            .write_from_guest(0, &mem(), GuestAddress(0), 512)
            .unwrap_err();
        assert!(matches!(err, IoError::Os { .. }), "{err}");
    }

    #[test]
    fn id_is_the_file_name_cut_to_20_bytes() {
        assert_eq!(&disk_id(Path::new("/a/root.img"))[..9], b"root.img\0");
        assert_eq!(
            &disk_id(Path::new("/a/abcdefghijklmnopqrstuvwxyz")),
            b"abcdefghijklmnopqrst"
        );
    }
}
