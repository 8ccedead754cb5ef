//! The real backend: condo's container runtime (`crate::runtime`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use condo_protocol::{ContainerInfo, ContainerStats, ErrorKind, ExitStatus};

use super::{BackendError, ContainerBackend, SpawnIo};
use crate::runtime::{self, ProcessIo, Runtime, RuntimeError};

pub struct RuntimeBackend {
    runtime: Runtime,
    /// Pids of the container inits this agent created → container id.
    inits: Mutex<HashMap<i32, String>>,
}

impl RuntimeBackend {
    /// Opens the runtime with its state under `state_root`.
    pub fn new(state_root: impl Into<PathBuf>) -> Result<Self, RuntimeError> {
        Ok(RuntimeBackend {
            runtime: Runtime::new(state_root)?,
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
        ..ProcessIo::default()
    }
}

fn to_protocol(status: runtime::ExitStatus) -> ExitStatus {
    ExitStatus {
        code: status.code,
        signal: status.signal,
        oom_killed: status.oom_killed,
    }
}

impl ContainerBackend for RuntimeBackend {
    fn create(&self, id: &str, bundle: &Path, io: SpawnIo) -> Result<i32, BackendError> {
        let state = self.runtime.create(id, bundle, process_io(io))?;
        if let Ok(mut inits) = self.inits.lock() {
            inits.insert(state.pid, id.to_owned());
        }
        Ok(state.pid)
    }

    fn start(&self, id: &str) -> Result<(), BackendError> {
        Ok(self.runtime.start(id)?)
    }

    fn exec(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
        io: SpawnIo,
    ) -> Result<i32, BackendError> {
        Ok(self.runtime.exec(id, process, process_io(io))?)
    }

    fn kill(&self, id: &str, signal: i32) -> Result<(), BackendError> {
        Ok(self.runtime.kill(id, signal)?)
    }

    fn delete(&self, id: &str, force: bool) -> Result<(), BackendError> {
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

    fn record_exit(&self, pid: i32, status: ExitStatus) -> Option<(String, ExitStatus)> {
        let raw = runtime::ExitStatus {
            code: status.code,
            signal: status.signal,
            oom_killed: false,
        };
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
