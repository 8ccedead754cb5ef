//! Builds small images from scratch for the image tests: two layers (the second gzipped,
//! with a whiteout and an opaque directory), an OCI config, and the same image as an OCI
//! layout directory, an OCI layout tar and a docker-archive tar.
#![allow(dead_code)]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// `sha256:<hex>` of bytes.
pub fn sha256(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Hex part of a digest.
pub fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap()
}

fn header(kind: tar::EntryType, path: &str, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    let name = &mut h.as_old_mut().name;
    name.fill(0);
    name[..path.len()].copy_from_slice(path.as_bytes());
    h
}

/// A tar entry for fixtures: (type, path, content or link target, mode).
pub type Entry<'a> = (tar::EntryType, &'a str, &'a [u8], u32);

/// A tar of `entries` (raw names, so hostile paths are possible).
pub fn tar_of(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (kind, path, data, mode) in entries {
        let is_link = matches!(kind, tar::EntryType::Symlink | tar::EntryType::Link);
        let size = if is_link { 0 } else { data.len() as u64 };
        let mut h = header(*kind, path, *mode, size);
        if is_link {
            let link = &mut h.as_old_mut().linkname;
            link.fill(0);
            link[..data.len()].copy_from_slice(data);
        }
        h.set_cksum();
        b.append(&h, if is_link { &[][..] } else { *data }).unwrap();
    }
    b.into_inner().unwrap()
}

/// gzip of bytes.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A tar of the regular files under `dir` (paths relative to it), for archive sources.
pub fn tar_dir(dir: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap()
}

/// An image's pieces.
pub struct Image {
    /// Uncompressed layer tars, bottom first.
    pub layers: Vec<Vec<u8>>,
    /// Layer blobs as stored (the second one gzipped).
    pub blobs: Vec<Vec<u8>>,
    /// The OCI config JSON.
    pub config: Vec<u8>,
}

/// The standard two-layer fixture.
pub fn two_layer_image(cmd: &str) -> Image {
    use tar::EntryType::{Directory as D, Regular as F, Symlink as L};
    let lower = tar_of(&[
        (D, "bin/", b"", 0o755),
        (F, "bin/tool", b"#!/bin/sh\necho tool\n", 0o755),
        (L, "bin/sh", b"tool", 0o777),
        (F, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644),
        (F, "gone", b"whited out", 0o644),
        (D, "opaque/", b"", 0o755),
        (F, "opaque/lower", b"hidden", 0o644),
    ]);
    let upper = tar_of(&[
        (F, ".wh.gone", b"", 0o644),
        (D, "opaque/", b"", 0o755),
        (F, "opaque/.wh..wh..opq", b"", 0o644),
        (F, "opaque/upper", b"visible", 0o644),
        (F, "etc/motd", b"hello from layer 2\n", 0o644),
    ]);
    let layers = vec![lower.clone(), upper.clone()];
    let blobs = vec![lower, gzip(&upper)];
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/bin", "FIXTURE=1"],
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": [cmd],
            "WorkingDir": "/etc",
            "User": "0:0"
        },
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| sha256(l)).collect::<Vec<_>>()}
    });
    Image {
        layers,
        blobs,
        config: serde_json::to_vec(&config).unwrap(),
    }
}

fn write_blob(dir: &Path, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let path = dir.join("blobs/sha256").join(hex(&digest));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
    digest
}

/// Media types for the fixture's layers (plain, then gzip).
pub const LAYER_TYPES: [&str; 2] = [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
];

/// Writes `image` as an OCI layout at `dir`; `layer_types` overrides media types.
/// Returns the manifest JSON's path inside the layout.
pub fn write_oci_layout(
    dir: &Path,
    image: &Image,
    ref_name: &str,
    layer_types: [&str; 2],
) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let config_digest = write_blob(dir, &image.config);
    let layers: Vec<serde_json::Value> = image
        .blobs
        .iter()
        .zip(layer_types)
        .map(|(blob, media_type)| {
            serde_json::json!({"mediaType": media_type, "digest": write_blob(dir, blob), "size": blob.len()})
        })
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": image.config.len()},
        "layers": layers
    }))
    .unwrap();
    let manifest_digest = write_blob(dir, &manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": ref_name}
        }]
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    dir.join("blobs/sha256").join(hex(&manifest_digest))
}

/// Writes `image` as a docker-archive tar at `path` (classic `docker save` layout).
pub fn write_docker_archive(path: &Path, image: &Image, repo_tag: &str) {
    let dir = path.with_extension("d");
    fs::create_dir_all(&dir).unwrap();
    let config_name = format!("{}.json", hex(&sha256(&image.config)));
    fs::write(dir.join(&config_name), &image.config).unwrap();
    let mut layer_names = Vec::new();
    for (i, blob) in image.blobs.iter().enumerate() {
        let name = format!("layer{i}/layer.tar");
        fs::create_dir_all(dir.join(format!("layer{i}"))).unwrap();
        fs::write(dir.join(&name), blob).unwrap();
        layer_names.push(name);
    }
    let manifest = serde_json::json!([{
        "Config": config_name, "RepoTags": [repo_tag], "Layers": layer_names
    }]);
    fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    fs::write(path, tar_dir(&dir)).unwrap();
    fs::remove_dir_all(&dir).unwrap();
}
