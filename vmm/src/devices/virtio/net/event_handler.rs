//! virtio-net in the VMM's event loop: the RX and TX queue eventfds (written by KVM on
//! QueueNotify) and the tap, watched edge-triggered: the device reads it until EAGAIN, or
//! keeps one frame and waits for the guest's RX buffers (then the RX kick resumes reading).

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::{Net, RX_INDEX, TX_INDEX};
use crate::devices::virtio::VirtioDevice;

const TAP_DATA: u32 = 100;

impl MutEventSubscriber for Net {
    fn init(&mut self, ops: &mut EventOps) {
        for (index, evt) in self.queue_events().iter().enumerate() {
            if let Err(e) = ops.add(Events::with_data(evt, index as u32, EventSet::IN)) {
                eprintln!("condo: virtio-net: cannot watch queue {index}'s eventfd: {e:?}");
            }
        }
        if let Some(fd) = self.tap.event_fd() {
            let set = EventSet::IN | EventSet::EDGE_TRIGGERED;
            if let Err(e) = ops.add(Events::with_data_raw(fd, TAP_DATA, set)) {
                eprintln!("condo: virtio-net: cannot watch the tap (fd {fd}): {e:?}");
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        match events.data() {
            TAP_DATA => self.process_rx(),
            index if index as usize == RX_INDEX => {
                if let Some(evt) = self.queue_events().get(RX_INDEX) {
                    let _ = evt.read();
                }
                self.process_rx();
            }
            index if index as usize == TX_INDEX => {
                if let Some(evt) = self.queue_events().get(TX_INDEX) {
                    let _ = evt.read();
                }
                self.process_tx();
                // TX can free nothing for RX, but a kick is a cheap moment to deliver frames
                // that waited for buffers the guest added without kicking RX.
                if self.rx.has_pending() {
                    self.process_rx();
                }
            }
            _ => {}
        }
    }
}
