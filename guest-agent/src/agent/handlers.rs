//! One `do_*` per request: validate the request, act through the backend or the process table,
//! map the error. Everything a client sends is checked here before it reaches the runtime.

use std::fs::{self, File};
use std::io::{ErrorKind as IoErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use condo_protocol::{
    validate_id, validate_terminal_size, BootTimings, Bytes, CreateContainer, ErrorKind,
    ErrorReply, ExecProcess, OutputStream, ProcessRef, ReadLog, Reply, Request, ResizeTerminal,
    MAX_STDIO_CHUNK, PROTOCOL_VERSION,
};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::processes::PipeEnd;
use super::{boottime_ns, stdio, Agent, ContainerBackend};

/// Longest a WaitOomEvents long poll may ask to wait.
const MAX_OOM_POLL_MS: u32 = 600_000;

type Handled = Result<Reply, ErrorReply>;

fn invalid(message: impl Into<String>) -> ErrorReply {
    ErrorReply::new(ErrorKind::InvalidRequest, message)
}

fn internal(message: impl Into<String>) -> ErrorReply {
    ErrorReply::new(ErrorKind::Internal, message)
}

fn check_id(field: &'static str, value: &str) -> Result<(), ErrorReply> {
    validate_id(field, value).map_err(|err| invalid(err.to_string()))
}

fn check_process(process: &ProcessRef) -> Result<(), ErrorReply> {
    check_id("container_id", &process.container_id)?;
    match &process.exec_id {
        Some(exec_id) => check_id("exec_id", exec_id),
        None => Ok(()),
    }
}

impl<B: ContainerBackend> Agent<B> {
    pub(super) fn dispatch(&self, request: Request) -> Handled {
        match request {
            Request::Ping => Ok(Reply::Pong {
                agent_version: env!("CARGO_PKG_VERSION").to_owned(),
                protocol_version: PROTOCOL_VERSION,
            }),
            Request::BootTimings => Ok(Reply::BootTimings(self.do_boot_timings())),
            Request::CreateContainer(create) => self.do_create(create),
            Request::StartContainer { container_id } => self.do_start(&container_id),
            Request::Exec(exec) => self.do_exec(exec),
            Request::Signal { process, signal } => self.do_signal(&process, signal),
            Request::Wait { process } => self.do_wait(&process),
            Request::DeleteContainer {
                container_id,
                force,
            } => self.do_delete(&container_id, force),
            Request::Stats { container_id } => {
                check_id("container_id", &container_id)?;
                Ok(Reply::Stats(self.backend.stats(&container_id)?))
            }
            Request::List => Ok(Reply::Containers(self.backend.list()?)),
            Request::ReadLog(read) => self.do_read_log(read),
            Request::MountImage(mount) => {
                let path = self.images.mount(&mount)?;
                Ok(Reply::ImageMounted {
                    path: path.to_string_lossy().into_owned(),
                })
            }
            Request::WriteStdin { process, data } => self.do_write_stdin(&process, data),
            Request::CloseStdin { process } => self.do_close_stdin(&process),
            Request::ResizeTerminal(resize) => self.do_resize_terminal(&resize),
            Request::ReadOutput {
                process,
                stream,
                max_bytes,
            } => self.do_read_output(&process, stream, max_bytes),
            Request::WaitOomEvents { after, timeout_ms } => {
                if timeout_ms > MAX_OOM_POLL_MS {
                    return Err(invalid(format!(
                        "timeout_ms {timeout_ms} is over the limit of {MAX_OOM_POLL_MS}"
                    )));
                }
                let timeout = Duration::from_millis(u64::from(timeout_ms));
                let events = self.oom_events.wait_after(after, timeout);
                Ok(Reply::OomEvents { events })
            }
        }
    }

    fn do_boot_timings(&self) -> BootTimings {
        let now_unix_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        BootTimings {
            agent_start_ns: self.start_ns,
            agent_ready_ns: self.ready_ns.load(std::sync::atomic::Ordering::Relaxed),
            now_ns: boottime_ns(),
            now_unix_ns,
        }
    }

    fn do_create(&self, create: CreateContainer) -> Handled {
        let CreateContainer {
            container_id,
            mut spec,
            rootfs,
            stdio,
            auto_remove,
        } = create;
        check_id("container_id", &container_id)?;
        let rootfs_path = Path::new(&rootfs);
        if !rootfs_path.is_absolute() {
            return Err(invalid(format!(
                "rootfs {rootfs:?} is not an absolute path"
            )));
        }
        if !rootfs_path.is_dir() {
            return Err(invalid(format!("rootfs {rootfs:?} is not a directory")));
        }
        let init = ProcessRef::init(&container_id);
        self.processes.ensure_absent(&init)?;
        let readonly = spec.root().as_ref().and_then(|root| root.readonly());
        let mut root = oci_spec::runtime::Root::default();
        root.set_path(rootfs_path.to_path_buf())
            .set_readonly(readonly);
        spec.set_root(Some(root));

        let requested = match spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(super::container_net::ADDRESS_ANNOTATION))
        {
            Some(text) => Some(text.parse::<std::net::Ipv4Addr>().map_err(|_| {
                invalid(format!(
                    "annotation {}={text:?} is not an IPv4 address",
                    super::container_net::ADDRESS_ANNOTATION
                ))
            })?),
            None => None,
        };
        let bundle = self.bundle_dir.join(&container_id);
        write_bundle(&bundle, &spec)?;
        // Marked before the init exists: its exit can then never be missed.
        self.set_auto_remove(&container_id, auto_remove);
        let terminal = spec.process().as_ref().and_then(|p| p.terminal()) == Some(true);
        let created = stdio::prepare(stdio, terminal, &init).and_then(|(io, pending)| {
            let pid = self.backend.create(&container_id, &bundle, io)?;
            Ok((pid, pending))
        });
        match created {
            Ok((pid, pending)) => {
                // Its terminal, and its own network namespace's veth to the VM, before it starts.
                let ready = pending.finish(&init).and_then(|pipes| {
                    super::container_net::attach(&container_id, pid, requested)
                        .map_err(|err| internal(err.to_string()))?;
                    Ok(pipes)
                });
                let pipes = match ready {
                    Ok(pipes) => pipes,
                    Err(err) => {
                        self.set_auto_remove(&container_id, false);
                        let _ = self.backend.delete(&container_id, true);
                        let _ = fs::remove_dir_all(&bundle);
                        return Err(err);
                    }
                };
                self.processes.register(init, pid, pipes)?;
                if let (Some(watcher), Some(path)) =
                    (&self.oom_watcher, self.backend.memory_events(&container_id))
                {
                    watcher.watch(&container_id, path);
                }
                Ok(Reply::Spawned { pid })
            }
            Err(error) => {
                // A failed create leaves nothing behind.
                self.set_auto_remove(&container_id, false);
                let _ = fs::remove_dir_all(&bundle);
                Err(error)
            }
        }
    }

    fn do_start(&self, container_id: &str) -> Handled {
        check_id("container_id", container_id)?;
        self.backend.start(container_id)?;
        Ok(Reply::Done)
    }

    fn do_exec(&self, exec: ExecProcess) -> Handled {
        let process = ProcessRef::exec(&exec.container_id, &exec.exec_id);
        check_process(&process)?;
        if exec
            .process
            .args()
            .as_ref()
            .is_none_or(|args| args.is_empty())
        {
            return Err(invalid(format!("process.args of exec {process} is empty")));
        }
        self.processes.ensure_absent(&process)?;
        let terminal = exec.process.terminal() == Some(true);
        let (io, pending) = stdio::prepare(exec.stdio, terminal, &process)?;
        let pid = self.backend.exec(&exec.container_id, &exec.process, io)?;
        let pipes = pending.finish(&process).inspect_err(|_| {
            // Without its terminal nobody could talk to it.
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        })?;
        self.processes.register(process, pid, pipes)?;
        Ok(Reply::Spawned { pid })
    }

    fn do_signal(&self, process: &ProcessRef, signal: i32) -> Handled {
        check_process(process)?;
        let signal = Signal::try_from(signal)
            .map_err(|_| invalid(format!("signal {signal} is not a valid signal number")))?;
        match process.exec_id {
            None => self.backend.kill(&process.container_id, signal as i32)?,
            Some(_) => {
                let pid = self.processes.live_pid(process)?;
                nix::sys::signal::kill(Pid::from_raw(pid), signal).map_err(|errno| {
                    internal(format!(
                        "kill({pid}, {signal}) for {process} failed: {errno}"
                    ))
                })?;
            }
        }
        Ok(Reply::Done)
    }

    fn do_wait(&self, process: &ProcessRef) -> Handled {
        check_process(process)?;
        match self.processes.wait(process, None)? {
            Some(status) => Ok(Reply::Exited(status)),
            None => Err(internal(format!(
                "wait for {process} ended without a status"
            ))),
        }
    }

    fn do_delete(&self, container_id: &str, force: bool) -> Handled {
        check_id("container_id", container_id)?;
        // Removed on request: nothing more to do when its init exits.
        self.set_auto_remove(container_id, false);
        self.delete_container(container_id, force)?;
        self.processes.remove_container(container_id);
        Ok(Reply::Done)
    }

    /// The container, its network and its bundle; the process table is the caller's.
    pub(super) fn delete_container(
        &self,
        container_id: &str,
        force: bool,
    ) -> Result<(), ErrorReply> {
        self.backend.delete(container_id, force)?;
        super::container_net::detach(container_id);
        let bundle = self.bundle_dir.join(container_id);
        if let Err(err) = fs::remove_dir_all(&bundle) {
            if err.kind() != IoErrorKind::NotFound {
                return Err(internal(format!(
                    "container {container_id} deleted but its bundle {} remains: {err}",
                    bundle.display()
                )));
            }
        }
        Ok(())
    }

    fn set_auto_remove(&self, container_id: &str, on: bool) {
        if let Ok(mut ids) = self.auto_remove.lock() {
            if on {
                ids.insert(container_id.to_owned());
            } else {
                ids.remove(container_id);
            }
        }
    }

    fn do_write_stdin(&self, process: &ProcessRef, data: Bytes) -> Handled {
        check_process(process)?;
        if data.0.len() > MAX_STDIO_CHUNK as usize {
            return Err(invalid(format!(
                "stdin chunk of {} bytes is over the limit of {MAX_STDIO_CHUNK}",
                data.0.len()
            )));
        }
        let pipe = self.processes.stdin(process)?;
        let mut guard = lock_pipe(&pipe)?;
        let Some(stdin) = guard.as_mut() else {
            return Err(ErrorReply::new(
                ErrorKind::InvalidState,
                format!("stdin of {process} is already closed"),
            ));
        };
        stdin.write_all(&data.0).map_err(|err| {
            let kind = if err.kind() == IoErrorKind::BrokenPipe {
                ErrorKind::InvalidState
            } else {
                ErrorKind::Internal
            };
            ErrorReply::new(kind, format!("write to stdin of {process} failed: {err}"))
        })?;
        let bytes = u32::try_from(data.0.len()).unwrap_or(MAX_STDIO_CHUNK);
        Ok(Reply::StdinWritten { bytes })
    }

    fn do_close_stdin(&self, process: &ProcessRef) -> Handled {
        check_process(process)?;
        let pipe = self.processes.stdin(process)?;
        lock_pipe(&pipe)?.take();
        Ok(Reply::Done)
    }

    fn do_resize_terminal(&self, resize: &ResizeTerminal) -> Handled {
        let ResizeTerminal {
            process,
            rows,
            cols,
        } = resize;
        check_process(process)?;
        validate_terminal_size(*rows, *cols).map_err(|err| invalid(err.to_string()))?;
        let master = self.processes.terminal(process)?;
        super::stdio::set_window_size(&master, *rows, *cols)
            .map_err(|errno| internal(format!("resize of {process}'s terminal failed: {errno}")))?;
        Ok(Reply::Done)
    }

    fn do_read_output(&self, process: &ProcessRef, stream: OutputStream, max: u32) -> Handled {
        check_process(process)?;
        check_max_bytes(max)?;
        let log = self.processes.output(process, stream)?;
        Ok(Reply::Output {
            data: Bytes(log.read_next(max as usize)),
        })
    }

    fn do_read_log(&self, read: ReadLog) -> Handled {
        let process = ProcessRef::init(&read.container_id);
        check_process(&process)?;
        check_max_bytes(read.max_bytes)?;
        if read.wait_ms > MAX_OOM_POLL_MS {
            return Err(invalid(format!(
                "wait_ms {} is over the limit of {MAX_OOM_POLL_MS}",
                read.wait_ms
            )));
        }
        let log = self.processes.output(&process, read.stream)?;
        let wait = Duration::from_millis(u64::from(read.wait_ms));
        let chunk = log.read_at(read.offset, read.max_bytes as usize, wait);
        Ok(Reply::Log {
            data: Bytes(chunk.data),
            next_offset: chunk.next_offset,
            eof: chunk.eof,
        })
    }
}

fn check_max_bytes(max: u32) -> Result<(), ErrorReply> {
    if max == 0 || max > MAX_STDIO_CHUNK {
        return Err(invalid(format!(
            "max_bytes {max} is not within 1..={MAX_STDIO_CHUNK}"
        )));
    }
    Ok(())
}

fn lock_pipe(pipe: &PipeEnd) -> Result<std::sync::MutexGuard<'_, Option<File>>, ErrorReply> {
    pipe.lock()
        .map_err(|_| internal("stdio pipe lock poisoned"))
}

/// Writes `bundle/config.json`; the directory's creation is what makes a container id taken.
fn write_bundle(bundle: &Path, spec: &oci_spec::runtime::Spec) -> Result<(), ErrorReply> {
    if let Some(parent) = bundle.parent() {
        fs::create_dir_all(parent).map_err(|err| {
            internal(format!(
                "cannot create bundle dir {}: {err}",
                parent.display()
            ))
        })?;
    }
    fs::create_dir(bundle).map_err(|err| match err.kind() {
        IoErrorKind::AlreadyExists => ErrorReply::new(
            ErrorKind::AlreadyExists,
            format!("bundle {} already exists", bundle.display()),
        ),
        _ => internal(format!("cannot create bundle {}: {err}", bundle.display())),
    })?;
    let config = PathBuf::from(bundle).join("config.json");
    let written = serde_json::to_vec_pretty(spec)
        .map_err(|err| internal(format!("cannot serialize the spec: {err}")))
        .and_then(|json| {
            fs::write(&config, json)
                .map_err(|err| internal(format!("cannot write {}: {err}", config.display())))
        });
    if written.is_err() {
        let _ = fs::remove_dir_all(bundle);
    }
    written
}
