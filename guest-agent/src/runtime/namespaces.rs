//! Namespace plumbing: clone(2) into new namespaces, setns(2) into existing ones, user
//! namespace id maps, and the pipes parent and child talk over.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::RuntimeError;

/// fork(2) with extra clone flags (CLONE_PARENT). Returns 0 in the child.
///
/// A raw clone without a new stack behaves like fork: the child continues on a copy of the
/// caller's stack. It skips libc's atfork handlers, so only single-threaded processes (the
/// runtime's own helper children) call it.
pub(crate) fn clone_process(flags: libc::c_int) -> Result<libc::pid_t, RuntimeError> {
    let flags = (flags | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: no CLONE_VM, so the child gets its own copy of memory and stack, like fork();
    // the remaining arguments (stack, tids, tls) are unused without the matching flags.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if pid < 0 {
        return Err(RuntimeError::last_os("clone"));
    }
    Ok(pid as libc::pid_t)
}

/// fork(2) through libc, so its atfork handlers run (malloc locks stay consistent in the child
/// even when the caller has other threads). Returns 0 in the child.
pub(crate) fn fork() -> Result<libc::pid_t, RuntimeError> {
    // SAFETY: the child only runs runtime code before exec or _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(RuntimeError::last_os("fork"));
    }
    Ok(pid)
}

/// unshare(2) of `flags`.
pub(crate) fn unshare(flags: libc::c_int) -> Result<(), RuntimeError> {
    // SAFETY: unshare takes only flags.
    if flags != 0 && unsafe { libc::unshare(flags) } < 0 {
        return Err(RuntimeError::last_os("unshare"));
    }
    Ok(())
}

/// A close-on-exec pipe: (read end, write end).
pub(crate) fn pipe() -> Result<(std::fs::File, std::fs::File), RuntimeError> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(RuntimeError::last_os("pipe2"));
    }
    // SAFETY: pipe2 just returned these two descriptors; we take sole ownership.
    Ok(unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    })
}

/// Reads everything until EOF (a child's report; empty when it wrote nothing).
pub(crate) fn read_to_end(mut f: std::fs::File) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    buf
}

/// Writes a report to the parent, ignoring failure (the parent may be gone).
pub(crate) fn report(f: &mut std::fs::File, msg: &[u8]) {
    let _ = f.write_all(msg);
}

/// Opens a path as an owned fd with `flags`.
pub(crate) fn open(path: &Path, flags: libc::c_int) -> Result<OwnedFd, RuntimeError> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| RuntimeError::Setup(format!("{} holds a NUL byte", path.display())))?;
    // SAFETY: c is a valid C string.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(RuntimeError::io(
            "open",
            path,
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: open just returned this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// setns into the namespace held by `fd`.
pub(crate) fn setns(fd: RawFd, nstype: libc::c_int, what: &Path) -> Result<(), RuntimeError> {
    // SAFETY: setns on a descriptor we own.
    if unsafe { libc::setns(fd, nstype) } < 0 {
        return Err(RuntimeError::Setup(format!(
            "setns into {}: {}",
            what.display(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Joins each (nstype, path).
pub(crate) fn join_paths(list: &[(libc::c_int, std::path::PathBuf)]) -> Result<(), RuntimeError> {
    for (nstype, path) in list {
        let fd = open(path, libc::O_RDONLY)?;
        setns(fd.as_raw_fd(), *nstype, path)?;
    }
    Ok(())
}

/// Writes a user namespace's uid/gid maps (from the parent, as host root).
pub(crate) fn write_id_maps(
    pid: libc::pid_t,
    uid_map: &str,
    gid_map: &str,
) -> Result<(), RuntimeError> {
    for (file, map) in [("uid_map", uid_map), ("gid_map", gid_map)] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, map)
            .map_err(|e| RuntimeError::io("write user namespace map", path, e))?;
    }
    Ok(())
}

/// Namespace order for joining a running container: user first (it grants the rights for the
/// rest), mount last (paths of the others are resolved in the caller's view).
pub(crate) const JOIN_ORDER: [(&str, libc::c_int); 7] = [
    ("user", libc::CLONE_NEWUSER),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("pid", libc::CLONE_NEWPID),
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("mnt", libc::CLONE_NEWNS),
];

/// Opens the namespaces of `pid` that differ from the caller's, in join order.
pub(crate) fn open_namespaces_of(
    pid: libc::pid_t,
) -> Result<Vec<(OwnedFd, libc::c_int, std::path::PathBuf)>, RuntimeError> {
    let mut out = Vec::new();
    for (name, nstype) in JOIN_ORDER {
        let theirs = std::path::PathBuf::from(format!("/proc/{pid}/ns/{name}"));
        let ours = format!("/proc/self/ns/{name}");
        let same = match (std::fs::read_link(&theirs), std::fs::read_link(&ours)) {
            (Ok(a), Ok(b)) => a == b,
            (Err(e), _) => return Err(RuntimeError::io("read namespace", theirs, e)),
            _ => false,
        };
        if !same {
            out.push((open(&theirs, libc::O_RDONLY)?, nstype, theirs));
        }
    }
    Ok(out)
}

/// Start time (clock ticks after boot, field 22 of /proc/PID/stat) and state letter of `pid`.
pub(crate) fn proc_start(pid: libc::pid_t) -> Option<(u64, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

/// A pidfd for `pid` (to wait for its exit without being its parent).
pub(crate) fn pidfd_open(pid: libc::pid_t) -> Option<OwnedFd> {
    // SAFETY: pidfd_open has no pointer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: on success the syscall returned a new descriptor we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Waits until the process behind `pidfd` has exited, up to `timeout_ms`. True if it did.
pub(crate) fn wait_pidfd(pidfd: &OwnedFd, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: pfd is valid for the call.
    unsafe { libc::poll(&mut pfd, 1, timeout_ms) > 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_readable() {
        // SAFETY: getpid cannot fail.
        let (start, state) = proc_start(unsafe { libc::getpid() }).unwrap();
        assert!(start > 0);
        assert!(state == 'R' || state == 'S');
        assert_eq!(proc_start(-5), None);
    }
}
