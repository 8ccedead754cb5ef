//! docker-archive tars (`docker save`): `manifest.json` lists the config file and the layer
//! tars; the config's `rootfs.diff_ids` give each layer's digest, checked while applying.

use std::path::Path;

use serde::Deserialize;

use super::source::Source;
use super::{short, LayerSpec, LayeredImage};
use crate::images::config::parse_image_config;
use crate::images::digest::{is_sha256_hex, parse_sha256, sha256_of};
use crate::images::names::normalize_name;
use crate::images::{Error, Result};

/// The file that marks a docker-archive.
pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// The digest a config file name claims: `<hex>.json` (classic) or `blobs/sha256/<hex>`.
fn claimed_digest(config_path: &str) -> Option<String> {
    let base = config_path.rsplit('/').next().unwrap_or(config_path);
    let hex = base.strip_suffix(".json").unwrap_or(base);
    is_sha256_hex(hex).then(|| format!("sha256:{hex}"))
}

/// Plans the import of the docker-archive in `source` (from `src`).
pub fn plan(source: Source, src: &Path) -> Result<LayeredImage> {
    let bytes = source.read_small(MANIFEST_FILE)?.unwrap_or_default();
    let entries: Vec<Entry> = serde_json::from_slice(&bytes).map_err(|e| Error::Json {
        what: MANIFEST_FILE.to_string(),
        source: e,
    })?;
    let entry = match entries.as_slice() {
        [one] => one,
        [] => {
            return Err(Error::BadManifest {
                what: MANIFEST_FILE.to_string(),
                reason: "lists no image".to_string(),
            })
        }
        many => {
            return Err(Error::BadManifest {
                what: MANIFEST_FILE.to_string(),
                reason: format!(
                    "lists {} images; condo imports one image per archive",
                    many.len()
                ),
            })
        }
    };
    let config_json = source
        .read_small(&entry.config)?
        .ok_or_else(|| Error::MissingBlob {
            source_path: src.to_path_buf(),
            what: MANIFEST_FILE.to_string(),
            name: entry.config.clone(),
        })?;
    let digest = sha256_of(&config_json);
    if let Some(claimed) = claimed_digest(&entry.config) {
        if claimed != digest {
            return Err(Error::DigestMismatch {
                what: format!("config {}", entry.config),
                expected: claimed,
                actual: digest,
            });
        }
    }
    let parsed = parse_image_config(&config_json, &format!("config {}", entry.config))?;
    let count = entry.layers.len();
    if parsed.diff_ids.len() != count {
        return Err(Error::BadManifest {
            what: MANIFEST_FILE.to_string(),
            reason: format!(
                "{count} layers but config {} lists {} diff_ids",
                entry.config,
                parsed.diff_ids.len()
            ),
        });
    }
    let mut layers = Vec::with_capacity(count);
    for (i, (path, diff_id)) in entry.layers.iter().zip(&parsed.diff_ids).enumerate() {
        let what = format!("layer {}/{count} {} ({})", i + 1, short(diff_id), path);
        parse_sha256(diff_id, &what)?;
        let Some((_, size)) = source.open(path)? else {
            return Err(Error::MissingBlob {
                source_path: src.to_path_buf(),
                what: MANIFEST_FILE.to_string(),
                name: path.clone(),
            });
        };
        layers.push(LayerSpec {
            path: path.clone(),
            blob_digest: None,
            diff_id: Some(diff_id.clone()),
            compression: None,
            size,
            what,
        });
    }
    let default_name = entry
        .repo_tags
        .as_ref()
        .and_then(|tags| tags.iter().find_map(|t| normalize_name(t).ok()));
    Ok(LayeredImage {
        source,
        digest,
        config_json,
        config: parsed.config,
        layers,
        default_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_claim_their_digest() {
        let hex = "ab".repeat(32);
        assert_eq!(
            claimed_digest(&format!("{hex}.json")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(
            claimed_digest(&format!("blobs/sha256/{hex}")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(claimed_digest("config.json"), None);
    }
}
