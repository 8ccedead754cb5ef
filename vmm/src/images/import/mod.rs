//! Import sources: what format a path holds, and a plan of what to read from it. Everything
//! that can be checked before writing (formats, media types, blobs present, config digest) is
//! checked here, so bad input fails before the store is touched.

mod docker_archive;
mod oci;
pub mod rootfs_dir;
pub mod source;

use std::io::Read;
use std::path::{Path, PathBuf};

use super::config::ImageConfig;
use super::digest::HashingReader;
use super::layers::{self, Compression};
use super::tar_safety::Root;
use super::{Error, Progress, Result, Stage};
use source::Source;

/// One layer to apply.
#[derive(Clone, Debug)]
pub struct LayerSpec {
    /// The blob's path inside the source.
    pub path: String,
    /// Digest of the blob as stored (OCI manifests give it), checked while reading.
    pub blob_digest: Option<String>,
    /// Digest of the uncompressed tar (the config's diff_id), checked while applying.
    pub diff_id: Option<String>,
    /// Compression from the media type; None means sniff the first bytes.
    pub compression: Option<Compression>,
    /// Bytes of the blob.
    pub size: u64,
    /// How errors name it, e.g. `layer 2/3 (blobs/sha256/ab12…)`.
    pub what: String,
}

/// A layered image ready to apply.
pub struct LayeredImage {
    /// The files.
    pub source: Source,
    /// `sha256:<hex>` of the image config.
    pub digest: String,
    /// The config as stored in the source.
    pub config_json: Vec<u8>,
    /// What containers need from it.
    pub config: ImageConfig,
    /// Layers, bottom first.
    pub layers: Vec<LayerSpec>,
    /// A name the source gives itself (RepoTags, ref.name annotation), normalized.
    pub default_name: Option<String>,
}

/// What an import path holds.
pub enum Plan {
    /// An OCI layout or docker-archive, as layers.
    Layered(Box<LayeredImage>),
    /// A root filesystem directory, used as is.
    RootfsDir(PathBuf),
}

/// Looks at `path` and plans the import. `scratch` is a file path the archive reader may use
/// for a decompressed copy of a gzipped archive.
pub fn plan(path: &Path, scratch: &Path) -> Result<Plan> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io("reading", path, e))?;
    let source = if meta.is_dir() {
        Source::Dir(path.to_path_buf())
    } else if meta.is_file() {
        Source::open_archive(path, scratch)?
    } else {
        return Err(Error::UnknownFormat {
            path: path.to_path_buf(),
        });
    };
    if source.exists(oci::LAYOUT_FILE) {
        return Ok(Plan::Layered(Box::new(oci::plan(source, path)?)));
    }
    if source.exists(docker_archive::MANIFEST_FILE) {
        return Ok(Plan::Layered(Box::new(docker_archive::plan(source, path)?)));
    }
    match source {
        Source::Dir(dir) => Ok(Plan::RootfsDir(dir)),
        Source::Tar { .. } => Err(Error::UnknownFormat {
            path: path.to_path_buf(),
        }),
    }
}

/// Reports progress at most once per this many bytes.
const PROGRESS_STEP: u64 = 1 << 20;

/// Counts bytes read and reports them through the progress callback.
struct Counting<'a, R> {
    inner: R,
    done: u64,
    reported: u64,
    total: u64,
    progress: &'a mut dyn FnMut(Progress),
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.done - self.reported >= PROGRESS_STEP {
            self.reported = self.done;
            (self.progress)(Progress {
                stage: Stage::Layers,
                done: self.done,
                total: self.total,
            });
        }
        Ok(n)
    }
}

fn check_digest(what: &str, expected: &Option<String>, actual: &str) -> Result<()> {
    match expected {
        Some(e) if e != actual => Err(Error::DigestMismatch {
            what: what.to_string(),
            expected: e.clone(),
            actual: actual.to_string(),
        }),
        _ => Ok(()),
    }
}

impl LayeredImage {
    /// Bytes of all layer blobs.
    pub fn total_bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }

    /// Applies every layer, in order, into the directory at `staging`, checking each
    /// blob digest and diff_id.
    pub fn apply(&self, staging: &Path, progress: &mut dyn FnMut(Progress)) -> Result<()> {
        let root = Root::open(staging).map_err(|e| Error::io("opening", staging, e))?;
        let total = self.total_bytes();
        let mut done = 0;
        for layer in &self.layers {
            done += self.apply_layer(&root, layer, done, total, progress)?;
        }
        progress(Progress {
            stage: Stage::Layers,
            done,
            total,
        });
        Ok(())
    }

    fn apply_layer(
        &self,
        root: &Root,
        layer: &LayerSpec,
        done_before: u64,
        total: u64,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<u64> {
        let corrupt = |e: std::io::Error| Error::Corrupt {
            layer: layer.what.clone(),
            reason: format!("reading the layer: {e}"),
        };
        let Some((reader, _)) = self.source.open(&layer.path)? else {
            return Err(Error::BadManifest {
                what: layer.what.clone(),
                reason: "blob vanished during import".to_string(),
            });
        };
        let counting = Counting {
            inner: reader,
            done: done_before,
            reported: done_before,
            total,
            progress,
        };
        let mut blob = std::io::BufReader::new(HashingReader::new(counting));
        let compression = match layer.compression {
            Some(c) => c,
            None => {
                use std::io::BufRead;
                Compression::sniff(blob.fill_buf().map_err(corrupt)?)
            }
        };
        {
            let mut tar_stream = HashingReader::new(compression.decoder(&mut blob));
            layers::apply(root, &mut tar_stream, &layer.what)?;
            let (diff_id, _) = tar_stream.finish().map_err(corrupt)?;
            check_digest(
                &format!("{} (uncompressed)", layer.what),
                &layer.diff_id,
                &diff_id,
            )?;
        }
        let (blob_digest, size) = blob.into_inner().finish().map_err(corrupt)?;
        check_digest(&layer.what, &layer.blob_digest, &blob_digest)?;
        if size != layer.size {
            return Err(Error::BadManifest {
                what: layer.what.clone(),
                reason: format!("blob has {size} bytes, its descriptor says {}", layer.size),
            });
        }
        Ok(size)
    }
}

/// Short form of a digest for messages: `sha256:0123456789ab`.
pub fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}
