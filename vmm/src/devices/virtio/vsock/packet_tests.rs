//! Packet parsing against hostile chains (no KVM: plain guest memory).

use super::*;
use vm_memory::GuestMemoryMmap;

const MEM_SIZE: u64 = 0x10000;

fn mem() -> GuestMemoryMmap<()> {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()
}

fn ro(addr: u64, len: u32) -> DescSegment {
    DescSegment {
        addr: GuestAddress(addr),
        len,
        write_only: false,
    }
}

fn wo(addr: u64, len: u32) -> DescSegment {
    DescSegment {
        addr: GuestAddress(addr),
        len,
        write_only: true,
    }
}

fn sample_hdr(len: u32) -> PacketHeader {
    PacketHeader {
        src_cid: 3,
        dst_cid: 2,
        src_port: 0x1234_5678,
        dst_port: 1024,
        len,
        type_: TYPE_STREAM,
        op: Op::Rw as u16,
        flags: 0,
        buf_alloc: 256 * 1024,
        fwd_cnt: 77,
    }
}

/// Writes a header and payload contiguously at `addr`.
fn put_packet(mem: &GuestMemoryMmap<()>, addr: u64, hdr: &PacketHeader, payload: &[u8]) {
    mem.write_slice(&hdr.to_bytes(), GuestAddress(addr))
        .unwrap();
    mem.write_slice(payload, GuestAddress(addr + HDR_SIZE as u64))
        .unwrap();
}

#[test]
fn header_round_trips_and_matches_the_spec_layout() {
    let hdr = sample_hdr(5);
    let bytes = hdr.to_bytes();
    assert_eq!(PacketHeader::from_bytes(&bytes), hdr);
    // Offsets from struct virtio_vsock_hdr: len at 24, op at 30, fwd_cnt at 40.
    assert_eq!(&bytes[24..28], &5u32.to_le_bytes());
    assert_eq!(&bytes[30..32], &5u16.to_le_bytes());
    assert_eq!(&bytes[40..44], &77u32.to_le_bytes());
}

#[test]
fn unknown_ops_are_reported_as_none() {
    for raw in [0u16, 8, 0xffff] {
        assert_eq!(Op::from_raw(raw), None);
    }
    assert_eq!(Op::from_raw(7), Some(Op::CreditRequest));
}

#[test]
fn contiguous_packet_parses() {
    let m = mem();
    put_packet(&m, 0x100, &sample_hdr(5), b"hello");
    let pkt = TxPacket::from_chain(&m, &[ro(0x100, 49)]).unwrap();
    assert_eq!(pkt.hdr, sample_hdr(5));
    assert_eq!(pkt.payload, b"hello");
}

#[test]
fn header_split_over_descriptors_parses() {
    let m = mem();
    let bytes = sample_hdr(3).to_bytes();
    // Header in three pieces at scattered addresses, payload in a fourth.
    m.write_slice(&bytes[..1], GuestAddress(0x1000)).unwrap();
    m.write_slice(&bytes[1..30], GuestAddress(0x2000)).unwrap();
    m.write_slice(&bytes[30..], GuestAddress(0x3000)).unwrap();
    m.write_slice(b"abc", GuestAddress(0x4000)).unwrap();
    let segs = [ro(0x1000, 1), ro(0x2000, 29), ro(0x3000, 14), ro(0x4000, 3)];
    let pkt = TxPacket::from_chain(&m, &segs).unwrap();
    assert_eq!(pkt.hdr.len, 3);
    assert_eq!(pkt.payload, b"abc");
}

#[test]
fn header_and_payload_sharing_a_descriptor_with_a_zero_length_one() {
    let m = mem();
    put_packet(&m, 0x100, &sample_hdr(2), b"xy");
    let segs = [ro(0x100, 45), ro(0x9000, 0), ro(0x100 + 45, 1)];
    assert_eq!(TxPacket::from_chain(&m, &segs).unwrap().payload, b"xy");
}

#[test]
fn short_chain_is_refused() {
    let m = mem();
    assert_eq!(
        TxPacket::from_chain(&m, &[ro(0, 43)]),
        Err(PacketError::HeaderTooShort(43))
    );
    assert_eq!(
        TxPacket::from_chain(&m, &[]),
        Err(PacketError::HeaderTooShort(0))
    );
}

#[test]
fn len_beyond_the_buffer_is_refused() {
    let m = mem();
    put_packet(&m, 0, &sample_hdr(100), &[0u8; 10]);
    assert_eq!(
        TxPacket::from_chain(&m, &[ro(0, 54)]),
        Err(PacketError::LenBeyondBuffer {
            len: 100,
            available: 10
        })
    );
}

#[test]
fn huge_len_is_refused_before_any_allocation() {
    let m = mem();
    put_packet(&m, 0, &sample_hdr(u32::MAX), &[]);
    assert_eq!(
        TxPacket::from_chain(&m, &[ro(0, 44), ro(0x100, 0xf000)]),
        Err(PacketError::LenTooLarge(u32::MAX))
    );
}

#[test]
fn buffers_outside_guest_memory_are_refused() {
    let m = mem();
    put_packet(&m, 0, &sample_hdr(0), &[]);
    // Past the end, straddling the end, and addr+len overflowing u64.
    for bad in [
        ro(MEM_SIZE, 44),
        ro(MEM_SIZE - 10, 44),
        ro(u64::MAX - 5, 44),
    ] {
        let err = TxPacket::from_chain(&m, &[bad]).unwrap_err();
        assert!(
            matches!(err, PacketError::OutOfMemory { .. }),
            "{bad:?}: {err:?}"
        );
    }
    // A bad descriptor after a complete packet still refuses the chain.
    let err = TxPacket::from_chain(&m, &[ro(0, 44), ro(MEM_SIZE + 1, 1)]).unwrap_err();
    assert!(matches!(err, PacketError::OutOfMemory { .. }), "{err:?}");
}

#[test]
fn writable_descriptor_on_tx_is_refused() {
    let m = mem();
    put_packet(&m, 0, &sample_hdr(0), &[]);
    let err = TxPacket::from_chain(&m, &[ro(0, 40), wo(40, 4)]).unwrap_err();
    assert!(
        matches!(err, PacketError::WrongDirection { index: 1, .. }),
        "{err:?}"
    );
}

#[test]
fn rx_write_scatters_header_and_payload() {
    let m = mem();
    let segs = [wo(0x1000, 10), wo(0x2000, 40), wo(0x3000, 100)];
    let rx = RxBuffer::new(&m, &segs).unwrap();
    assert_eq!(rx.max_payload(), 150 - HDR_SIZE);
    let used = rx.write(&m, sample_hdr(999), b"payload!").unwrap();
    assert_eq!(used, (HDR_SIZE + 8) as u32);
    let back = TxPacket::from_chain(&m, &[ro(0x1000, 10), ro(0x2000, 40), ro(0x3000, 100)]);
    let back = back.unwrap();
    assert_eq!(back.hdr.len, 8, "write() sets len from the payload");
    assert_eq!(back.payload, b"payload!");
}

#[test]
fn rx_chain_checks() {
    let m = mem();
    assert_eq!(
        RxBuffer::new(&m, &[wo(0, 20)]).unwrap_err(),
        PacketError::HeaderTooShort(20)
    );
    assert!(matches!(
        RxBuffer::new(&m, &[wo(0, 44), ro(100, 10)]).unwrap_err(),
        PacketError::WrongDirection { index: 1, .. }
    ));
    assert!(matches!(
        RxBuffer::new(&m, &[wo(MEM_SIZE - 4, 44)]).unwrap_err(),
        PacketError::OutOfMemory { .. }
    ));
    let segs = [wo(0, 50)];
    let rx = RxBuffer::new(&m, &segs).unwrap();
    assert!(matches!(
        rx.write(&m, sample_hdr(0), &[0u8; 7]).unwrap_err(),
        PacketError::RxTooSmall { .. }
    ));
}

#[test]
fn rx_payload_is_capped_at_the_maximum() {
    let m = mem();
    let segs = [wo(0, 0xffff)];
    let rx = RxBuffer::new(&m, &segs).unwrap();
    assert_eq!(rx.max_payload(), 0xffff - HDR_SIZE);
    let big = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x20000)]).unwrap();
    let segs = [wo(0, 0x1ffff)];
    assert_eq!(
        RxBuffer::new(&big, &segs).unwrap().max_payload(),
        MAX_PAYLOAD as usize
    );
}
