//! The vsock device in the VMM's event loop: its queue eventfds (written by KVM on
//! QueueNotify) and the muxer's epoll fd (host sockets).

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use std::os::fd::AsRawFd;

use super::device::{Vsock, EVQ, RXQ, TXQ};

impl MutEventSubscriber for Vsock {
    fn init(&mut self, ops: &mut EventOps) {
        for index in [RXQ, TXQ, EVQ] {
            if let Some(event) = self.queue_event(index) {
                let _ = ops.add(Events::new(event, EventSet::IN));
            }
        }
        let _ = ops.add(Events::new_raw(self.muxer.as_raw_fd(), EventSet::IN));
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.muxer.as_raw_fd() {
            self.muxer.process_events();
        } else {
            // A queue kick: clear it (nonblocking; an empty counter is fine).
            for index in [RXQ, TXQ, EVQ] {
                if let Some(event) = self.queue_event(index) {
                    if event.as_raw_fd() == fd {
                        let _ = event.read();
                    }
                }
            }
        }
        // Any event may unblock either direction: new TX chains, new RX buffers, host data.
        self.process_queues();
    }
}
