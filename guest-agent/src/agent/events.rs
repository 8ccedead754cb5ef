//! OOM events: a bounded log with sequence numbers that clients long-poll.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use condo_protocol::OomEvent;

/// Events kept for clients that poll late; older ones are dropped.
const MAX_KEPT_EVENTS: usize = 1024;

#[derive(Default)]
struct Log {
    events: VecDeque<OomEvent>,
    last_seq: u64,
}

#[derive(Default)]
pub struct OomEvents {
    log: Mutex<Log>,
    added: Condvar,
}

impl OomEvents {
    pub fn push(&self, container_id: &str) {
        let Ok(mut log) = self.log.lock() else {
            return;
        };
        log.last_seq += 1;
        let event = OomEvent {
            seq: log.last_seq,
            container_id: container_id.to_owned(),
        };
        if log.events.len() == MAX_KEPT_EVENTS {
            log.events.pop_front();
        }
        log.events.push_back(event);
        self.added.notify_all();
    }

    /// Events with `seq > after`, waiting up to `timeout` for the first one.
    pub fn wait_after(&self, after: u64, timeout: Duration) -> Vec<OomEvent> {
        let deadline = Instant::now() + timeout;
        let Ok(mut log) = self.log.lock() else {
            return Vec::new();
        };
        loop {
            let newer: Vec<OomEvent> = log
                .events
                .iter()
                .filter(|event| event.seq > after)
                .cloned()
                .collect();
            let left = deadline.saturating_duration_since(Instant::now());
            if !newer.is_empty() || left.is_zero() {
                return newer;
            }
            log = match self.added.wait_timeout(log, left) {
                Ok((log, _)) => log,
                Err(_) => return Vec::new(),
            };
        }
    }
}
