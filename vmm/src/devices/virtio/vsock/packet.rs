//! virtio-vsock packets: the 44-byte header and its payload, read from and written to the guest's
//! descriptor chains.
//!
//! The guest is hostile: a chain may split the header over several descriptors, claim a payload
//! longer than its buffers, point outside guest memory or mix readable and writable
//! descriptors. Every such chain is refused with a [`PacketError`]; nothing here panics or
//! touches memory outside the guest's (all accesses go through `GuestMemory`, which checks
//! bounds).

use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

/// Size of `struct virtio_vsock_hdr` (virtio spec 5.10.6).
pub const HDR_SIZE: usize = 44;
/// Largest payload accepted from or given to the guest in one packet (Linux's
/// VIRTIO_VSOCK_MAX_PKT_BUF_SIZE).
pub const MAX_PAYLOAD: u32 = 64 * 1024;

/// The only socket type this device supports.
pub const TYPE_STREAM: u16 = 1;

/// `flags` bits of a SHUTDOWN packet.
pub const SHUTDOWN_RCV: u32 = 1;
/// The sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;

/// Operation codes of the header's `op` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Op {
    /// Connection request.
    Request = 1,
    /// Connection accepted.
    Response = 2,
    /// Connection reset.
    Rst = 3,
    /// One or both directions closed (`flags`).
    Shutdown = 4,
    /// Data.
    Rw = 5,
    /// The sender's buf_alloc/fwd_cnt changed.
    CreditUpdate = 6,
    /// The sender asks for a CREDIT_UPDATE.
    CreditRequest = 7,
}

impl Op {
    /// The op for a raw value; `None` for values the spec does not define.
    pub fn from_raw(raw: u16) -> Option<Op> {
        Some(match raw {
            1 => Op::Request,
            2 => Op::Response,
            3 => Op::Rst,
            4 => Op::Shutdown,
            5 => Op::Rw,
            6 => Op::CreditUpdate,
            7 => Op::CreditRequest,
            _ => return None,
        })
    }
}

/// `struct virtio_vsock_hdr`, all fields little-endian on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketHeader {
    /// Source context id.
    pub src_cid: u64,
    /// Destination context id.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type (only [`TYPE_STREAM`]).
    pub type_: u16,
    /// Raw operation (see [`Op`]).
    pub op: u16,
    /// Op-specific flags.
    pub flags: u32,
    /// The sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer, ever (wrapping).
    pub fwd_cnt: u32,
}

impl PacketHeader {
    /// Decodes a header from its wire form.
    pub fn from_bytes(b: &[u8; HDR_SIZE]) -> PacketHeader {
        let u64_at = |i: usize| {
            let mut v = [0u8; 8];
            v.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(v)
        };
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        PacketHeader {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// Encodes the header to its wire form.
    pub fn to_bytes(&self) -> [u8; HDR_SIZE] {
        let mut b = [0u8; HDR_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// The header's op, if it is one the spec defines.
    pub fn op(&self) -> Option<Op> {
        Op::from_raw(self.op)
    }
}

/// One descriptor of a chain, as the transport walked it (the transport bounds the chain's
/// length and rejects loops; this module checks everything about the buffers themselves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DescSegment {
    /// Guest-physical address of the buffer.
    pub addr: GuestAddress,
    /// Its length in bytes.
    pub len: u32,
    /// Device-writable (VIRTQ_DESC_F_WRITE).
    pub write_only: bool,
}

/// Why a descriptor chain is not a usable packet buffer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacketError {
    /// A TX chain holds a device-writable descriptor, or an RX chain a read-only one.
    #[error("descriptor {index} is {found} where the queue needs {wanted} buffers")]
    WrongDirection {
        /// Position in the chain.
        index: usize,
        /// "writable" or "read-only".
        found: &'static str,
        /// What this queue needs.
        wanted: &'static str,
    },
    /// Fewer than [`HDR_SIZE`] bytes in the chain.
    #[error("chain holds {0} bytes, less than the {HDR_SIZE}-byte vsock header")]
    HeaderTooShort(u64),
    /// The header's `len` is above [`MAX_PAYLOAD`].
    #[error("packet len {0} is above the {MAX_PAYLOAD}-byte maximum")]
    LenTooLarge(u32),
    /// The header's `len` runs past the end of the chain's buffers.
    #[error("packet len {len} runs past the chain's {available} payload bytes")]
    LenBeyondBuffer {
        /// The header's len.
        len: u32,
        /// Bytes the chain holds after the header.
        available: u64,
    },
    /// A buffer lies (partly) outside guest memory, or addr+len overflows.
    #[error("descriptor at {addr:#x} len {len} is outside guest memory")]
    OutOfMemory {
        /// Guest address.
        addr: u64,
        /// Length.
        len: u32,
    },
    /// An RX chain is too small for the header and the payload to write.
    #[error("rx chain of {capacity} bytes cannot hold a {needed}-byte packet")]
    RxTooSmall {
        /// Bytes in the chain.
        capacity: u64,
        /// Bytes needed.
        needed: u64,
    },
}

/// A packet the guest sent (TX queue), copied out of guest memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxPacket {
    /// Its header.
    pub hdr: PacketHeader,
    /// Exactly `hdr.len` bytes.
    pub payload: Vec<u8>,
}

/// Checks every segment's direction and that each lies inside guest memory; returns the total
/// length. Checking up front means a bad descriptor refuses the whole chain, even one after the
/// bytes a packet needs.
fn check_segments<M: GuestMemory>(
    mem: &M,
    segs: &[DescSegment],
    want_write_only: bool,
) -> Result<u64, PacketError> {
    let mut total = 0u64;
    for (index, seg) in segs.iter().enumerate() {
        if seg.write_only != want_write_only {
            let name = |w: bool| if w { "writable" } else { "read-only" };
            return Err(PacketError::WrongDirection {
                index,
                found: name(seg.write_only),
                wanted: name(want_write_only),
            });
        }
        let out = || PacketError::OutOfMemory {
            addr: seg.addr.0,
            len: seg.len,
        };
        // check_range also refuses addr+len overflowing u64.
        let access = if want_write_only {
            Permissions::Write
        } else {
            Permissions::Read
        };
        if seg.len > 0 && !mem.check_range(seg.addr, seg.len as usize, access) {
            return Err(out());
        }
        total += u64::from(seg.len);
    }
    Ok(total)
}

/// Copies `buf.len()` bytes starting `offset` bytes into the chain.
fn gather<M: GuestMemory>(
    mem: &M,
    segs: &[DescSegment],
    mut offset: u64,
    buf: &mut [u8],
) -> Result<(), PacketError> {
    let mut done = 0usize;
    for seg in segs {
        if done == buf.len() {
            break;
        }
        let seg_len = u64::from(seg.len);
        if offset >= seg_len {
            offset -= seg_len;
            continue;
        }
        let take = usize::try_from((seg_len - offset).min((buf.len() - done) as u64))
            .unwrap_or(buf.len() - done);
        let addr = GuestAddress(seg.addr.0 + offset);
        mem.read_slice(&mut buf[done..done + take], addr)
            .map_err(|_| PacketError::OutOfMemory {
                addr: seg.addr.0,
                len: seg.len,
            })?;
        done += take;
        offset = 0;
    }
    Ok(())
}

/// Copies `data` into the chain starting `offset` bytes in.
fn scatter<M: GuestMemory>(
    mem: &M,
    segs: &[DescSegment],
    mut offset: u64,
    data: &[u8],
) -> Result<(), PacketError> {
    let mut done = 0usize;
    for seg in segs {
        if done == data.len() {
            break;
        }
        let seg_len = u64::from(seg.len);
        if offset >= seg_len {
            offset -= seg_len;
            continue;
        }
        let take = usize::try_from((seg_len - offset).min((data.len() - done) as u64))
            .unwrap_or(data.len() - done);
        let addr = GuestAddress(seg.addr.0 + offset);
        mem.write_slice(&data[done..done + take], addr)
            .map_err(|_| PacketError::OutOfMemory {
                addr: seg.addr.0,
                len: seg.len,
            })?;
        done += take;
        offset = 0;
    }
    Ok(())
}

impl TxPacket {
    /// Reads a packet from a TX chain (all descriptors device-readable). The header may be split
    /// over descriptors; the payload is the `hdr.len` bytes that follow it.
    pub fn from_chain<M: GuestMemory>(
        mem: &M,
        segs: &[DescSegment],
    ) -> Result<TxPacket, PacketError> {
        let total = check_segments(mem, segs, false)?;
        if total < HDR_SIZE as u64 {
            return Err(PacketError::HeaderTooShort(total));
        }
        let mut raw = [0u8; HDR_SIZE];
        gather(mem, segs, 0, &mut raw)?;
        let hdr = PacketHeader::from_bytes(&raw);
        if hdr.len > MAX_PAYLOAD {
            return Err(PacketError::LenTooLarge(hdr.len));
        }
        let available = total - HDR_SIZE as u64;
        if u64::from(hdr.len) > available {
            return Err(PacketError::LenBeyondBuffer {
                len: hdr.len,
                available,
            });
        }
        let mut payload = vec![0u8; hdr.len as usize];
        gather(mem, segs, HDR_SIZE as u64, &mut payload)?;
        Ok(TxPacket { hdr, payload })
    }
}

/// An RX chain (all descriptors device-writable) checked and ready to take one packet.
#[derive(Debug)]
pub struct RxBuffer<'a> {
    segs: &'a [DescSegment],
    capacity: u64,
}

impl<'a> RxBuffer<'a> {
    /// Checks an RX chain: writable descriptors inside guest memory with room for a header.
    pub fn new<M: GuestMemory>(mem: &M, segs: &'a [DescSegment]) -> Result<Self, PacketError> {
        let capacity = check_segments(mem, segs, true)?;
        if capacity < HDR_SIZE as u64 {
            return Err(PacketError::HeaderTooShort(capacity));
        }
        Ok(RxBuffer { segs, capacity })
    }

    /// Most payload bytes this buffer can take (capped at [`MAX_PAYLOAD`]).
    pub fn max_payload(&self) -> usize {
        (self.capacity - HDR_SIZE as u64).min(u64::from(MAX_PAYLOAD)) as usize
    }

    /// Writes the header (with `len` set to the payload's length) and the payload; returns the
    /// bytes written, the used length to report to the guest.
    pub fn write<M: GuestMemory>(
        &self,
        mem: &M,
        mut hdr: PacketHeader,
        payload: &[u8],
    ) -> Result<u32, PacketError> {
        let needed = (HDR_SIZE + payload.len()) as u64;
        if payload.len() > self.max_payload() {
            return Err(PacketError::RxTooSmall {
                capacity: self.capacity,
                needed,
            });
        }
        hdr.len = payload.len() as u32;
        scatter(mem, self.segs, 0, &hdr.to_bytes())?;
        scatter(mem, self.segs, HDR_SIZE as u64, payload)?;
        Ok(needed as u32)
    }
}

#[cfg(test)]
#[path = "packet_tests.rs"]
mod tests;
