//! Tenants: each one is a supervisor process holding that tenant's containers, its state in a
//! run directory `${CONDO_RUN_DIR:-/run/condo}/tenants/<name>/`:
//!
//! | file | what |
//! |---|---|
//! | `config.json` | what the tenant was created with ([`TenantConfig`]) |
//! | `vmm.pid` | `PID START_TIME` of the supervisor: the VMM (`vm`) or the host agent (`process`) |
//! | `vsock.sock` | `vm`: the VMM's virtio-vsock socket (`CONNECT 1024` reaches the agent) |
//! | `agent.sock` | `process`: the host agent's Unix socket |
//! | `control.sock` | `vm`: the VMM's control socket (`status`, `stop`; see `condo_vmm::control`) |
//! | `console.log` | the guest's serial console, bounded (`vm`: the latest 1 MiB or `console_limit`), or the host agent's log (`process`) |
//! | `vmm.log` | `vm`: the VMM's own messages (how it ended, jail errors) |
//!
//! There is no daemon: the CLI reads these files and talks to the supervisor. A pid file whose
//! process is gone means the supervisor died: the tenant is reported `dead` and `rm` cleans up.

mod create;
mod initramfs;
pub mod net;
mod process;
mod remove;
mod spawn_vm;

use std::fs;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use condo_protocol::{Client, ClientError};
use serde::{Deserialize, Serialize};

pub use create::create;
pub use initramfs::agent_initramfs;
pub use process::{agent_binary, spawn_process_supervisor};
pub use remove::remove;
pub use spawn_vm::{default_kernel, spawn_vm, GUEST_CID};

/// Longest tenant name.
pub const MAX_NAME_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("invalid tenant name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("no tenant {0:?} (see `condo tenant ls`)")]
    NotFound(String),
    #[error("tenant {0:?} already exists")]
    AlreadyExists(String),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid {} of tenant {name:?}: {source}", path.display())]
    BadConfig {
        name: String,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot start the supervisor of tenant {name:?} ({program}): {source}")]
    Spawn {
        name: String,
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("tenant {name:?} did not become ready within {secs} s: {reason}\n--- last lines of {} ---\n{tail}", console.display())]
    NotReady {
        name: String,
        secs: u64,
        reason: String,
        console: PathBuf,
        tail: String,
    },
    #[error("tenant {name:?} is dead: its supervisor (pid {pid}) is gone; `condo tenant rm {name}` cleans it up")]
    Dead { name: String, pid: i32 },
    #[error("cannot reach the agent of tenant {name:?}: {source}")]
    Connect {
        name: String,
        #[source]
        source: io::Error,
    },
    /// The message holds the agent's error (not chained as a source: it would print twice).
    #[error("agent of tenant {name:?}: {error}")]
    Agent {
        name: String,
        error: Box<ClientError>,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("tenant network: {0}")]
    Net(#[from] crate::net::NetError),
}

pub type Result<T> = std::result::Result<T, TenantError>;

fn io_error<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> TenantError + 'p {
    move |source| TenantError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Where a tenant's containers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// In the tenant's own microVM (condo's VMM, the agent as the guest's PID 1).
    #[default]
    Vm,
    /// Directly on this host, under a condo-agent supervising the tenant (own pid and mount
    /// namespaces).
    Process,
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Isolation::Vm => "vm",
            Isolation::Process => "process",
        })
    }
}

impl std::str::FromStr for Isolation {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text {
            "vm" => Ok(Isolation::Vm),
            "process" => Ok(Isolation::Process),
            other => Err(format!("isolation {other:?} is not vm or process")),
        }
    }
}

/// An image attached to a tenant: a read-only disk (`vm`, /dev/vd<a+index>) or a file the host
/// agent loop-mounts (`process`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedImage {
    pub digest: String,
    pub names: Vec<String>,
    pub fs_path: PathBuf,
    pub fs_type: String,
}

impl AttachedImage {
    /// Id of its mount in the agent: the first 16 hex digits of the digest.
    pub fn mount_id(&self) -> String {
        let hex = self.digest.strip_prefix("sha256:").unwrap_or(&self.digest);
        hex.chars().take(16).collect()
    }
}

/// What a tenant was created with (config.json).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantConfig {
    pub name: String,
    pub isolation: Isolation,
    pub vcpus: u8,
    pub memory_mib: u64,
    /// `vm`: guest kernel and the initramfs holding the agent.
    #[serde(default)]
    pub kernel: Option<PathBuf>,
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Images, in disk order.
    #[serde(default)]
    pub images: Vec<AttachedImage>,
    /// `vm`: the tenant's network (tap, address block, NAT, isolation), if it has one.
    #[serde(default)]
    pub net: Option<net::TenantNet>,
    /// `vm`: most bytes console.log holds (the VMM keeps the latest output); the VMM's
    /// default (1 MiB) when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_limit: Option<u64>,
    /// Seconds since the Unix epoch.
    pub created_unix: u64,
}

/// Checks a tenant name: 1 to 64 of `[a-z0-9-]`.
pub fn validate_name(name: &str) -> Result<()> {
    let invalid = |reason| TenantError::InvalidName {
        name: name.chars().take(MAX_NAME_LEN + 8).collect(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid("longer than 64 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(invalid("may hold only a-z, 0-9 and '-'"));
    }
    Ok(())
}

/// `${CONDO_RUN_DIR:-/run/condo}`.
pub fn run_root() -> PathBuf {
    std::env::var_os("CONDO_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/condo"))
}

fn tenants_dir() -> PathBuf {
    run_root().join("tenants")
}

/// Is the supervisor up, gone, or not started yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    Running,
    Dead,
    /// No pid file yet (create in progress, or a create that failed half-way).
    Starting,
}

impl std::fmt::Display for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Liveness::Running => "running",
            Liveness::Dead => "dead",
            Liveness::Starting => "starting",
        })
    }
}

/// A tenant's run directory.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub name: String,
    pub dir: PathBuf,
}

impl Tenant {
    /// The tenant `name`, which must exist.
    pub fn open(name: &str) -> Result<Tenant> {
        let tenant = Tenant::at(name)?;
        if !tenant.dir.join("config.json").exists() {
            return Err(TenantError::NotFound(name.to_owned()));
        }
        Ok(tenant)
    }

    /// The run directory a tenant `name` has or would have.
    pub fn at(name: &str) -> Result<Tenant> {
        validate_name(name)?;
        Ok(Tenant {
            name: name.to_owned(),
            dir: tenants_dir().join(name),
        })
    }

    /// Every tenant with a config.json, sorted by name.
    pub fn list() -> Result<Vec<Tenant>> {
        let dir = tenants_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(io_error("cannot list", &dir)(err)),
        };
        let mut tenants: Vec<Tenant> = entries
            .flatten()
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter_map(|name| Tenant::open(&name).ok())
            .collect();
        tenants.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(tenants)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub fn config(&self) -> Result<TenantConfig> {
        let path = self.path("config.json");
        let text = fs::read(&path).map_err(io_error("cannot read", &path))?;
        serde_json::from_slice(&text).map_err(|source| TenantError::BadConfig {
            name: self.name.clone(),
            path,
            source,
        })
    }

    pub fn write_config(&self, config: &TenantConfig) -> Result<()> {
        let path = self.path("config.json");
        let tmp = self.path("config.json.tmp");
        let json = serde_json::to_vec_pretty(config).map_err(|source| TenantError::BadConfig {
            name: self.name.clone(),
            path: path.clone(),
            source,
        })?;
        fs::write(&tmp, json).map_err(io_error("cannot write", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_error("cannot rename into", &path))
    }

    /// The supervisor's pid, from vmm.pid (`PID START_TIME`).
    pub fn pid(&self) -> Option<i32> {
        self.pid_record().map(|(pid, _)| pid)
    }

    fn pid_record(&self) -> Option<(i32, Option<u64>)> {
        let text = fs::read_to_string(self.path("vmm.pid")).ok()?;
        let mut words = text.split_whitespace();
        let pid = words.next()?.parse().ok()?;
        Some((pid, words.next().and_then(|w| w.parse().ok())))
    }

    /// Writes vmm.pid: the pid and its start time (so that a recycled pid is not taken for
    /// the supervisor).
    pub(crate) fn write_pid(&self, pid: i32) -> Result<()> {
        let path = self.path("vmm.pid");
        let start = process_start_time(pid)
            .map(|t| t.to_string())
            .unwrap_or_default();
        fs::write(&path, format!("{pid} {start}\n")).map_err(io_error("cannot write", &path))
    }

    /// Running while the recorded process lives (and is not a zombie), with the start time
    /// recorded when it was spawned.
    pub fn liveness(&self) -> Liveness {
        match self.pid_record() {
            None => Liveness::Starting,
            Some((pid, start)) => match process_start_time(pid) {
                Some(now) if start.is_none_or(|start| start == now) => Liveness::Running,
                _ => Liveness::Dead,
            },
        }
    }

    /// A NUL-separated command line names a file of this tenant's run directory.
    pub(crate) fn named_in(&self, cmdline: &[u8]) -> bool {
        let prefix = format!("{}/", self.dir.to_string_lossy());
        cmdline
            .split(|b| *b == 0)
            .any(|arg| String::from_utf8_lossy(arg).contains(&prefix))
    }

    /// Sends one request (`status`, `stop`) to the VMM's control socket; returns its JSON line.
    pub fn control(&self, request: &str, timeout: Duration) -> Result<String> {
        use std::io::{BufRead, Write};
        let path = self.path("control.sock");
        let mut stream =
            UnixStream::connect(&path).map_err(io_error("cannot connect to", &path))?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.write_all(format!("{request}\n").as_bytes()))
            .map_err(io_error("cannot send to", &path))?;
        let mut line = String::new();
        io::BufReader::new(stream)
            .read_line(&mut line)
            .map_err(io_error("no answer from", &path))?;
        Ok(line.trim_end().to_owned())
    }

    /// Connects to the tenant's agent.
    pub fn connect(&self, timeout: Duration) -> Result<Client<UnixStream>> {
        let config = self.config()?;
        if self.liveness() == Liveness::Dead {
            return Err(TenantError::Dead {
                name: self.name.clone(),
                pid: self.pid().unwrap_or(0),
            });
        }
        let stream = match config.isolation {
            Isolation::Process => UnixStream::connect(self.path("agent.sock")),
            Isolation::Vm => condo_protocol::vsock_uds::connect(
                &self.path("vsock.sock"),
                condo_protocol::DEFAULT_VSOCK_PORT,
                timeout,
            ),
        }
        .map_err(|source| TenantError::Connect {
            name: self.name.clone(),
            source,
        })?;
        Ok(Client::new(stream))
    }

    /// Waits until the agent answers a ping (or the supervisor died, or `timeout` passed).
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if self.liveness() == Liveness::Dead {
                last = "the supervisor exited".into();
                break;
            }
            match self.connect(Duration::from_millis(500)) {
                Ok(mut client) => match client.ping() {
                    Ok(_) => return Ok(()),
                    Err(err) => last = err.to_string(),
                },
                Err(err) => last = err.to_string(),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(TenantError::NotReady {
            name: self.name.clone(),
            secs: timeout.as_secs(),
            reason: last,
            console: self.path("console.log"),
            tail: self.console_tail(20),
        })
    }

    /// The last `lines` lines of console.log, then of vmm.log (the VMM's own messages).
    pub fn console_tail(&self, lines: usize) -> String {
        let tail = |file: &str| {
            let text = fs::read(self.path(file)).unwrap_or_default();
            let text = String::from_utf8_lossy(&text).replace('\r', "");
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        };
        let vmm = tail("vmm.log");
        if vmm.is_empty() {
            tail("console.log")
        } else {
            format!("{}\n--- vmm.log ---\n{vmm}", tail("console.log"))
        }
    }

    pub fn agent_error(&self, source: ClientError) -> TenantError {
        TenantError::Agent {
            name: self.name.clone(),
            error: Box::new(source),
        }
    }
}

/// Start time (field 22 of /proc/PID/stat, clock ticks after boot) of a live, non-zombie
/// process.
fn process_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which may itself hold spaces and parentheses;
    // they start at field 3 (state), so field 22 is at index 19.
    let (_, rest) = stat.rsplit_once(") ")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Creates the run directory of a new tenant (failing when it exists) and writes its config.
pub fn make_run_dir(config: &TenantConfig) -> Result<Tenant> {
    let tenant = Tenant::at(&config.name)?;
    let parent = tenants_dir();
    fs::create_dir_all(&parent).map_err(io_error("cannot create", &parent))?;
    match fs::create_dir(&tenant.dir) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            return Err(TenantError::AlreadyExists(config.name.clone()))
        }
        Err(err) => return Err(io_error("cannot create", &tenant.dir)(err)),
    }
    if let Err(err) = tenant.write_config(config) {
        let _ = fs::remove_dir_all(&tenant.dir);
        return Err(err);
    }
    Ok(tenant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("acme-2").is_ok());
        assert!(validate_name(&"a".repeat(64)).is_ok());
        for bad in ["", "Acme", "a_b", "a/b", "..", &"a".repeat(65)] {
            let err = validate_name(bad).unwrap_err().to_string();
            assert!(err.contains("invalid tenant name"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn mount_id_is_a_short_digest() {
        let image = AttachedImage {
            digest: format!("sha256:{}", "ab".repeat(32)),
            names: vec![],
            fs_path: PathBuf::new(),
            fs_type: "erofs".into(),
        };
        assert_eq!(image.mount_id(), "abababababababab");
    }
}
