//! Reaps every child of the agent: a SIGCHLD handler wakes a thread (through a pipe) that runs
//! `waitpid(-1, WNOHANG)` until no zombie is left and hands each status on.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use condo_protocol::ExitStatus;
use nix::errno::Errno;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

/// Write end of the wake-up pipe, for the signal handler (-1 until installed).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigchld(_signal: libc::c_int) {
    let fd = WAKE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let saved = Errno::last_raw();
        let byte = 1u8;
        // SAFETY: write(2) is async-signal-safe; the pipe is non-blocking so a full pipe (a
        // wake-up already pending) cannot block the handler; errno is restored below.
        unsafe { libc::write(fd, std::ptr::from_ref(&byte).cast(), 1) };
        Errno::set_raw(saved);
    }
}

/// In a child forked from the agent: stop the SIGCHLD handler from writing to the wake-up
/// pipe, whose descriptor the child is about to close (and may reuse).
pub fn forget_wake_pipe() {
    WAKE_FD.store(-1, Ordering::Relaxed);
}

/// Makes this process the reaper of its orphaned descendants (PID 1 is one already). Needed on
/// a host so that container processes whose parent exits come back to the agent.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes no pointers and only sets a process flag.
    let result = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Starts the reaper thread; `on_exit` gets (pid, status) for every reaped child. Call once.
pub fn start(on_exit: impl Fn(i32, ExitStatus) + Send + 'static) -> io::Result<()> {
    let (wake_read, wake_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(io::Error::from)?;
    set_blocking(&wake_read)?;
    // The write end lives as long as the process: the handler may fire at any time.
    let write_fd = std::mem::ManuallyDrop::new(wake_write);
    WAKE_FD.store(write_fd.as_raw_fd(), Ordering::Relaxed);
    let action = SigAction::new(
        SigHandler::Handler(on_sigchld),
        SaFlags::SA_RESTART | SaFlags::SA_NOCLDSTOP,
        SigSet::empty(),
    );
    // SAFETY: the handler only calls async-signal-safe functions (see on_sigchld).
    unsafe { sigaction(Signal::SIGCHLD, &action) }.map_err(io::Error::from)?;
    std::thread::Builder::new()
        .name("reaper".into())
        .spawn(move || reap_forever(&wake_read, &on_exit))?;
    Ok(())
}

fn set_blocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) & !OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

fn reap_forever(wake: &OwnedFd, on_exit: &impl Fn(i32, ExitStatus)) {
    let mut buf = [0u8; 64];
    loop {
        // Reap first: children may have exited before the handler was installed.
        reap_all(on_exit);
        match nix::unistd::read(wake, &mut buf) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(errno) => {
                crate::agent::log(format_args!("reaper: wake-up pipe read failed: {errno}"));
                return;
            }
        }
    }
}

/// Reaps every child that has exited; returns how many.
pub fn reap_all(on_exit: &impl Fn(i32, ExitStatus)) -> usize {
    let mut reaped = 0;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => {
                reaped += 1;
                on_exit(
                    pid.as_raw(),
                    ExitStatus {
                        code: Some(code),
                        signal: None,
                        oom_killed: false,
                    },
                );
            }
            Ok(WaitStatus::Signaled(pid, signal, _core)) => {
                reaped += 1;
                on_exit(
                    pid.as_raw(),
                    ExitStatus {
                        code: None,
                        signal: Some(signal as i32),
                        oom_killed: false,
                    },
                );
            }
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return reaped,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(errno) => {
                crate::agent::log(format_args!("reaper: waitpid failed: {errno}"));
                return reaped;
            }
        }
    }
}
