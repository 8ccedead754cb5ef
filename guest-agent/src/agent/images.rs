//! `mount_image`: an image's read-only filesystem mounted once per agent, under
//! `<state dir>/images/<image_id>`. In a guest the source is a virtio disk (/dev/vdX); on a
//! host (`--isolation process`) it is the store's image file, attached to a loop device first
//! (read-only, autoclear: the loop device goes away with the last unmount).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use condo_protocol::{validate_id, ErrorKind, ErrorReply, MountImage};
use nix::mount::MsFlags;

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;
/// Tries of LOOP_CTL_GET_FREE + LOOP_CONFIGURE: another process may take the free device first.
const LOOP_ATTEMPTS: usize = 8;

/// `struct loop_info64` of linux/loop.h.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` of linux/loop.h (LOOP_CONFIGURE, Linux 5.8).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

fn invalid(message: String) -> ErrorReply {
    ErrorReply::new(ErrorKind::InvalidRequest, message)
}

fn internal(message: String) -> ErrorReply {
    ErrorReply::new(ErrorKind::Internal, message)
}

/// The images this agent mounted: image id → (source, mount point).
#[derive(Debug)]
pub struct MountedImages {
    dir: PathBuf,
    mounted: Mutex<HashMap<String, (String, PathBuf)>>,
}

impl MountedImages {
    pub fn new(dir: PathBuf) -> Self {
        MountedImages {
            dir,
            mounted: Mutex::new(HashMap::new()),
        }
    }

    /// Mounts the image unless it already is; returns its mount point.
    pub fn mount(&self, request: &MountImage) -> Result<PathBuf, ErrorReply> {
        validate_id("image_id", &request.image_id).map_err(|err| invalid(err.to_string()))?;
        if !matches!(request.fs_type.as_str(), "erofs" | "ext4") {
            return Err(invalid(format!(
                "fs_type {:?} is not erofs or ext4",
                request.fs_type
            )));
        }
        let source = Path::new(&request.source);
        if !source.is_absolute() {
            return Err(invalid(format!(
                "image source {:?} is not an absolute path",
                request.source
            )));
        }
        let mut mounted = self
            .mounted
            .lock()
            .map_err(|_| internal("image table lock poisoned".into()))?;
        if let Some((known_source, path)) = mounted.get(&request.image_id) {
            if *known_source != request.source {
                return Err(ErrorReply::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "image {} is already mounted from {known_source}, not {}",
                        request.image_id, request.source
                    ),
                ));
            }
            return Ok(path.clone());
        }
        let target = self.dir.join(&request.image_id);
        std::fs::create_dir_all(&target)
            .map_err(|err| internal(format!("cannot create {}: {err}", target.display())))?;
        mount_read_only(source, &target, &request.fs_type)?;
        mounted.insert(
            request.image_id.clone(),
            (request.source.clone(), target.clone()),
        );
        Ok(target)
    }
}

fn mount_read_only(source: &Path, target: &Path, fs_type: &str) -> Result<(), ErrorReply> {
    let metadata = std::fs::metadata(source)
        .map_err(|err| invalid(format!("image source {}: {err}", source.display())))?;
    // The loop device must stay open until the mount holds it.
    let (device, _loop_file) = if metadata.file_type().is_block_device() {
        (source.to_path_buf(), None)
    } else if metadata.is_file() {
        let (path, file) = attach_loop(source)?;
        (path, Some(file))
    } else {
        return Err(invalid(format!(
            "image source {} is neither a block device nor a regular file",
            source.display()
        )));
    };
    nix::mount::mount(
        Some(&device),
        target,
        Some(fs_type),
        MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        None::<&str>,
    )
    .map_err(|errno| {
        internal(format!(
            "mount {} ({fs_type}, from {}) on {} failed: {errno}",
            device.display(),
            source.display(),
            target.display()
        ))
    })
}

/// Attaches `file` read-only to a free loop device; returns its path and an open handle.
fn attach_loop(file: &Path) -> Result<(PathBuf, File), ErrorReply> {
    let backing = File::open(file)
        .map_err(|err| invalid(format!("cannot open image {}: {err}", file.display())))?;
    let control = File::open("/dev/loop-control")
        .map_err(|err| internal(format!("cannot open /dev/loop-control: {err}")))?;
    let mut last_error = String::new();
    for _ in 0..LOOP_ATTEMPTS {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if number < 0 {
            let err = std::io::Error::last_os_error();
            return Err(internal(format!("LOOP_CTL_GET_FREE failed: {err}")));
        }
        let path = PathBuf::from(format!("/dev/loop{number}"));
        let device = OpenOptions::new()
            .read(true)
            .open(&path)
            .map_err(|err| internal(format!("cannot open {}: {err}", path.display())))?;
        let config = LoopConfig {
            fd: u32::try_from(backing.as_raw_fd()).unwrap_or(u32::MAX),
            block_size: 0,
            info: LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: 0,
                lo_sizelimit: 0,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
                lo_file_name: [0; LO_NAME_SIZE],
                lo_crypt_name: [0; LO_NAME_SIZE],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: LOOP_CONFIGURE reads a `struct loop_config` that lives across the call.
        let rc = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CONFIGURE, &config) };
        if rc == 0 {
            return Ok((path, device));
        }
        let err = std::io::Error::last_os_error();
        // EBUSY: another process configured that device between GET_FREE and CONFIGURE.
        if err.raw_os_error() != Some(libc::EBUSY) {
            return Err(internal(format!(
                "LOOP_CONFIGURE of {} with {} failed: {err}",
                path.display(),
                file.display()
            )));
        }
        last_error = err.to_string();
    }
    Err(internal(format!(
        "no free loop device for {} after {LOOP_ATTEMPTS} tries: {last_error}",
        file.display()
    )))
}
