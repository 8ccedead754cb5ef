//! virtio-net driven like a hostile guest would, without KVM: rings written by hand in guest
//! memory, a fake tap that records frames and can say EAGAIN.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::frame::MAX_FRAME;
use super::{Net, NetStats, TapIo, VIRTIO_NET_F_MAC};
use crate::devices::virtio::{ActivateContext, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::net::tap::VNET_HDR_LEN;
use crate::net::Mac;

const MEM_SIZE: usize = 0x20_0000;
const SIZE: u16 = 16;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const BUFS: u64 = 0x10_0000;

#[derive(Default)]
struct TapState {
    rx: VecDeque<io::Result<Vec<u8>>>,
    tx: Vec<Vec<u8>>,
    tx_error: Option<io::ErrorKind>,
    reads: usize,
}

#[derive(Clone, Default)]
struct FakeTap(Arc<Mutex<TapState>>);

impl TapIo for FakeTap {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut state = self.0.lock().unwrap();
        state.reads += 1;
        match state.rx.pop_front() {
            None => Err(io::ErrorKind::WouldBlock.into()),
            Some(Err(e)) => Err(e),
            Some(Ok(frame)) => {
                let n = frame.len().min(buf.len());
                buf[..n].copy_from_slice(&frame[..n]);
                Ok(n)
            }
        }
    }
    fn write_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        let mut state = self.0.lock().unwrap();
        if let Some(kind) = state.tx_error {
            return Err(kind.into());
        }
        state.tx.push(frame.to_vec());
        Ok(frame.len())
    }
    fn event_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}

/// One split virtqueue laid out in guest memory by hand.
struct Ring {
    desc: u64,
    avail: u64,
    used: u64,
    next_desc: u16,
    avail_idx: u16,
}

impl Ring {
    fn new(base: u64) -> Ring {
        Ring {
            desc: base,
            avail: base + 0x400,
            used: base + 0x800,
            next_desc: 0,
            avail_idx: 0,
        }
    }

    fn queue(&self) -> Queue {
        let mut q = Queue::new(SIZE).unwrap();
        q.set_size(SIZE);
        q.try_set_desc_table_address(GuestAddress(self.desc))
            .unwrap();
        q.try_set_avail_ring_address(GuestAddress(self.avail))
            .unwrap();
        q.try_set_used_ring_address(GuestAddress(self.used))
            .unwrap();
        q.set_ready(true);
        q
    }

    fn write_desc(
        &self,
        mem: &GuestMemoryMmap,
        index: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        let at = GuestAddress(self.desc + 16 * u64::from(index));
        mem.write_obj(addr, at).unwrap();
        mem.write_obj(len, at.unchecked_add(8)).unwrap();
        mem.write_obj(flags, at.unchecked_add(12)).unwrap();
        mem.write_obj(next, at.unchecked_add(14)).unwrap();
    }

    fn publish(&mut self, mem: &GuestMemoryMmap, head: u16) {
        let slot = GuestAddress(self.avail + 4 + 2 * u64::from(self.avail_idx % SIZE));
        mem.write_obj(head, slot).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx, GuestAddress(self.avail + 2))
            .unwrap();
    }

    /// Adds a chain of (address, length, device-writable) descriptors; returns its head.
    fn add_chain(&mut self, mem: &GuestMemoryMmap, parts: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (i, (addr, len, write)) in parts.iter().enumerate() {
            let index = head + i as u16;
            let last = i + 1 == parts.len();
            let flags = if *write { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
            self.write_desc(mem, index, *addr, *len, flags, index + 1);
        }
        self.next_desc += parts.len() as u16;
        self.publish(mem, head);
        head
    }

    fn used_idx(&self, mem: &GuestMemoryMmap) -> u16 {
        mem.read_obj(GuestAddress(self.used + 2)).unwrap()
    }

    /// (head id, length) of used element `n`.
    fn used_elem(&self, mem: &GuestMemoryMmap, n: u16) -> (u32, u32) {
        let at = GuestAddress(self.used + 4 + 8 * u64::from(n));
        (
            mem.read_obj(at).unwrap(),
            mem.read_obj(at.unchecked_add(4)).unwrap(),
        )
    }
}

struct Bench {
    mem: GuestMemoryMmap,
    net: Net,
    tap: FakeTap,
    rx: Ring,
    tx: Ring,
    irq: Arc<Interrupt>,
}

const MAC: Mac = Mac([0x02, 0, 0, 0, 0, 0x42]);

fn bench() -> Bench {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let tap = FakeTap::default();
    let mut net = Net::new(Box::new(tap.clone()), MAC).unwrap();
    let (rx, tx) = (Ring::new(0x1000), Ring::new(0x2000));
    let irq = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    net.activate(ActivateContext {
        mem: mem.clone(),
        queues: vec![rx.queue(), tx.queue()],
        interrupt: irq.clone(),
        acked_features: net.avail_features(),
    })
    .unwrap();
    Bench {
        mem,
        net,
        tap,
        rx,
        tx,
        irq,
    }
}

/// A frame as the tap and the guest exchange it: header, then Ethernet header and payload.
fn frame(payload_len: usize) -> Vec<u8> {
    let mut f = vec![0u8; VNET_HDR_LEN];
    f.extend_from_slice(&[0xff; 6]); // destination
    f.extend_from_slice(&MAC.0); // source
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend((0..payload_len).map(|i| i as u8));
    f
}

impl Bench {
    fn stats(&self) -> NetStats {
        self.net.stats().clone()
    }
    fn interrupted(&self) -> bool {
        self.irq.irqfd().read().is_ok()
    }
    fn tx_frames(&self) -> Vec<Vec<u8>> {
        self.tap.0.lock().unwrap().tx.clone()
    }
    fn tap_rx(&self, item: io::Result<Vec<u8>>) {
        self.tap.0.lock().unwrap().rx.push_back(item);
    }
}

#[test]
fn tx_frame_in_two_descriptors_reaches_the_tap() {
    let mut b = bench();
    let f = frame(50);
    b.mem
        .write_slice(&f[..VNET_HDR_LEN], GuestAddress(BUFS))
        .unwrap();
    b.mem
        .write_slice(&f[VNET_HDR_LEN..], GuestAddress(BUFS + 0x1000))
        .unwrap();
    let head = b.tx.add_chain(
        &b.mem,
        &[
            (BUFS, 12, false),
            (BUFS + 0x1000, (f.len() - 12) as u32, false),
        ],
    );
    b.net.process_tx();
    assert_eq!(b.tx_frames(), vec![f]);
    assert_eq!(b.tx.used_idx(&b.mem), 1);
    assert_eq!(b.tx.used_elem(&b.mem, 0), (u32::from(head), 0));
    assert!(b.interrupted());
    assert_eq!(b.stats().tx_frames, 1);
}

#[test]
fn tx_short_and_oversized_frames_are_dropped_and_returned() {
    let mut b = bench();
    b.tx.add_chain(&b.mem, &[(BUFS, (VNET_HDR_LEN + 13) as u32, false)]);
    b.tx.add_chain(&b.mem, &[(BUFS, 0, false)]);
    b.tx.add_chain(&b.mem, &[(BUFS, (MAX_FRAME + 1) as u32, false)]);
    b.tx.add_chain(&b.mem, &[(BUFS, u32::MAX, false)]);
    b.tx.add_chain(&b.mem, &[(BUFS, 60_000, false), (BUFS, 60_000, false)]);
    b.net.process_tx();
    assert!(b.tx_frames().is_empty());
    let stats = b.stats();
    assert_eq!((stats.tx_dropped_short, stats.tx_dropped_oversized), (2, 3));
    assert_eq!(
        b.tx.used_idx(&b.mem),
        5,
        "every chain goes back to the guest"
    );
}

#[test]
fn tx_bad_descriptors_are_dropped() {
    let mut b = bench();
    let beyond = MEM_SIZE as u64 + 0x1000;
    b.tx.add_chain(&b.mem, &[(beyond, 100, false)]); // outside guest memory
    b.tx.add_chain(&b.mem, &[(u64::MAX - 10, 100, false)]); // addr + len overflows
    b.tx.add_chain(&b.mem, &[(MEM_SIZE as u64 - 20, 100, false)]); // straddles the end
    b.tx.add_chain(&b.mem, &[(BUFS, 100, true)]); // device-writable in TX
    b.net.process_tx();
    assert!(b.tx_frames().is_empty());
    assert_eq!(b.stats().tx_bad_chains, 4);
    assert_eq!(b.tx.used_idx(&b.mem), 4);
}

#[test]
fn tx_looping_chain_and_next_out_of_range_end() {
    let mut b = bench();
    let f = frame(50);
    b.mem.write_slice(&f, GuestAddress(BUFS)).unwrap();
    // Descriptor 0 -> 1 -> 0 -> ...: virtio-queue stops after the queue size.
    b.tx.write_desc(&b.mem, 0, BUFS, 30, F_NEXT, 1);
    b.tx.write_desc(&b.mem, 1, BUFS, 30, F_NEXT, 0);
    b.tx.publish(&b.mem, 0);
    // Descriptor 2 -> 9999: the chain ends at the bad index.
    b.tx.write_desc(&b.mem, 2, BUFS, f.len() as u32, F_NEXT, 9999);
    b.tx.publish(&b.mem, 2);
    b.net.process_tx();
    assert_eq!(b.tx.used_idx(&b.mem), 2);
    let sent = b.tx_frames();
    assert!(
        sent.iter().all(|s| s.len() <= 30 * usize::from(SIZE)),
        "bounded by the queue size"
    );
}

#[test]
fn tx_header_asking_for_offloads_is_dropped() {
    let mut b = bench();
    let mut f = frame(50);
    f[0] = 1; // VIRTIO_NET_HDR_F_NEEDS_CSUM, never negotiated
    b.mem.write_slice(&f, GuestAddress(BUFS)).unwrap();
    b.tx.add_chain(&b.mem, &[(BUFS, f.len() as u32, false)]);
    let mut g = frame(50);
    g[1] = 1; // VIRTIO_NET_HDR_GSO_TCPV4
    b.mem.write_slice(&g, GuestAddress(BUFS + 0x1000)).unwrap();
    b.tx.add_chain(&b.mem, &[(BUFS + 0x1000, g.len() as u32, false)]);
    b.net.process_tx();
    assert!(b.tx_frames().is_empty());
    assert_eq!(b.stats().tx_dropped_offload, 2);
}

#[test]
fn avail_index_jumping_past_the_queue_size_is_ignored() {
    let mut b = bench();
    b.mem
        .write_obj(SIZE + 5, GuestAddress(b.tx.avail + 2))
        .unwrap();
    b.net.process_tx();
    assert_eq!(b.tx.used_idx(&b.mem), 0);
    assert!(b.tx_frames().is_empty());
    assert!(!b.interrupted());
}

#[test]
fn tap_eagain_on_tx_loses_the_frame_not_the_chain() {
    let mut b = bench();
    b.tap.0.lock().unwrap().tx_error = Some(io::ErrorKind::WouldBlock);
    let f = frame(50);
    b.mem.write_slice(&f, GuestAddress(BUFS)).unwrap();
    b.tx.add_chain(&b.mem, &[(BUFS, f.len() as u32, false)]);
    b.net.process_tx();
    assert_eq!(b.stats().tx_tap_errors, 1);
    assert_eq!(b.tx.used_idx(&b.mem), 1);
}

#[test]
fn rx_frame_lands_in_the_guest_buffer_with_num_buffers() {
    let mut b = bench();
    let mut f = frame(100);
    f[10] = 0xaa; // stale bytes where num_buffers goes
    b.tap_rx(Ok(f.clone()));
    let head =
        b.rx.add_chain(&b.mem, &[(BUFS, 12, true), (BUFS + 0x1000, 2048, true)]);
    b.net.process_rx();
    assert_eq!(b.rx.used_elem(&b.mem, 0), (u32::from(head), f.len() as u32));
    let mut got_hdr = [0u8; 12];
    b.mem.read_slice(&mut got_hdr, GuestAddress(BUFS)).unwrap();
    assert_eq!(&got_hdr[10..], &[1, 0], "num_buffers = 1");
    let mut got = vec![0u8; f.len() - 12];
    b.mem
        .read_slice(&mut got, GuestAddress(BUFS + 0x1000))
        .unwrap();
    assert_eq!(got, f[12..]);
    assert!(b.interrupted());
    assert_eq!(b.stats().rx_frames, 1);
}

#[test]
fn rx_buffer_too_small_drops_the_frame_and_returns_the_buffer() {
    let mut b = bench();
    b.tap_rx(Ok(frame(1000)));
    b.tap_rx(Ok(frame(10)));
    b.rx.add_chain(&b.mem, &[(BUFS, 64, true)]);
    b.rx.add_chain(&b.mem, &[(BUFS + 0x1000, 64, true)]);
    b.net.process_rx();
    assert_eq!(b.rx.used_elem(&b.mem, 0).1, 0, "too small: length 0");
    assert_eq!(b.rx.used_elem(&b.mem, 1).1, frame(10).len() as u32);
    assert_eq!(b.stats().rx_dropped_small_buffer, 1);
}

#[test]
fn rx_bad_buffers_get_nothing_written() {
    let mut b = bench();
    for _ in 0..3 {
        b.tap_rx(Ok(frame(40)));
    }
    b.mem.write_slice(&[0x5a; 64], GuestAddress(BUFS)).unwrap();
    b.rx.add_chain(&b.mem, &[(BUFS, 2048, false)]); // read-only in RX
    b.rx.add_chain(&b.mem, &[(MEM_SIZE as u64 + 0x1000, 2048, true)]); // outside memory
    b.rx.add_chain(&b.mem, &[(BUFS, 20, true), (u64::MAX - 4, 2048, true)]); // overflow
    b.net.process_rx();
    assert_eq!(b.stats().rx_bad_chains, 3);
    assert_eq!(b.rx.used_idx(&b.mem), 3);
    let mut untouched = [0u8; 64];
    b.mem
        .read_slice(&mut untouched, GuestAddress(BUFS))
        .unwrap();
    assert_eq!(untouched, [0x5a; 64], "nothing written to a rejected chain");
}

#[test]
fn rx_tap_eagain_consumes_no_buffer_and_raises_nothing() {
    let mut b = bench();
    b.rx.add_chain(&b.mem, &[(BUFS, 2048, true)]);
    b.net.process_rx();
    assert_eq!(b.rx.used_idx(&b.mem), 0);
    assert!(!b.interrupted());
    // Another error: counted, and the device goes on.
    b.tap_rx(Err(io::Error::from_raw_os_error(libc::EBADFD)));
    b.net.process_rx();
    assert_eq!(b.stats().rx_tap_errors, 1);
    b.tap_rx(Ok(frame(5)));
    b.net.process_rx();
    assert_eq!(b.rx.used_idx(&b.mem), 1);
}

#[test]
fn rx_frame_waits_for_a_buffer_and_short_reads_are_dropped() {
    let mut b = bench();
    b.tap_rx(Ok(vec![0; 5])); // shorter than a header
    b.tap_rx(Ok(frame(30)));
    b.tap_rx(Ok(frame(31)));
    b.net.process_rx(); // no buffer: one frame is read and kept
    assert_eq!(b.stats().rx_dropped_short, 1);
    assert_eq!(b.tap.0.lock().unwrap().reads, 2);
    assert!(b.net.rx.has_pending());
    b.rx.add_chain(&b.mem, &[(BUFS, 2048, true)]);
    b.net.process_rx();
    assert_eq!(b.rx.used_elem(&b.mem, 0).1, frame(30).len() as u32);
    assert!(b.net.rx.has_pending(), "the next frame waits");
}

#[test]
fn used_ring_outside_memory_stops_the_device_without_panic() {
    let mut b = bench();
    let mut ring = Ring::new(0x3000);
    ring.used = MEM_SIZE as u64 - 4; // the used element cannot be written
    let mut queue = ring.queue();
    queue.set_ready(true);
    b.net.reset();
    b.net
        .activate(ActivateContext {
            mem: b.mem.clone(),
            queues: vec![b.rx.queue(), queue],
            interrupt: b.irq.clone(),
            acked_features: 0,
        })
        .unwrap();
    let f = frame(50);
    b.mem.write_slice(&f, GuestAddress(BUFS)).unwrap();
    ring.add_chain(&b.mem, &[(BUFS, f.len() as u32, false)]);
    b.net.process_tx();
    assert!(b.net.active.as_ref().unwrap().broken.is_some());
    ring.add_chain(&b.mem, &[(BUFS, f.len() as u32, false)]);
    b.net.process_tx(); // ignored until reset
    assert_eq!(b.tx_frames().len(), 1);
}

#[test]
fn config_space_features_and_activation_checks() {
    let tap = FakeTap::default();
    let mut net = Net::new(Box::new(tap.clone()), MAC).unwrap();
    let mut data = [0u8; 8];
    net.read_config(0, &mut data);
    assert_eq!(&data[..6], &MAC.0);
    assert_eq!(&data[6..], &[1, 0], "link up");
    net.write_config(0, &[0xff; 6]);
    let mut odd = [0u8; 3];
    net.read_config(4, &mut odd);
    assert_eq!(odd, [0, 0x42, 1]);
    net.read_config(u64::MAX, &mut odd);
    assert_eq!(odd, [0, 0, 0]);
    let features = net.avail_features();
    assert!(features & (1 << VIRTIO_F_VERSION_1) != 0 && features & (1 << VIRTIO_NET_F_MAC) != 0);
    assert_eq!(features & 0xf, 0, "no checksum or offload features offered");

    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let irq = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    let mut not_ready = Ring::new(0x1000).queue();
    not_ready.set_ready(false);
    let ctx = |queues| ActivateContext {
        mem: mem.clone(),
        queues,
        interrupt: irq.clone(),
        acked_features: 0,
    };
    let err = net
        .activate(ctx(vec![Ring::new(0x1000).queue(), not_ready]))
        .unwrap_err();
    assert!(err.to_string().contains("TX queue"), "{err}");
    let err = net
        .activate(ctx(vec![Ring::new(0x1000).queue()]))
        .unwrap_err();
    assert!(err.to_string().contains("RX and a TX"), "{err}");
    // Inactive: tap frames are read and dropped, queues are not touched.
    tap.0.lock().unwrap().rx.push_back(Ok(frame(10)));
    net.process_rx();
    net.process_tx();
    assert!(tap.0.lock().unwrap().rx.is_empty());
}
