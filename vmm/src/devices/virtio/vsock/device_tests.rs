//! The device's queue processing with a mock driver (no KVM): real guest memory, split queues
//! laid out by virtio-queue's MockSplitQueue, a real muxer on a temp dir.

use std::sync::Arc;

use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;
use crate::devices::virtio::vsock::packet::{Op, PacketHeader, HDR_SIZE, TYPE_STREAM};
use crate::devices::virtio::vsock::HOST_CID;

const F_WRITE: u16 = 2;
const QSIZE: u16 = 16;
const RX_BUF: u64 = 0x8_0000;
const TX_BUF: u64 = 0x9_0000;

struct Rig<'a> {
    mem: &'a GuestMemoryMmap,
    rxq: MockSplitQueue<'a, GuestMemoryMmap>,
    txq: MockSplitQueue<'a, GuestMemoryMmap>,
    vsock: Vsock,
    irq: Arc<Interrupt>,
    _dir: tempfile::TempDir,
}

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
}

fn rig(mem: &GuestMemoryMmap) -> Rig<'_> {
    let dir = tempfile::tempdir().unwrap();
    let mut vsock = Vsock::new(3, &dir.path().join("v.sock")).unwrap();
    let rxq = MockSplitQueue::create(mem, GuestAddress(0x1_0000), QSIZE);
    let txq = MockSplitQueue::create(mem, GuestAddress(0x2_0000), QSIZE);
    let evq = MockSplitQueue::create(mem, GuestAddress(0x3_0000), QSIZE);
    let irq = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    vsock
        .activate(ActivateContext {
            mem: mem.clone(),
            queues: vec![
                rxq.create_queue().unwrap(),
                txq.create_queue().unwrap(),
                evq.create_queue().unwrap(),
            ],
            interrupt: irq.clone(),
            acked_features: 1 << VIRTIO_F_VERSION_1,
        })
        .unwrap();
    Rig {
        mem,
        rxq,
        txq,
        vsock,
        irq,
        _dir: dir,
    }
}

fn request_to(port: u32) -> PacketHeader {
    PacketHeader {
        src_cid: 3,
        dst_cid: HOST_CID,
        src_port: 7000,
        dst_port: port,
        len: 0,
        type_: TYPE_STREAM,
        op: Op::Request as u16,
        flags: 0,
        buf_alloc: 4096,
        fwd_cnt: 0,
    }
}

fn desc(addr: u64, len: u32, flags: u16) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, 0))
}

#[test]
fn config_space_holds_the_guest_cid() {
    let dir = tempfile::tempdir().unwrap();
    let vsock = Vsock::new(0x1234_5678, &dir.path().join("v.sock")).unwrap();
    let mut data = [0u8; 8];
    vsock.read_config(0, &mut data);
    assert_eq!(u64::from_le_bytes(data), 0x1234_5678);
    assert_eq!(vsock.device_type(), TYPE_VSOCK);
    assert_eq!(vsock.queue_max_sizes().len(), 3);
}

#[test]
fn reserved_cids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for cid in [0, 1, 2, u64::from(u32::MAX) + 1] {
        let err = Vsock::new(cid, &dir.path().join("v.sock")).err().unwrap();
        assert!(err.to_string().contains(&cid.to_string()), "{err}");
    }
}

#[test]
fn request_to_a_closed_port_is_answered_with_rst_in_an_rx_buffer() {
    let mem = memory();
    let mut rig = rig(&mem);
    rig.mem
        .write_slice(&request_to(52).to_bytes(), GuestAddress(TX_BUF))
        .unwrap();
    rig.txq
        .add_desc_chains(&[desc(TX_BUF, HDR_SIZE as u32, 0)], 0)
        .unwrap();
    rig.rxq
        .add_desc_chains(&[desc(RX_BUF, 4096, F_WRITE)], 0)
        .unwrap();
    rig.vsock.process_queues();
    assert_eq!(rig.txq.used().idx().load(), 1, "the TX chain was used");
    assert_eq!(rig.rxq.used().idx().load(), 1, "an RX chain was filled");
    let used = rig.rxq.used().ring().ref_at(0).unwrap().load();
    assert_eq!(used.len(), HDR_SIZE as u32);
    let mut raw = [0u8; HDR_SIZE];
    rig.mem.read_slice(&mut raw, GuestAddress(RX_BUF)).unwrap();
    let rst = PacketHeader::from_bytes(&raw);
    assert_eq!(
        (rst.op(), rst.src_port, rst.dst_port, rst.dst_cid),
        (Some(Op::Rst), 52, 7000, 3)
    );
    assert_ne!(rig.irq.status(), 0, "the guest was interrupted");
}

#[test]
fn bad_tx_chains_are_used_and_dropped() {
    let mem = memory();
    let mut rig = rig(&mem);
    rig.mem
        .write_slice(&request_to(52).to_bytes(), GuestAddress(TX_BUF))
        .unwrap();
    // Too short, writable, out of guest memory: each used with len 0, nothing answered.
    let chains = [
        desc(TX_BUF, 10, 0),
        desc(TX_BUF, HDR_SIZE as u32, F_WRITE),
        desc(0x1000_0000, HDR_SIZE as u32, 0),
    ];
    for (i, chain) in chains.iter().enumerate() {
        rig.txq.add_desc_chains(&[*chain], i as u16).unwrap();
    }
    rig.rxq
        .add_desc_chains(&[desc(RX_BUF, 4096, F_WRITE)], 0)
        .unwrap();
    rig.vsock.process_queues();
    assert_eq!(rig.txq.used().idx().load(), 3);
    assert_eq!(rig.rxq.used().idx().load(), 0, "no packet for the guest");
}

#[test]
fn an_rx_chain_too_small_is_returned_empty_and_the_packet_waits() {
    let mem = memory();
    let mut rig = rig(&mem);
    rig.mem
        .write_slice(&request_to(52).to_bytes(), GuestAddress(TX_BUF))
        .unwrap();
    rig.txq
        .add_desc_chains(&[desc(TX_BUF, HDR_SIZE as u32, 0)], 0)
        .unwrap();
    rig.rxq
        .add_desc_chains(&[desc(RX_BUF, 20, F_WRITE), desc(RX_BUF, 4096, F_WRITE)], 0)
        .unwrap();
    rig.vsock.process_queues();
    assert_eq!(rig.rxq.used().idx().load(), 2);
    let first = rig.rxq.used().ring().ref_at(0).unwrap().load();
    let second = rig.rxq.used().ring().ref_at(1).unwrap().load();
    assert_eq!((first.len(), second.len()), (0, HDR_SIZE as u32));
}

#[test]
fn nothing_happens_before_activation_or_after_reset() {
    let dir = tempfile::tempdir().unwrap();
    let mut vsock = Vsock::new(3, &dir.path().join("v.sock")).unwrap();
    vsock.process_queues();
    let mem = memory();
    let mut rig = rig(&mem);
    rig.vsock.reset();
    rig.txq
        .add_desc_chains(&[desc(TX_BUF, HDR_SIZE as u32, 0)], 0)
        .unwrap();
    rig.vsock.process_queues();
    assert_eq!(rig.txq.used().idx().load(), 0);
}

#[test]
fn activation_kicks_the_event_loop_instead_of_working_on_the_vcpu_thread() {
    let mem = memory();
    let rig = rig(&mem);
    assert_eq!(rig.vsock.queue_events()[RXQ].read().unwrap(), 1);
    assert_eq!(
        rig.rxq.used().idx().load(),
        0,
        "nothing done during activation"
    );
}
