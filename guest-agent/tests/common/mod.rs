//! Shared fixtures of the host tests: a busybox rootfs (built once by the fixture script),
//! bundles with condo's default spec, and a lock so tests that count processes and mounts do
//! not see each other's.

// Test support: failing loudly is the point (clippy.toml allows this only inside #[test] fns).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use condo_agent::runtime::defaults::{default_spec, SpecOptions};

/// Why the test cannot run here, if it cannot.
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("host runtime tests need root (namespaces, mounts, pivot_root)".into());
    }
    if !Path::new("/bin/busybox").exists() && !Path::new("/usr/bin/busybox").exists() {
        return Some("busybox-static is not installed".into());
    }
    None
}

/// Returns early from a test with a printed reason when it cannot run here.
#[macro_export]
macro_rules! require_root {
    () => {
        if let Some(reason) = common::skip_reason() {
            eprintln!("SKIP: {reason}");
            return;
        }
    };
}

static LOCK: Mutex<()> = Mutex::new(());

/// Serialises tests (they count processes and mounts of this test process).
pub fn serial() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("condo-host-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// The shared busybox rootfs, with mount points for the host's libraries (for `probe`).
pub fn rootfs() -> &'static Path {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        let dir = scratch().join("rootfs");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make-busybox-rootfs.sh");
        let status = std::process::Command::new("sh")
            .arg(script)
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "rootfs fixture failed");
        for d in ["lib", "lib64", "usr", "probe"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        dir
    })
}

/// A fresh bundle `name` whose spec is the default one changed by `opts` and then `edit`.
pub fn bundle(name: &str, opts: SpecOptions, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let dir = scratch().join("bundles").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let spec = default_spec(&opts).unwrap();
    let mut value = serde_json::to_value(&spec).unwrap();
    value["root"]["path"] = rootfs().to_string_lossy().into_owned().into();
    edit(&mut value);
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&value).unwrap(),
    )
    .unwrap();
    dir
}

/// Adds read-only binds of the host's libraries and of condo-runtime (at /probe/condo-runtime).
pub fn with_probe(value: &mut serde_json::Value) {
    let mounts = value["mounts"].as_array_mut().unwrap();
    for d in ["/lib", "/lib64", "/usr"] {
        mounts.push(serde_json::json!({"destination": d, "type": "bind", "source": d, "options": ["rbind", "ro"]}));
    }
    mounts.push(
        serde_json::json!({"destination": "/probe/condo-runtime", "type": "bind",
        "source": env!("CARGO_BIN_EXE_condo-runtime"), "options": ["bind", "ro"]}),
    );
}

/// A fresh state root for one test.
pub fn state_root(name: &str) -> PathBuf {
    let dir = scratch().join("state").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

pub fn args(cmd: &[&str]) -> SpecOptions {
    SpecOptions {
        args: cmd.iter().map(|s| s.to_string()).collect(),
        ..SpecOptions::default()
    }
}

/// A pipe as (read end, write end).
pub fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 returned two new descriptors we own.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Reads a descriptor to EOF (every writer must be closed or exited).
pub fn read_all(fd: OwnedFd) -> String {
    let mut s = String::new();
    std::fs::File::from(fd).read_to_string(&mut s).unwrap();
    s
}

/// Children of this test process (all its threads).
pub fn children() -> Vec<i32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    out
}

pub fn mount_count() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count()
}

pub fn raw(fd: &OwnedFd) -> i32 {
    fd.as_raw_fd()
}
