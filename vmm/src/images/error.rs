//! Why an image operation failed; every message names the file, entry or value at fault.

use std::path::PathBuf;

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation on the store or on an import source failed.
    #[error("{what} {path}: {source}", path = path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// No image has this name or digest.
    #[error("no image {reference:?} in the store")]
    NotFound {
        /// The reference as given.
        reference: String,
    },
    /// A digest prefix matches several images.
    #[error("image reference {reference:?} is ambiguous: it matches {}", candidates.join(", "))]
    Ambiguous {
        /// The prefix as given.
        reference: String,
        /// Matching digests.
        candidates: Vec<String>,
    },
    /// The image would be deleted while something still uses it.
    #[error("image {digest} ({reference:?}) is in use by {user}: remove that first")]
    InUse {
        /// The reference as given.
        reference: String,
        /// The image.
        digest: String,
        /// Who uses it, e.g. `tenant acme`.
        user: String,
    },
    /// A name or tag is malformed.
    #[error("invalid image name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The import source is none of the known formats.
    #[error(
        "{path}: not an OCI image layout (oci-layout, index.json), a docker-archive \
         (manifest.json) or a root filesystem directory",
        path = path.display()
    )]
    UnknownFormat {
        /// The source.
        path: PathBuf,
    },
    /// A manifest or index names a blob the source does not hold.
    #[error("{source_path}: {what} names blob {name}, which is missing", source_path = source_path.display())]
    MissingBlob {
        /// The import source.
        source_path: PathBuf,
        /// Which document names it.
        what: String,
        /// The blob's path or digest.
        name: String,
    },
    /// Content does not hash to the digest its manifest gives.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was hashed.
        what: String,
        /// Digest from the manifest.
        expected: String,
        /// Digest of the content.
        actual: String,
    },
    /// A digest string is malformed or uses an unsupported algorithm.
    #[error("{what}: unsupported or malformed digest {digest:?} (want sha256:<64 hex>)")]
    BadDigest {
        /// Where it was found.
        what: String,
        /// The digest as found.
        digest: String,
    },
    /// A media type condo does not handle.
    #[error("{what}: unknown media type {media_type:?}")]
    UnknownMediaType {
        /// Where it was found.
        what: String,
        /// The media type.
        media_type: String,
    },
    /// A JSON document could not be parsed.
    #[error("{what}: invalid JSON: {source}")]
    Json {
        /// Which document.
        what: String,
        /// Parser error.
        source: serde_json::Error,
    },
    /// A manifest, index or config is well-formed JSON but not a usable image description.
    #[error("{what}: {reason}")]
    BadManifest {
        /// Which document.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A tar entry would write outside the root filesystem or uses an unsafe path.
    #[error("{layer}: entry {entry:?}: {reason}")]
    UnsafeEntry {
        /// The layer or archive.
        layer: String,
        /// The entry's path as stored.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// A tar stream is corrupt or truncated, or its compression is broken.
    #[error("{layer}: {reason}")]
    Corrupt {
        /// The layer or archive.
        layer: String,
        /// What is wrong.
        reason: String,
    },
    /// Applying one entry to the staging tree failed.
    #[error("{layer}: entry {entry:?}: {op}: {source}")]
    Apply {
        /// The layer.
        layer: String,
        /// The entry's path.
        entry: String,
        /// The operation.
        op: &'static str,
        /// OS error.
        source: std::io::Error,
    },
    /// The filesystem image could not be built.
    #[error("{tool} failed ({status}): {stderr}")]
    Mkfs {
        /// The program.
        tool: String,
        /// Its exit status.
        status: String,
        /// The end of its stderr.
        stderr: String,
    },
    /// Neither mkfs.erofs nor mkfs.ext4 can be run.
    #[error("cannot build a filesystem image: neither mkfs.erofs (erofs-utils) nor mkfs.ext4 (e2fsprogs) is installed")]
    NoMkfs,
}

impl Error {
    /// An I/O error on `path` while doing `what`.
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
