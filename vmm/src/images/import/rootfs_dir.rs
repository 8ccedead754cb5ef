//! Plain root filesystem directories: the digest is a sha256 over a canonical listing of the
//! tree (path, type, mode, owner, size, content hash or link target, device number, sorted
//! by path), so the same content imports to the same image wherever it lives. Mtimes are left
//! out on purpose: rebuilding the same tree must not make a new image.

use std::fs::{self, Metadata};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::images::digest::to_hex;
use crate::images::{Error, Progress, Result, Stage};

const PROGRESS_STEP: u64 = 1 << 20;

fn type_char(meta: &Metadata) -> char {
    let t = meta.file_type();
    if t.is_dir() {
        'd'
    } else if t.is_symlink() {
        'l'
    } else if t.is_char_device() {
        'c'
    } else if t.is_block_device() {
        'b'
    } else if t.is_fifo() {
        'p'
    } else if t.is_socket() {
        's'
    } else {
        'f'
    }
}

/// Every entry under `root` (root itself first as ""), sorted by path bytes.
fn walk(root: &Path) -> Result<Vec<(PathBuf, Metadata)>> {
    let mut out = Vec::new();
    let meta = fs::symlink_metadata(root).map_err(|e| Error::io("reading", root, e))?;
    out.push((PathBuf::new(), meta));
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let entries = fs::read_dir(&dir).map_err(|e| Error::io("listing", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("listing", &dir, e))?;
            let child = rel.join(entry.file_name());
            let meta = fs::symlink_metadata(entry.path())
                .map_err(|e| Error::io("reading", entry.path(), e))?;
            if meta.is_dir() {
                stack.push(child.clone());
            }
            out.push((child, meta));
        }
    }
    out.sort_by(|a, b| a.0.as_os_str().as_bytes().cmp(b.0.as_os_str().as_bytes()));
    Ok(out)
}

/// `sha256:<hex>` over the canonical listing of `root`.
pub fn digest(root: &Path, progress: &mut dyn FnMut(Progress)) -> Result<String> {
    let entries = walk(root)?;
    let total: u64 = entries
        .iter()
        .filter(|(_, m)| m.is_file())
        .map(|(_, m)| m.len())
        .sum();
    let mut listing = Sha256::new();
    let mut done = 0u64;
    let mut reported = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    for (rel, meta) in &entries {
        let path = root.join(rel);
        let detail = match type_char(meta) {
            'f' => {
                let mut file = fs::File::open(&path).map_err(|e| Error::io("reading", &path, e))?;
                let mut content = Sha256::new();
                loop {
                    let n = file
                        .read(&mut buf)
                        .map_err(|e| Error::io("reading", &path, e))?;
                    if n == 0 {
                        break;
                    }
                    content.update(&buf[..n]);
                    done += n as u64;
                }
                if done - reported >= PROGRESS_STEP {
                    reported = done;
                    progress(Progress {
                        stage: Stage::Hashing,
                        done,
                        total,
                    });
                }
                to_hex(&content.finalize())
            }
            'l' => {
                let target = fs::read_link(&path).map_err(|e| Error::io("reading", &path, e))?;
                to_hex(target.as_os_str().as_bytes())
            }
            'c' | 'b' => meta.rdev().to_string(),
            _ => String::new(),
        };
        listing.update(rel.as_os_str().as_bytes());
        let line = format!(
            "\0{}\0{:o}\0{}\0{}\0{}\0{}\n",
            type_char(meta),
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid(),
            if meta.is_file() { meta.len() } else { 0 },
            detail
        );
        listing.update(line.as_bytes());
    }
    progress(Progress {
        stage: Stage::Hashing,
        done,
        total,
    });
    Ok(format!("sha256:{}", to_hex(&listing.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_content_same_digest_and_any_change_shows() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for d in [a.path(), b.path()] {
            fs::create_dir(d.join("bin")).unwrap();
            fs::write(d.join("bin/x"), b"data").unwrap();
            std::os::unix::fs::symlink("x", d.join("bin/y")).unwrap();
        }
        let mut nop = |_| {};
        let da = digest(a.path(), &mut nop).unwrap();
        assert_eq!(da, digest(b.path(), &mut nop).unwrap());
        fs::write(b.path().join("bin/x"), b"datA").unwrap();
        assert_ne!(da, digest(b.path(), &mut nop).unwrap());
        fs::write(b.path().join("bin/x"), b"data").unwrap();
        fs::remove_file(b.path().join("bin/y")).unwrap();
        std::os::unix::fs::symlink("z", b.path().join("bin/y")).unwrap();
        assert_ne!(da, digest(b.path(), &mut nop).unwrap());
    }
}
