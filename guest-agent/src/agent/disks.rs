//! Image disks at boot (`condo.disk=DEV:PATH`): the read-only disk mounted as the lower layer
//! of an overlay whose upper layer is a tmpfs, so a container can use PATH as its rootfs
//! (writes land in memory, the image stays untouched).

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

use super::cmdline::DiskMount;

/// Where each disk's layers live (`<index>/lower`, `<index>/rw/{upper,work}`).
const LAYERS_DIR: &str = "/run/condo/disks";
/// File systems an image disk may hold, tried in this order.
const IMAGE_FS_TYPES: &[&str] = &["erofs", "ext4"];

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("disk {device}: cannot create {path}: {source}")]
    Dir {
        device: PathBuf,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("disk {device}: cannot mount it read-only as {tried}: {errno}")]
    Image {
        device: PathBuf,
        tried: String,
        errno: Errno,
    },
    #[error("disk {device}: mount of {what} on {path} failed: {errno}")]
    Layer {
        device: PathBuf,
        what: &'static str,
        path: PathBuf,
        errno: Errno,
    },
}

/// Mounts every disk; returns the failures (a guest with one bad disk still serves).
pub fn mount_disks(disks: &[DiskMount]) -> Vec<DiskError> {
    disks
        .iter()
        .enumerate()
        .filter_map(|(index, disk)| mount_disk(index, disk).err())
        .collect()
}

fn mount_disk(index: usize, disk: &DiskMount) -> Result<(), DiskError> {
    let layers = Path::new(LAYERS_DIR).join(index.to_string());
    let (lower, rw) = (layers.join("lower"), layers.join("rw"));
    for dir in [&lower, &rw, &disk.target] {
        make_dir(disk, dir)?;
    }
    mount_image(disk, &lower)?;
    let layer = |what, errno| DiskError::Layer {
        device: disk.device.clone(),
        what,
        path: rw.clone(),
        errno,
    };
    mount(
        Some("tmpfs"),
        &rw,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .map_err(|errno| layer("tmpfs", errno))?;
    let (upper, work) = (rw.join("upper"), rw.join("work"));
    for dir in [&upper, &work] {
        make_dir(disk, dir)?;
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        &disk.target,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|errno| DiskError::Layer {
        device: disk.device.clone(),
        what: "overlay",
        path: disk.target.clone(),
        errno,
    })
}

fn make_dir(disk: &DiskMount, path: &Path) -> Result<(), DiskError> {
    std::fs::create_dir_all(path).map_err(|source| DiskError::Dir {
        device: disk.device.clone(),
        path: path.to_path_buf(),
        source,
    })
}

fn mount_image(disk: &DiskMount, lower: &Path) -> Result<(), DiskError> {
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
    let mut last = Errno::ENODEV;
    for fstype in IMAGE_FS_TYPES {
        match mount(
            Some(disk.device.as_path()),
            lower,
            Some(*fstype),
            flags,
            None::<&str>,
        ) {
            Ok(()) => return Ok(()),
            Err(errno) => last = errno,
        }
    }
    Err(DiskError::Image {
        device: disk.device.clone(),
        tried: IMAGE_FS_TYPES.join(", "),
        errno: last,
    })
}
