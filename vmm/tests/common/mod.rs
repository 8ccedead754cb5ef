//! Helpers shared by the integration tests: run `condo` with a deadline, build the
//! payloads once, tell whether KVM is here.
#![allow(dead_code)]
// Test support: failing loudly is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

/// Longest any single VM run may take in a test.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// The `condo` binary under test. As root it jails the VMM; on a host without cgroup v2
/// controllers (this project's hybrid hosts) the jail then runs without its cgroup, which
/// the operator must ask for: the tests ask.
pub fn condo() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_condo"));
    if !host_has_cgroup2_controllers() {
        cmd.env("CONDO_JAIL_NO_CGROUP", "1");
    }
    cmd
}

/// Whether /sys/fs/cgroup is a cgroup v2 hierarchy with the cpu, memory and pids controllers.
pub fn host_has_cgroup2_controllers() -> bool {
    std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").is_ok_and(|listed| {
        ["cpu", "memory", "pids"]
            .iter()
            .all(|c| listed.split_whitespace().any(|l| l == *c))
    })
}

/// Whether KVM tests can run; prints why when they cannot.
pub fn kvm_or_skip(test: &str) -> bool {
    let usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !usable {
        eprintln!("SKIP {test}: /dev/kvm is absent or not accessible");
    }
    usable
}

/// Directory holding the built payloads (`<name>.elf`).
pub fn payloads() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("payloads");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/payloads/build.sh");
        let status = Command::new("sh")
            .arg(&script)
            .arg(&out)
            .status()
            .expect("run payload build.sh");
        assert!(status.success(), "{} failed", script.display());
        out
    })
}

/// Path of payload `name`.
pub fn payload(name: &str) -> PathBuf {
    payloads().join(format!("{name}.elf"))
}

/// Runs `cmd` with `stdin` bytes, waiting at most RUN_TIMEOUT (the child is killed after).
pub fn run_with_input(mut cmd: Command, stdin: &[u8]) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn condo");
    let pid = child.id();
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("write stdin");
    drop(input);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(RUN_TIMEOUT) {
        Ok(out) => out.expect("wait for condo"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("condo did not exit within {RUN_TIMEOUT:?}");
        }
    }
}

/// Runs `cmd` with empty stdin.
pub fn run(cmd: Command) -> Output {
    run_with_input(cmd, b"")
}

/// stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A scratch directory `name` under the cargo test tmpdir.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A scratch file with `contents`.
pub fn scratch_file(dir: &str, name: &str, contents: &[u8]) -> PathBuf {
    let path = scratch_dir(dir).join(name);
    std::fs::write(&path, contents).unwrap();
    path
}
