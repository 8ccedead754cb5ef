//! virtio-vsock packet parsing and the device's queue processing: TX and RX queues whose
//! descriptor tables, available rings and buffers all come from the input, over a real muxer
//! (a Unix socket in a temp dir). Also the parser alone on segments taken from the input.

#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use condo_vmm::devices::virtio::vsock::packet::{DescSegment, RxBuffer, TxPacket};
use condo_vmm::devices::virtio::vsock::Vsock;
use condo_vmm::devices::virtio::{ActivateContext, Interrupt, VirtioDevice};
use libfuzzer_sys::fuzz_target;
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap, Bytes};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const MEM_SIZE: usize = 0x1_0000;
/// (descriptor table, available ring, used ring) of the rx, tx and event queues.
const RINGS: [(u64, u64, u64); 3] = [
    (0x0000, 0x1000, 0x1800),
    (0x2000, 0x3000, 0x3800),
    (0x4000, 0x5000, 0x5800),
];

fn queue(size: u16, rings: (u64, u64, u64)) -> Queue {
    let mut queue = Queue::new(256).unwrap();
    queue.set_size(size);
    queue.try_set_desc_table_address(GuestAddress(rings.0)).unwrap();
    queue.try_set_avail_ring_address(GuestAddress(rings.1)).unwrap();
    queue.try_set_used_ring_address(GuestAddress(rings.2)).unwrap();
    queue.set_ready(true);
    queue
}

/// Segments read from the input: (addr u16, len u16, write_only bit) triples.
fn segments(bytes: &[u8]) -> Vec<DescSegment> {
    bytes
        .chunks_exact(5)
        .take(16)
        .map(|c| DescSegment {
            addr: GuestAddress(u64::from(u16::from_le_bytes([c[0], c[1]])) * 4),
            len: u32::from(u16::from_le_bytes([c[2], c[3]])),
            write_only: c[4] & 1 == 1,
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let sizes = (1u16 << (data[0] % 9), 1u16 << (data[1] % 9));
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let body = &data[2..];
    let n = body.len().min(MEM_SIZE);
    mem.write_slice(&body[..n], GuestAddress(0)).unwrap();

    // The parser alone, on segments described at the start of the input.
    let segs = segments(&body[..body.len().min(80)]);
    let _ = TxPacket::from_chain(&mem, &segs);
    if let Ok(rx) = RxBuffer::new(&mem, &segs) {
        let payload = vec![0x42u8; rx.max_payload().min(256)];
        let _ = rx.write(&mem, Default::default(), &payload);
    }

    // The whole device.
    static RUN: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "condo-fuzz-vsock-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let mut vsock = Vsock::new(3, &path).unwrap();
    let interrupt = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    vsock
        .activate(ActivateContext {
            mem,
            queues: vec![queue(sizes.0, RINGS[0]), queue(sizes.1, RINGS[1]), queue(4, RINGS[2])],
            interrupt,
            acked_features: 0,
        })
        .unwrap();
    vsock.process_queues();
    vsock.process_queues();
});
