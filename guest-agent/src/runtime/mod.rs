//! condo's OCI container runtime: used by the guest agent (PID 1 of a tenant VM) and by the
//! `condo-runtime` CLI directly on a host.
//!
//! # API for the agent (stable contract)
//! - [`Runtime::new`]`(root)`: state lives under `root/<id>/` (state.json, exec.fifo).
//! - [`Runtime::create`]`(id, bundle, io)`: reads `bundle/config.json`, forks the container init
//!   **as a direct child of the caller** (so PID 1 reaps it); the init sets everything up and
//!   blocks until [`Runtime::start`]. On error nothing is left behind.
//! - [`Runtime::exec`]`(id, process, io)`: runs another process in the container; it is also a
//!   direct child of the caller (CLONE_PARENT); returns its host pid once it has exec'd.
//! - [`Runtime::kill`], [`Runtime::delete`]`(id, force)`, [`Runtime::state`], [`Runtime::list`],
//!   [`Runtime::stats`] (cgroup v2 figures; zeros/None without a cgroup).
//! - [`Runtime::record_exit`]`(pid, status)`: the reaper (the agent) calls it for every reaped
//!   child; it returns the container id when the pid was a container init or exec'd process and
//!   records the init's exit (with `oom_killed` from memory.events) in the state, which
//!   [`Runtime::state`] then reports in `exit`.
//! - Stdio: [`ProcessIo`]; `None` = /dev/null; `terminal` = console socket (pty master sent
//!   over SCM_RIGHTS when `process.terminal` is true).
//! - The runtime never waits for children itself except in [`Runtime::wait_child`], a helper for
//!   callers that are the parent and not a global reaper (the CLI).
//!
//! Defaults equal to Docker's (capabilities, seccomp, masked paths) are in [`defaults`].

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
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use error::RuntimeError;
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
        std::fs::create_dir_all(&root)
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
