//! The agent's table of the processes it started (container inits and exec'd processes): their
//! pids, the agent's ends of their stdio pipes, and their exit statuses once reaped.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use condo_protocol::{ErrorKind, ErrorReply, ExitStatus, OutputStream, ProcessRef};

use super::output_log::OutputLog;

/// Exits of pids nobody registered (yet): an exec'd process may die before `exec` returns its
/// pid. Bounded, oldest dropped first.
const MAX_UNCLAIMED_EXITS: usize = 256;

/// The agent's end of one stdin pipe, shared by the requests that use it.
pub type PipeEnd = Arc<Mutex<Option<File>>>;

/// The agent's side of a process's stdio: its stdin pipe, and the logs its outputs drain into;
/// for a process on a terminal, also the pty's master (to set its window size).
#[derive(Debug, Default)]
pub struct ProcessPipes {
    pub stdin: Option<PipeEnd>,
    pub stdout: Option<Arc<OutputLog>>,
    pub stderr: Option<Arc<OutputLog>>,
    pub terminal: Option<Arc<File>>,
}

#[derive(Debug)]
struct ProcessEntry {
    pid: i32,
    pipes: ProcessPipes,
    exit: Option<ExitStatus>,
}

/// Final statuses of the processes of containers removed on exit (auto-remove), for waiters
/// that were still asleep when they went. Bounded, oldest dropped first.
const MAX_DEPARTED: usize = 256;

#[derive(Default)]
struct Table {
    entries: HashMap<ProcessRef, ProcessEntry>,
    unclaimed: VecDeque<(i32, ExitStatus)>,
    departed: VecDeque<(ProcessRef, ExitStatus)>,
}

/// Process table with a condition variable signalled on every recorded exit.
#[derive(Default)]
pub struct Processes {
    table: Mutex<Table>,
    exited: Condvar,
}

fn poisoned() -> ErrorReply {
    ErrorReply::new(ErrorKind::Internal, "process table lock poisoned")
}

impl Processes {
    fn lock(&self) -> Result<MutexGuard<'_, Table>, ErrorReply> {
        self.table.lock().map_err(|_| poisoned())
    }

    /// Fails when `process` is already known (ids are unique until the container is deleted).
    pub fn ensure_absent(&self, process: &ProcessRef) -> Result<(), ErrorReply> {
        if self.lock()?.entries.contains_key(process) {
            return Err(ErrorReply::new(
                ErrorKind::AlreadyExists,
                format!("process {process} already exists"),
            ));
        }
        Ok(())
    }

    /// Records a started process; picks up its exit if the reaper saw it first.
    pub fn register(
        &self,
        process: ProcessRef,
        pid: i32,
        pipes: ProcessPipes,
    ) -> Result<(), ErrorReply> {
        let mut table = self.lock()?;
        // A container id may be used again once its container was removed.
        table.departed.retain(|(gone, _)| {
            gone.container_id != process.container_id
                || (process.exec_id.is_some() && gone != &process)
        });
        let exit = table
            .unclaimed
            .iter()
            .position(|(exited_pid, _)| *exited_pid == pid)
            .and_then(|index| table.unclaimed.remove(index))
            .map(|(_, status)| status);
        table
            .entries
            .insert(process, ProcessEntry { pid, pipes, exit });
        if exit.is_some() {
            self.exited.notify_all();
        }
        Ok(())
    }

    /// Records the exit of a reaped child.
    pub fn record_exit(&self, pid: i32, status: ExitStatus) {
        let Ok(mut table) = self.table.lock() else {
            return;
        };
        let entry = table
            .entries
            .values_mut()
            .find(|entry| entry.pid == pid && entry.exit.is_none());
        match entry {
            Some(entry) => entry.exit = Some(status),
            None => {
                if table.unclaimed.len() == MAX_UNCLAIMED_EXITS {
                    table.unclaimed.pop_front();
                }
                table.unclaimed.push_back((pid, status));
            }
        }
        self.exited.notify_all();
    }

    /// Pid of a process that has not exited yet (signalling a reaped pid could hit another
    /// process that reused it).
    pub fn live_pid(&self, process: &ProcessRef) -> Result<i32, ErrorReply> {
        let table = self.lock()?;
        let entry = entry(&table, process)?;
        if entry.exit.is_some() {
            return Err(ErrorReply::new(
                ErrorKind::InvalidState,
                format!("process {process} has already exited"),
            ));
        }
        Ok(entry.pid)
    }

    /// Waits until `process` has exited, up to `timeout` (None: for ever).
    pub fn wait(
        &self,
        process: &ProcessRef,
        timeout: Option<Duration>,
    ) -> Result<Option<ExitStatus>, ErrorReply> {
        let deadline = timeout.map(|timeout| Instant::now() + timeout);
        let mut table = self.lock()?;
        loop {
            if let Some(status) = exit_of(&table, process)? {
                return Ok(Some(status));
            }
            table = match deadline {
                None => self.exited.wait(table).map_err(|_| poisoned())?,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    self.exited
                        .wait_timeout(table, left)
                        .map_err(|_| poisoned())?
                        .0
                }
            };
        }
    }

    pub fn stdin(&self, process: &ProcessRef) -> Result<PipeEnd, ErrorReply> {
        let table = self.lock()?;
        entry(&table, process)?.pipes.stdin.clone().ok_or_else(|| {
            ErrorReply::new(
                ErrorKind::InvalidRequest,
                format!("process {process} was not created with a stdin pipe"),
            )
        })
    }

    /// The master of the process's terminal; invalid_state when it has none.
    pub fn terminal(&self, process: &ProcessRef) -> Result<Arc<File>, ErrorReply> {
        let table = self.lock()?;
        entry(&table, process)?
            .pipes
            .terminal
            .clone()
            .ok_or_else(|| {
                ErrorReply::new(
                    ErrorKind::InvalidState,
                    format!("process {process} has no terminal (it was not created with -t)"),
                )
            })
    }

    pub fn output(
        &self,
        process: &ProcessRef,
        stream: OutputStream,
    ) -> Result<Arc<OutputLog>, ErrorReply> {
        let table = self.lock()?;
        let pipes = &entry(&table, process)?.pipes;
        let pipe = match stream {
            OutputStream::Stdout => &pipes.stdout,
            OutputStream::Stderr => &pipes.stderr,
        };
        pipe.clone().ok_or_else(|| {
            ErrorReply::new(
                ErrorKind::InvalidRequest,
                format!("process {process} was not created with a {stream:?} pipe"),
            )
        })
    }

    /// Forgets a container's processes (after it was deleted), closing the agent's pipe ends.
    pub fn remove_container(&self, container_id: &str) {
        if let Ok(mut table) = self.table.lock() {
            table
                .entries
                .retain(|process, _| process.container_id != container_id);
        }
        // Wake waiters of removed processes: they answer not_found.
        self.exited.notify_all();
    }

    /// Forgets a container removed because its init exited with `init_exit` (auto-remove),
    /// after it was deleted: its waiters, woken now, get the processes' final statuses.
    pub fn retire_container(&self, container_id: &str, init_exit: ExitStatus) {
        if let Ok(mut table) = self.table.lock() {
            let mut gone = Vec::new();
            table.entries.retain(|process, entry| {
                if process.container_id != container_id {
                    return true;
                }
                let exit = match process.exec_id {
                    None => Some(init_exit),
                    Some(_) => entry.exit,
                };
                gone.extend(exit.map(|exit| (process.clone(), exit)));
                false
            });
            for departed in gone {
                if table.departed.len() == MAX_DEPARTED {
                    table.departed.pop_front();
                }
                table.departed.push_back(departed);
            }
        }
        self.exited.notify_all();
    }
}

/// The exit status of `process`: None while it runs; that of a retired container's process
/// once it is gone; not_found for a process never known or removed by a delete.
fn exit_of(table: &Table, process: &ProcessRef) -> Result<Option<ExitStatus>, ErrorReply> {
    if let Some(entry) = table.entries.get(process) {
        return Ok(entry.exit);
    }
    match table
        .departed
        .iter()
        .rev()
        .find(|(gone, _)| gone == process)
    {
        Some((_, status)) => Ok(Some(*status)),
        None => entry(table, process).map(|entry| entry.exit),
    }
}

fn entry<'t>(table: &'t Table, process: &ProcessRef) -> Result<&'t ProcessEntry, ErrorReply> {
    table
        .entries
        .get(process)
        .ok_or_else(|| ErrorReply::new(ErrorKind::NotFound, format!("no process {process}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXITED_3: ExitStatus = ExitStatus {
        code: Some(3),
        signal: None,
        oom_killed: false,
    };

    #[test]
    fn exit_before_registration_is_picked_up() {
        let processes = Processes::default();
        processes.record_exit(42, EXITED_3);
        let exec = ProcessRef::exec("c", "e");
        processes
            .register(exec.clone(), 42, ProcessPipes::default())
            .unwrap();
        assert_eq!(
            processes.wait(&exec, Some(Duration::ZERO)),
            Ok(Some(EXITED_3))
        );
    }

    #[test]
    fn wait_times_out_then_sees_the_exit() {
        let processes = std::sync::Arc::new(Processes::default());
        let init = ProcessRef::init("c");
        processes
            .register(init.clone(), 7, ProcessPipes::default())
            .unwrap();
        let short = Duration::from_millis(10);
        assert_eq!(processes.wait(&init, Some(short)), Ok(None));
        let waiter = {
            let (processes, init) = (processes.clone(), init.clone());
            std::thread::spawn(move || processes.wait(&init, None))
        };
        processes.record_exit(7, EXITED_3);
        assert_eq!(waiter.join().unwrap(), Ok(Some(EXITED_3)));
        assert_eq!(
            processes.live_pid(&init).unwrap_err().kind,
            ErrorKind::InvalidState
        );
    }

    #[test]
    fn removed_container_wakes_its_waiters_with_not_found() {
        let processes = std::sync::Arc::new(Processes::default());
        let init = ProcessRef::init("gone");
        processes
            .register(init.clone(), 9, ProcessPipes::default())
            .unwrap();
        let waiter = {
            let (processes, init) = (processes.clone(), init.clone());
            std::thread::spawn(move || processes.wait(&init, None))
        };
        // Either order works: removed before or while the waiter waits.
        processes.remove_container("gone");
        assert_eq!(
            waiter.join().unwrap().unwrap_err().kind,
            ErrorKind::NotFound
        );
    }

    #[test]
    fn retired_container_answers_its_waiters_with_its_exit() {
        let processes = std::sync::Arc::new(Processes::default());
        let init = ProcessRef::init("auto");
        let exec = ProcessRef::exec("auto", "e1");
        processes
            .register(init.clone(), 11, ProcessPipes::default())
            .unwrap();
        processes
            .register(exec.clone(), 12, ProcessPipes::default())
            .unwrap();
        processes.record_exit(12, EXITED_3);
        let waiter = {
            let (processes, init) = (processes.clone(), init.clone());
            std::thread::spawn(move || processes.wait(&init, None))
        };
        // The init's exit is held back until the container is deleted, then retired with it.
        let killed = ExitStatus {
            code: None,
            signal: Some(9),
            oom_killed: false,
        };
        processes.retire_container("auto", killed);
        assert_eq!(waiter.join().unwrap(), Ok(Some(killed)));
        assert_eq!(processes.wait(&exec, None), Ok(Some(EXITED_3)));
        // Gone from the table otherwise: no output, no pid.
        assert_eq!(
            processes.live_pid(&init).unwrap_err().kind,
            ErrorKind::NotFound
        );
        assert_eq!(
            processes
                .output(&init, OutputStream::Stdout)
                .unwrap_err()
                .kind,
            ErrorKind::NotFound
        );
        // A new container of the same name starts afresh.
        processes
            .register(init.clone(), 21, ProcessPipes::default())
            .unwrap();
        assert_eq!(processes.wait(&init, Some(Duration::ZERO)), Ok(None));
        assert_eq!(
            processes
                .wait(&exec, Some(Duration::ZERO))
                .unwrap_err()
                .kind,
            ErrorKind::NotFound
        );
    }

    #[test]
    fn departed_exits_are_bounded() {
        let processes = Processes::default();
        for i in 0..=MAX_DEPARTED {
            let init = ProcessRef::init(format!("c{i}"));
            processes
                .register(init, i as i32, ProcessPipes::default())
                .unwrap();
            processes.retire_container(&format!("c{i}"), EXITED_3);
        }
        let first = ProcessRef::init("c0");
        assert_eq!(
            processes.wait(&first, None).unwrap_err().kind,
            ErrorKind::NotFound
        );
        let last = ProcessRef::init(format!("c{MAX_DEPARTED}"));
        assert_eq!(processes.wait(&last, None), Ok(Some(EXITED_3)));
    }

    #[test]
    fn unclaimed_exits_are_bounded() {
        let processes = Processes::default();
        for pid in 0..(MAX_UNCLAIMED_EXITS as i32 + 10) {
            processes.record_exit(pid, EXITED_3);
        }
        // The oldest were dropped: pid 0 registers as still running.
        let old = ProcessRef::init("old");
        processes
            .register(old.clone(), 0, ProcessPipes::default())
            .unwrap();
        assert_eq!(processes.wait(&old, Some(Duration::ZERO)), Ok(None));
        let recent = ProcessRef::init("recent");
        let last = MAX_UNCLAIMED_EXITS as i32 + 9;
        processes
            .register(recent.clone(), last, ProcessPipes::default())
            .unwrap();
        assert_eq!(
            processes.wait(&recent, Some(Duration::ZERO)),
            Ok(Some(EXITED_3))
        );
    }
}
