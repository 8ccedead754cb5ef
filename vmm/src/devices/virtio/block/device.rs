//! The virtio-blk device: features and config space for the transport, and the queue loop
//! (disable notifications, drain, re-enable and re-check) run by its event handler.

use std::sync::Arc;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::disk::DiskFile;
use super::features::{VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX};
use super::request;
use super::{QUEUE_SIZE, SEG_MAX};
use crate::devices::virtio::{
    read_config_bytes, ActivateContext, ActivateError, Interrupt, VirtioDevice, TYPE_BLOCK,
    VIRTIO_F_VERSION_1,
};

/// Most chains served in one go before yielding to the event loop (and re-arming our own
/// eventfd), so a guest that keeps refilling the ring cannot monopolize the VMM thread.
const MAX_CHAINS_PER_RUN: usize = 4 * QUEUE_SIZE as usize;

/// What the device holds once the driver is ready.
struct Active {
    mem: GuestMemoryMmap,
    queue: Queue,
    interrupt: Arc<Interrupt>,
}

/// A virtio-blk device for one disk.
pub struct Block {
    disk: DiskFile,
    /// `struct virtio_blk_config` up to seg_max: capacity (sectors), size_max (0: not
    /// offered), seg_max.
    config: [u8; 16],
    queue_evts: [EventFd; 1],
    active: Option<Active>,
    /// The guest broke the queue (e.g. an available index that jumped); nothing more is
    /// served until it resets the device.
    broken: bool,
}

/// Outcome of one run of the queue loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueRun {
    /// Chains completed.
    pub completed: usize,
    /// Stopped at the per-run limit; the queue eventfd was re-armed.
    pub yielded: bool,
}

impl Block {
    /// A device serving `disk`.
    pub fn new(disk: DiskFile) -> std::io::Result<Self> {
        let mut config = [0u8; 16];
        config[..8].copy_from_slice(&disk.sectors().to_le_bytes());
        config[12..].copy_from_slice(&SEG_MAX.to_le_bytes());
        Ok(Self {
            disk,
            config,
            queue_evts: [EventFd::new(EFD_NONBLOCK)?],
            active: None,
            broken: false,
        })
    }

    /// The disk.
    pub fn disk(&self) -> &DiskFile {
        &self.disk
    }

    /// Whether the driver set DRIVER_OK and the device serves its queue.
    pub fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    /// Whether the guest broke the queue.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Serves the request queue: the virtio queue loop with notifications off while
    /// draining, and a re-check after turning them back on so no request is missed.
    pub fn process_queue(&mut self) -> QueueRun {
        let mut run = QueueRun::default();
        if self.broken {
            return run;
        }
        let Some(active) = self.active.as_mut() else {
            return run;
        };
        let outcome = drain(active, &self.disk, &mut run);
        if outcome.is_err() {
            self.broken = true;
            active.interrupt.device_needs_reset();
        } else if run.yielded {
            let _ = self.queue_evts[0].write(1);
        }
        if run.completed > 0 {
            let needs = active.queue.needs_notification(&active.mem).unwrap_or(true);
            if needs {
                let _ = active.interrupt.signal_used_queue();
            }
        }
        run
    }
}

/// The queue loop. Err: the guest broke the queue (rings unreadable, bad available index,
/// rings laid over each other so that the available index moves with our own writes).
fn drain(active: &mut Active, disk: &DiskFile, run: &mut QueueRun) -> Result<(), ()> {
    let Active { mem, queue, .. } = active;
    let mut first_round = true;
    loop {
        let before = run.completed;
        queue.disable_notification(mem).map_err(drop)?;
        loop {
            if run.completed >= MAX_CHAINS_PER_RUN {
                run.yielded = true;
                return Ok(());
            }
            // iter() refuses an available index more than a queue size ahead.
            let Some(chain) = queue.iter(&*mem).map_err(drop)?.next() else {
                break;
            };
            let head = chain.head_index();
            let parsed = request::parse(chain, mem, disk);
            let used_len = request::execute(parsed, mem, disk);
            queue.add_used(mem, head, used_len).map_err(drop)?;
            run.completed += 1;
        }
        if !queue.enable_notification(mem).map_err(drop)? {
            return Ok(());
        }
        // More arrived: the next round must take a chain. A round after the first that took
        // none although the available index says "more" (an unreadable ring entry, or a used
        // ring laid over the available index so our own writes move it) would spin forever.
        if !first_round && run.completed == before {
            return Err(());
        }
        first_round = false;
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn avail_features(&self) -> u64 {
        let mut features = (1u64 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_BLK_F_FLUSH)
            | (1 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX)
            | (1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC);
        if self.disk.read_only() {
            features |= 1 << VIRTIO_BLK_F_RO;
        }
        features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // Nothing in our config space is writable (no WCE, no writeback toggling).
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        let queue = ctx
            .queues
            .into_iter()
            .next()
            .ok_or_else(|| ActivateError("virtio-blk: no request queue".into()))?;
        self.active = Some(Active {
            mem: ctx.mem,
            queue,
            interrupt: ctx.interrupt,
        });
        self.broken = false;
        // Requests the driver queued before we were listening are served now.
        let _ = self.queue_evts[0].write(1);
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
        self.broken = false;
    }
}
