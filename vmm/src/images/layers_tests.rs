//! Layer application: content, metadata, whiteouts and hostile entries.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;
use crate::images::testutil::{gzip, tar_of, E};

struct Fixture {
    _dir: tempfile::TempDir,
    outside: std::path::PathBuf,
    root_path: std::path::PathBuf,
    root: Root,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root_path = dir.path().join("root");
    fs::create_dir(&root_path).unwrap();
    let root = Root::open(&root_path).unwrap();
    Fixture {
        outside: dir.path().to_path_buf(),
        _dir: dir,
        root_path,
        root,
    }
}

fn apply_bytes(f: &Fixture, bytes: &[u8]) -> Result<LayerStats> {
    apply(&f.root, &mut &bytes[..], "layer 1/1")
}

/// Every path under `dir`, sorted, relative.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            out.push(rel);
        }
    }
    out.sort();
    out
}

#[test]
fn applies_files_dirs_symlinks_hardlinks_and_modes() {
    let f = fixture();
    let layer = tar_of(&[
        E::Dir("./", 0o755),
        E::Dir("./bin/", 0o755),
        E::File("./bin/busybox", b"\x7fELF fake", 0o4755),
        E::Sym("./bin/sh", "busybox"),
        E::Hard("./bin/ash", "./bin/busybox"),
        E::File("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644),
        E::Dir("ro/", 0o555),
        E::File("ro/inside", b"x", 0o400),
        E::Fifo("run/fifo"),
    ]);
    let stats = apply_bytes(&f, &layer).unwrap();
    assert_eq!(stats.entries, 9);
    let r = &f.root_path;
    assert_eq!(fs::read(r.join("bin/busybox")).unwrap(), b"\x7fELF fake");
    let meta = fs::metadata(r.join("bin/busybox")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o4755);
    assert_eq!(meta.mtime(), 1_700_000_000);
    assert_eq!(
        fs::read_link(r.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(fs::metadata(r.join("bin/ash")).unwrap().ino(), meta.ino());
    // Parents without their own entry are created.
    assert!(r.join("etc").is_dir());
    assert_eq!(fs::metadata(r.join("ro")).unwrap().mode() & 0o777, 0o555);
    assert_eq!(fs::read(r.join("ro/inside")).unwrap(), b"x");
    assert!(fs::symlink_metadata(r.join("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
}

#[test]
fn device_nodes_are_made_when_permitted_and_skipped_otherwise() {
    let f = fixture();
    let stats = apply_bytes(&f, &tar_of(&[E::Char("dev/null", 1, 3)])).unwrap();
    let path = f.root_path.join("dev/null");
    if Uid::effective().is_root() && stats.skipped_devices == 0 {
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_char_device());
        assert_eq!(meta.rdev(), makedev(1, 3));
    } else {
        assert_eq!(stats.skipped_devices, 1);
        assert!(!path.exists());
    }
}

#[test]
fn later_layers_replace_and_whiteout_lower_entries() {
    let f = fixture();
    apply_bytes(
        &f,
        &tar_of(&[
            E::File("a", b"lower", 0o644),
            E::File("gone", b"x", 0o644),
            E::Dir("tree/", 0o755),
            E::File("tree/deep", b"x", 0o644),
            E::File("becomes-dir", b"x", 0o644),
            E::Dir("was-dir/", 0o755),
            E::File("was-dir/x", b"x", 0o644),
        ]),
    )
    .unwrap();
    apply_bytes(
        &f,
        &tar_of(&[
            E::File("a", b"upper", 0o600),
            E::File(".wh.gone", b"", 0o644),
            E::File(".wh.tree", b"", 0o644),
            E::File(".wh.never-existed", b"", 0o644),
            E::Dir("becomes-dir/", 0o755),
            E::Sym("was-dir", "a"),
        ]),
    )
    .unwrap();
    let r = &f.root_path;
    assert_eq!(fs::read(r.join("a")).unwrap(), b"upper");
    assert_eq!(
        fs::metadata(r.join("a")).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(tree(r), ["a", "becomes-dir", "was-dir"]);
    assert!(fs::symlink_metadata(r.join("was-dir"))
        .unwrap()
        .is_symlink());
}

#[test]
fn opaque_directories_hide_all_lower_content_but_keep_this_layers() {
    let f = fixture();
    apply_bytes(
        &f,
        &tar_of(&[
            E::Dir("d/", 0o755),
            E::File("d/old", b"x", 0o644),
            E::Dir("d/sub/", 0o755),
            E::File("d/sub/old", b"x", 0o644),
            E::File("keep", b"x", 0o644),
        ]),
    )
    .unwrap();
    // The marker after this layer's own entries: they stay; lower ones go, even inside a
    // directory this layer re-creates.
    apply_bytes(
        &f,
        &tar_of(&[
            E::Dir("d/", 0o755),
            E::Dir("d/sub/", 0o755),
            E::File("d/sub/new", b"n", 0o644),
            E::File("d/.wh..wh..opq", b"", 0o644),
            E::File("d/new", b"n", 0o644),
        ]),
    )
    .unwrap();
    assert_eq!(
        tree(&f.root_path),
        ["d", "d/new", "d/sub", "d/sub/new", "keep"]
    );
}

fn refused(f: &Fixture, entries: &[E<'_>], needle: &str) {
    let err = apply_bytes(f, &tar_of(entries)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::UnsafeEntry { .. }), "{msg}");
    assert!(msg.contains(needle), "expected {needle:?} in {msg:?}");
    assert_eq!(
        tree(&f.outside),
        tree_without_root(f),
        "something was written outside"
    );
}

fn tree_without_root(f: &Fixture) -> Vec<String> {
    let mut t = tree(&f.outside);
    t.retain(|p| p == "root" || p.starts_with("root/"));
    t
}

#[test]
fn refuses_dotdot_and_absolute_entries() {
    let f = fixture();
    refused(&f, &[E::File("../evil", b"x", 0o644)], "\"../evil\"");
    refused(&f, &[E::File("a/../../evil", b"x", 0o644)], "..");
    refused(&f, &[E::File("/etc/evil", b"x", 0o644)], "absolute path");
    refused(&f, &[E::Hard("link", "../outside")], "hardlink target");
    refused(&f, &[E::Hard("link", "/etc/passwd")], "absolute path");
}

#[test]
fn refuses_symlinks_that_lead_later_entries_out_of_the_root() {
    let f = fixture();
    refused(
        &f,
        &[E::Sym("esc", ".."), E::File("esc/pwned", b"x", 0o644)],
        "leads outside the root filesystem",
    );
    refused(
        &f,
        &[E::Sym("abs", "/"), E::File("abs/pwned", b"x", 0o644)],
        "\"abs/pwned\"",
    );
    refused(
        &f,
        &[
            E::Dir("a/", 0o755),
            E::Sym("a/up", "../.."),
            E::Hard("x", "a/up/outside-file"),
        ],
        "leads outside",
    );
    assert!(!f.outside.join("pwned").exists());
}

#[test]
fn follows_symlinks_that_stay_inside() {
    let f = fixture();
    let layer = tar_of(&[
        E::Dir("usr/lib/", 0o755),
        E::Sym("lib", "usr/lib"),
        E::File("lib/libc.so", b"c", 0o644),
    ]);
    apply_bytes(&f, &layer).unwrap();
    assert_eq!(fs::read(f.root_path.join("usr/lib/libc.so")).unwrap(), b"c");
}

#[test]
fn truncated_tar_is_named() {
    let f = fixture();
    let full = tar_of(&[E::File("big", &[7u8; 4096], 0o644)]);
    let err = apply_bytes(&f, &full[..512 + 1000])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("truncated") && err.contains("\"big\""),
        "{err}"
    );
    let err = apply_bytes(&f, &full[..300]).unwrap_err().to_string();
    assert!(err.contains("layer 1/1"), "{err}");
}

#[test]
fn gzip_layers_apply_and_garbage_is_an_error() {
    let f = fixture();
    let layer = gzip(&tar_of(&[E::File("z", b"zipped", 0o644)]));
    let mut reader = Compression::sniff(&layer).decoder(&layer[..]);
    apply(&f.root, &mut reader, "layer gz").unwrap();
    assert_eq!(fs::read(f.root_path.join("z")).unwrap(), b"zipped");

    let mut garbage = layer.clone();
    garbage.truncate(10);
    garbage.extend_from_slice(b"this is not deflate data at all");
    let mut reader = Compression::Gzip.decoder(&garbage[..]);
    let err = apply(&f.root, &mut reader, "layer gz")
        .unwrap_err()
        .to_string();
    assert!(err.contains("layer gz"), "{err}");
}

#[test]
fn zstd_layers_apply() {
    let f = fixture();
    let tar = tar_of(&[E::File("zs", b"zstd data", 0o644)]);
    let layer =
        ruzstd::encoding::compress_to_vec(&tar[..], ruzstd::encoding::CompressionLevel::Fastest);
    assert_eq!(Compression::sniff(&layer), Compression::Zstd);
    let mut reader = Compression::Zstd.decoder(&layer[..]);
    apply(&f.root, &mut reader, "layer zst").unwrap();
    assert_eq!(fs::read(f.root_path.join("zs")).unwrap(), b"zstd data");
}

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let c_name = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: NUL-terminated strings and a live buffer whose length is passed with it.
    let n = unsafe {
        libc::lgetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

#[test]
fn pax_records_give_big_ids_mtimes_and_wanted_xattrs() {
    let f = fixture();
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([
        ("uid", &b"100000"[..]),
        ("mtime", b"1800000000.5"),
        ("SCHILY.xattr.user.condo", b"yes"),
        ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
    ])
    .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_path("f").unwrap();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    apply_bytes(&f, &b.into_inner().unwrap()).unwrap();
    let path = f.root_path.join("f");
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.mtime(), 1_800_000_000);
    if Uid::effective().is_root() {
        assert_eq!(meta.uid(), 100_000);
    }
    assert_eq!(get_xattr(&path, "user.condo").as_deref(), Some(&b"yes"[..]));
    assert_eq!(get_xattr(&path, "trusted.overlay.opaque"), None);
}

#[test]
fn a_replaced_parent_is_not_reused_from_the_cache() {
    let f = fixture();
    let layer = tar_of(&[
        E::Dir("a/b/", 0o755),
        E::File("a/b/one", b"1", 0o644),
        E::File("a", b"now a file", 0o644),
        E::File("a/b/two", b"2", 0o644),
    ]);
    let err = apply_bytes(&f, &layer).unwrap_err().to_string();
    assert!(
        err.contains("\"a/b/two\"") && err.contains("not a directory"),
        "{err}"
    );
}
