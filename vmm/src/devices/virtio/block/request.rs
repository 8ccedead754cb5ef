//! One virtio-blk request: parsed from a descriptor chain the guest wrote (so checked at
//! every step), then executed against the disk. A malformed request still gets a status
//! byte when there is a writable place for it.

use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::disk::DiskFile;
use super::proto::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use super::{ID_BYTES, SECTOR_SHIFT, SECTOR_SIZE};

/// Size of `struct virtio_blk_outhdr` (type, reserved, sector).
pub const HEADER_SIZE: u32 = 16;

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No descriptor could be read.
    #[error("empty descriptor chain")]
    EmptyChain,
    /// The last descriptor is not a writable byte for the status.
    #[error("no writable status byte at the end of the chain")]
    NoStatus,
    /// The header descriptor is missing, writable or too short.
    #[error("bad request header")]
    BadHeader,
    /// The header could not be read from guest memory.
    #[error("request header at {0:#x} is not in guest memory")]
    HeaderMemory(u64),
    /// A data descriptor goes the wrong way for the request.
    #[error("data descriptor {0} has the wrong direction")]
    DataDirection(usize),
    /// Data length not a whole number of sectors.
    #[error("data length {0} is not a multiple of 512")]
    Unaligned(u64),
    /// The request reaches past the end of the disk.
    #[error("sectors {sector}+{count} beyond the disk's {capacity}")]
    OutOfRange {
        /// First sector.
        sector: u64,
        /// Sectors asked for.
        count: u64,
        /// Disk capacity in sectors.
        capacity: u64,
    },
    /// A write to a read-only disk.
    #[error("write to a read-only disk")]
    ReadOnly,
    /// GET_ID without room for the answer.
    #[error("GET_ID buffer too short")]
    ShortId,
    /// Unknown request type.
    #[error("unsupported request type {0}")]
    Unsupported(u32),
}

impl RequestError {
    fn status(&self) -> u8 {
        match self {
            RequestError::Unsupported(_) => VIRTIO_BLK_S_UNSUPP,
            _ => VIRTIO_BLK_S_IOERR,
        }
    }
}

/// What the request asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// Read sectors into the data buffers.
    In,
    /// Write the data buffers to sectors.
    Out,
    /// Flush the disk.
    Flush,
    /// Write the device id into the data buffer.
    GetId,
}

/// A parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// What it asks.
    pub kind: RequestKind,
    /// First sector.
    pub sector: u64,
    /// Data buffers (address, length) in order.
    pub data: Vec<(GuestAddress, u32)>,
    /// Where the status byte goes.
    pub status_addr: GuestAddress,
}

/// A parsed chain: the request or why not, and where to put the status byte (if anywhere).
pub struct Parsed {
    /// The request.
    pub request: Result<Request, RequestError>,
    /// The status byte's address, when the chain has one.
    pub status_addr: Option<GuestAddress>,
}

/// Reads the request out of `chain`, checking it against `disk`.
pub fn parse<M>(chain: DescriptorChain<M>, mem: &GuestMemoryMmap, disk: &DiskFile) -> Parsed
where
    M: std::ops::Deref,
    M::Target: vm_memory::GuestMemory,
{
    // The chain iterator stops after queue-size descriptors (no loops), at an index out of
    // range, at an unreadable descriptor and at a total length above 4 GiB.
    let descriptors: Vec<Descriptor> = chain.collect();
    let status_addr = status_address(&descriptors);
    let request = match status_addr {
        Some(status_addr) => parse_descriptors(&descriptors, mem, disk, status_addr),
        None if descriptors.is_empty() => Err(RequestError::EmptyChain),
        None => Err(RequestError::NoStatus),
    };
    Parsed {
        request,
        status_addr,
    }
}

/// The last byte of the last descriptor, if it is writable and non-empty.
fn status_address(descriptors: &[Descriptor]) -> Option<GuestAddress> {
    let last = descriptors.last()?;
    if !last.is_write_only() || last.len() == 0 {
        return None;
    }
    last.addr()
        .0
        .checked_add(u64::from(last.len()) - 1)
        .map(GuestAddress)
}

fn parse_descriptors(
    descriptors: &[Descriptor],
    mem: &GuestMemoryMmap,
    disk: &DiskFile,
    status_addr: GuestAddress,
) -> Result<Request, RequestError> {
    let header = descriptors.first().ok_or(RequestError::EmptyChain)?;
    if header.is_write_only() || header.len() < HEADER_SIZE || descriptors.len() < 2 {
        return Err(RequestError::BadHeader);
    }
    let request_type: u32 = mem
        .read_obj(header.addr())
        .map_err(|_| RequestError::HeaderMemory(header.addr().0))?;
    let sector_addr = header
        .addr()
        .0
        .checked_add(8)
        .ok_or(RequestError::HeaderMemory(header.addr().0))?;
    let sector = u64::from_le(
        mem.read_obj(GuestAddress(sector_addr))
            .map_err(|_| RequestError::HeaderMemory(header.addr().0))?,
    );
    let kind = match u32::from_le(request_type) {
        VIRTIO_BLK_T_IN => RequestKind::In,
        VIRTIO_BLK_T_OUT => RequestKind::Out,
        VIRTIO_BLK_T_FLUSH => RequestKind::Flush,
        VIRTIO_BLK_T_GET_ID => RequestKind::GetId,
        other => return Err(RequestError::Unsupported(other)),
    };
    // Data sits between the header and the status descriptor; the status descriptor may
    // also carry data before its last byte (any layout is allowed in virtio 1.x).
    let (last, middle) = match descriptors.get(1..) {
        Some([middle @ .., last]) => (last, middle),
        _ => return Err(RequestError::BadHeader),
    };
    let wants_writable = matches!(kind, RequestKind::In | RequestKind::GetId);
    let mut data = Vec::with_capacity(middle.len() + 1);
    // Empty descriptors carry nothing, whichever way they point.
    for (i, d) in middle.iter().enumerate().filter(|(_, d)| d.len() > 0) {
        if d.is_write_only() != wants_writable {
            return Err(RequestError::DataDirection(i + 1));
        }
        data.push((d.addr(), d.len()));
    }
    if wants_writable && last.len() > 1 {
        data.push((last.addr(), last.len() - 1));
    }
    let total: u64 = data.iter().map(|(_, len)| u64::from(*len)).sum();
    match kind {
        RequestKind::In | RequestKind::Out => {
            if kind == RequestKind::Out && disk.read_only() {
                return Err(RequestError::ReadOnly);
            }
            if total % SECTOR_SIZE != 0 {
                return Err(RequestError::Unaligned(total));
            }
            let count = total >> SECTOR_SHIFT;
            let capacity = disk.sectors();
            if sector.checked_add(count).is_none_or(|end| end > capacity) {
                return Err(RequestError::OutOfRange {
                    sector,
                    count,
                    capacity,
                });
            }
        }
        RequestKind::GetId if total < ID_BYTES as u64 => return Err(RequestError::ShortId),
        RequestKind::GetId | RequestKind::Flush => {}
    }
    Ok(Request {
        kind,
        sector,
        data,
        status_addr,
    })
}

/// Runs `parsed` and writes its status byte. Returns the used length: the bytes written into
/// the guest's buffers (data and status).
pub fn execute(parsed: Parsed, mem: &GuestMemoryMmap, disk: &DiskFile) -> u32 {
    let Some(status_addr) = parsed.status_addr else {
        return 0;
    };
    let (status, written) = match parsed.request {
        Ok(request) => match run(&request, mem, disk) {
            Ok(written) => (VIRTIO_BLK_S_OK, written),
            Err(()) => (VIRTIO_BLK_S_IOERR, 0),
        },
        Err(e) => (e.status(), 0),
    };
    if mem.write_obj(status, status_addr).is_err() {
        return written;
    }
    written.saturating_add(1)
}

fn run(request: &Request, mem: &GuestMemoryMmap, disk: &DiskFile) -> Result<u32, ()> {
    match request.kind {
        RequestKind::In | RequestKind::Out => {
            let mut offset = request.sector << SECTOR_SHIFT;
            let mut written = 0u32;
            for &(addr, len) in &request.data {
                if request.kind == RequestKind::In {
                    disk.read_to_guest(offset, mem, addr, len).map_err(drop)?;
                    written = written.saturating_add(len);
                } else {
                    disk.write_from_guest(offset, mem, addr, len)
                        .map_err(drop)?;
                }
                offset += u64::from(len);
            }
            Ok(written)
        }
        RequestKind::Flush => disk.flush().map(|()| 0).map_err(drop),
        RequestKind::GetId => {
            let mut id = &disk.id()[..];
            let mut written = 0u32;
            for &(addr, len) in &request.data {
                let n = id.len().min(len as usize);
                let (now, rest) = id.split_at(n);
                mem.write_slice(now, addr).map_err(drop)?;
                written = written.saturating_add(n as u32);
                id = rest;
            }
            Ok(written)
        }
    }
}
