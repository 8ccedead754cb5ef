//! Moving frames between the guest's queues and the tap, treating the guest as hostile.
//!
//! TX (guest -> tap): each chain is gathered into one buffer; a chain with a write-only
//! descriptor, an address outside guest memory, fewer bytes than a header and an Ethernet
//! header, more than [`MAX_FRAME`] bytes, or a header asking for offloads that were not
//! negotiated is dropped. Every chain goes back to the guest (used length 0) either way.
//! RX (tap -> guest): a frame is read once and kept until a chain can take it; a chain that is
//! not all write-only, points outside guest memory or is too small gets used length 0 and the
//! frame is dropped (the guest's driver discards zero-length buffers).

use std::io;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::tap::TapIo;
use super::NetStats;
use crate::net::tap::VNET_HDR_LEN;

/// Largest frame with its header: a 64 KiB IP packet, an Ethernet header with a VLAN tag.
pub const MAX_FRAME: usize = VNET_HDR_LEN + 65_550;
/// Smallest TX frame: the header and an Ethernet header.
pub const MIN_TX_FRAME: usize = VNET_HDR_LEN + 14;

/// A queue the guest broke (its used ring is not writable): the device stops serving it.
#[derive(Debug, thiserror::Error)]
#[error("{queue} queue: returning descriptor chain {head} to the guest: {source}")]
pub struct QueueBroken {
    /// rx or tx.
    pub queue: &'static str,
    /// The chain's head index.
    pub head: u16,
    /// virtio-queue's error.
    pub source: virtio_queue::Error,
}

#[derive(Debug, PartialEq, Eq)]
enum Bad {
    WriteOnlyInTx,
    ReadOnlyInRx,
    Unmapped,
    TooLong,
    TooSmall,
}

/// Gathers a TX chain's readable bytes into `buf`.
fn gather<I>(mem: &GuestMemoryMmap, chain: I, buf: &mut [u8]) -> Result<usize, Bad>
where
    I: Iterator<Item = virtio_queue::desc::split::Descriptor>,
{
    let mut total = 0usize;
    for desc in chain {
        if desc.is_write_only() {
            return Err(Bad::WriteOnlyInTx);
        }
        let len = desc.len() as usize;
        let end = total.checked_add(len).ok_or(Bad::TooLong)?;
        let dst = buf.get_mut(total..end).ok_or(Bad::TooLong)?;
        mem.read_slice(dst, desc.addr())
            .map_err(|_| Bad::Unmapped)?;
        total = end;
    }
    Ok(total)
}

/// Whether a guest header asks only for what was negotiated: nothing (no offload features).
fn header_is_plain(frame: &[u8]) -> bool {
    // flags (byte 0) and gso_type (byte 1) of virtio_net_hdr.
    frame.first() == Some(&0) && frame.get(1) == Some(&0)
}

/// Sends every available TX chain to the tap; returns whether chains were returned to the
/// guest (an interrupt is due).
pub fn process_tx(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    tap: &mut dyn TapIo,
    buf: &mut [u8],
    stats: &mut NetStats,
) -> Result<bool, QueueBroken> {
    let mut used = false;
    while let Some(chain) = queue.pop_descriptor_chain(mem) {
        let head = chain.head_index();
        match gather(mem, chain, buf) {
            Ok(len) if len < MIN_TX_FRAME => stats.tx_dropped_short += 1,
            Ok(len) => match buf.get(..len) {
                Some(frame) if header_is_plain(frame) => match tap.write_frame(frame) {
                    Ok(_) => {
                        stats.tx_frames += 1;
                        stats.tx_bytes += (len - VNET_HDR_LEN) as u64;
                    }
                    // A full tap queue or a link that is down loses the frame, as a NIC would.
                    Err(_) => stats.tx_tap_errors += 1,
                },
                _ => stats.tx_dropped_offload += 1,
            },
            Err(Bad::TooLong) => stats.tx_dropped_oversized += 1,
            Err(_) => stats.tx_bad_chains += 1,
        }
        queue.add_used(mem, head, 0).map_err(|source| QueueBroken {
            queue: "tx",
            head,
            source,
        })?;
        used = true;
    }
    Ok(used)
}

/// A frame read from the tap and not yet given to the guest.
#[derive(Debug)]
pub struct RxState {
    buf: Vec<u8>,
    pending: Option<usize>,
    segments: Vec<(GuestAddress, usize)>,
}

impl Default for RxState {
    fn default() -> Self {
        Self {
            buf: vec![0; MAX_FRAME],
            pending: None,
            segments: Vec::new(),
        }
    }
}

impl RxState {
    /// Whether a frame waits for an RX buffer.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Forgets the pending frame (device reset).
    pub fn clear(&mut self) {
        self.pending = None;
    }
}

/// Checks an RX chain (write-only, mapped, large enough) and lists where the frame goes.
fn plan_scatter<I>(
    mem: &GuestMemoryMmap,
    chain: I,
    len: usize,
    segments: &mut Vec<(GuestAddress, usize)>,
) -> Result<(), Bad>
where
    I: Iterator<Item = virtio_queue::desc::split::Descriptor>,
{
    segments.clear();
    let mut room = 0usize;
    for desc in chain {
        if room >= len {
            break;
        }
        if !desc.is_write_only() {
            return Err(Bad::ReadOnlyInRx);
        }
        let take = (desc.len() as usize).min(len - room);
        if !GuestMemoryBackend::check_range(mem, desc.addr(), take) {
            return Err(Bad::Unmapped);
        }
        segments.push((desc.addr(), take));
        room += take;
    }
    if room < len {
        return Err(Bad::TooSmall);
    }
    Ok(())
}

/// Reads frames from the tap into RX chains until the tap has none (EAGAIN) or the guest has
/// no buffer left (the frame is then kept). Returns whether chains were returned to the guest.
pub fn process_rx(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    tap: &mut dyn TapIo,
    rx: &mut RxState,
    stats: &mut NetStats,
) -> Result<bool, QueueBroken> {
    let mut used = false;
    loop {
        let len = match rx.pending {
            Some(len) => len,
            None => match tap.read_frame(&mut rx.buf) {
                Ok(n) if n < VNET_HDR_LEN => {
                    stats.rx_dropped_short += 1;
                    continue;
                }
                Ok(n) => {
                    // With VERSION_1 the header carries num_buffers; the tap leaves it as is.
                    if let Some(num_buffers) = rx.buf.get_mut(10..12) {
                        num_buffers.copy_from_slice(&1u16.to_le_bytes());
                    }
                    rx.pending = Some(n);
                    n
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    stats.rx_tap_errors += 1;
                    break;
                }
            },
        };
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            break;
        };
        let head = chain.head_index();
        let written = match plan_scatter(mem, chain, len, &mut rx.segments) {
            Ok(()) => deliver(mem, &rx.buf[..len], &rx.segments, stats),
            Err(Bad::TooSmall) => {
                stats.rx_dropped_small_buffer += 1;
                0
            }
            Err(_) => {
                stats.rx_bad_chains += 1;
                0
            }
        };
        rx.pending = None;
        queue
            .add_used(mem, head, written)
            .map_err(|source| QueueBroken {
                queue: "rx",
                head,
                source,
            })?;
        used = true;
    }
    Ok(used)
}

fn deliver(
    mem: &GuestMemoryMmap,
    frame: &[u8],
    segments: &[(GuestAddress, usize)],
    stats: &mut NetStats,
) -> u32 {
    let mut offset = 0usize;
    for (addr, take) in segments {
        let Some(part) = frame.get(offset..offset + take) else {
            break;
        };
        if mem.write_slice(part, *addr).is_err() {
            stats.rx_bad_chains += 1;
            return 0;
        }
        offset += take;
    }
    stats.rx_frames += 1;
    stats.rx_bytes += (frame.len() - VNET_HDR_LEN) as u64;
    u32::try_from(offset).unwrap_or(0)
}

/// Signals the guest when `used` and the queue asks for it.
pub fn notify_if_used(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    used: bool,
    interrupt: &super::super::Interrupt,
) -> io::Result<()> {
    if used && queue.needs_notification(mem).unwrap_or(true) {
        interrupt.signal_used_queue()?;
    }
    Ok(())
}
