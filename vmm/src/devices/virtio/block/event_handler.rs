//! virtio-blk in the VMM's event loop: the queue eventfd (KVM's ioeventfd on QueueNotify).

use std::os::fd::AsRawFd;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::Block;
use crate::devices::virtio::VirtioDevice;

impl MutEventSubscriber for Block {
    fn init(&mut self, ops: &mut EventOps) {
        for evt in self.queue_events() {
            if let Err(e) = ops.add(Events::new(evt, EventSet::IN)) {
                eprintln!("condo: virtio-blk: cannot watch the queue eventfd: {e:?}");
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let Some(evt) = self.queue_events().first() else {
            return;
        };
        if events.fd() != evt.as_raw_fd() {
            return;
        }
        // Reading resets the counter; notifications before activation are served by the
        // activation itself.
        let _ = evt.read();
        self.process_queue();
    }
}
