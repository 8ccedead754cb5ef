//! `condo image import|ls|rm` end to end with a temporary CONDO_STATE_DIR: OCI layouts
//! (directory and tar), docker-archives and root filesystem directories built here from
//! scratch; bad input fails with a message naming the problem and leaves the store as it was.
// Test support: failing loudly is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
mod images_fixture;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use images_fixture::{
    gzip, sha256, tar_of, two_layer_image, write_docker_archive, write_oci_layout, Image,
    LAYER_TYPES,
};

fn mkfs_erofs_or_skip(test: &str) -> bool {
    let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join("mkfs.erofs").is_file());
    if !found {
        eprintln!("SKIP {test}: mkfs.erofs is not installed (apt-get install erofs-utils)");
    }
    found
}

struct Env {
    dir: PathBuf,
}

impl Env {
    fn new(name: &str) -> Env {
        let dir = common::scratch_dir(&format!("images-{name}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Env { dir }
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn condo(&self, args: &[&str]) -> Output {
        let mut cmd: Command = common::condo();
        cmd.env("CONDO_STATE_DIR", self.state())
            .env("CONDO_RUN_DIR", self.path("run"))
            .arg("image")
            .args(args);
        common::run(cmd)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.condo(args);
        assert!(
            out.status.success(),
            "condo image {args:?} failed: {}",
            common::stderr(&out)
        );
        common::stdout(&out)
    }

    /// Runs a failing command; checks the exit code, the message and that the store is
    /// exactly as it was.
    fn fails(&self, args: &[&str], needles: &[&str]) {
        let before = listing(&self.state());
        let out = self.condo(args);
        let err = common::stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        for needle in needles {
            assert!(
                err.contains(needle),
                "{args:?}: expected {needle:?} in {err:?}"
            );
        }
        assert_eq!(listing(&self.state()), before, "{args:?} changed the store");
    }

    fn records(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(&["ls", "--json"])).unwrap()
    }
}

/// Every path under `dir` with its size, sorted: the store's observable state.
fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            }
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            out.push((rel, if meta.is_dir() { 0 } else { meta.len() }));
        }
    }
    out.sort();
    out
}

/// Extracts a stored erofs image with fsck.erofs (which also checks it).
fn extract(env: &Env, fs_path: &str) -> PathBuf {
    let out_dir = env.path("extracted");
    let _ = fs::remove_dir_all(&out_dir);
    let status = Command::new("fsck.erofs")
        .arg(format!("--extract={}", out_dir.display()))
        .arg(fs_path)
        .status()
        .unwrap();
    assert!(status.success(), "fsck.erofs --extract {fs_path}");
    out_dir
}

fn names_of(record: &serde_json::Value) -> Vec<String> {
    serde_json::from_value(record["names"].clone()).unwrap()
}

#[test]
fn oci_layout_applies_layers_with_whiteouts_and_keeps_the_config() {
    if !mkfs_erofs_or_skip("oci_layout_applies_layers_with_whiteouts_and_keeps_the_config") {
        return;
    }
    let env = Env::new("oci-dir");
    let image = two_layer_image("echo hi");
    write_oci_layout(&env.path("layout"), &image, "fixture:1", LAYER_TYPES);
    let layout = env.path("layout");
    let stdout = env.ok(&["import", layout.to_str().unwrap(), "--name", "fix:v1"]);
    let digest = sha256(&image.config);
    assert_eq!(stdout.lines().last(), Some(digest.as_str()));

    let records = env.records();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r["digest"], digest.as_str());
    assert_eq!(names_of(r), ["fix:v1"]);
    assert_eq!(r["fs_type"], "erofs");
    assert_eq!(
        r["config"]["entrypoint"],
        serde_json::json!(["/bin/sh", "-c"])
    );
    assert_eq!(r["config"]["cmd"], serde_json::json!(["echo hi"]));
    assert_eq!(
        r["config"]["env"],
        serde_json::json!(["PATH=/bin", "FIXTURE=1"])
    );
    assert_eq!(r["config"]["working_dir"], "/etc");
    assert_eq!(r["config"]["user"], "0:0");
    let fs_path = r["fs_path"].as_str().unwrap();
    assert_eq!(
        fs::metadata(fs_path).unwrap().len(),
        r["size"].as_u64().unwrap()
    );

    let root = extract(&env, fs_path);
    assert_eq!(
        fs::read(root.join("etc/motd")).unwrap(),
        b"hello from layer 2\n"
    );
    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("tool")
    );
    assert!(!root.join("gone").exists(), "whiteout ignored");
    let opaque: Vec<_> = fs::read_dir(root.join("opaque"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(opaque, ["upper"], "opaque directory kept lower content");
}

#[test]
fn oci_tar_and_docker_archive_of_one_image_are_stored_once() {
    if !mkfs_erofs_or_skip("oci_tar_and_docker_archive_of_one_image_are_stored_once") {
        return;
    }
    let env = Env::new("dedupe");
    let image = two_layer_image("true");
    write_oci_layout(&env.path("layout"), &image, "fixture:1", LAYER_TYPES);
    fs::write(
        env.path("oci.tar"),
        images_fixture::tar_dir(&env.path("layout")),
    )
    .unwrap();
    write_docker_archive(&env.path("docker.tar"), &image, "dock:latest");

    // Without --name: the names the OCI ref.name annotation and the docker-archive's
    // RepoTags carry.
    let d1 = env.ok(&["import", env.path("oci.tar").to_str().unwrap()]);
    let d2 = env.ok(&["import", env.path("docker.tar").to_str().unwrap()]);
    assert_eq!(d1, d2);
    let records = env.records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(names_of(&records[0]), ["dock:latest", "fixture:1"]);
    let images_on_disk = || {
        fs::read_dir(env.state().join("images"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().len() == 64)
            .count()
    };
    assert_eq!(images_on_disk(), 1);

    // The same OCI tar, gzipped.
    let oci_tar = fs::read(env.path("oci.tar")).unwrap();
    fs::write(env.path("oci.tar.gz"), gzip(&oci_tar)).unwrap();
    let d3 = env.ok(&[
        "import",
        env.path("oci.tar.gz").to_str().unwrap(),
        "--name",
        "other",
    ]);
    assert_eq!(d1, d3);
    let out = env.ok(&["rm", "dock"]);
    assert!(
        out.contains("untagged: dock:latest") && !out.contains("deleted"),
        "{out}"
    );
    assert_eq!(images_on_disk(), 1);
    let prefix = &d1.trim()["sha256:".len()..][..12];
    let out = env.ok(&["rm", prefix]);
    assert!(
        out.contains("untagged: other:latest") && out.contains("deleted"),
        "{out}"
    );
    assert_eq!(images_on_disk(), 0);
    assert!(env.records().is_empty());
}

#[test]
fn rootfs_directory_imports_once_and_rm_of_last_name_deletes_it() {
    if !mkfs_erofs_or_skip("rootfs_directory_imports_once_and_rm_of_last_name_deletes_it") {
        return;
    }
    let env = Env::new("rootfs");
    let rootfs = env.path("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::write(rootfs.join("bin/hello"), b"hello").unwrap();
    std::os::unix::fs::symlink("hello", rootfs.join("bin/sh")).unwrap();
    let d1 = env.ok(&["import", rootfs.to_str().unwrap(), "--name", "r"]);
    let d2 = env.ok(&["import", rootfs.to_str().unwrap(), "--name", "r:2"]);
    assert_eq!(d1, d2);
    let records = env.records();
    assert_eq!(names_of(&records[0]), ["r:2", "r:latest"]);
    let ls = env.ok(&["ls"]);
    assert!(
        ls.contains("r:latest") && ls.contains(&d1.trim()[7..19]),
        "{ls}"
    );
    env.ok(&["rm", "r"]);
    assert_eq!(env.records().len(), 1);
    let out = env.ok(&["rm", "r:2"]);
    assert!(out.contains("deleted"), "{out}");
    assert!(env.records().is_empty());
}

/// A stored image for the bad-input tests to leave alone.
fn env_with_one_image(name: &str) -> Option<(Env, Image)> {
    if !mkfs_erofs_or_skip(name) {
        return None;
    }
    let env = Env::new(name);
    let image = two_layer_image("true");
    write_oci_layout(&env.path("good"), &image, "x", LAYER_TYPES);
    env.ok(&[
        "import",
        env.path("good").to_str().unwrap(),
        "--name",
        "good",
    ]);
    Some((env, image))
}

fn import_fails(env: &Env, src: &Path, needles: &[&str]) {
    env.fails(&["import", src.to_str().unwrap(), "--name", "bad"], needles);
}

#[test]
fn bad_manifests_fail_and_leave_the_store_unchanged() {
    let Some((env, _)) = env_with_one_image("bad-manifests") else {
        return;
    };
    // Another image: a stored one is recognised by its config digest and not read again.
    let image = two_layer_image("another");
    let missing_layer = env.path("missing");
    write_oci_layout(&missing_layer, &image, "x", LAYER_TYPES);
    let gone = missing_layer
        .join("blobs/sha256")
        .join(&sha256(&image.blobs[1])[7..]);
    fs::remove_file(&gone).unwrap();
    import_fails(
        &env,
        &missing_layer,
        &["missing", &sha256(&image.blobs[1])[7..], "layer 2/2"],
    );

    let mismatch = env.path("mismatch");
    write_oci_layout(&mismatch, &image, "x", LAYER_TYPES);
    let blob = mismatch
        .join("blobs/sha256")
        .join(&sha256(&image.blobs[0])[7..]);
    let mut bytes = fs::read(&blob).unwrap();
    bytes[1030] ^= 0xff; // inside bin/tool's data, so the tar still parses
    fs::write(&blob, bytes).unwrap();
    import_fails(&env, &mismatch, &["digest mismatch", "layer 1/2"]);

    let unknown = env.path("unknown-type");
    write_oci_layout(&unknown, &image, "x", [LAYER_TYPES[0], "application/x-foo"]);
    import_fails(
        &env,
        &unknown,
        &["unknown media type", "application/x-foo", "layer 2/2"],
    );

    write_docker_archive(&env.path("whole.tar"), &image, "d:1");
    let whole = fs::read(env.path("whole.tar")).unwrap();
    fs::write(env.path("truncated.tar"), &whole[..whole.len() / 2]).unwrap();
    import_fails(&env, &env.path("truncated.tar"), &["truncated"]);

    fs::write(
        env.path("garbage.bin"),
        b"not an image at all, just some bytes",
    )
    .unwrap();
    import_fails(
        &env,
        &env.path("garbage.bin"),
        &["garbage.bin", "not a readable tar archive"],
    );
    import_fails(&env, &env.path("does-not-exist"), &["does-not-exist"]);
    env.fails(
        &[
            "import",
            env.path("good").to_str().unwrap(),
            "--name",
            "Bad Name",
        ],
        &["invalid image name", "\"Bad Name\""],
    );
    env.fails(&["rm", "nope"], &["no image \"nope\""]);
}

/// An image whose second layer is `layer` (digests all correct).
fn image_with_layer(layer: Vec<u8>, blob: Vec<u8>) -> Image {
    let mut image = two_layer_image("true");
    let mut config: serde_json::Value = serde_json::from_slice(&image.config).unwrap();
    config["rootfs"]["diff_ids"][1] = sha256(&layer).into();
    image.config = serde_json::to_vec(&config).unwrap();
    image.layers[1] = layer;
    image.blobs[1] = blob;
    image
}

#[test]
fn hostile_layers_fail_and_leave_the_store_unchanged() {
    let Some((env, _)) = env_with_one_image("hostile-layers") else {
        return;
    };
    use tar::EntryType::{Link, Regular as F, Symlink};
    let cases: [(&str, Vec<u8>, &[&str]); 4] = [
        (
            "dotdot",
            tar_of(&[(F, "../evil", b"x", 0o644)]),
            &["\"../evil\"", ".."],
        ),
        (
            "absolute",
            tar_of(&[(F, "/etc/evil", b"x", 0o644)]),
            &["\"/etc/evil\"", "absolute"],
        ),
        (
            "symlink-escape",
            tar_of(&[
                (Symlink, "esc", b"../..", 0o777),
                (F, "esc/evil", b"x", 0o644),
            ]),
            &["\"esc/evil\"", "outside the root"],
        ),
        (
            "hardlink-escape",
            tar_of(&[(Link, "h", b"../../etc/passwd", 0o644)]),
            &["\"h\"", "hardlink target"],
        ),
    ];
    for (name, layer, needles) in cases {
        let dir = env.path(name);
        let blob = gzip(&layer);
        write_oci_layout(&dir, &image_with_layer(layer, blob), "x", LAYER_TYPES);
        import_fails(&env, &dir, needles);
        assert!(!env.dir.join("evil").exists() && !env.state().join("evil").exists());
    }
    // zstd garbage likewise.
    let garbage = b"\x28\xb5\x2f\xfdgarbage that is not a zstd frame".to_vec();
    let dir = env.path("zstd-garbage");
    let zstd = "application/vnd.oci.image.layer.v1.tar+zstd";
    write_oci_layout(
        &dir,
        &image_with_layer(b"x".to_vec(), garbage),
        "x",
        [LAYER_TYPES[0], zstd],
    );
    import_fails(&env, &dir, &["layer 2/2", "invalid zstd data"]);
    // gzip garbage with correct digests: the decompressor fails, naming the layer.
    let garbage = b"\x1f\x8b\x08\x00garbage that is not deflate".to_vec();
    let dir = env.path("gzip-garbage");
    write_oci_layout(
        &dir,
        &image_with_layer(b"x".to_vec(), garbage),
        "x",
        LAYER_TYPES,
    );
    import_fails(&env, &dir, &["layer 2/2", "invalid gzip data"]);
}

#[test]
fn ext4_is_the_fallback_filesystem() {
    if !Path::new("/sbin/mkfs.ext4").exists() && !Path::new("/usr/sbin/mkfs.ext4").exists() {
        eprintln!("SKIP ext4_is_the_fallback_filesystem: mkfs.ext4 is not installed (e2fsprogs)");
        return;
    }
    let env = Env::new("ext4");
    let rootfs = env.path("rootfs");
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::write(rootfs.join("etc/hostname"), b"condo\n").unwrap();
    let mut cmd: Command = common::condo();
    cmd.env("CONDO_STATE_DIR", env.state())
        .env("CONDO_IMAGE_FS", "ext4")
        .args(["image", "import", rootfs.to_str().unwrap()]);
    let out = common::run(cmd);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let records = env.records();
    assert_eq!(records[0]["fs_type"], "ext4");
    let fs_path = records[0]["fs_path"].as_str().unwrap();
    assert!(fs_path.ends_with("rootfs.ext4"), "{fs_path}");
    let check = Command::new("e2fsck")
        .args(["-fn", fs_path])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "e2fsck: {}",
        String::from_utf8_lossy(&check.stdout)
    );
}

#[test]
fn zstd_layers_import() {
    if !mkfs_erofs_or_skip("zstd_layers_import") {
        return;
    }
    let env = Env::new("zstd");
    use tar::EntryType::Regular as F;
    let layer = tar_of(&[(F, "etc/zstd", b"from a zstd layer", 0o644)]);
    let blob =
        ruzstd::encoding::compress_to_vec(&layer[..], ruzstd::encoding::CompressionLevel::Fastest);
    let zstd = "application/vnd.oci.image.layer.v1.tar+zstd";
    write_oci_layout(
        &env.path("layout"),
        &image_with_layer(layer, blob),
        "x",
        [LAYER_TYPES[0], zstd],
    );
    env.ok(&[
        "import",
        env.path("layout").to_str().unwrap(),
        "--name",
        "z",
    ]);
    let records = env.records();
    let root = extract(&env, records[0]["fs_path"].as_str().unwrap());
    assert_eq!(
        fs::read(root.join("etc/zstd")).unwrap(),
        b"from a zstd layer"
    );
    assert!(root.join("bin/tool").is_file());
}

#[test]
fn rm_refuses_an_image_a_tenant_has_attached() {
    let Some((env, image)) = env_with_one_image("in-use") else {
        return;
    };
    let digest = sha256(&image.config);
    let run = env.path("run");
    let tenant = run.join("tenants/acme");
    fs::create_dir_all(&tenant).unwrap();
    let config = serde_json::json!({
        "name": "acme", "isolation": "vm", "vcpus": 1, "memory_mib": 128,
        "images": [{"digest": digest, "names": ["good:latest"], "fs_path": "/x", "fs_type": "erofs"}],
        "created_unix": 0
    });
    fs::write(tenant.join("config.json"), config.to_string()).unwrap();
    let rm = |reference: &str| {
        let before = listing(&env.state());
        let mut cmd: Command = common::condo();
        cmd.env("CONDO_STATE_DIR", env.state())
            .env("CONDO_RUN_DIR", &run)
            .args(["image", "rm", reference]);
        let out = common::run(cmd);
        (out, before)
    };
    for reference in ["good", &digest] {
        let (out, before) = rm(reference);
        let err = common::stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("in use by tenant acme") && err.contains(&digest),
            "{err}"
        );
        assert_eq!(
            listing(&env.state()),
            before,
            "rm {reference} changed the store"
        );
    }
    fs::remove_dir_all(&tenant).unwrap();
    let (out, _) = rm("good");
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(env.records().is_empty());
}
