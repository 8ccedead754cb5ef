//! How the jailed VMM relates to the condo process that starts it.
//!
//! ```text
//! condo (root, host namespaces)            prepare root + cgroup; wait; cleanup; report
//!  └─ keeper (fork; unshare(CLONE_NEWPID))  waits for the VMM, dies the way it died
//!      └─ init (fork: PID 1 of the new pid namespace)
//!           confine (cgroup, namespaces, pivot_root, rlimits, uid/gid, caps, fds, env),
//!           waits for the VMM, reports how it ended to the keeper through a pipe
//!          └─ VMM (fork, PID 2: inherits the whole cell) runs the VMM body
//! ```
//! The keeper exists because unshare(CLONE_NEWPID) would change condo's own pid namespace for
//! children for good; a plain fork (not a raw clone) keeps glibc's state sane in the VMM, which
//! goes on running Rust code instead of exec'ing a binary that is not inside the jail.
//! Parent-death signals chain condo -> keeper -> init -> VMM, so nothing outlives condo; condo forwards
//! SIGINT, SIGTERM and SIGHUP to the keeper and always removes the jail afterwards.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{self, SigHandler, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, getppid, ForkResult, Pid};

use super::plan::{self, Prepared};
use super::sys::JailSys;
use super::{JailConfig, JailError};

/// How the jailed VMM ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JailExit {
    Exited(i32),
    Signaled(i32),
}

impl JailExit {
    /// condo's exit code for it: the VMM's own code, or 128 + the signal.
    pub fn exit_code(self) -> i32 {
        match self {
            JailExit::Exited(code) => code,
            JailExit::Signaled(sig) => 128 + sig,
        }
    }
}

/// Exit code of the VMM process when its jail could not be set up ("could not start").
pub const JAIL_SETUP_FAILED: i32 = 1;

static KEEPER_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = KEEPER_PID.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe and takes plain integers.
        unsafe { libc::kill(pid, sig) };
    }
}

const FORWARDED: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// Refuses to fork a multi-threaded process: the child would inherit locks held by threads
/// that do not exist in it, and the VMM goes on without exec.
fn ensure_single_threaded() -> Result<(), JailError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| JailError::io("read thread count", "/proc/self/status", e))?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .map(str::trim)
        .unwrap_or("?");
    if threads == "1" {
        Ok(())
    } else {
        Err(JailError::NotSingleThreaded(threads.to_owned()))
    }
}

/// Builds the jail, runs `body` as the jailed VMM (PID 1 of a new pid namespace when asked),
/// waits for it, removes the jail, and reports how the VMM ended. `body` runs only in the
/// child; its return value is the VMM's exit code.
pub fn run_jailed<F>(cfg: &JailConfig, sys: &dyn JailSys, body: F) -> Result<JailExit, JailError>
where
    F: FnOnce() -> i32,
{
    ensure_single_threaded()?;
    let prepared = plan::prepare(cfg, sys)?;
    let outcome = fork_and_wait(cfg, &prepared, sys, body);
    let cleaned = prepared.cleanup(sys);
    let exit = outcome?;
    cleaned?;
    Ok(exit)
}

fn fork_and_wait<F>(
    cfg: &JailConfig,
    prepared: &Prepared,
    sys: &dyn JailSys,
    body: F,
) -> Result<JailExit, JailError>
where
    F: FnOnce() -> i32,
{
    let parent = nix::unistd::getpid();
    // SAFETY: the process is single-threaded (checked above), so the child starts with a
    // consistent heap and no locks held by vanished threads.
    match unsafe { fork() }.map_err(|e| JailError::Sys("fork", e.to_string()))? {
        ForkResult::Child => {
            let code = keeper(cfg, prepared, sys, parent, body);
            std::process::exit(code)
        }
        ForkResult::Parent { child } => {
            KEEPER_PID.store(child.as_raw(), Ordering::SeqCst);
            let previous = install_forwarding();
            let status = wait_for(child);
            KEEPER_PID.store(0, Ordering::SeqCst);
            restore(previous);
            status
        }
    }
}

fn install_forwarding() -> Vec<(Signal, SigHandler)> {
    let mut previous = Vec::new();
    for sig in FORWARDED {
        // SAFETY: the handler only calls kill(2), which is async-signal-safe.
        if let Ok(old) = unsafe { signal::signal(sig, SigHandler::Handler(forward_signal)) } {
            previous.push((sig, old));
        }
    }
    previous
}

fn restore(previous: Vec<(Signal, SigHandler)>) {
    for (sig, handler) in previous {
        // SAFETY: puts back the disposition that was there before install_forwarding.
        let _ = unsafe { signal::signal(sig, handler) };
    }
}

fn wait_for(child: Pid) -> Result<JailExit, JailError> {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(JailExit::Exited(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(JailExit::Signaled(sig as i32)),
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(JailError::Sys("wait for the jailed VMM", e.to_string())),
        }
    }
}

/// Dies with `parent` (the parent may die between fork and this call: check after).
fn die_with_parent(parent: Pid) -> Result<(), String> {
    // SAFETY: PR_SET_PDEATHSIG takes plain integers.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    if rc != 0 {
        return Err(format!(
            "PR_SET_PDEATHSIG: {}",
            std::io::Error::last_os_error()
        ));
    }
    if getppid() != parent {
        return Err("the parent died before the jail was entered".to_owned());
    }
    Ok(())
}

fn keeper<F>(cfg: &JailConfig, prepared: &Prepared, sys: &dyn JailSys, condo: Pid, body: F) -> i32
where
    F: FnOnce() -> i32,
{
    if let Err(e) = die_with_parent(condo) {
        report_setup_failure(&e);
        return JAIL_SETUP_FAILED;
    }
    if cfg.namespaces.pid {
        if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID) {
            report_setup_failure(&format!("unshare pid namespace: {e}"));
            return JAIL_SETUP_FAILED;
        }
    }
    // Seen from a new pid namespace, a parent outside it has pid 0.
    let keeper_pid = if cfg.namespaces.pid {
        Pid::from_raw(0)
    } else {
        nix::unistd::getpid()
    };
    let (status_r, status_w) = match nix::unistd::pipe() {
        Ok(ends) => ends,
        Err(e) => {
            report_setup_failure(&format!("status pipe: {e}"));
            return JAIL_SETUP_FAILED;
        }
    };
    // SAFETY: the keeper is a fork of a single-threaded process and is single-threaded too.
    match unsafe { fork() } {
        Err(e) => {
            report_setup_failure(&format!("fork the jail's init: {e}"));
            JAIL_SETUP_FAILED
        }
        Ok(ForkResult::Child) => {
            drop(status_r);
            jail_init(cfg, prepared, sys, keeper_pid, status_w, body)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(status_w);
            let init_exit = wait_for(child);
            match (read_reported_exit(status_r), init_exit) {
                (Some(JailExit::Exited(code)), _) | (None, Ok(JailExit::Exited(code))) => code,
                (Some(JailExit::Signaled(sig)), _) | (None, Ok(JailExit::Signaled(sig))) => {
                    die_like(sig)
                }
                (None, Err(e)) => {
                    report_setup_failure(&e.to_string());
                    JAIL_SETUP_FAILED
                }
            }
        }
    }
}

/// PID 1 of the jail's pid namespace: confines itself, forks the VMM and reports how it ended
/// through `status`. The VMM is not PID 1 itself because the kernel keeps a namespace's init
/// from the signals it sends it (a VMM writing past RLIMIT_FSIZE would get EFBIG, not SIGXFSZ).
fn jail_init<F>(
    cfg: &JailConfig,
    prepared: &Prepared,
    sys: &dyn JailSys,
    keeper: Pid,
    status: OwnedFd,
    body: F,
) -> i32
where
    F: FnOnce() -> i32,
{
    if let Err(e) = die_with_parent(keeper) {
        report_setup_failure(&e);
        return JAIL_SETUP_FAILED;
    }
    if let Err(e) = plan::confine(cfg, prepared, sys, &[status.as_raw_fd()]) {
        report_setup_failure(&e.to_string());
        return JAIL_SETUP_FAILED;
    }
    // Changing credentials cleared the parent-death signal: set it again.
    if let Err(e) = die_with_parent(keeper) {
        report_setup_failure(&e);
        return JAIL_SETUP_FAILED;
    }
    let init = nix::unistd::getpid();
    // SAFETY: init is single-threaded (a fork of a single-threaded process).
    match unsafe { fork() } {
        Err(e) => {
            report_setup_failure(&format!("fork the VMM: {e}"));
            JAIL_SETUP_FAILED
        }
        Ok(ForkResult::Child) => {
            drop(status);
            if let Err(e) = die_with_parent(init) {
                report_setup_failure(&e);
                return JAIL_SETUP_FAILED;
            }
            body()
        }
        Ok(ForkResult::Parent { child }) => match wait_for(child) {
            Ok(exit) => {
                let line = match exit {
                    JailExit::Exited(code) => format!("exit {code}\n"),
                    JailExit::Signaled(sig) => format!("signal {sig}\n"),
                };
                let _ = std::fs::File::from(status).write_all(line.as_bytes());
                0
            }
            Err(e) => {
                report_setup_failure(&e.to_string());
                JAIL_SETUP_FAILED
            }
        },
    }
}

fn read_reported_exit(status: OwnedFd) -> Option<JailExit> {
    let mut text = String::new();
    std::fs::File::from(status).read_to_string(&mut text).ok()?;
    let (kind, value) = text.trim().split_once(' ')?;
    let value: i32 = value.parse().ok()?;
    match kind {
        "exit" => Some(JailExit::Exited(value)),
        "signal" => Some(JailExit::Signaled(value)),
        _ => None,
    }
}

/// The keeper ends the way the VMM ended, so condo's waitpid sees the VMM's signal.
fn die_like(sig: i32) -> i32 {
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the struct; signal/kill take plain integers. A core of the
    // keeper would be noise: the VMM's signal is what matters.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::signal(sig, libc::SIG_DFL);
        libc::kill(libc::getpid(), sig);
    }
    // Only reached for a signal whose default is to be ignored or to stop.
    128 + sig
}

fn report_setup_failure(message: &str) {
    let _ = writeln!(std::io::stderr(), "condo: jail setup failed: {message}");
}
