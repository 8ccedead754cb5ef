//! Reading files out of an import source: a directory, or a tar archive indexed once so each
//! blob is read in place (seek + length) without unpacking the archive.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::images::layers::Compression;
use crate::images::tar_safety::EntryPath;
use crate::images::{Error, Result};

/// Symlinks followed when looking a name up in an archive.
const MAX_ARCHIVE_LINKS: usize = 8;
/// Largest JSON document (manifest, index, config) read into memory.
pub const MAX_JSON_BYTES: u64 = 16 << 20;

/// An entry of an archive index.
#[derive(Clone, Debug)]
pub enum Indexed {
    /// A regular file's data: offset in the archive and length.
    File { offset: u64, size: u64 },
    /// A symlink or hardlink to another entry (path normalized from the archive root).
    Link(String),
}

/// Where an image's files come from.
pub enum Source {
    /// A directory (OCI layout or unpacked docker-archive).
    Dir(PathBuf),
    /// An uncompressed tar archive and its index.
    Tar {
        /// The archive file (a decompressed copy when the original was gzipped).
        path: PathBuf,
        /// Path in the archive -> entry.
        index: HashMap<String, Indexed>,
    },
}

/// Normalizes a path inside a source (`./blobs//x` -> `blobs/x`); None for `..` or absolute.
fn normalize(path: &str) -> Option<String> {
    let parsed = EntryPath::parse(path.as_bytes()).ok()?;
    parsed.to_path().to_str().map(str::to_string)
}

impl Source {
    /// Indexes the tar archive at `path`. A gzipped archive is first decompressed into
    /// `scratch` (a file in the import's temporary directory).
    pub fn open_archive(path: &Path, scratch: &Path) -> Result<Source> {
        let mut file = File::open(path).map_err(|e| Error::io("opening", path, e))?;
        let mut head = [0u8; 2];
        let n = file
            .read(&mut head)
            .map_err(|e| Error::io("reading", path, e))?;
        let archive_path = if Compression::sniff(&head[..n]) == Compression::Gzip {
            file.seek(SeekFrom::Start(0))
                .map_err(|e| Error::io("reading", path, e))?;
            let mut out = File::create(scratch).map_err(|e| Error::io("creating", scratch, e))?;
            let mut decoder = flate2::read::MultiGzDecoder::new(file);
            std::io::copy(&mut decoder, &mut out).map_err(|e| Error::Corrupt {
                layer: path.display().to_string(),
                reason: format!("invalid gzip data: {e}"),
            })?;
            scratch.to_path_buf()
        } else {
            path.to_path_buf()
        };
        let index = index_archive(&archive_path, path)?;
        Ok(Source::Tar {
            path: archive_path,
            index,
        })
    }

    /// Whether the source holds a file at `name`.
    pub fn exists(&self, name: &str) -> bool {
        match self {
            Source::Dir(dir) => normalize(name).is_some_and(|n| dir.join(n).is_file()),
            Source::Tar { index, .. } => resolve(index, name).is_some(),
        }
    }

    /// Opens the file at `name` and gives its size; None when it is missing.
    pub fn open(&self, name: &str) -> Result<Option<(Box<dyn Read + Send>, u64)>> {
        match self {
            Source::Dir(dir) => {
                let Some(rel) = normalize(name) else {
                    return Ok(None);
                };
                let path = dir.join(rel);
                match File::open(&path) {
                    Ok(file) => {
                        let meta = file
                            .metadata()
                            .map_err(|e| Error::io("reading", &path, e))?;
                        if !meta.is_file() {
                            return Ok(None);
                        }
                        Ok(Some((Box::new(file), meta.len())))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(Error::io("opening", &path, e)),
                }
            }
            Source::Tar { path, index } => {
                let Some((offset, size)) = resolve(index, name) else {
                    return Ok(None);
                };
                let mut file = File::open(path).map_err(|e| Error::io("opening", path, e))?;
                file.seek(SeekFrom::Start(offset))
                    .map_err(|e| Error::io("reading", path, e))?;
                Ok(Some((Box::new(file.take(size)), size)))
            }
        }
    }

    /// Reads a small file (a JSON document) whole; None when it is missing.
    pub fn read_small(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let Some((reader, size)) = self.open(name)? else {
            return Ok(None);
        };
        if size > MAX_JSON_BYTES {
            return Err(Error::BadManifest {
                what: name.to_string(),
                reason: format!("{size} bytes is too large for a JSON document"),
            });
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        reader
            .take(MAX_JSON_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io("reading", PathBuf::from(name), e))?;
        Ok(Some(bytes))
    }
}

fn resolve(index: &HashMap<String, Indexed>, name: &str) -> Option<(u64, u64)> {
    let mut name = normalize(name)?;
    for _ in 0..MAX_ARCHIVE_LINKS {
        match index.get(&name)? {
            Indexed::File { offset, size } => return Some((*offset, *size)),
            Indexed::Link(target) => name = target.clone(),
        }
    }
    None
}

/// Joins a symlink target to the directory of the link, within the archive root.
fn link_target(entry: &str, target: &[u8], symlink: bool) -> Option<String> {
    let target = std::str::from_utf8(target).ok()?;
    if !symlink {
        // Hardlink names are archive paths.
        return normalize(target);
    }
    let mut parts: Vec<&str> = entry.split('/').collect();
    parts.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

fn index_archive(archive_path: &Path, shown: &Path) -> Result<HashMap<String, Indexed>> {
    let what = shown.display().to_string();
    let corrupt = |reason: String| Error::Corrupt {
        layer: what.clone(),
        reason,
    };
    let file = File::open(archive_path).map_err(|e| Error::io("opening", archive_path, e))?;
    let archive_len = file
        .metadata()
        .map_err(|e| Error::io("reading", archive_path, e))?
        .len();
    let mut archive = tar::Archive::new(file);
    let entries = archive
        .entries_with_seek()
        .map_err(|e| corrupt(format!("not a readable tar archive: {e}")))?;
    let mut index = HashMap::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| corrupt(format!("not a readable tar archive (truncated?): {e}")))?;
        let raw = entry.path_bytes().into_owned();
        let shown_entry = String::from_utf8_lossy(&raw).into_owned();
        let path = EntryPath::parse(&raw).map_err(|reason| Error::UnsafeEntry {
            layer: what.clone(),
            entry: shown_entry.clone(),
            reason,
        })?;
        let Some(name) = path.to_path().to_str().map(str::to_string) else {
            continue;
        };
        let kind = entry.header().entry_type();
        if kind.is_file() {
            let (offset, size) = (entry.raw_file_position(), entry.size());
            if offset.saturating_add(size) > archive_len {
                return Err(corrupt(format!(
                    "truncated archive: entry {shown_entry:?} needs {size} bytes at offset {offset}, the file has {archive_len}"
                )));
            }
            index.insert(name, Indexed::File { offset, size });
        } else if kind.is_symlink() || kind.is_hard_link() {
            let target = entry.link_name_bytes().unwrap_or_default();
            if let Some(t) = link_target(&name, &target, kind.is_symlink()) {
                index.insert(name, Indexed::Link(t));
            }
        }
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_targets_join_the_link_directory() {
        assert_eq!(
            link_target("a/layer.tar", b"../b/layer.tar", true).unwrap(),
            "b/layer.tar"
        );
        assert_eq!(link_target("x", b"../y", true), None);
        assert_eq!(link_target("a/x", b"b/y", false).unwrap(), "b/y");
    }
}
