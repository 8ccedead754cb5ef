//! Each output stream a process was given through the agent is drained into a bounded log by a
//! pump thread, so a process never blocks on a full pipe when nobody reads it (a detached
//! container), and its output can be read again later (`condo logs`).
//!
//! Two ways to read: `read_next` moves a single shared cursor (the protocol's `read_output`:
//! an attached client consumes the stream), `read_at` reads from any offset without consuming
//! (`read_log`). Offsets count every byte the process ever wrote; when the log is over its
//! capacity the oldest bytes are dropped and readers behind them skip ahead.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Bytes kept per stream.
pub const LOG_CAPACITY: usize = 1024 * 1024;

#[derive(Debug, Default)]
struct State {
    /// The kept bytes: offsets `start .. start + bytes.len()`.
    bytes: VecDeque<u8>,
    start: u64,
    /// The writers closed the pipe (or reading it failed): no more bytes will come.
    ended: bool,
    /// Offset of the next byte `read_next` returns.
    cursor: u64,
}

impl State {
    fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    fn copy_from(&self, offset: u64, max: usize) -> Vec<u8> {
        let skip = usize::try_from(offset.saturating_sub(self.start)).unwrap_or(usize::MAX);
        self.bytes.iter().skip(skip).take(max).copied().collect()
    }
}

/// A chunk read at an offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub data: Vec<u8>,
    /// Offset of the byte after `data`.
    pub next_offset: u64,
    /// Nothing will ever follow `next_offset`.
    pub eof: bool,
}

#[derive(Debug, Default)]
pub struct OutputLog {
    state: Mutex<State>,
    changed: Condvar,
}

impl OutputLog {
    /// Starts a thread that drains `pipe` into a new log.
    pub fn pump(pipe: File, name: String) -> std::io::Result<Arc<OutputLog>> {
        let log = Arc::new(OutputLog::default());
        let filling = Arc::clone(&log);
        std::thread::Builder::new()
            .name(name)
            .spawn(move || filling.fill_from(pipe))?;
        Ok(log)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the byte queue inconsistent for readers.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fill_from(&self, mut pipe: File) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let read = match pipe.read(&mut buf) {
                Ok(read) => read,
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            if read == 0 {
                self.lock().ended = true;
                self.changed.notify_all();
                return;
            }
            self.append(&buf[..read]);
        }
    }

    fn append(&self, data: &[u8]) {
        let mut state = self.lock();
        state.bytes.extend(data);
        let over = state.bytes.len().saturating_sub(LOG_CAPACITY);
        if over > 0 {
            state.bytes.drain(..over);
            state.start += over as u64;
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Waits until `ready(state)` or the deadline; returns the lock either way.
    fn wait_until(
        &self,
        deadline: Option<Instant>,
        ready: impl Fn(&State) -> bool,
    ) -> MutexGuard<'_, State> {
        let mut state = self.lock();
        while !ready(&state) {
            state = match deadline {
                None => self
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    self.changed
                        .wait_timeout(state, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
        state
    }

    /// Blocks until bytes past the shared cursor exist, returns up to `max` of them and moves
    /// the cursor; empty once the stream has ended and everything was read.
    pub fn read_next(&self, max: usize) -> Vec<u8> {
        let mut state = self.wait_until(None, |s| s.ended || s.end() > s.cursor.max(s.start));
        let from = state.cursor.max(state.start);
        let data = state.copy_from(from, max);
        state.cursor = from + data.len() as u64;
        data
    }

    /// Reads up to `max` bytes from `offset` (or the oldest kept byte, when that is later),
    /// waiting up to `wait` for bytes to arrive when there are none yet.
    pub fn read_at(&self, offset: u64, max: usize, wait: Duration) -> LogChunk {
        let deadline = Instant::now() + wait;
        let state = self.wait_until(Some(deadline), |s| s.ended || s.end() > offset.max(s.start));
        let from = offset.max(state.start);
        let data = state.copy_from(from, max);
        let next_offset = from + data.len() as u64;
        LogChunk {
            eof: state.ended && next_offset >= state.end(),
            data,
            next_offset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn pipe() -> (File, File) {
        let (read, write) = nix::unistd::pipe().unwrap();
        (File::from(read), File::from(write))
    }

    #[test]
    fn consuming_and_offset_reads_see_the_same_bytes() {
        let (read, mut write) = pipe();
        let log = OutputLog::pump(read, "test-pump".into()).unwrap();
        write.write_all(b"hello ").unwrap();
        write.write_all(b"world").unwrap();
        drop(write);
        let mut consumed = Vec::new();
        loop {
            let chunk = log.read_next(4);
            if chunk.is_empty() {
                break;
            }
            consumed.extend(chunk);
        }
        assert_eq!(consumed, b"hello world");
        let chunk = log.read_at(6, 100, Duration::from_secs(5));
        assert_eq!(chunk.data, b"world");
        assert_eq!(chunk.next_offset, 11);
        assert!(chunk.eof);
    }

    #[test]
    fn oldest_bytes_are_dropped_over_capacity() {
        let log = OutputLog::default();
        log.append(&vec![b'a'; LOG_CAPACITY]);
        log.append(b"bc");
        let chunk = log.read_at(0, 3, Duration::ZERO);
        assert_eq!(chunk.data, b"aaa");
        assert_eq!(chunk.next_offset, 5, "reading skipped the 2 dropped bytes");
        assert!(!chunk.eof);
        let tail = log.read_at(LOG_CAPACITY as u64, 10, Duration::ZERO);
        assert_eq!(tail.data, b"bc");
    }

    #[test]
    fn read_at_times_out_empty_while_the_stream_is_open() {
        let log = OutputLog::default();
        let chunk = log.read_at(0, 10, Duration::from_millis(20));
        assert!(chunk.data.is_empty() && !chunk.eof);
    }
}
