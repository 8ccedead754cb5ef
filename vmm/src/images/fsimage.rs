//! Read-only filesystem images from a directory tree: erofs via mkfs.erofs (uncompressed: the
//! guest kernel has EROFS_FS without EROFS_FS_ZIP), or ext4 via `mkfs.ext4 -d` when
//! erofs-utils is missing.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Error, Result};

/// Environment variable that forces a filesystem type (`erofs` or `ext4`).
pub const FS_TYPE_ENV: &str = "CONDO_IMAGE_FS";
/// Directories searched for mkfs tools besides PATH (a non-root PATH often lacks sbin).
const SBIN_DIRS: [&str; 2] = ["/usr/sbin", "/sbin"];
/// Slack for ext4 metadata (superblocks, group descriptors, journal-less inode tables).
const EXT4_FIXED_SLACK: u64 = 16 << 20;
const BLOCK: u64 = 4096;
/// Bytes of stderr kept for an error message.
const STDERR_TAIL: usize = 2000;

/// The filesystem an image is stored as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsType {
    /// EROFS (preferred).
    Erofs,
    /// ext4 (fallback).
    Ext4,
}

impl FsType {
    /// File name of the image inside its store directory.
    pub fn file_name(self) -> &'static str {
        match self {
            FsType::Erofs => "rootfs.erofs",
            FsType::Ext4 => "rootfs.ext4",
        }
    }

    fn tool(self) -> &'static str {
        match self {
            FsType::Erofs => "mkfs.erofs",
            FsType::Ext4 => "mkfs.ext4",
        }
    }

    /// Parses `erofs` or `ext4`.
    pub fn parse(s: &str) -> Option<FsType> {
        match s {
            "erofs" => Some(FsType::Erofs),
            "ext4" => Some(FsType::Ext4),
            _ => None,
        }
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FsType::Erofs => "erofs",
            FsType::Ext4 => "ext4",
        })
    }
}

/// Finds a program in PATH or the sbin directories.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The filesystem type and mkfs program to use: `CONDO_IMAGE_FS` if set, else erofs when
/// mkfs.erofs is installed, else ext4.
pub fn choose() -> Result<(FsType, PathBuf)> {
    let forced = std::env::var(FS_TYPE_ENV)
        .ok()
        .and_then(|v| FsType::parse(&v));
    let order: &[FsType] = match forced {
        Some(FsType::Erofs) => &[FsType::Erofs],
        Some(FsType::Ext4) => &[FsType::Ext4],
        None => &[FsType::Erofs, FsType::Ext4],
    };
    order
        .iter()
        .find_map(|&t| find_tool(t.tool()).map(|p| (t, p)))
        .ok_or(Error::NoMkfs)
}

/// Builds `out` from the tree at `dir`; returns the image size in bytes.
pub fn build(fs_type: FsType, tool: &Path, dir: &Path, out: &Path) -> Result<u64> {
    let mut cmd = Command::new(tool);
    match fs_type {
        // Uncompressed; keep each file's mtime as stored in the layers.
        FsType::Erofs => {
            cmd.arg("--quiet");
            // Unprivileged imports could not keep owners: the importing user's ids mean
            // nothing inside a container, root does.
            if !nix::unistd::Uid::effective().is_root() {
                cmd.arg("--all-root");
            }
            cmd.arg(out).arg(dir);
        }
        FsType::Ext4 => {
            let size = ext4_size(dir)?;
            let file = std::fs::File::create(out).map_err(|e| Error::io("creating", out, e))?;
            file.set_len(size)
                .map_err(|e| Error::io("sizing", out, e))?;
            cmd.args([
                "-q",
                "-F",
                "-t",
                "ext4",
                "-O",
                "^has_journal",
                "-L",
                "condo-image",
            ])
            .arg("-d")
            .arg(dir)
            .arg(out);
        }
    }
    let output = cmd.output().map_err(|e| Error::io("running", tool, e))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let start = stderr.len().saturating_sub(STDERR_TAIL);
        let tail = stderr.get(start..).unwrap_or(&stderr).trim().to_string();
        return Err(Error::Mkfs {
            tool: format!("{} {} {}", tool.display(), out.display(), dir.display()),
            status: output.status.to_string(),
            stderr: tail,
        });
    }
    // On disk before the store renames it into place.
    let file = std::fs::File::open(out).map_err(|e| Error::io("opening", out, e))?;
    file.sync_all().map_err(|e| Error::io("syncing", out, e))?;
    let meta = file.metadata().map_err(|e| Error::io("reading", out, e))?;
    Ok(meta.len())
}

/// A generous ext4 size for the tree: data and directories in whole blocks, one inode each,
/// a quarter more, plus fixed metadata slack.
fn ext4_size(dir: &Path) -> Result<u64> {
    let mut bytes = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| Error::io("listing", &d, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("listing", &d, e))?;
            let meta = entry
                .metadata()
                .map_err(|e| Error::io("reading", entry.path(), e))?;
            bytes += meta.len().div_ceil(BLOCK) * BLOCK + 256;
            if meta.is_dir() {
                bytes += BLOCK;
                stack.push(entry.path());
            }
        }
    }
    Ok((bytes + bytes / 4 + EXT4_FIXED_SLACK).div_ceil(BLOCK) * BLOCK)
}
