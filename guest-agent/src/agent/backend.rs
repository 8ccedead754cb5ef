//! What the agent needs from a container runtime, as a trait: the real implementation calls
//! `condo_agent::runtime`; protocol tests use a fake that runs plain host processes.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use condo_protocol::{ContainerInfo, ContainerStats, ErrorKind, ErrorReply, ExitStatus};

/// Stdio of a new process; `None` is /dev/null. The backend owns (and so closes) the fds.
/// `terminal`: for a process whose spec asks for a terminal, the socket the runtime sends the
/// pty's master over (runc's console-socket protocol); its stdio is then the pty.
#[derive(Debug, Default)]
pub struct SpawnIo {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    pub terminal: Option<OwnedFd>,
}

/// A runtime failure, already sorted into the protocol's error kinds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    pub kind: ErrorKind,
    pub message: String,
}

impl BackendError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        BackendError {
            kind,
            message: message.into(),
        }
    }
}

impl From<BackendError> for ErrorReply {
    fn from(error: BackendError) -> Self {
        ErrorReply::new(error.kind, error.message)
    }
}

/// The container operations the agent's handlers call. Implementations must be usable from many
/// threads at once.
pub trait ContainerBackend: Send + Sync + 'static {
    /// Creates the container described by `bundle/config.json`; its init waits for `start`.
    /// Returns the init's pid.
    fn create(&self, id: &str, bundle: &Path, io: SpawnIo) -> Result<i32, BackendError>;
    fn start(&self, id: &str) -> Result<(), BackendError>;
    /// Runs `process` inside the running container `id`; returns its pid.
    fn exec(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
        io: SpawnIo,
    ) -> Result<i32, BackendError>;
    /// Sends `signal` to the container's init.
    fn kill(&self, id: &str, signal: i32) -> Result<(), BackendError>;
    fn delete(&self, id: &str, force: bool) -> Result<(), BackendError>;
    fn list(&self) -> Result<Vec<ContainerInfo>, BackendError>;
    fn stats(&self, id: &str) -> Result<ContainerStats, BackendError>;
    /// The container's cgroup `memory.events` file, to watch for OOM kills (None: no cgroup).
    fn memory_events(&self, id: &str) -> Option<PathBuf>;
    /// Tells the runtime that a child was reaped. When `pid` was a container's init, returns
    /// that container's id and its final status (the runtime sets `oom_killed`).
    fn record_exit(&self, pid: i32, status: ExitStatus) -> Option<(String, ExitStatus)>;
}
