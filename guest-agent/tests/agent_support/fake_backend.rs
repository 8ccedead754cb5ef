//! A fake container backend for protocol tests: "containers" are plain host processes (no
//! namespaces), held at create by a gate pipe until start, like a real container's init.

// Test support code: a poisoned lock or failed pipe here is a test failure.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use condo_agent::agent::{BackendError, ContainerBackend, SpawnIo};
use condo_protocol::{ContainerInfo, ContainerStats, ErrorKind, ExitStatus};

/// Annotation that makes a SIGKILL death of the init count as an OOM kill.
pub const OOM_ANNOTATION: &str = "test.condo/sigkill-is-oom";

struct FakeContainer {
    pid: i32,
    gate: Option<File>,
    exit: Option<ExitStatus>,
    sigkill_is_oom: bool,
}

pub struct FakeBackend {
    containers: Mutex<HashMap<String, FakeContainer>>,
    /// Holds a fake cgroup `memory.events` per container.
    cgroup_dir: PathBuf,
}

impl FakeBackend {
    pub fn new(cgroup_dir: PathBuf) -> Self {
        std::fs::create_dir_all(&cgroup_dir).unwrap();
        FakeBackend {
            containers: Mutex::default(),
            cgroup_dir,
        }
    }

    fn memory_events_path(&self, id: &str) -> PathBuf {
        self.cgroup_dir.join(format!("{id}.memory.events"))
    }
}

fn not_found(id: &str) -> BackendError {
    BackendError::new(
        ErrorKind::NotFound,
        format!("container {id:?} does not exist"),
    )
}

fn stdio(fd: Option<OwnedFd>) -> Stdio {
    fd.map_or_else(Stdio::null, Stdio::from)
}

fn spawn(args: &[String], io: SpawnIo, gate: Option<OwnedFd>) -> Result<i32, BackendError> {
    let mut command = if gate.is_some() {
        // Wait for a line on fd 3 (start), then become the process.
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg("read -r _ <&3; exec \"$@\"")
            .arg("sh");
        command
    } else {
        Command::new(&args[0])
    };
    command
        .args(if gate.is_some() { args } else { &args[1..] })
        .stdin(stdio(io.stdin))
        .stdout(stdio(io.stdout))
        .stderr(stdio(io.stderr));
    if let Some(gate) = gate {
        let gate_fd = gate.as_raw_fd();
        // SAFETY: dup2 is async-signal-safe and touches only fds; `gate` stays open until the
        // spawn has returned (it is dropped below).
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(gate_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let child = command
            .spawn()
            .map_err(|err| BackendError::new(ErrorKind::Internal, format!("spawn: {err}")))?;
        drop(gate);
        return Ok(child.id() as i32);
    }
    let child = command
        .spawn()
        .map_err(|err| BackendError::new(ErrorKind::Internal, format!("spawn: {err}")))?;
    Ok(child.id() as i32)
}

impl ContainerBackend for FakeBackend {
    fn create(&self, id: &str, bundle: &Path, io: SpawnIo) -> Result<i32, BackendError> {
        let spec = oci_spec::runtime::Spec::load(bundle.join("config.json"))
            .map_err(|err| BackendError::new(ErrorKind::InvalidRequest, err.to_string()))?;
        let args = spec
            .process()
            .as_ref()
            .and_then(|process| process.args().clone())
            .unwrap_or_default();
        let sigkill_is_oom = spec
            .annotations()
            .as_ref()
            .is_some_and(|annotations| annotations.contains_key(OOM_ANNOTATION));
        let mut containers = self.containers.lock().unwrap();
        if containers.contains_key(id) {
            return Err(BackendError::new(ErrorKind::AlreadyExists, id));
        }
        std::fs::write(self.memory_events_path(id), "oom 0\noom_kill 0\n").unwrap();
        let (gate_read, gate_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let pid = spawn(&args, io, Some(gate_read))?;
        containers.insert(
            id.to_owned(),
            FakeContainer {
                pid,
                gate: Some(File::from(gate_write)),
                exit: None,
                sigkill_is_oom,
            },
        );
        Ok(pid)
    }

    fn start(&self, id: &str) -> Result<(), BackendError> {
        let mut containers = self.containers.lock().unwrap();
        let container = containers.get_mut(id).ok_or_else(|| not_found(id))?;
        let mut gate = container.gate.take().ok_or_else(|| {
            BackendError::new(ErrorKind::InvalidState, format!("{id} already started"))
        })?;
        gate.write_all(b"go\n").unwrap();
        Ok(())
    }

    fn exec(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
        io: SpawnIo,
    ) -> Result<i32, BackendError> {
        let containers = self.containers.lock().unwrap();
        let container = containers.get(id).ok_or_else(|| not_found(id))?;
        if container.gate.is_some() || container.exit.is_some() {
            return Err(BackendError::new(
                ErrorKind::InvalidState,
                format!("{id} not running"),
            ));
        }
        spawn(process.args().as_ref().unwrap(), io, None)
    }

    fn kill(&self, id: &str, signal: i32) -> Result<(), BackendError> {
        let containers = self.containers.lock().unwrap();
        let container = containers.get(id).ok_or_else(|| not_found(id))?;
        if container.exit.is_some() {
            return Err(BackendError::new(
                ErrorKind::InvalidState,
                format!("{id} stopped"),
            ));
        }
        if container.sigkill_is_oom && signal == libc::SIGKILL {
            // What the kernel does for a cgroup OOM kill: count it in memory.events.
            std::fs::write(self.memory_events_path(id), "oom 1\noom_kill 1\n").unwrap();
        }
        // SAFETY: kill(2) with a pid of our own child that has not been reaped.
        unsafe { libc::kill(container.pid, signal) };
        Ok(())
    }

    fn delete(&self, id: &str, force: bool) -> Result<(), BackendError> {
        let mut containers = self.containers.lock().unwrap();
        let container = containers.get(id).ok_or_else(|| not_found(id))?;
        if container.exit.is_none() {
            if !force {
                return Err(BackendError::new(
                    ErrorKind::InvalidState,
                    format!("container {id:?} is running"),
                ));
            }
            // SAFETY: as in kill.
            unsafe { libc::kill(container.pid, libc::SIGKILL) };
        }
        containers.remove(id);
        Ok(())
    }

    fn list(&self) -> Result<Vec<ContainerInfo>, BackendError> {
        let containers = self.containers.lock().unwrap();
        let mut list: Vec<ContainerInfo> = containers
            .iter()
            .map(|(id, container)| ContainerInfo {
                id: id.clone(),
                status: match (&container.gate, &container.exit) {
                    (_, Some(_)) => "stopped",
                    (Some(_), None) => "created",
                    (None, None) => "running",
                }
                .into(),
                pid: Some(container.pid),
            })
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(list)
    }

    fn stats(&self, id: &str) -> Result<ContainerStats, BackendError> {
        let containers = self.containers.lock().unwrap();
        containers.get(id).ok_or_else(|| not_found(id))?;
        Ok(ContainerStats {
            pids_current: Some(1),
            ..ContainerStats::default()
        })
    }

    fn memory_events(&self, id: &str) -> Option<PathBuf> {
        Some(self.memory_events_path(id))
    }

    fn record_exit(&self, pid: i32, status: ExitStatus) -> Option<(String, ExitStatus)> {
        let mut containers = self.containers.lock().unwrap();
        let (id, container) = containers
            .iter_mut()
            .find(|(_, container)| container.pid == pid && container.exit.is_none())?;
        let status = ExitStatus {
            oom_killed: container.sigkill_is_oom && status.signal == Some(libc::SIGKILL),
            ..status
        };
        container.exit = Some(status);
        Some((id.clone(), status))
    }
}
