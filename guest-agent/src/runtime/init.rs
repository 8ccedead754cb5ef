//! The container init, child side of `create`: waits for the parent (cgroup joined, id maps
//! written), builds the container, reports ready, blocks on exec.fifo until `start`, execs.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::RawFd;

use super::mounts;
use super::namespaces::{self, report};
use super::plan::ContainerPlan;
use super::process;
use super::syscall::RealSyscall;
use super::RuntimeError;

/// Descriptors the init inherits from `create`.
pub(crate) struct InitFds {
    pub go: File,
    pub status: File,
    pub stdio: [RawFd; 3],
    pub console: Option<RawFd>,
    /// O_PATH descriptor of exec.fifo.
    pub fifo: RawFd,
}

/// Status byte the init sends once it is ready (followed by nothing); errors are text.
pub(crate) const READY: &[u8] = b"\0";

fn die(status: &mut File, e: RuntimeError) -> ! {
    report(status, e.to_string().as_bytes());
    // SAFETY: _exit ends the child without running the parent's atexit handlers.
    unsafe { libc::_exit(1) }
}

/// The intermediate child (forked by `create`): makes the namespaces (the user namespace
/// first, so the parent can write its maps), then clones the init with CLONE_PARENT, so the
/// init is PID 1 of the new pid namespace *and* a direct child of the runtime's caller.
/// Tells the parent on `sync`: "U" when the maps are wanted, then the init's pid. Never returns.
pub(crate) fn intermediate(plan: &ContainerPlan, mut fds: InitFds, mut sync: File) -> ! {
    if plan.clone_flags & libc::CLONE_NEWUSER != 0 {
        if let Err(e) = namespaces::unshare(libc::CLONE_NEWUSER) {
            die(&mut fds.status, e);
        }
        report(&mut sync, b"U");
        let mut byte = [0u8; 1];
        if fds.go.read(&mut byte).ok() != Some(1) {
            die(
                &mut fds.status,
                RuntimeError::Setup("parent went away before writing the id maps".into()),
            );
        }
    }
    if let Err(e) = namespaces::unshare(plan.clone_flags & !libc::CLONE_NEWUSER) {
        die(&mut fds.status, e);
    }
    match namespaces::clone_process(libc::CLONE_PARENT) {
        Ok(0) => {
            drop(sync);
            run(plan, fds)
        }
        Ok(pid) => {
            report(&mut sync, &pid.to_ne_bytes());
            // SAFETY: as in `die`.
            unsafe { libc::_exit(0) }
        }
        Err(e) => die(&mut fds.status, e),
    }
}

/// Runs in the init; never returns.
fn run(plan: &ContainerPlan, fds: InitFds) -> ! {
    let InitFds {
        mut go,
        mut status,
        stdio,
        console,
        fifo,
    } = fds;
    let program = match setup(plan, &mut go, stdio, console) {
        Ok(program) => program,
        Err(e) => {
            report(&mut status, e.to_string().as_bytes());
            // SAFETY: _exit ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(1) }
        }
    };
    report(&mut status, READY);
    drop(status);
    if let Err(e) = wait_for_start(fifo) {
        eprintln!("condo-runtime: container init: {e}");
        // SAFETY: as above.
        unsafe { libc::_exit(1) }
    }
    let e = process::exec(&plan.process, &program);
    eprintln!("condo-runtime: container init: {e}");
    // SAFETY: as above.
    unsafe { libc::_exit(127) }
}

fn setup(
    plan: &ContainerPlan,
    go: &mut File,
    stdio: [RawFd; 3],
    console: Option<RawFd>,
) -> Result<CString, RuntimeError> {
    let mut byte = [0u8; 1];
    if go.read(&mut byte).ok() != Some(1) {
        return Err(RuntimeError::Setup(
            "parent went away before the init could start".into(),
        ));
    }
    if plan.uid_map.is_some() {
        // Become root of the new user namespace (the parent has written the maps).
        // SAFETY: plain id-setting syscalls.
        unsafe {
            if libc::setresgid(0, 0, 0) < 0 || libc::setresuid(0, 0, 0) < 0 {
                return Err(RuntimeError::last_os(
                    "setresuid to root of the user namespace",
                ));
            }
        }
    }
    namespaces::join_paths(&plan.join)?;
    // SAFETY: setsid has no arguments; a fresh session detaches from the caller's terminal.
    if unsafe { libc::setsid() } < 0 {
        return Err(RuntimeError::last_os("setsid"));
    }
    if !plan.process.terminal {
        process::dup_stdio(stdio)?;
    }
    mounts::setup_rootfs(&RealSyscall, &plan.rootfs)?;
    if plan.process.terminal {
        let console = console.ok_or_else(|| {
            RuntimeError::spec("process.terminal", "true, but no console socket was given")
        })?;
        process::setup_terminal(console, plan.process.console_size)?;
    }
    let program = process::prepare(&plan.process)?;
    process::cloexec_from_3();
    Ok(program)
}

/// Opens exec.fifo for writing (blocks until `start` opens it for reading), writes one byte.
fn wait_for_start(fifo: RawFd) -> Result<(), RuntimeError> {
    let path = CString::new(format!("/proc/self/fd/{fifo}"))
        .map_err(|_| RuntimeError::Setup("fifo path".into()))?;
    // SAFETY: path is a valid C string.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(RuntimeError::last_os("open exec.fifo"));
    }
    // SAFETY: writes one byte from a valid buffer to our own descriptor, then closes it.
    unsafe {
        let rc = libc::write(fd, b"0".as_ptr().cast(), 1);
        libc::close(fd);
        libc::close(fifo);
        if rc != 1 {
            return Err(RuntimeError::last_os("write exec.fifo"));
        }
    }
    Ok(())
}
