//! Images as the container verbs need them: resolved in the store (C3, `condo_vmm::images`),
//! with the config that feeds the container's spec.

use anyhow::{Context, Result};
use condo_vmm::images::{self, ImageConfig, Store};
use condo_vmm::tenant::AttachedImage;

/// An image resolved in the store.
pub struct ResolvedImage {
    pub attached: AttachedImage,
    pub config: ImageConfig,
}

/// Resolves `reference` (name[:tag], digest or a unique digest prefix) in the default store.
pub fn resolve(reference: &str) -> Result<ResolvedImage> {
    let root = images::default_root();
    let store = Store::open(&root)
        .with_context(|| format!("cannot open the image store {}", root.display()))?;
    let record = store.resolve(reference).with_context(|| {
        format!("unknown image {reference:?} (see `condo image ls`; `condo image import PATH` adds one)")
    })?;
    Ok(ResolvedImage {
        attached: AttachedImage {
            digest: record.digest.clone(),
            names: record.names.clone(),
            fs_path: record.fs_path.clone(),
            fs_type: record.fs_type.clone(),
        },
        config: record.config,
    })
}
