//! The virtio-vsock device (type 19): three queues (rx, tx, event) over the Unix-socket muxer.
//!
//! TX chains from the guest are parsed into packets and handed to the muxer; RX chains are
//! filled with what the muxer has for the guest, as long as both last. A chain that is not a
//! valid packet buffer is returned used with length 0 and its packet dropped: the guest only
//! hurts its own streams.

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{GuestMemory, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::packet::{DescSegment, RxBuffer, TxPacket};
use super::unix::Muxer;
use super::{VsockError, MIN_GUEST_CID};
use crate::devices::virtio::{
    read_config_bytes, ActivateContext, ActivateError, Interrupt, VirtioDevice, TYPE_VSOCK,
    VIRTIO_F_VERSION_1,
};

/// Queue indexes (virtio spec 5.10.2).
pub const RXQ: usize = 0;
/// Guest → host packets.
pub const TXQ: usize = 1;
/// Transport events (host → guest).
pub const EVQ: usize = 2;
/// Size of each queue.
pub const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: [u16; 3] = [QUEUE_SIZE; 3];

/// Walks a chain into its segments. virtio-queue bounds the walk (at most the queue size,
/// loops end there) and refuses bad indirect tables; the segments' buffers are checked by the
/// packet code.
pub fn chain_segments<M>(chain: DescriptorChain<M>) -> Vec<DescSegment>
where
    M: std::ops::Deref,
    M::Target: GuestMemory,
{
    chain
        .map(|desc| DescSegment {
            addr: desc.addr(),
            len: desc.len(),
            write_only: desc.is_write_only(),
        })
        .collect()
}

/// Consumes every chain on the TX queue; returns true if any was used.
pub fn process_tx(queue: &mut Queue, mem: &GuestMemoryMmap, muxer: &mut Muxer) -> bool {
    let mut used = false;
    while let Some(chain) = queue.pop_descriptor_chain(mem) {
        let head = chain.head_index();
        let segs = chain_segments(chain);
        if let Ok(pkt) = TxPacket::from_chain(mem, &segs) {
            muxer.send_pkt(&pkt);
        }
        if queue.add_used(mem, head, 0).is_err() {
            break;
        }
        used = true;
    }
    used
}

/// Fills RX chains with the muxer's packets while both last; returns true if any was used.
pub fn process_rx(queue: &mut Queue, mem: &GuestMemoryMmap, muxer: &mut Muxer) -> bool {
    let mut used = false;
    while muxer.has_pending_rx() {
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            break;
        };
        let head = chain.head_index();
        let segs = chain_segments(chain);
        let len = match RxBuffer::new(mem, &segs) {
            // Unusable buffer: give it back empty; the packet waits for the next one.
            Err(_) => 0,
            Ok(buffer) => match muxer.recv_pkt(buffer.max_payload()) {
                Some((hdr, payload)) => buffer.write(mem, hdr, &payload).unwrap_or(0),
                None => {
                    // Nothing after all: leave the chain for later.
                    queue.go_to_previous_position();
                    break;
                }
            },
        };
        if queue.add_used(mem, head, len).is_err() {
            break;
        }
        used = true;
    }
    used
}

fn check_cid(guest_cid: u64) -> Result<(), VsockError> {
    if guest_cid < MIN_GUEST_CID || guest_cid > u64::from(u32::MAX) {
        return Err(VsockError::Cid(guest_cid));
    }
    Ok(())
}

/// The queues and memory of an activated device.
pub(super) struct Active {
    pub(super) mem: GuestMemoryMmap,
    pub(super) queues: Vec<Queue>,
    pub(super) interrupt: Arc<Interrupt>,
}

/// The virtio-vsock device.
pub struct Vsock {
    guest_cid: u64,
    pub(super) muxer: Muxer,
    queue_events: Vec<EventFd>,
    pub(super) active: Option<Active>,
}

impl Vsock {
    /// A device for a guest with `guest_cid`, served on the Unix socket at `uds_path`.
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Vsock, VsockError> {
        check_cid(guest_cid)?;
        Vsock::with_muxer(guest_cid, Muxer::new(guest_cid, uds_path)?)
    }

    /// A device serving an already bound listener (see [`Muxer::with_listener`]).
    pub fn with_listener(
        guest_cid: u64,
        listener: UnixListener,
        uds_path: &Path,
    ) -> Result<Vsock, VsockError> {
        check_cid(guest_cid)?;
        Vsock::with_muxer(
            guest_cid,
            Muxer::with_listener(guest_cid, listener, uds_path)?,
        )
    }

    fn with_muxer(guest_cid: u64, muxer: Muxer) -> Result<Vsock, VsockError> {
        let queue_events = QUEUE_SIZES
            .iter()
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()
            .map_err(VsockError::Epoll)?;
        Ok(Vsock {
            guest_cid,
            muxer,
            queue_events,
            active: None,
        })
    }

    /// The guest's context id.
    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// Runs the queues after an event: TX first (it may produce RX), then RX. Interrupts the
    /// guest if any buffer was used.
    pub fn process_queues(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mem = &active.mem;
        let mut used = false;
        if let Some(txq) = active.queues.get_mut(TXQ) {
            used |= process_tx(txq, mem, &mut self.muxer);
        }
        if let Some(rxq) = active.queues.get_mut(RXQ) {
            used |= process_rx(rxq, mem, &mut self.muxer);
        }
        if used {
            // A failed irqfd write leaves the guest to poll; nothing better to do here.
            let _ = active.interrupt.signal_used_queue();
        }
    }

    /// The queue eventfds (rx, tx, event).
    pub(super) fn queue_event(&self, index: usize) -> Option<&EventFd> {
        self.queue_events.get(index)
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        TYPE_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    fn avail_features(&self) -> u64 {
        1 << VIRTIO_F_VERSION_1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_vsock_config { le64 guest_cid; }
        read_config_bytes(&self.guest_cid.to_le_bytes(), offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // guest_cid is read-only.
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        if ctx.queues.len() != QUEUE_SIZES.len() {
            return Err(ActivateError(format!(
                "vsock needs {} queues, got {}",
                QUEUE_SIZES.len(),
                ctx.queues.len()
            )));
        }
        if let Some(bad) = ctx.queues.iter().position(|q| !q.ready()) {
            return Err(ActivateError(format!("vsock queue {bad} is not ready")));
        }
        self.active = Some(Active {
            mem: ctx.mem,
            queues: ctx.queues,
            interrupt: ctx.interrupt,
        });
        // Packets may have waited for the guest (host clients connecting early). Activation
        // runs on a vCPU thread, whose seccomp filter allows none of the muxer's calls: kick
        // the event loop through the RX queue's eventfd instead of processing here.
        if let Some(kick) = self.queue_events.get(RXQ) {
            kick.write(1)
                .map_err(|e| ActivateError(format!("vsock: kicking the event loop: {e}")))?;
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
    }
}

#[cfg(test)]
#[path = "device_tests.rs"]
mod tests;
