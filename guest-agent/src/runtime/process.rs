//! Child-side steps shared by the container init and exec'd processes: stdio or a pty, rlimits,
//! user switch, capabilities, no_new_privs, seccomp and execve.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::plan::ProcessPlan;
use super::{capabilities, seccomp, RuntimeError};

fn check(rc: libc::c_int, call: &'static str) -> Result<(), RuntimeError> {
    if rc < 0 {
        Err(RuntimeError::last_os(call))
    } else {
        Ok(())
    }
}

/// Puts `fds` on 0, 1, 2.
pub(crate) fn dup_stdio(fds: [RawFd; 3]) -> Result<(), RuntimeError> {
    for (target, fd) in fds.into_iter().enumerate() {
        if fd != target as RawFd {
            // SAFETY: dup2 on descriptors owned by this process.
            check(unsafe { libc::dup2(fd, target as RawFd) }, "dup2")?;
        }
    }
    Ok(())
}

/// Sends `fd` over the Unix socket `sock` with SCM_RIGHTS (runc's console-socket protocol).
pub(crate) fn send_fd(sock: RawFd, fd: RawFd) -> Result<(), RuntimeError> {
    let mut byte = *b"/dev/ptmx";
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: byte.len(),
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    // SAFETY: msghdr is plain old data; zeroed is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: msg_control points to a buffer of CMSG_SPACE(sizeof fd) bytes, so the first
    // header and its data fit; all pointers stay valid for the sendmsg call.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        if libc::sendmsg(sock, &msg, 0) < 0 {
            return Err(RuntimeError::last_os("sendmsg(console socket)"));
        }
    }
    Ok(())
}

/// Creates a pty in the container's devpts, gives it `size` (rows, columns), makes its slave
/// the controlling terminal and stdio, and sends the master to `console`.
pub(crate) fn setup_terminal(console: RawFd, size: Option<(u16, u16)>) -> Result<(), RuntimeError> {
    // SAFETY: plain open of a constant path.
    let master = unsafe {
        libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    check(master, "open /dev/ptmx")?;
    let mut unlock: libc::c_int = 0;
    let mut number: libc::c_uint = 0;
    // SAFETY: TIOCSPTLCK reads an int, TIOCGPTN writes an unsigned int; both are valid.
    unsafe {
        check(
            libc::ioctl(master, libc::TIOCSPTLCK, &mut unlock),
            "ioctl(TIOCSPTLCK)",
        )?;
        check(
            libc::ioctl(master, libc::TIOCGPTN, &mut number),
            "ioctl(TIOCGPTN)",
        )?;
    }
    let slave_path = CString::new(format!("/dev/pts/{number}"))
        .map_err(|_| RuntimeError::Setup("pts path".into()))?;
    // SAFETY: slave_path is a valid C string.
    let slave = unsafe { libc::open(slave_path.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
    check(slave, "open pty slave")?;
    // SAFETY: TIOCSCTTY takes an int argument; we are a session leader.
    let rc = unsafe { libc::ioctl(slave, libc::TIOCSCTTY, 0) };
    check(rc, "ioctl(TIOCSCTTY)")?;
    if let Some((rows, cols)) = size {
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
        let rc = unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &size) };
        check(rc, "ioctl(TIOCSWINSZ)")?;
    }
    dup_stdio([slave, slave, slave])?;
    send_fd(console, master)?;
    // SAFETY: closing descriptors this process owns and no longer needs.
    unsafe {
        libc::close(master);
        if slave > 2 {
            libc::close(slave);
        }
        libc::close(console);
    }
    Ok(())
}

/// Marks every descriptor from 3 up close-on-exec so nothing of the runtime leaks in.
pub(crate) fn cloexec_from_3() {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on our descriptors.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
}

/// Default dispositions and an empty mask: ignored signals survive execve, and the caller's
/// (Rust ignores SIGPIPE; an agent may ignore or block more) must not leak into the container.
fn reset_signals() {
    /// struct sigaction as the kernel takes it (glibc's wrapper refuses its own signals 32/33).
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let default = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: installs SIG_DFL (no handler code) from a valid struct; 8 = sizeof mask.
            unsafe { libc::syscall(libc::SYS_rt_sigaction, sig, &default, 0usize, 8usize) };
        }
    }
    // SAFETY: an empty, initialised set; only this thread's mask changes.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Everything up to (not including) the final seccomp + execve; returns the resolved program.
/// Runs inside the container (after pivot_root or setns).
pub(crate) fn prepare(plan: &ProcessPlan) -> Result<CString, RuntimeError> {
    reset_signals();
    for (resource, soft, hard) in &plan.rlimits {
        let lim = libc::rlimit {
            rlim_cur: *soft,
            rlim_max: *hard,
        };
        // SAFETY: lim is a valid rlimit.
        check(unsafe { libc::setrlimit(*resource, &lim) }, "setrlimit")?;
    }
    let inherited: Option<i32> = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|v| v.trim().parse().ok());
    // Without a value of its own a container must not inherit a caller's OOM immunity (the
    // agent may protect itself with a negative score); raising needs no privilege.
    let adj = plan
        .oom_score_adj
        .or_else(|| inherited.filter(|v| *v < 0).map(|_| 0));
    if let Some(adj) = adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| RuntimeError::io("write", "/proc/self/oom_score_adj", e))?;
    }
    if !plan.cwd.exists() {
        std::fs::create_dir_all(&plan.cwd)
            .map_err(|e| RuntimeError::Setup(format!("process.cwd {}: {e}", plan.cwd.display())))?;
    }
    if let Some(caps) = &plan.caps {
        capabilities::drop_bounding(caps)?;
    }
    if !plan.no_new_privs {
        // Without no_new_privs, installing a filter needs CAP_SYS_ADMIN: do it while we have it.
        if let Some(filters) = &plan.seccomp {
            seccomp::install(filters)?;
        }
    }
    switch_user(plan)?;
    if let Some(caps) = &plan.caps {
        capabilities::apply(caps)?;
    }
    if let Some(mask) = plan.umask {
        // SAFETY: umask cannot fail.
        unsafe { libc::umask(mask as libc::mode_t) };
    }
    std::env::set_current_dir(&plan.cwd).map_err(|e| {
        RuntimeError::Setup(format!("chdir to process.cwd {}: {e}", plan.cwd.display()))
    })?;
    if plan.no_new_privs {
        // SAFETY: PR_SET_NO_NEW_PRIVS only sets a flag of this process.
        let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        check(rc, "prctl(PR_SET_NO_NEW_PRIVS)")?;
    }
    resolve_program(plan)
}

fn switch_user(plan: &ProcessPlan) -> Result<(), RuntimeError> {
    let groups: Vec<libc::gid_t> = plan.additional_gids.clone();
    // SAFETY: the pointer and length describe `groups`. EPERM inside a user namespace whose
    // setgroups is denied is tolerated when no groups were asked for.
    let rc = unsafe { libc::setgroups(groups.len(), groups.as_ptr()) };
    if rc < 0 && !groups.is_empty() {
        return Err(RuntimeError::last_os("setgroups"));
    }
    capabilities::keep_caps()?;
    // SAFETY: plain id-setting syscalls.
    unsafe {
        check(libc::setresgid(plan.gid, plan.gid, plan.gid), "setresgid")?;
        check(libc::setresuid(plan.uid, plan.uid, plan.uid), "setresuid")?;
    }
    Ok(())
}

fn is_executable(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: c is a valid C string.
    path.is_file() && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0
}

/// args[0] as is when it has a '/', else looked up in the process's PATH.
fn resolve_program(plan: &ProcessPlan) -> Result<CString, RuntimeError> {
    let arg0 = plan.args.first().map(CString::as_c_str).unwrap_or(c"");
    let name = Path::new(std::ffi::OsStr::from_bytes(arg0.to_bytes()));
    if arg0.to_bytes().contains(&b'/') {
        if is_executable(name) {
            return Ok(arg0.to_owned());
        }
        return Err(RuntimeError::spec(
            "process.args[0]",
            format!(
                "{} is not an executable file in the container",
                name.display()
            ),
        ));
    }
    let path_var = plan
        .path_var
        .as_deref()
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(name);
        if is_executable(&candidate) {
            return CString::new(candidate.as_os_str().as_bytes())
                .map_err(|_| RuntimeError::Setup("program path".into()));
        }
    }
    Err(RuntimeError::spec(
        "process.args[0]",
        format!(
            "executable {:?} not found in PATH {path_var:?}",
            name.display().to_string()
        ),
    ))
}

/// The last steps: seccomp (when no_new_privs let it wait until now) and execve.
/// Returns only on failure.
pub(crate) fn exec(plan: &ProcessPlan, program: &CStr) -> RuntimeError {
    if plan.no_new_privs {
        if let Some(filters) = &plan.seccomp {
            if let Err(e) = seccomp::install(filters) {
                return e;
            }
        }
    }
    let argv: Vec<*const libc::c_char> = plan
        .args
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = plan
        .env
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    // SAFETY: argv and envp are NULL-terminated arrays of valid C strings kept alive by `plan`.
    unsafe { libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    RuntimeError::last_os("execve")
}
