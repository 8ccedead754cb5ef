//! The image store: container images imported once, kept by digest as read-only filesystem
//! images (erofs, or ext4 when mkfs.erofs is missing) that a tenant VM attaches as a disk.
//!
//! Layout under the store root (`${CONDO_STATE_DIR:-/var/lib/condo}/images`):
//! `<hex>/{rootfs.erofs|rootfs.ext4, config.json, record.json}`, `names.json` (name -> digest),
//! `lock` (held while the store changes) and `tmp/` (imports in progress, renamed into place
//! when complete, so a failed import leaves nothing behind).

mod config;
mod digest;
mod error;
mod fsimage;
mod import;
mod layers;
mod names;
mod store;
mod tar_safety;
#[cfg(test)]
mod testutil;
mod zstd;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use config::ImageConfig;
pub use error::Error;
pub use fsimage::FsType;
pub use names::{normalize_name, DEFAULT_TAG};
pub use store::{Removed, Store};

/// Results of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// Environment variable naming condo's state directory.
pub const STATE_DIR_ENV: &str = "CONDO_STATE_DIR";
/// State directory when the variable is unset.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/condo";

/// The store root: `${CONDO_STATE_DIR:-/var/lib/condo}/images`.
pub fn default_root() -> PathBuf {
    let state = std::env::var_os(STATE_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    state.join("images")
}

/// One stored image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `sha256:<hex>`: the OCI image config digest, or for a root filesystem directory a
    /// digest over a canonical listing of its content.
    pub digest: String,
    /// Names (`name:tag`) pointing at this image, sorted.
    pub names: Vec<String>,
    /// The read-only filesystem image (attach as a virtio-blk disk or loop-mount).
    pub fs_path: PathBuf,
    /// `erofs` or `ext4`.
    pub fs_type: String,
    /// Size of the filesystem image in bytes.
    pub size: u64,
    /// When it was imported, seconds since the Unix epoch.
    pub created: u64,
    /// Entrypoint, cmd, env, working dir and user from the image config.
    pub config: ImageConfig,
}

impl ImageRecord {
    /// The hex part of the digest.
    pub fn hex(&self) -> &str {
        self.digest.strip_prefix("sha256:").unwrap_or(&self.digest)
    }
}

/// What an import is doing, reported through the `progress` callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Reading a root filesystem directory to compute its digest.
    Hashing,
    /// Applying layers (bytes are layer blob bytes read).
    Layers,
    /// Building the filesystem image.
    Filesystem,
}

/// Progress of an import: `done` of `total` bytes in `stage` (`total` 0 when unknown).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The stage.
    pub stage: Stage,
    /// Bytes done.
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
}
