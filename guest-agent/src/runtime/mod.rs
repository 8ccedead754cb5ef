//! condo's OCI container runtime: used by the guest agent (PID 1 of a tenant VM) and by the
//! `condo-runtime` CLI directly on a host.
//!
//! # API for the agent (stable contract)
//! - [`Runtime::new`]`(root)`: state lives under `root/<id>/` (state.json, exec.fifo), each
//!   container's read-modify-write under an flock of its directory (safe across threads and
//!   processes: `start` and a concurrent `record_exit` never lose an update).
//! - [`Runtime::create`]`(id, bundle, io)`: reads `bundle/config.json`, forks (through libc, so
//!   a multi-threaded caller is fine) a helper that unshares the namespaces and clones the
//!   container init with CLONE_PARENT: **the init is a direct child of the caller** (PID 1
//!   reaps it). The init sets everything up and blocks until [`Runtime::start`]. On error
//!   nothing is left behind (no process, mount, cgroup or state file). createRuntime/prestart
//!   hooks run before it returns.
//! - [`Runtime::exec`]`(id, process, io)`: runs another process in the container; it is also a
//!   direct child of the caller; returns its host pid once it has exec'd (a missing binary is
//!   an error here, not an exit code).
//! - [`Runtime::kill`] (the init), [`Runtime::kill_all`] (every member of the container's
//!   cgroup), [`Runtime::delete`]`(id, force)`, [`Runtime::state`], [`Runtime::list`],
//!   [`Runtime::stats`] (cgroup v2 figures; `Stats::default()` without a cgroup).
//! - [`Runtime::record_exit`]`(pid, status)`: the reaper (the agent) calls it for every reaped
//!   child; it returns the container id when the pid was a container init or exec'd process and
//!   records the init's exit (with `oom_killed` from memory.events) in the state, which
//!   [`Runtime::state`] then reports in `exit`.
//! - [`Runtime::wait_child`]`(pid)`: waitpid + record_exit, for callers that are not a global
//!   reaper (the CLI).
//! - Stdio: [`ProcessIo`]; `None` = /dev/null; `terminal` = console socket (pty master sent
//!   over SCM_RIGHTS when `process.terminal` is true).
//! - Errors: [`RuntimeError`]; `InvalidSpec`/`BundleConfig`/`InvalidId` are the caller's fault,
//!   `AlreadyExists`/`NotFound`/`WrongState` are lifecycle errors, `Child` carries the message
//!   the container init or exec'd process reported (it names the spec field when it is one).
//!
//! # Where it runs
//! - cgroup v2 only: a cgroup per container (`condo/<id>`, or `linux.cgroupsPath`) with
//!   memory/pids/cpu/io limits and an eBPF device program. On a host without v2 controllers
//!   (v1/v2 hybrid) limits are refused with an error naming the controller; a container
//!   without limits runs without a v2 cgroup, its device rules kept by the v1 devices
//!   controller (`/sys/fs/cgroup/devices/condo/<id>`).
//! - On an initramfs root (a guest before switch_root) pivot_root is impossible; the runtime
//!   then moves the new root over "/" and chroots (runc's --no-pivot).
//! - The guest kernel needs CONFIG_BPF_SYSCALL and CONFIG_CGROUP_BPF for the device cgroup:
//!   creating a container with a cgroup fails closed without them.
//!
//! Defaults equal to Docker's (capabilities, seccomp, masked paths) are in [`defaults`];
//! the writable overlay over a read-only image is asked with the annotation
//! [`OVERLAY_ANNOTATION`] (`"state"` = under the state directory, or a host directory).

pub mod capabilities;
pub mod cgroups;
mod create;
pub mod defaults;
mod delete;
pub mod devices;
mod error;
mod exec;
pub mod hooks;
mod init;
mod kill;
pub mod mounts;
mod namespaces;
mod plan;
mod process;
pub mod seccomp;
mod start;
mod state;
mod state_store;
pub mod syscall;
mod syscall_table;
mod types;
pub mod validate;

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use error::RuntimeError;
pub use plan::OVERLAY_ANNOTATION;
pub use types::{ContainerState, ExitStatus, ProcessIo, Stats, Status};

/// Default state root of the host CLI.
pub const DEFAULT_ROOT: &str = "/run/condo-runtime";

/// A container runtime whose state lives under one root directory.
#[derive(Debug)]
pub struct Runtime {
    root: PathBuf,
    /// Host pids of container inits and exec'd processes started by this instance → container id.
    children: Mutex<HashMap<i32, String>>,
}

impl Runtime {
    /// Opens (creating it if needed) the state root `root`.
    pub fn new(root: impl Into<PathBuf>) -> Result<Runtime, RuntimeError> {
        let root = root.into();
        // Private: exec.fifo inside must not be reachable by other users.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(|e| RuntimeError::io("create state root", &root, e))?;
        Ok(Runtime {
            root,
            children: Mutex::new(HashMap::new()),
        })
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates container `id` from `bundle/config.json`; its init waits for [`Runtime::start`].
    pub fn create(
        &self,
        id: &str,
        bundle: &Path,
        io: ProcessIo,
    ) -> Result<ContainerState, RuntimeError> {
        let state = create::create(&self.root, id, bundle, io)?;
        self.remember_child(state.pid, id);
        Ok(state)
    }

    /// Releases the init of a created container so it execs the container process.
    pub fn start(&self, id: &str) -> Result<(), RuntimeError> {
        start::start(&self.root, id)
    }

    /// Runs `process` inside running container `id`; returns its host pid.
    pub fn exec(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
        io: ProcessIo,
    ) -> Result<i32, RuntimeError> {
        let pid = exec::exec(&self.root, id, process, io)?;
        self.remember_child(pid, id);
        Ok(pid)
    }

    /// Sends `signal` to the container's init.
    pub fn kill(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        kill::kill(&self.root, id, signal)
    }

    /// Sends `signal` to every process of the container (its cgroup's members).
    pub fn kill_all(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        kill::kill_all(&self.root, id, signal)
    }

    /// Deletes a stopped container (any container with `force`, killing it first).
    pub fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        delete::delete(&self.root, id, force)
    }

    /// The current state of container `id`.
    pub fn state(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        state::state(&self.root, id)
    }

    /// States of all containers under the root, sorted by id.
    pub fn list(&self) -> Result<Vec<ContainerState>, RuntimeError> {
        state::list(&self.root)
    }

    /// Cgroup figures of container `id`.
    pub fn stats(&self, id: &str) -> Result<Stats, RuntimeError> {
        let state = state::state(&self.root, id)?;
        Ok(match &state.cgroup {
            Some(path) => cgroups::read_stats(path),
            None => Stats::default(),
        })
    }

    /// Records that child `pid` ended with `status`; returns the container it belonged to.
    pub fn record_exit(&self, pid: i32, status: ExitStatus) -> Option<String> {
        let known = self
            .children
            .lock()
            .ok()
            .and_then(|mut children| children.remove(&pid));
        state::record_exit(&self.root, pid, status, known)
    }

    /// Waits for child `pid` of the caller, records its exit and returns it (with the OOM flag
    /// filled in when it was a container init). For callers that are not a global reaper.
    pub fn wait_child(&self, pid: i32) -> Result<ExitStatus, RuntimeError> {
        let mut raw = 0;
        loop {
            // SAFETY: waitpid writes only to `raw`, a valid i32.
            let rc = unsafe { libc::waitpid(pid, &mut raw, 0) };
            if rc == pid {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINTR) {
                return Err(RuntimeError::Sys {
                    call: "waitpid",
                    source: err,
                });
            }
        }
        let status = ExitStatus::from_wait_status(raw);
        let id = self.record_exit(pid, status);
        let recorded = id
            .and_then(|id| state::state(&self.root, &id).ok())
            .and_then(|s| s.exit);
        Ok(match recorded {
            Some(exit) if exit.code == status.code && exit.signal == status.signal => exit,
            _ => status,
        })
    }

    fn remember_child(&self, pid: i32, id: &str) {
        if let Ok(mut children) = self.children.lock() {
            children.insert(pid, id.to_string());
        }
    }
}
