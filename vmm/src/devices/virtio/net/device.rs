//! The virtio-net device: what it offers (MAC, link status, VERSION_1 and nothing else), its
//! config space, and the queues it serves once the driver is ready.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::frame::{self, RxState, MAX_FRAME};
use super::tap::TapIo;
use super::{
    NetStats, QUEUE_SIZE, RX_INDEX, TX_INDEX, VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS,
    VIRTIO_NET_S_LINK_UP,
};
use crate::devices::virtio::{
    read_config_bytes, ActivateContext, ActivateError, Interrupt, VirtioDevice, TYPE_NET,
    VIRTIO_F_VERSION_1,
};
use crate::net::Mac;

/// Queues, memory and interrupt of an activated device.
pub(super) struct Active {
    pub(super) mem: GuestMemoryMmap,
    pub(super) rx_queue: Queue,
    pub(super) tx_queue: Queue,
    pub(super) interrupt: Arc<Interrupt>,
    /// Set when the guest broke a queue's used ring: nothing is served until a reset.
    pub(super) broken: Option<String>,
}

/// A virtio-net device on a tap.
pub struct Net {
    mac: Mac,
    pub(super) tap: Box<dyn TapIo>,
    queue_events: Vec<EventFd>,
    pub(super) active: Option<Active>,
    pub(super) rx: RxState,
    tx_buf: Vec<u8>,
    pub(super) stats: NetStats,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("mac", &self.mac)
            .field("active", &self.active.is_some())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Net {
    /// A device on `tap` whose MAC the guest reads from the config space.
    pub fn new(tap: Box<dyn TapIo>, mac: Mac) -> std::io::Result<Net> {
        let queue_events = (0..2)
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Net {
            mac,
            tap,
            queue_events,
            active: None,
            rx: RxState::default(),
            tx_buf: vec![0; MAX_FRAME],
            stats: NetStats::default(),
        })
    }

    /// The MAC the guest sees.
    pub fn mac(&self) -> Mac {
        self.mac
    }

    /// Counters of what was moved and refused.
    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    fn config_bytes(&self) -> [u8; 8] {
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&self.mac.0);
        config[6..].copy_from_slice(&VIRTIO_NET_S_LINK_UP.to_le_bytes());
        config
    }

    fn mark_broken(active: &mut Active, why: String) {
        eprintln!("condo: virtio-net: {why}; the device stops until the guest resets it");
        active.broken = Some(why);
    }

    /// Serves the TX queue (the guest kicked it).
    pub fn process_tx(&mut self) {
        let Some(active) = self.active.as_mut().filter(|a| a.broken.is_none()) else {
            return;
        };
        let result = frame::process_tx(
            &active.mem,
            &mut active.tx_queue,
            self.tap.as_mut(),
            &mut self.tx_buf,
            &mut self.stats,
        );
        match result {
            Ok(used) => {
                let notified = frame::notify_if_used(
                    &active.mem,
                    &mut active.tx_queue,
                    used,
                    &active.interrupt,
                );
                if let Err(e) = notified {
                    Self::mark_broken(active, format!("raising the TX interrupt: {e}"));
                }
            }
            Err(e) => Self::mark_broken(active, e.to_string()),
        }
    }

    /// Moves frames from the tap to the guest (the tap has frames, or the guest added RX
    /// buffers). Before activation, frames are read and dropped, as a NIC without a driver.
    pub fn process_rx(&mut self) {
        let Some(active) = self.active.as_mut() else {
            let mut scratch = [0u8; 2048];
            while self.tap.read_frame(&mut scratch).is_ok() {}
            return;
        };
        if active.broken.is_some() {
            return;
        }
        let result = frame::process_rx(
            &active.mem,
            &mut active.rx_queue,
            self.tap.as_mut(),
            &mut self.rx,
            &mut self.stats,
        );
        match result {
            Ok(used) => {
                let notified = frame::notify_if_used(
                    &active.mem,
                    &mut active.rx_queue,
                    used,
                    &active.interrupt,
                );
                if let Err(e) = notified {
                    Self::mark_broken(active, format!("raising the RX interrupt: {e}"));
                }
            }
            Err(e) => Self::mark_broken(active, e.to_string()),
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    fn avail_features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_NET_F_MAC) | (1 << VIRTIO_NET_F_STATUS)
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_bytes(), offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // The MAC is read-only with VERSION_1 (no VIRTIO_NET_F_CTRL_MAC_ADDR offered).
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        let mut queues = ctx.queues.into_iter();
        let (Some(rx_queue), Some(tx_queue)) = (queues.next(), queues.next()) else {
            return Err(ActivateError(
                "virtio-net needs an RX and a TX queue".into(),
            ));
        };
        for (queue, index, name) in [(&rx_queue, RX_INDEX, "RX"), (&tx_queue, TX_INDEX, "TX")] {
            if !queue.ready() {
                return Err(ActivateError(format!(
                    "virtio-net {name} queue (index {index}) was not made ready"
                )));
            }
        }
        self.rx.clear();
        self.active = Some(Active {
            mem: ctx.mem,
            rx_queue,
            tx_queue,
            interrupt: ctx.interrupt,
            broken: None,
        });
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
        self.rx.clear();
    }
}
