//! The guest agent: serves the condo protocol (crate `condo-protocol`) to the host and runs
//! containers through a [`ContainerBackend`]. As PID 1 of a guest it also sets up the machine
//! (see [`init`]).
//!
//! Layout: `server` accepts connections (vsock or Unix, generic over [`Listener`]) and moves
//! frames, one thread per connection and one per request; `handlers` turns each request into a
//! `do_*` call (validate, act, map the error, as in the Kata agent); `processes` holds the
//! processes the agent started, their stdio pipes and exit statuses; `reaper` collects every
//! child's exit (SIGCHLD → `waitpid(-1, WNOHANG)`) and hands it to the runtime and to waiters;
//! `oom_watch` turns each container's `memory.events` changes into OOM events; `launch` binds
//! and serves; `ctl` is a small client for debugging and guest tests.
//!
//! PID 1 specifics ([`init`]): the basic mounts and a pure cgroup v2 hierarchy with every
//! controller delegated; re-rooting off the initramfs (pivot_root refuses to move an initramfs
//! root, and every container needs pivot_root); never exiting (power off instead).
//!
//! The real backend (`runtime_backend`) forks a single-threaded helper for each call that
//! clones a process: the runtime's raw clone(2) is not safe from a multithreaded process.

pub mod backend;
pub mod bench;
pub mod cmdline;
pub mod container_net;
pub mod ctl;
pub mod disks;
mod events;
mod handlers;
pub mod images;
pub mod init;
pub mod launch;
pub mod net;
mod oom_watch;
pub mod output_log;
mod processes;
pub mod reaper;
pub mod runtime_backend;
pub mod server;
mod stdio;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use condo_protocol::{ExitStatus, Request, Response};

pub use backend::{BackendError, ContainerBackend, SpawnIo};
pub use server::{serve, Connection, Listener, ServerLimits};

use events::OomEvents;
use oom_watch::OomWatcher;
use processes::Processes;

/// Nanoseconds on CLOCK_BOOTTIME, the clock of /proc/uptime (0 = kernel start).
pub fn boottime_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME) {
        Ok(time) => {
            u64::try_from(time.tv_sec()).unwrap_or(0) * 1_000_000_000
                + u64::try_from(time.tv_nsec()).unwrap_or(0)
        }
        Err(_) => 0,
    }
}

/// State shared by every connection of one agent.
pub struct Agent<B> {
    backend: B,
    processes: Processes,
    oom_events: Arc<OomEvents>,
    /// None when inotify is unavailable (then only OOM-killed inits are reported).
    oom_watcher: Option<OomWatcher>,
    /// Where bundles (config.json built from a CreateContainer) are written, one dir per id.
    bundle_dir: PathBuf,
    /// Images mounted for containers, under the sibling `images/` of `bundle_dir`.
    images: images::MountedImages,
    /// Containers created with `auto_remove`: deleted when their init exits.
    auto_remove: Mutex<HashSet<String>>,
    start_ns: u64,
    ready_ns: AtomicU64,
}

impl<B: ContainerBackend> Agent<B> {
    /// `start_ns`: boottime_ns() taken first thing in main.
    pub fn new(backend: B, bundle_dir: impl Into<PathBuf>, start_ns: u64) -> Self {
        let oom_events = Arc::new(OomEvents::default());
        let oom_watcher = match OomWatcher::start(Arc::clone(&oom_events)) {
            Ok(watcher) => Some(watcher),
            Err(errno) => {
                log(format_args!(
                    "no OOM watcher (inotify: {errno}); only inits' OOM kills are reported"
                ));
                None
            }
        };
        let bundle_dir: PathBuf = bundle_dir.into();
        let images_dir = bundle_dir.parent().map_or_else(
            || PathBuf::from("/run/condo/images"),
            |dir| dir.join("images"),
        );
        Agent {
            images: images::MountedImages::new(images_dir),
            backend,
            processes: Processes::default(),
            oom_events,
            oom_watcher,
            bundle_dir,
            auto_remove: Mutex::new(HashSet::new()),
            start_ns,
            ready_ns: AtomicU64::new(0),
        }
    }

    /// Marks the agent ready (listening); the time goes into BootTimings.
    pub fn mark_ready(&self) {
        self.ready_ns.store(boottime_ns(), Ordering::Relaxed);
    }

    /// Serves one request. Never panics on any input.
    pub fn handle(&self, request: Request) -> Response {
        self.dispatch(request).into()
    }

    /// Called by the reaper for every child it reaped. The init of an auto-remove container is
    /// deleted on a thread of its own (the reaper must go on reaping), and its waiters hear of
    /// the exit only once the container is gone.
    pub fn child_exited(self: &Arc<Self>, pid: i32, status: ExitStatus) {
        let (status, container) = match self.backend.record_exit(pid, status) {
            Some((container_id, final_status)) => {
                // With a watcher, memory.events already reported this kill.
                if final_status.oom_killed && self.oom_watcher.is_none() {
                    self.oom_events.push(&container_id);
                }
                (final_status, Some(container_id))
            }
            None => (status, None),
        };
        let Some(container_id) = container.filter(|id| self.take_auto_remove(id)) else {
            self.processes.record_exit(pid, status);
            return;
        };
        let agent = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("auto-remove".into())
            .spawn(move || agent.auto_remove(&container_id, pid, status));
        if let Err(err) = spawned {
            log(format_args!("cannot start the auto-remove thread: {err}"));
            self.processes.record_exit(pid, status);
        }
    }

    /// Whether `container_id` was to be removed on exit (it is not any more).
    fn take_auto_remove(&self, container_id: &str) -> bool {
        self.auto_remove
            .lock()
            .is_ok_and(|mut ids| ids.remove(container_id))
    }

    /// Deletes an auto-remove container whose init (`pid`) exited with `status`, then answers
    /// its waiters. A container that cannot be deleted stays, stopped, with its exit recorded.
    fn auto_remove(&self, container_id: &str, pid: i32, status: ExitStatus) {
        match self.delete_container(container_id, true) {
            Ok(()) => self.processes.retire_container(container_id, status),
            Err(err) => {
                log(format_args!(
                    "auto-remove of container {container_id} failed: {}",
                    err.message
                ));
                self.processes.record_exit(pid, status);
            }
        }
    }
}

/// Writes one line to the agent's stderr (the console in a guest); never fails or panics.
pub fn log(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    // One write(2) per line: stderr is unbuffered, and on the guest console the agent's
    // lines would otherwise interleave with other processes' output mid-line.
    let line = format!("condo-agent: {args}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
