//! OCI image layouts (directory or tar): `oci-layout`, `index.json`, `blobs/sha256/<hex>`.
//! The index may point at a manifest or at nested indexes; linux/amd64 is picked when
//! manifests name platforms.

use std::path::Path;

use oci_spec::image::{Arch, Descriptor, ImageIndex, ImageManifest, MediaType, Os};

use super::source::Source;
use super::{short, LayerSpec, LayeredImage};
use crate::images::config::parse_image_config;
use crate::images::digest::{parse_sha256, verify};
use crate::images::layers::Compression;
use crate::images::names::normalize_name;
use crate::images::{Error, Result};

/// The file that marks an OCI layout.
pub const LAYOUT_FILE: &str = "oci-layout";
const INDEX_FILE: &str = "index.json";
/// Nested indexes followed before giving up.
const MAX_INDEX_DEPTH: usize = 4;
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
const NAME_ANNOTATIONS: [&str; 2] = [
    "io.containerd.image.name",
    "org.opencontainers.image.ref.name",
];

fn blob_path(digest: &str, what: &str) -> Result<String> {
    Ok(format!("blobs/sha256/{}", parse_sha256(digest, what)?))
}

/// Reads a blob named by a descriptor and checks its digest.
fn read_blob(source: &Source, src: &Path, desc: &Descriptor, what: &str) -> Result<Vec<u8>> {
    let digest = desc.digest().to_string();
    let path = blob_path(&digest, what)?;
    let bytes = source
        .read_small(&path)?
        .ok_or_else(|| Error::MissingBlob {
            source_path: src.to_path_buf(),
            what: what.to_string(),
            name: path.clone(),
        })?;
    verify(&bytes, &digest, &format!("{what}: blob {path}"))?;
    Ok(bytes)
}

fn json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::Json {
        what: what.to_string(),
        source,
    })
}

fn is_index(mt: &MediaType) -> bool {
    *mt == MediaType::ImageIndex || mt.to_string() == DOCKER_MANIFEST_LIST
}

fn is_manifest(mt: &MediaType) -> bool {
    *mt == MediaType::ImageManifest || mt.to_string() == DOCKER_MANIFEST
}

/// Picks the descriptor to follow: linux/amd64 when platforms are given, else the only one.
fn pick<'a>(descs: &'a [Descriptor], what: &str) -> Result<&'a Descriptor> {
    let usable: Vec<&Descriptor> = descs
        .iter()
        .filter(|d| is_index(d.media_type()) || is_manifest(d.media_type()))
        .collect();
    let for_us = usable.iter().copied().find(|d| {
        d.platform()
            .as_ref()
            .is_some_and(|p| *p.architecture() == Arch::Amd64 && *p.os() == Os::Linux)
    });
    if let Some(d) = for_us {
        return Ok(d);
    }
    let unplatformed: Vec<&Descriptor> = usable
        .iter()
        .copied()
        .filter(|d| d.platform().is_none())
        .collect();
    match (usable.len(), unplatformed.first()) {
        (0, _) => match descs.first() {
            Some(d) => Err(Error::UnknownMediaType {
                what: what.to_string(),
                media_type: d.media_type().to_string(),
            }),
            None => Err(Error::BadManifest {
                what: what.to_string(),
                reason: "lists no manifests".to_string(),
            }),
        },
        (_, Some(d)) => Ok(d),
        _ => Err(Error::BadManifest {
            what: what.to_string(),
            reason: "has no manifest for linux/amd64".to_string(),
        }),
    }
}

fn name_from(desc: &Descriptor) -> Option<String> {
    let annotations = desc.annotations().as_ref()?;
    NAME_ANNOTATIONS.iter().find_map(|key| {
        let value = annotations.get(*key)?;
        // A bare ref.name is only a tag; a name needs a repository part.
        let full = value.contains(':') || value.contains('/');
        full.then(|| normalize_name(value).ok()).flatten()
    })
}

fn layer_compression(desc: &Descriptor, what: &str) -> Result<Compression> {
    let mt = desc.media_type();
    match mt {
        MediaType::ImageLayer | MediaType::ImageLayerNonDistributable => Ok(Compression::None),
        MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip => {
            Ok(Compression::Gzip)
        }
        MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd => {
            Ok(Compression::Zstd)
        }
        MediaType::Other(s) if s == DOCKER_LAYER_GZIP => Ok(Compression::Gzip),
        MediaType::Other(s) if s == DOCKER_LAYER_TAR => Ok(Compression::None),
        _ => Err(Error::UnknownMediaType {
            what: what.to_string(),
            media_type: mt.to_string(),
        }),
    }
}

/// Plans the import of the OCI layout in `source` (from `src`).
pub fn plan(source: Source, src: &Path) -> Result<LayeredImage> {
    let layout_bytes = source.read_small(LAYOUT_FILE)?.unwrap_or_default();
    let layout: serde_json::Value = json(&layout_bytes, LAYOUT_FILE)?;
    let version = layout
        .get("imageLayoutVersion")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if !version.starts_with("1.") {
        return Err(Error::BadManifest {
            what: LAYOUT_FILE.to_string(),
            reason: format!("unsupported imageLayoutVersion {version:?}"),
        });
    }
    let index_bytes = source
        .read_small(INDEX_FILE)?
        .ok_or_else(|| Error::MissingBlob {
            source_path: src.to_path_buf(),
            what: LAYOUT_FILE.to_string(),
            name: INDEX_FILE.to_string(),
        })?;
    let mut index: ImageIndex = json(&index_bytes, INDEX_FILE)?;
    let mut what = INDEX_FILE.to_string();
    let mut default_name = None;
    let mut depth = 0;
    let manifest_desc = loop {
        let desc = pick(index.manifests(), &what)?.clone();
        default_name = default_name.or_else(|| name_from(&desc));
        if is_manifest(desc.media_type()) {
            break desc;
        }
        depth += 1;
        if depth > MAX_INDEX_DEPTH {
            return Err(Error::BadManifest {
                what,
                reason: "indexes nested too deeply".to_string(),
            });
        }
        let next_what = format!("index {}", short(desc.digest().as_ref()));
        index = json(&read_blob(&source, src, &desc, &what)?, &next_what)?;
        what = next_what;
    };
    let manifest_what = format!("manifest {}", short(manifest_desc.digest().as_ref()));
    let manifest: ImageManifest = json(
        &read_blob(&source, src, &manifest_desc, &what)?,
        &manifest_what,
    )?;

    let config_desc = manifest.config();
    let config_mt = config_desc.media_type();
    if *config_mt != MediaType::ImageConfig && config_mt.to_string() != DOCKER_CONFIG {
        return Err(Error::UnknownMediaType {
            what: format!("{manifest_what}: config"),
            media_type: config_mt.to_string(),
        });
    }
    let digest = config_desc.digest().to_string();
    parse_sha256(&digest, &manifest_what)?;
    let config_json = read_blob(&source, src, config_desc, &manifest_what)?;
    let parsed = parse_image_config(&config_json, &format!("config {}", short(&digest)))?;

    let count = manifest.layers().len();
    if parsed.diff_ids.len() != count {
        return Err(Error::BadManifest {
            what: manifest_what,
            reason: format!(
                "{count} layers but the config lists {} diff_ids",
                parsed.diff_ids.len()
            ),
        });
    }
    let mut layers = Vec::with_capacity(count);
    for (i, (desc, diff_id)) in manifest.layers().iter().zip(&parsed.diff_ids).enumerate() {
        let blob_digest = desc.digest().to_string();
        let layer_what = format!("layer {}/{count} {}", i + 1, short(&blob_digest));
        let path = blob_path(&blob_digest, &layer_what)?;
        parse_sha256(diff_id, &layer_what)?;
        let compression = layer_compression(desc, &layer_what)?;
        if !source.exists(&path) {
            return Err(Error::MissingBlob {
                source_path: src.to_path_buf(),
                what: format!("{manifest_what} ({layer_what})"),
                name: path,
            });
        }
        layers.push(LayerSpec {
            path,
            blob_digest: Some(blob_digest),
            diff_id: Some(diff_id.clone()),
            compression: Some(compression),
            size: desc.size(),
            what: layer_what,
        });
    }
    Ok(LayeredImage {
        source,
        digest,
        config_json,
        config: parsed.config,
        layers,
        default_name,
    })
}
