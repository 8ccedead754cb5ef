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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_newer_events_and_times_out_empty() {
        let events = OomEvents::default();
        assert!(events.wait_after(0, Duration::from_millis(5)).is_empty());
        events.push("a");
        events.push("b");
        let all = events.wait_after(0, Duration::ZERO);
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
        let newer = events.wait_after(1, Duration::ZERO);
        assert_eq!(newer.len(), 1);
        assert_eq!(newer[0].container_id, "b");
    }

    #[test]
    fn keeps_a_bounded_log() {
        let events = OomEvents::default();
        for _ in 0..(MAX_KEPT_EVENTS + 5) {
            events.push("c");
        }
        let kept = events.wait_after(0, Duration::ZERO);
        assert_eq!(kept.len(), MAX_KEPT_EVENTS);
        assert_eq!(kept[0].seq, 6);
    }
}
