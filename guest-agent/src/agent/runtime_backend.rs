//! The real backend: condo's container runtime (`crate::runtime`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};

use condo_protocol::{ContainerInfo, ContainerStats, ErrorKind, ErrorReply, ExitStatus};

use super::{BackendError, ContainerBackend, SpawnIo};
use crate::runtime::{self, ProcessIo, Runtime, RuntimeError};

pub struct RuntimeBackend {
    runtime: Runtime,
    /// Held by every call that writes a container's state file (create, start, delete,
    /// record_exit): the reaper's record_exit may run while start is saving the same state,
    /// and two unsynchronised saves lose one update (a recorded exit overwritten by
    /// "running").
    state_lock: Mutex<()>,

    /// Pids of the container inits this agent created → container id.
    inits: Mutex<HashMap<i32, String>>,
}

impl RuntimeBackend {
    /// Opens the runtime with its state under `state_root`.
    pub fn new(state_root: impl Into<PathBuf>) -> Result<Self, RuntimeError> {
        Ok(RuntimeBackend {
            runtime: Runtime::new(state_root)?,
            state_lock: Mutex::new(()),
            inits: Mutex::new(HashMap::new()),
        })
    }
}

fn error_kind(error: &RuntimeError) -> ErrorKind {
    match error {
        RuntimeError::InvalidId { .. }
        | RuntimeError::InvalidSpec { .. }
        | RuntimeError::BundleConfig { .. } => ErrorKind::InvalidRequest,
        RuntimeError::AlreadyExists(_) => ErrorKind::AlreadyExists,
        RuntimeError::NotFound(_) => ErrorKind::NotFound,
        RuntimeError::WrongState { .. } => ErrorKind::InvalidState,
        _ => ErrorKind::Internal,
    }
}

impl From<RuntimeError> for BackendError {
    fn from(error: RuntimeError) -> Self {
        BackendError::new(error_kind(&error), error.to_string())
    }
}

fn process_io(io: SpawnIo) -> ProcessIo {
    ProcessIo {
        stdin: io.stdin,
        stdout: io.stdout,
        stderr: io.stderr,
        terminal: io.terminal,
    }
}

fn to_protocol(status: runtime::ExitStatus) -> ExitStatus {
    ExitStatus {
        code: status.code,
        signal: status.signal,
        oom_killed: status.oom_killed,
    }
}

/// Runs `spawn` (a runtime call that clones a process) in a child forked from the agent, and
/// returns its result.
///
/// Why: the runtime clones with a raw clone(2), which skips glibc's fork handlers. In the
/// multithreaded agent, a child cloned while another thread holds an allocator lock would
/// deadlock at its first allocation. glibc's fork() resets those locks, and the forked child is
/// single-threaded, so the runtime's clone is safe there. The processes it makes become the
/// agent's children again when the helper exits (the agent is PID 1 or a child subreaper).
///
/// The helper closes every descriptor but `keep` (the new process's stdio and console socket)
/// first: the agent's ends of other processes' pipes must not leak into a container init that
/// waits for start, or those processes would never see end of input.
fn in_forked_child(
    keep: &[RawFd],
    spawn: impl FnOnce() -> Result<i32, BackendError>,
) -> Result<i32, BackendError> {
    let internal = |what: String| BackendError::new(ErrorKind::Internal, what);
    let (result_read, result_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|errno| internal(format!("pipe2 for the spawn helper failed: {errno}")))?;
    // SAFETY: the child runs only `spawn` and then _exit()s without unwinding into the
    // parent's code; glibc's fork() leaves the allocator usable in the child.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            drop(result_read);
            super::reaper::forget_wake_pipe();
            let mut keep = keep.to_vec();
            keep.push(result_write.as_raw_fd());
            close_fds_except(&mut keep);
            let result: Result<i32, ErrorReply> = spawn().map_err(ErrorReply::from);
            let _ = serde_json::to_writer(File::from(result_write), &result);
            // SAFETY: _exit ends the helper without running the agent's exit handlers.
            unsafe { libc::_exit(0) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(result_write);
            drop(spawn);
            // Read one JSON value, not to EOF: the processes the helper made inherit the write
            // end until they exec.
            let reader = File::from(result_read);
            let result: Result<i32, ErrorReply> = serde_json::Deserializer::from_reader(reader)
                .into_iter()
                .next()
                .and_then(Result::ok)
                .ok_or_else(|| internal(format!("spawn helper {child} died without a result")))?;
            result.map_err(|error| BackendError::new(error.kind, error.message))
        }
        Err(errno) => Err(internal(format!(
            "fork of the spawn helper failed: {errno}"
        ))),
    }
}

/// Closes every descriptor above 2 except those in `keep`.
fn close_fds_except(keep: &mut Vec<RawFd>) {
    keep.retain(|fd| *fd > 2);
    keep.sort_unstable();
    let mut first: libc::c_uint = 3;
    for fd in keep.iter().map(|fd| *fd as libc::c_uint) {
        if fd > first {
            close_range(first, fd - 1);
        }
        first = fd + 1;
    }
    close_range(first, libc::c_uint::MAX);
}

fn close_range(first: libc::c_uint, last: libc::c_uint) {
    // SAFETY: close_range(2) only closes descriptors of this (single-threaded helper) process;
    // nothing in it uses the closed ones afterwards.
    unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
}

fn stdio_fds(io: &SpawnIo) -> Vec<RawFd> {
    [&io.stdin, &io.stdout, &io.stderr, &io.terminal]
        .into_iter()
        .flatten()
        .map(AsRawFd::as_raw_fd)
        .collect()
}

impl RuntimeBackend {
    fn lock_state(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guarded data is (): a panic while it was held leaves nothing inconsistent.
        self.state_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl ContainerBackend for RuntimeBackend {
    fn create(&self, id: &str, bundle: &Path, io: SpawnIo) -> Result<i32, BackendError> {
        let _state = self.lock_state();
        let pid = in_forked_child(&stdio_fds(&io), || {
            let state = self.runtime.create(id, bundle, process_io(io))?;
            Ok(state.pid)
        })?;
        if let Ok(mut inits) = self.inits.lock() {
            inits.insert(pid, id.to_owned());
        }
        Ok(pid)
    }

    fn start(&self, id: &str) -> Result<(), BackendError> {
        let _state = self.lock_state();
        Ok(self.runtime.start(id)?)
    }

    fn exec(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
        io: SpawnIo,
    ) -> Result<i32, BackendError> {
        in_forked_child(&stdio_fds(&io), || {
            Ok(self.runtime.exec(id, process, process_io(io))?)
        })
    }

    fn kill(&self, id: &str, signal: i32) -> Result<(), BackendError> {
        Ok(self.runtime.kill(id, signal)?)
    }

    fn delete(&self, id: &str, force: bool) -> Result<(), BackendError> {
        let _state = self.lock_state();
        Ok(self.runtime.delete(id, force)?)
    }

    fn list(&self) -> Result<Vec<ContainerInfo>, BackendError> {
        let states = self.runtime.list()?;
        Ok(states
            .into_iter()
            .map(|state| ContainerInfo {
                id: state.id,
                status: state.status.to_string(),
                pid: (state.pid > 0).then_some(state.pid),
            })
            .collect())
    }

    fn stats(&self, id: &str) -> Result<ContainerStats, BackendError> {
        let stats = self.runtime.stats(id)?;
        Ok(ContainerStats {
            cpu_usage_usec: stats.cpu_usage_usec,
            memory_current_bytes: stats.memory_current,
            memory_max_bytes: stats.memory_max,
            pids_current: stats.pids_current,
            pids_max: stats.pids_max,
            oom_kills: Some(stats.oom_kill),
        })
    }

    fn memory_events(&self, id: &str) -> Option<PathBuf> {
        let cgroup = self.runtime.state(id).ok()?.cgroup?;
        Some(cgroup.join("memory.events")).filter(|path| path.exists())
    }

    fn record_exit(&self, pid: i32, status: ExitStatus) -> Option<(String, ExitStatus)> {
        let raw = runtime::ExitStatus {
            code: status.code,
            signal: status.signal,
            oom_killed: false,
        };
        let _state = self.lock_state();
        let container = self.runtime.record_exit(pid, raw);
        let init_of = self.inits.lock().ok()?.remove(&pid)?;
        // The runtime has recorded the init's exit, with the OOM flag, in the state.
        let recorded = self
            .runtime
            .state(&init_of)
            .ok()
            .and_then(|state| state.exit)
            .map(to_protocol)
            .filter(|recorded| recorded.code == status.code && recorded.signal == status.signal);
        debug_assert!(container.as_deref().is_none_or(|id| id == init_of));
        Some((init_of, recorded.unwrap_or(status)))
    }
}
