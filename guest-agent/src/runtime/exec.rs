//! `exec`: run another process in a running container. A helper child joins the container's
//! namespaces, then clones the process with CLONE_PARENT so it is the caller's direct child
//! (and, after the pid-namespace join, a member of the container's pid namespace).

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::Process;

use super::create::stdio_fds;
use super::namespaces::{self, report};
use super::plan::{self, ProcessPlan};
use super::state::state;
use super::validate::load_bundle_spec;
use super::{process, ProcessIo, RuntimeError, Status};

pub(crate) fn exec(
    root: &Path,
    id: &str,
    proc_spec: &Process,
    io: ProcessIo,
) -> Result<i32, RuntimeError> {
    let st = state(root, id)?;
    if st.status != Status::Running && st.status != Status::Created {
        return Err(RuntimeError::WrongState {
            id: id.to_string(),
            status: st.status.to_string(),
            action: "exec",
            needed: "running",
        });
    }
    let spec = load_bundle_spec(&st.bundle)?;
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
    let plan = plan::process_plan(proc_spec, seccomp.as_ref(), "process")?;
    if plan.terminal && io.terminal.is_none() {
        return Err(RuntimeError::spec(
            "process.terminal",
            "true, but no console socket was given",
        ));
    }
    let namespaces = namespaces::open_namespaces_of(st.pid)?;
    let mut cgroup_procs = Vec::new();
    for cg in st.cgroup.iter().chain(st.device_cgroup.iter()) {
        cgroup_procs.push(namespaces::open(&cg.join("cgroup.procs"), libc::O_WRONLY)?);
    }
    let (_null, stdio) = stdio_fds(&io)?;
    let (pid_r, pid_w) = namespaces::pipe()?;
    let (status_r, status_w) = namespaces::pipe()?;
    let helper = namespaces::fork()?;
    if helper == 0 {
        drop(pid_r);
        drop(status_r);
        helper_main(
            &namespaces,
            &plan,
            &cgroup_procs,
            stdio,
            io.terminal.as_ref(),
            pid_w,
            status_w,
        );
    }
    drop(pid_w);
    drop(status_w);
    drop(io);
    let pid_bytes = namespaces::read_to_end(pid_r);
    let mut raw = 0;
    // SAFETY: waitpid on our own helper child; raw is a valid out-pointer.
    unsafe { libc::waitpid(helper, &mut raw, 0) };
    let report = namespaces::read_to_end(status_r);
    let pid = <[u8; 4]>::try_from(pid_bytes.as_slice())
        .ok()
        .map(i32::from_ne_bytes);
    match (pid, report.is_empty()) {
        (Some(pid), true) => Ok(pid),
        (pid, _) => {
            if let Some(pid) = pid {
                // SAFETY: reap our (CLONE_PARENT) child that failed before execve.
                unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            }
            let msg = String::from_utf8_lossy(&report).into_owned();
            Err(if msg.is_empty() {
                RuntimeError::Setup("exec helper died".into())
            } else {
                RuntimeError::Child(msg)
            })
        }
    }
}

/// The helper: join namespaces, clone the process as the caller's child, report its pid, exit.
fn helper_main(
    namespaces: &[(OwnedFd, libc::c_int, std::path::PathBuf)],
    plan: &ProcessPlan,
    cgroup_procs: &[OwnedFd],
    stdio: [i32; 3],
    console: Option<&OwnedFd>,
    mut pid_w: std::fs::File,
    mut status_w: std::fs::File,
) -> ! {
    for (fd, nstype, path) in namespaces {
        if let Err(e) = namespaces::setns(fd.as_raw_fd(), *nstype, path) {
            report(&mut status_w, e.to_string().as_bytes());
            // SAFETY: _exit ends the helper without the parent's atexit handlers.
            unsafe { libc::_exit(1) }
        }
    }
    let child = match namespaces::clone_process(libc::CLONE_PARENT) {
        Ok(pid) => pid,
        Err(e) => {
            report(&mut status_w, e.to_string().as_bytes());
            // SAFETY: as above.
            unsafe { libc::_exit(1) }
        }
    };
    if child == 0 {
        drop(pid_w);
        let e = match exec_child(plan, cgroup_procs, stdio, console) {
            Ok(program) => process::exec(plan, &program),
            Err(e) => e,
        };
        report(&mut status_w, e.to_string().as_bytes());
        // SAFETY: as above.
        unsafe { libc::_exit(127) }
    }
    let _ = pid_w.write_all(&child.to_ne_bytes());
    // SAFETY: as above.
    unsafe { libc::_exit(0) }
}

fn exec_child(
    plan: &ProcessPlan,
    cgroup_procs: &[OwnedFd],
    stdio: [i32; 3],
    console: Option<&OwnedFd>,
) -> Result<std::ffi::CString, RuntimeError> {
    for fd in cgroup_procs {
        // "0" = the writing process itself.
        // SAFETY: writes one byte from a valid buffer to our descriptor.
        if unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) } != 1 {
            return Err(RuntimeError::last_os("join the container's cgroup"));
        }
    }
    // SAFETY: setsid has no arguments.
    if unsafe { libc::setsid() } < 0 {
        return Err(RuntimeError::last_os("setsid"));
    }
    match console {
        Some(sock) if plan.terminal => {
            process::setup_terminal(sock.as_raw_fd(), plan.console_size)?
        }
        _ => process::dup_stdio(stdio)?,
    }
    let program = process::prepare(plan)?;
    process::cloexec_from_3();
    Ok(program)
}
