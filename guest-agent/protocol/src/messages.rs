//! Request and reply bodies.

use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Largest stdin chunk a client may send, and largest output chunk the agent returns. Base64
/// makes it 4/3 larger on the wire, still well under [`crate::MAX_FRAME_LEN`].
pub const MAX_STDIO_CHUNK: u32 = 256 * 1024;

/// Longest container or exec id.
pub const MAX_ID_LEN: usize = 64;

/// Most rows or columns a terminal may be resized to: far beyond any screen, small enough
/// that a bogus size is caught.
pub const MAX_TERMINAL_DIMENSION: u16 = 10_000;

/// A process the agent runs: a container's init (`exec_id: None`) or a process exec'd into it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessRef {
    pub container_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_id: Option<String>,
}

impl ProcessRef {
    pub fn init(container_id: impl Into<String>) -> Self {
        ProcessRef {
            container_id: container_id.into(),
            exec_id: None,
        }
    }

    pub fn exec(container_id: impl Into<String>, exec_id: impl Into<String>) -> Self {
        ProcessRef {
            container_id: container_id.into(),
            exec_id: Some(exec_id.into()),
        }
    }
}

impl fmt::Display for ProcessRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.exec_id {
            Some(exec_id) => write!(f, "{}/{}", self.container_id, exec_id),
            None => write!(f, "{}", self.container_id),
        }
    }
}

/// Which standard streams of a new process go through the agent (the client then moves the
/// bytes with `WriteStdin`/`ReadOutput`); the others are /dev/null.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdioPipes {
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub stdout: bool,
    #[serde(default)]
    pub stderr: bool,
}

impl StdioPipes {
    pub const ALL: StdioPipes = StdioPipes {
        stdin: true,
        stdout: true,
        stderr: true,
    };
    pub const NONE: StdioPipes = StdioPipes {
        stdin: false,
        stdout: false,
        stderr: false,
    };
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateContainer {
    pub container_id: String,
    /// The OCI runtime spec; its `root.path` is replaced by `rootfs`.
    pub spec: Box<oci_spec::runtime::Spec>,
    /// Absolute path, inside the guest, of the container's root filesystem.
    pub rootfs: String,
    #[serde(default)]
    pub stdio: StdioPipes,
    /// Remove the container when its init exits (`condo run -d --rm`): the agent deletes it
    /// before it answers the init's waiters, so a `wait` that returns means it is gone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_remove: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecProcess {
    pub container_id: String,
    pub exec_id: String,
    pub process: Box<oci_spec::runtime::Process>,
    #[serde(default)]
    pub stdio: StdioPipes,
}

/// Reads a container init's kept output from an offset, without consuming it (`condo logs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadLog {
    pub container_id: String,
    pub stream: OutputStream,
    /// Offset in the stream (bytes the process wrote since it started); 0 = the oldest kept.
    pub offset: u64,
    pub max_bytes: u32,
    /// How long to wait for bytes past `offset` when there are none yet (0: answer at once).
    #[serde(default)]
    pub wait_ms: u32,
}

/// Mounts an image's read-only filesystem in the agent, once per image; containers then use
/// the returned path as their `rootfs` (with the runtime's overlay annotation for a writable
/// layer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountImage {
    /// Names the mount point: 1-64 of `[A-Za-z0-9_.-]` (e.g. the digest's hex, shortened).
    pub image_id: String,
    /// A block device (a virtio disk in a guest) or a regular file (loop-mounted on a host).
    pub source: String,
    /// `erofs` or `ext4`.
    pub fs_type: String,
}

/// Sets the window size of a process's terminal (the client's window changed: `condo run -t`
/// passes SIGWINCH on); the kernel then signals SIGWINCH to the terminal's foreground group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResizeTerminal {
    pub process: ProcessRef,
    /// 1..=[`MAX_TERMINAL_DIMENSION`] each ([`validate_terminal_size`]).
    pub rows: u16,
    pub cols: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// What a client asks of the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "args", rename_all = "snake_case")]
pub enum Request {
    Ping,
    BootTimings,
    CreateContainer(CreateContainer),
    StartContainer {
        container_id: String,
    },
    Exec(ExecProcess),
    Signal {
        process: ProcessRef,
        signal: i32,
    },
    /// Blocks until the process has exited.
    Wait {
        process: ProcessRef,
    },
    DeleteContainer {
        container_id: String,
        #[serde(default)]
        force: bool,
    },
    Stats {
        container_id: String,
    },
    List,
    WriteStdin {
        process: ProcessRef,
        data: Bytes,
    },
    CloseStdin {
        process: ProcessRef,
    },
    /// Blocks until output is available; an empty reply means end of stream.
    ReadOutput {
        process: ProcessRef,
        stream: OutputStream,
        max_bytes: u32,
    },
    /// Long poll: returns OOM events with a sequence number above `after`, waiting up to
    /// `timeout_ms` for one to happen.
    WaitOomEvents {
        after: u64,
        timeout_ms: u32,
    },
    ReadLog(ReadLog),
    MountImage(MountImage),
    ResizeTerminal(ResizeTerminal),
}

impl Request {
    /// Short name of the request, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::BootTimings => "boot_timings",
            Request::CreateContainer(_) => "create_container",
            Request::StartContainer { .. } => "start_container",
            Request::Exec(_) => "exec",
            Request::Signal { .. } => "signal",
            Request::Wait { .. } => "wait",
            Request::DeleteContainer { .. } => "delete_container",
            Request::Stats { .. } => "stats",
            Request::List => "list",
            Request::WriteStdin { .. } => "write_stdin",
            Request::CloseStdin { .. } => "close_stdin",
            Request::ReadOutput { .. } => "read_output",
            Request::WaitOomEvents { .. } => "wait_oom_events",
            Request::ReadLog(_) => "read_log",
            Request::MountImage(_) => "mount_image",
            Request::ResizeTerminal(_) => "resize_terminal",
        }
    }
}

/// Times of the guest's boot, on CLOCK_BOOTTIME (the clock of /proc/uptime: zero when the
/// kernel started), in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootTimings {
    /// When the agent's main() began.
    pub agent_start_ns: u64,
    /// When the agent had mounted the basics and was listening.
    pub agent_ready_ns: u64,
    /// When this reply was made.
    pub now_ns: u64,
    /// Wall-clock time (Unix epoch, ns) at `now_ns`, to line up guest and host clocks.
    pub now_unix_ns: u64,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code, when the process exited.
    pub code: Option<i32>,
    /// Number of the signal that killed it, when it was killed.
    pub signal: Option<i32>,
    /// The container's cgroup recorded an OOM kill.
    pub oom_killed: bool,
}

/// Resource use of a container's cgroup; a figure is None when its controller is missing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStats {
    pub cpu_usage_usec: Option<u64>,
    pub memory_current_bytes: Option<u64>,
    pub memory_max_bytes: Option<u64>,
    pub pids_current: Option<u64>,
    pub pids_max: Option<u64>,
    pub oom_kills: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub id: String,
    /// OCI status: creating, created, running or stopped.
    pub status: String,
    pub pid: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OomEvent {
    /// Increases by one per event, from 1.
    pub seq: u64,
    pub container_id: String,
}

/// The successful outcome of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Reply {
    /// The request was carried out and has nothing to return.
    Done,
    Pong {
        agent_version: String,
        protocol_version: u32,
    },
    BootTimings(BootTimings),
    /// A process was created (container init, blocked until start) or exec'd.
    Spawned {
        pid: i32,
    },
    Exited(ExitStatus),
    Stats(ContainerStats),
    Containers(Vec<ContainerInfo>),
    StdinWritten {
        bytes: u32,
    },
    /// Output bytes; empty means the stream is at its end.
    Output {
        data: Bytes,
    },
    OomEvents {
        events: Vec<OomEvent>,
    },
    /// Kept output from an offset; `eof`: the stream ended and nothing follows `next_offset`.
    Log {
        data: Bytes,
        next_offset: u64,
        eof: bool,
    },
    /// Where the image is mounted (read-only) in the agent's filesystem.
    ImageMounted {
        path: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// A field of the request is invalid (the message says which and why).
    InvalidRequest,
    NotFound,
    AlreadyExists,
    /// The request does not fit the object's state (start twice, delete a running container).
    InvalidState,
    /// The frame could not be parsed as a message.
    MalformedFrame,
    FrameTooLarge,
    UnsupportedVersion,
    /// The agent is at its limit of connections or requests in flight.
    Busy,
    /// The agent failed to carry out a valid request.
    Internal,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ErrorReply {
    pub kind: ErrorKind,
    pub message: String,
}

impl ErrorReply {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ErrorReply {
            kind,
            message: message.into(),
        }
    }
}

/// The agent's answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok(Reply),
    Error(ErrorReply),
}

impl From<Result<Reply, ErrorReply>> for Response {
    fn from(result: Result<Reply, ErrorReply>) -> Self {
        match result {
            Ok(reply) => Response::Ok(reply),
            Err(error) => Response::Error(error),
        }
    }
}

/// Bytes carried as a base64 string in JSON.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.0.len())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(Bytes)
            .map_err(|err| serde::de::Error::custom(format!("invalid base64 data: {err}")))
    }
}

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} {value:?}: {reason}")]
pub struct IdError {
    pub field: &'static str,
    pub value: String,
    pub reason: &'static str,
}

/// Checks a container or exec id: 1 to 64 of `[A-Za-z0-9_.-]`, not starting with `.` or `-`
/// (ids become path components and command-line arguments).
pub fn validate_id(field: &'static str, value: &str) -> Result<(), IdError> {
    let error = |reason| IdError {
        field,
        value: value.chars().take(MAX_ID_LEN + 8).collect(),
        reason,
    };
    if value.is_empty() {
        return Err(error("must not be empty"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(error("longer than 64 bytes"));
    }
    if value.starts_with('.') || value.starts_with('-') {
        return Err(error("must not start with '.' or '-'"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(error("may hold only letters, digits, '_', '.' and '-'"));
    }
    Ok(())
}

/// Why a terminal size was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid terminal size {rows}x{cols} (rows x columns): each must be within 1..={max}", max = MAX_TERMINAL_DIMENSION)]
pub struct TerminalSizeError {
    pub rows: u16,
    pub cols: u16,
}

/// Checks a terminal size: rows and columns each 1..=[`MAX_TERMINAL_DIMENSION`] (a zero
/// size is what a window that is not a terminal reports; nothing can draw on it).
pub fn validate_terminal_size(rows: u16, cols: u16) -> Result<(), TerminalSizeError> {
    let fits = |n: u16| (1..=MAX_TERMINAL_DIMENSION).contains(&n);
    if fits(rows) && fits(cols) {
        Ok(())
    } else {
        Err(TerminalSizeError { rows, cols })
    }
}
