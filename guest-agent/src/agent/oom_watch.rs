//! Watches each container's cgroup `memory.events` with inotify (the kernel signals every
//! change of that file) and turns increases of its `oom_kill` count into OOM events, so that an
//! OOM kill of any process of a container is reported, not only of its init.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use super::events::OomEvents;
use super::log;

struct Watched {
    container_id: String,
    path: PathBuf,
    oom_kills: u64,
}

pub struct OomWatcher {
    inotify: Arc<Inotify>,
    watched: Arc<Mutex<HashMap<WatchDescriptor, Watched>>>,
}

/// The `oom_kill` count of a memory.events file (0 when unreadable).
fn read_oom_kills(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("oom_kill "))
                .and_then(|count| count.trim().parse().ok())
        })
        .unwrap_or(0)
}

impl OomWatcher {
    /// Starts the watcher thread; events go to `events`.
    pub fn start(events: Arc<OomEvents>) -> Result<Self, Errno> {
        let inotify = Arc::new(Inotify::init(InitFlags::IN_CLOEXEC)?);
        let watched: Arc<Mutex<HashMap<WatchDescriptor, Watched>>> = Arc::default();
        let (reader, table) = (Arc::clone(&inotify), Arc::clone(&watched));
        std::thread::Builder::new()
            .name("oom-watch".into())
            .spawn(move || watch_forever(&reader, &table, &events))
            .map_err(|_| Errno::EAGAIN)?;
        Ok(OomWatcher { inotify, watched })
    }

    /// Starts watching a container's memory.events file.
    pub fn watch(&self, container_id: &str, memory_events: PathBuf) {
        let oom_kills = read_oom_kills(&memory_events);
        // Hold the table while adding so the thread cannot see the watch before it is known.
        let Ok(mut watched) = self.watched.lock() else {
            return;
        };
        match self
            .inotify
            .add_watch(&memory_events, AddWatchFlags::IN_MODIFY)
        {
            Ok(wd) => {
                watched.insert(
                    wd,
                    Watched {
                        container_id: container_id.to_owned(),
                        path: memory_events,
                        oom_kills,
                    },
                );
            }
            Err(errno) => log(format_args!(
                "cannot watch {} for OOM kills of {container_id}: {errno}",
                memory_events.display()
            )),
        }
    }
}

fn watch_forever(
    inotify: &Inotify,
    watched: &Mutex<HashMap<WatchDescriptor, Watched>>,
    events: &OomEvents,
) {
    loop {
        let batch = match inotify.read_events() {
            Ok(batch) => batch,
            Err(Errno::EINTR) => continue,
            Err(errno) => {
                log(format_args!(
                    "OOM watcher stopped: inotify read failed: {errno}"
                ));
                return;
            }
        };
        let Ok(mut table) = watched.lock() else {
            return;
        };
        for event in batch {
            if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                // The cgroup was removed (container deleted).
                table.remove(&event.wd);
                continue;
            }
            let Some(entry) = table.get_mut(&event.wd) else {
                continue;
            };
            let now = read_oom_kills(&entry.path);
            for _ in entry.oom_kills..now {
                events.push(&entry.container_id);
            }
            entry.oom_kills = entry.oom_kills.max(now);
        }
    }
}
