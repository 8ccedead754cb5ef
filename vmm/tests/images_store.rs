//! The image store as a library (`condo_vmm::images::Store`): progress reports, concurrent
//! imports of one image, reference resolution, cleanup of what crashed imports left.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
mod images_fixture;

use std::fs;
use std::path::{Path, PathBuf};

use condo_vmm::images::{Error, Progress, Stage, Store};
use images_fixture::{sha256, two_layer_image, write_oci_layout, Image, LAYER_TYPES};

fn mkfs_erofs_or_skip(test: &str) -> bool {
    let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join("mkfs.erofs").is_file());
    if !found {
        eprintln!("SKIP {test}: mkfs.erofs is not installed (apt-get install erofs-utils)");
    }
    found
}

fn scratch(name: &str) -> PathBuf {
    let dir = common::scratch_dir(&format!("images-store-{name}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The fixture with a 3 MiB file in an extra uncompressed layer, so progress has steps.
fn big_image() -> Image {
    use tar::EntryType::Regular as F;
    let mut image = two_layer_image("big");
    let data: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let layer = images_fixture::tar_of(&[(F, "big", &data, 0o644)]);
    let mut config: serde_json::Value = serde_json::from_slice(&image.config).unwrap();
    config["rootfs"]["diff_ids"][0] = sha256(&layer).into();
    image.config = serde_json::to_vec(&config).unwrap();
    image.layers[0] = layer.clone();
    image.blobs[0] = layer;
    image
}

#[test]
fn progress_reports_layer_bytes_up_to_the_total_then_the_filesystem() {
    if !mkfs_erofs_or_skip("progress_reports_layer_bytes_up_to_the_total_then_the_filesystem") {
        return;
    }
    let dir = scratch("progress");
    let image = big_image();
    write_oci_layout(&dir.join("layout"), &image, "x", LAYER_TYPES);
    let store = Store::open(&dir.join("store")).unwrap();
    let mut events: Vec<Progress> = Vec::new();
    store
        .import(&dir.join("layout"), Some("big"), &mut |p| events.push(p))
        .unwrap();
    let total: u64 = image.blobs.iter().map(|b| b.len() as u64).sum();
    let layers: Vec<&Progress> = events.iter().filter(|p| p.stage == Stage::Layers).collect();
    assert!(
        layers.len() >= 3,
        "expected steps for 3 MiB, got {layers:?}"
    );
    assert!(
        layers.windows(2).all(|w| w[0].done <= w[1].done),
        "{layers:?}"
    );
    assert!(layers.iter().all(|p| p.total == total));
    assert_eq!(layers.last().unwrap().done, total);
    let last = events.last().unwrap();
    assert_eq!(
        (last.stage, last.done, last.total),
        (Stage::Filesystem, 1, 1)
    );
}

#[test]
fn concurrent_imports_of_one_image_store_it_once_with_every_name() {
    if !mkfs_erofs_or_skip("concurrent_imports_of_one_image_store_it_once_with_every_name") {
        return;
    }
    let dir = scratch("concurrent");
    let image = two_layer_image("concurrent");
    write_oci_layout(&dir.join("layout"), &image, "x", LAYER_TYPES);
    let root = dir.join("store");
    let layout = dir.join("layout");
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (root, layout) = (root.clone(), layout.clone());
            std::thread::spawn(move || {
                let store = Store::open(&root).unwrap();
                store
                    .import(&layout, Some(&format!("c:{i}")), &mut |_| {})
                    .unwrap()
                    .digest
            })
        })
        .collect();
    let digests: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(
        digests.iter().all(|d| *d == sha256(&image.config)),
        "{digests:?}"
    );
    let store = Store::open(&root).unwrap();
    let records = store.list().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].names, ["c:0", "c:1", "c:2", "c:3"]);
    assert_eq!(
        fs::read_dir(root.join("tmp")).unwrap().count(),
        0,
        "temporary files left"
    );
}

#[test]
fn references_resolve_by_name_digest_and_unique_prefix() {
    if !mkfs_erofs_or_skip("references_resolve_by_name_digest_and_unique_prefix") {
        return;
    }
    let dir = scratch("resolve");
    let image = two_layer_image("resolve");
    write_oci_layout(&dir.join("layout"), &image, "x", LAYER_TYPES);
    let store = Store::open(&dir.join("store")).unwrap();
    let record = store
        .import(&dir.join("layout"), Some("lib/app:1.0"), &mut |_| {})
        .unwrap();
    let digest = record.digest.clone();
    let hex = record.hex().to_string();
    for reference in [
        "lib/app:1.0".to_string(),
        digest.clone(),
        hex.clone(),
        hex[..12].to_string(),
        format!("sha256:{}", &hex[..20]),
    ] {
        assert_eq!(store.resolve(&reference).unwrap(), record, "{reference}");
    }
    for missing in ["lib/app", "lib/app:2", &hex[..11], "zzzzzzzzzzzzzz"] {
        let err = store.resolve(missing).unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{missing}: {err}");
        assert!(err.to_string().contains(missing), "{err}");
    }
    // A second image sharing the 12-digit prefix (made by hand: real digests do not collide).
    let twin = format!("{}{}", &hex[..12], "0".repeat(52));
    let twin_dir = dir.join("store").join(&twin);
    fs::create_dir(&twin_dir).unwrap();
    let stored = fs::read_to_string(dir.join("store").join(&hex).join("record.json")).unwrap();
    fs::write(twin_dir.join("record.json"), stored.replace(&hex, &twin)).unwrap();
    let err = store.resolve(&hex[..12]).unwrap_err();
    assert!(matches!(err, Error::Ambiguous { .. }), "{err}");
    assert!(err.to_string().contains(&twin), "{err}");
    assert_eq!(store.resolve(&hex[..13]).unwrap().digest, digest);
}

#[test]
fn open_clears_what_crashed_imports_left_but_not_live_ones() {
    let dir = scratch("stale");
    let root = dir.join("store");
    Store::open(&root).unwrap();
    // pid_max is at most 2^22, so this pid cannot be alive.
    let stale = root.join("tmp/import-99999999-0-0");
    let live = root.join(format!("tmp/import-{}-0-0", std::process::id()));
    fs::create_dir_all(stale.join("rootfs")).unwrap();
    fs::create_dir_all(&live).unwrap();
    Store::open(&root).unwrap();
    assert!(!stale.exists());
    assert!(live.exists());
}
