//! Public value types of the runtime API: stdio wiring, exit statuses, state and stats.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where a container process's stdio goes. `None` means /dev/null.
///
/// `terminal`: a connected Unix socket; when the process asks for a terminal
/// (`process.terminal: true`) the runtime creates a pty inside the container and sends its
/// master over this socket with SCM_RIGHTS (runc's `--console-socket` protocol); the
/// stdin/stdout/stderr fields are then ignored.
#[derive(Debug, Default)]
pub struct ProcessIo {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    pub terminal: Option<OwnedFd>,
}

/// How a process ended: exit code or killing signal; `oom_killed` when the container's cgroup
/// recorded an OOM kill (memory.events oom_kill) and the process died of SIGKILL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub oom_killed: bool,
}

impl ExitStatus {
    /// From a raw wait status as returned by waitpid(2).
    pub fn from_wait_status(status: i32) -> ExitStatus {
        if libc::WIFSIGNALED(status) {
            ExitStatus {
                code: None,
                signal: Some(libc::WTERMSIG(status)),
                oom_killed: false,
            }
        } else {
            ExitStatus {
                code: Some(libc::WEXITSTATUS(status)),
                signal: None,
                oom_killed: false,
            }
        }
    }

    /// Shell convention: the exit code, or 128 + the killing signal.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => 255,
        }
    }
}

/// OCI runtime-spec container status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
        })
    }
}

/// The state of a container: the OCI state fields plus what condo records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    pub oci_version: String,
    pub id: String,
    pub status: Status,
    /// Host pid of the container's init (0 once it is known to be gone).
    pub pid: i32,
    pub bundle: PathBuf,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// RFC 3339 creation time.
    pub created: String,
    /// Absolute path of the container's cgroup (v2), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<PathBuf>,
    /// The cgroup v1 devices cgroup holding the device rules, on a host without cgroup v2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_cgroup: Option<PathBuf>,
    /// Start time of the init (field 22 of /proc/PID/stat) to detect pid reuse.
    #[serde(default)]
    pub init_start_time: u64,
    /// Set once the init's exit has been recorded (see `Runtime::record_exit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitStatus>,
}

/// Figures read from the container's cgroup. Absent files give `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub memory_current: Option<u64>,
    /// `None` also when memory.max is "max".
    pub memory_max: Option<u64>,
    pub memory_peak: Option<u64>,
    pub pids_current: Option<u64>,
    pub pids_max: Option<u64>,
    pub cpu_usage_usec: Option<u64>,
    pub oom_kill: u64,
    pub oom: u64,
}
