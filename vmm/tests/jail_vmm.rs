//! `condo vm run` jails its VMM: seen from the host's /proc while a payload waits for input,
//! and through how the VMM dies when it breaks its jail's rules. Needs root and /dev/kvm.
// Test support: failing loudly is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
mod jail_support;

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{condo, kvm_or_skip, payload, run, stderr, RUN_TIMEOUT};
use jail_support::{field_of, find_jailed_vmm, thread_statuses};

/// comm of the kernel's kvm-nx-lpage-recovery worker (cut to 15 characters).
const KVM_WORKER: &str = "kvm-nx-lpage-re";
const MARKER_TIMEOUT: Duration = Duration::from_secs(20);

fn root_kvm_or_skip(test: &str) -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP {test}: the jail needs root");
        return false;
    }
    kvm_or_skip(test)
}

/// A scratch directory per test: jails, consoles.
fn scratch(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("jail-vmm")
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn jailed(base: &Path, id: &str, payload_name: &str, extra: &[&str]) -> Command {
    let mut cmd = condo();
    cmd.args(["vm", "run", "--memory", "64", "--kernel"])
        .arg(payload(payload_name))
        .arg("--jail-base")
        .arg(base)
        .args(["--jail-id", id])
        .args(extra);
    cmd
}

/// A VMM running echo_input, waiting for its line: every thread is up and filtered by then.
struct Waiting {
    child: Child,
    stdin: std::process::ChildStdin,
}

impl Drop for Waiting {
    /// A failed test still ends its VMM: SIGTERM makes condo end the jail and remove it.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signals our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let _ = self.child.wait();
        }
    }
}

impl Waiting {
    fn start(mut cmd: Command) -> Waiting {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 256];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(5).any(|w| w == b"got: ") {
                    let _ = tx.send(());
                }
            }
        });
        let waiting = Waiting { child, stdin };
        if rx.recv_timeout(MARKER_TIMEOUT).is_err() {
            let mut waiting = waiting;
            let _ = waiting.child.kill();
            panic!("the payload did not print its prompt within {MARKER_TIMEOUT:?}");
        }
        waiting
    }

    fn vmm_pid(&self) -> i32 {
        find_jailed_vmm(self.child.id() as i32).unwrap()
    }

    /// Sends the line the payload waits for and returns condo's exit code.
    fn finish(mut self) -> i32 {
        self.stdin.write_all(b"x\n").unwrap();
        self.wait()
    }

    /// SIGTERM to condo (its console is a file: no input reaches the guest).
    fn terminate(self) -> i32 {
        // SAFETY: signals our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.wait()
    }

    fn wait(self) -> i32 {
        let pid = self.child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut waiting = self;
            let _ = tx.send(waiting.child.wait());
        });
        match rx.recv_timeout(RUN_TIMEOUT) {
            Ok(status) => status.unwrap().code().unwrap_or(-1),
            Err(_) => {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status();
                panic!("condo did not exit within {RUN_TIMEOUT:?}");
            }
        }
    }
}

#[test]
fn every_vmm_thread_is_filtered_unprivileged_and_the_tenants() {
    if !root_kvm_or_skip("every_vmm_thread_is_filtered_unprivileged_and_the_tenants") {
        return;
    }
    let base = scratch("threads");
    let vm = Waiting::start(jailed(&base, "threads", "echo_input", &["--vcpus", "2"]));
    let vmm = vm.vmm_pid();
    let tasks = thread_statuses(vmm).unwrap();
    let names: Vec<String> = tasks.iter().map(|(_, s)| field_of(s, "Name")).collect();
    // The main thread, one per vCPU, and KVM's own worker.
    assert_eq!(
        names.iter().filter(|n| *n == "condo").count(),
        1,
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| n.starts_with("vcpu")).count(),
        2,
        "{names:?}"
    );
    let uid = field_of(&tasks[0].1, "Uid");
    assert!(!uid.starts_with("0\t"), "the VMM runs as root: {uid}");
    for (tid, status) in &tasks {
        // KVM's NX huge page recovery worker is a kernel task in the VMM's thread group, made
        // with the VM (before the filters); it never runs user code. Everything else holds.
        if field_of(status, "Name") != KVM_WORKER {
            assert_eq!(field_of(status, "Seccomp"), "2", "thread {tid}");
        }
        assert_eq!(
            field_of(status, "CapEff"),
            "0000000000000000",
            "thread {tid}"
        );
        assert_eq!(
            field_of(status, "CapPrm"),
            "0000000000000000",
            "thread {tid}"
        );
        assert_eq!(
            field_of(status, "CapBnd"),
            "0000000000000000",
            "thread {tid}"
        );
        assert_eq!(
            field_of(status, "CapAmb"),
            "0000000000000000",
            "thread {tid}"
        );
        assert_eq!(field_of(status, "NoNewPrivs"), "1", "thread {tid}");
        assert_eq!(field_of(status, "Uid"), uid, "thread {tid}");
    }
    assert_eq!(vm.finish(), 0);
    assert!(!base.join("threads").exists(), "the jail was left behind");
}

#[test]
fn a_forbidden_syscall_kills_the_vmm_with_sigsys_in_each_thread_kind() {
    if !root_kvm_or_skip("a_forbidden_syscall_kills_the_vmm_with_sigsys_in_each_thread_kind") {
        return;
    }
    let base = scratch("sigsys");
    for kind in ["vmm", "vcpu"] {
        let id = format!("sigsys-{kind}");
        let out = run(jailed(
            &base,
            &id,
            "hello",
            &["--test-forbidden-syscall", kind],
        ));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(128 + libc::SIGSYS), "{kind}: {err}");
        assert!(err.contains("signal 31 (SIGSYS"), "{kind}: {err}");
        assert!(!base.join(&id).exists(), "{kind}: the jail was left behind");
    }
}

#[test]
fn writing_past_the_file_size_limit_kills_the_vmm_with_sigxfsz() {
    if !root_kvm_or_skip("writing_past_the_file_size_limit_kills_the_vmm_with_sigxfsz") {
        return;
    }
    let base = scratch("fsize");
    let console = base.join("console.log");
    let console_arg = console.to_str().unwrap();
    let extra = ["--console", console_arg, "--jail-max-file-size", "10"];
    let out = run(jailed(&base, "fsize", "hello", &extra));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(128 + libc::SIGXFSZ), "{err}");
    assert!(err.contains("SIGXFSZ"), "{err}");
    assert_eq!(std::fs::read(&console).unwrap(), b"Hello from");
}

#[test]
fn tenants_get_their_own_uid_and_cannot_reach_each_other() {
    if !root_kvm_or_skip("tenants_get_their_own_uid_and_cannot_reach_each_other") {
        return;
    }
    let base = scratch("tenants");
    let console = |id: &str| base.join(format!("{id}.console"));
    // With the console in a file the prompt is not on stdout: wait on the file instead.
    let a = start_with_file_console(&base, "tenant-a", &console("tenant-a"));
    let b = start_with_file_console(&base, "tenant-b", &console("tenant-b"));
    let (vmm_a, vmm_b) = (a.vmm_pid(), b.vmm_pid());
    let uid_of = |pid: i32| -> u32 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        field_of(&status, "Uid")
            .split('\t')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (uid_a, uid_b) = (uid_of(vmm_a), uid_of(vmm_b));
    assert_ne!(uid_a, uid_b);
    assert!(uid_a != 0 && uid_b != 0);

    // In A's mount namespace B's files do not exist; A's own console does (at /console.log:
    // the jail binds it there, as the host path may lie under /run).
    let a_root = PathBuf::from(format!("/proc/{vmm_a}/root"));
    let in_a = |p: &Path| a_root.join(p.strip_prefix("/").unwrap());
    assert!(in_a(Path::new("/console.log")).exists());
    assert!(!in_a(&console("tenant-b")).exists());
    assert!(!in_a(&base.join("tenant-b")).exists());
    assert!(!in_a(&base).join("tenant-b").exists());

    // And on the host A's uid is refused B's console, B's jail and B's run directory.
    let b_root = base.join("tenant-b/root");
    for target in [
        console("tenant-b"),
        base.join("tenant-b"),
        b_root.join("run"),
        in_jail(&b_root, &console("tenant-b")),
    ] {
        let reached = Command::new("cat")
            .arg(&target)
            .uid(uid_a)
            .gid(uid_a)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(!reached.success(), "uid {uid_a} read {}", target.display());
        let listed = Command::new("ls")
            .arg(&target)
            .uid(uid_a)
            .gid(uid_a)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(
            !listed.success() || target.is_file(),
            "uid {uid_a} listed {}",
            target.display()
        );
    }
    assert_eq!(a.terminate(), 128 + libc::SIGTERM);
    assert_eq!(b.terminate(), 128 + libc::SIGTERM);
    assert!(!base.join("tenant-a").exists(), "A's jail was left behind");
    assert!(!base.join("tenant-b").exists(), "B's jail was left behind");
}

fn in_jail(root: &Path, host_path: &Path) -> PathBuf {
    root.join(host_path.strip_prefix("/").unwrap())
}

fn start_with_file_console(base: &Path, id: &str, console: &Path) -> Waiting {
    let mut cmd = jailed(
        base,
        id,
        "echo_input",
        &["--console", console.to_str().unwrap()],
    );
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().unwrap();
    let stdin = child.stdin.take().unwrap();
    // The console file fills as the guest prints: watch it with inotify, bounded in time.
    let watched = wait_for_file_text(console, "got: ", MARKER_TIMEOUT);
    if let Err(e) = watched {
        let _ = child.kill();
        panic!("{id}: {e}");
    }
    Waiting { child, stdin }
}

fn wait_for_file_text(path: &Path, text: &str, timeout: Duration) -> Result<(), String> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK).map_err(|e| e.to_string())?;
    let dir = path.parent().unwrap();
    inotify
        .add_watch(dir, AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CREATE)
        .map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if std::fs::read_to_string(path).is_ok_and(|s| s.contains(text)) {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(format!("{} never held {text:?}", path.display()));
        }
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(&inotify)),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polls one live pollfd.
        unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(1000) as i32) };
        let _ = inotify.read_events();
    }
}

#[test]
fn no_jail_warns_and_leaves_the_vmm_unconfined() {
    if !root_kvm_or_skip("no_jail_warns_and_leaves_the_vmm_unconfined") {
        return;
    }
    let base = scratch("no-jail");
    let vm = Waiting::start(jailed(&base, "no-jail", "echo_input", &["--no-jail"]));
    let pid = vm.child.id() as i32;
    let tasks = thread_statuses(pid).unwrap();
    let user_threads = tasks
        .iter()
        .filter(|(_, s)| field_of(s, "Name") != KVM_WORKER);
    assert_eq!(
        user_threads.clone().count(),
        2,
        "condo itself is the VMM: {tasks:?}"
    );
    for (tid, status) in user_threads {
        assert_eq!(field_of(status, "Seccomp"), "0", "thread {tid}");
        assert!(field_of(status, "Uid").starts_with("0\t"), "thread {tid}");
    }
    assert_eq!(vm.finish(), 0);
    let out = run(jailed(&base, "no-jail", "hello", &["--no-jail"]));
    assert!(
        stderr(&out).contains("WARNING: --no-jail"),
        "{}",
        stderr(&out)
    );
    assert!(!base.join("no-jail").exists());
}

#[test]
fn without_cgroup_v2_the_jail_refuses_unless_asked() {
    if !root_kvm_or_skip("without_cgroup_v2_the_jail_refuses_unless_asked") {
        return;
    }
    if common::host_has_cgroup2_controllers() {
        eprintln!("SKIP: this host has cgroup v2 controllers (the refusal cannot happen here)");
        return;
    }
    let base = scratch("no-cgroup");
    let mut cmd = jailed(&base, "no-cgroup", "hello", &[]);
    cmd.env_remove("CONDO_JAIL_NO_CGROUP");
    let out = run(cmd);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no usable cgroup v2"), "{err}");
    assert!(err.contains("--jail-no-cgroup"), "{err}");
    assert!(!base.join("no-cgroup").exists(), "the jail was left behind");
    let mut cmd = jailed(&base, "no-cgroup", "hello", &["--jail-no-cgroup"]);
    cmd.env_remove("CONDO_JAIL_NO_CGROUP");
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("WARNING: --jail-no-cgroup"));
}
