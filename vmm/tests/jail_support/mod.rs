//! Helpers shared by the jail tests: pipes, forks, waits with timeouts, and reading a jailed
//! process's state from the host's /proc.
#![allow(dead_code, clippy::expect_used)]

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use condo_vmm::jail::{JailError, JailExit};

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A pipe without O_CLOEXEC on purpose: the jailed side keeps its end across the fork.
pub fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors into the array it is given.
    let rc = unsafe { libc::pipe(fds.as_mut_ptr()) };
    assert_eq!(rc, 0, "pipe: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

pub fn write_fd(fd: RawFd, bytes: &[u8]) -> std::io::Result<()> {
    // SAFETY: writes from a live slice of the given length.
    let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Reads until end of file or error (a blocking wait for the other side to close or write).
pub fn read_fd(fd: RawFd) -> Vec<u8> {
    let mut buf = [0u8; 64];
    // SAFETY: reads into a live buffer of the given length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    buf[..usize::try_from(n).unwrap_or(0)].to_vec()
}

fn poll_readable(fd: RawFd, timeout: Duration) -> Result<(), String> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: polls one live pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc > 0 {
            return Ok(());
        }
        if rc == 0 {
            return Err(format!("nothing happened on fd {fd} within {timeout:?}"));
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(format!("poll: {err}"));
        }
    }
}

/// Waits (bounded) for the other side to write, then reads what it wrote.
pub fn wait_readable(fd: &OwnedFd, timeout: Duration) -> Result<Vec<u8>, String> {
    poll_readable(fd.as_raw_fd(), timeout)?;
    Ok(read_fd(fd.as_raw_fd()))
}

/// Forks a process that runs `run` (a jail) and exits with the jailed VMM's exit code.
pub fn spawn_runner(run: impl FnOnce() -> Result<JailExit, JailError>) -> i32 {
    // SAFETY: the test harness is single-threaded (harness = false, no threads spawned).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = match run() {
            Ok(exit) => exit.exit_code(),
            Err(e) => {
                eprintln!("runner: {e}");
                99
            }
        };
        std::process::exit(code);
    }
    pid
}

/// Waits (bounded) for a child and returns its exit code (128 + signal when killed).
pub fn wait_child(pid: i32, timeout: Duration) -> Result<i32, String> {
    // SAFETY: pidfd_open takes plain integers.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(format!(
            "pidfd_open {pid}: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: the descriptor was just returned by pidfd_open and is owned here.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    if let Err(e) = poll_readable(pidfd.as_raw_fd(), timeout) {
        // SAFETY: kills the test's own child that overran its time.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let mut status = 0;
        // SAFETY: reaps that child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        return Err(format!("child {pid} did not end: {e}"));
    }
    let mut status = 0;
    // SAFETY: reaps a child that has ended.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    if rc != pid {
        return Err(format!(
            "waitpid {pid}: {}",
            std::io::Error::last_os_error()
        ));
    }
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status))
    } else {
        Ok(128 + libc::WTERMSIG(status))
    }
}

/// Runs `check` in a forked child that switched to `uid` (no jail), returns its exit code.
pub fn as_uid(uid: u32, check: impl FnOnce() -> i32) -> Result<i32, String> {
    // SAFETY: single-threaded test process.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: plain credential changes in the child.
        let ok = unsafe {
            libc::setgroups(0, std::ptr::null()) == 0
                && libc::setgid(uid) == 0
                && libc::setuid(uid) == 0
        };
        std::process::exit(if ok { check() } else { 98 });
    }
    wait_child(pid, Duration::from_secs(20))
}

fn parent_of(pid: &str) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(1)?.parse().ok()
}

pub fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .filter(|name| parent_of(name) == Some(parent))
        .filter_map(|name| name.parse().ok())
        .collect()
}

fn only_child(parent: i32, what: &str) -> Result<i32, String> {
    let children = children_of(parent);
    match children[..] {
        [child] => Ok(child),
        _ => Err(format!(
            "{parent} has children {children:?}, expected one {what}"
        )),
    }
}

/// The jailed VMM under a runner (or under condo): runner -> keeper -> init -> VMM.
pub fn find_jailed_vmm(runner: i32) -> Result<i32, String> {
    let keeper = only_child(runner, "keeper")?;
    let init = only_child(keeper, "jail init")?;
    only_child(init, "VMM")
}

pub fn field_of(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

pub fn status_field(pid: i32, field: &str) -> Result<String, String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    Ok(field_of(&status, field))
}

/// /proc/<pid>/task/*/status of every thread.
pub fn thread_statuses(pid: i32) -> Result<Vec<(String, String)>, String> {
    let dir = format!("/proc/{pid}/task");
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir)
        .map_err(|e| format!("{dir}: {e}"))?
        .flatten()
    {
        let tid = entry.file_name().to_string_lossy().into_owned();
        let status = fs::read_to_string(entry.path().join("status"))
            .map_err(|e| format!("{dir}/{tid}/status: {e}"))?;
        out.push((tid, status));
    }
    Ok(out)
}

pub fn expect_exit(got: JailExit, want: JailExit) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "the jailed process ended {got:?}, expected {want:?}"
        ))
    }
}

pub fn expect_gone(path: &Path) -> Result<(), String> {
    if path.exists() {
        Err(format!("{} was left behind", path.display()))
    } else {
        Ok(())
    }
}
