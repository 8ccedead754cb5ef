//! virtio-net backed by a tap (virtio 1.x, section 5.1): one RX and one TX queue, the MAC in
//! the config space, virtio_net_hdr_v1 (12 bytes) on every frame, no offloads negotiated.
//!
//! - `device`: the [`Net`] device (features, config space, activation);
//! - `frame`: RX/TX frame movement between queues and the tap, hostile-guest checks;
//! - `event_handler`: the event loop side (queue eventfds, tap readiness);
//! - `tap`: what the device needs from a tap ([`TapIo`]).

pub mod device;
pub mod event_handler;
pub mod frame;
pub mod tap;
#[cfg(test)]
mod tests;

pub use device::Net;
pub use tap::TapIo;

/// Feature bit: the device has a MAC in its config space.
pub const VIRTIO_NET_F_MAC: u32 = 5;
/// Feature bit: the config space has a link status field.
pub const VIRTIO_NET_F_STATUS: u32 = 16;
/// Link status bit: up.
pub const VIRTIO_NET_S_LINK_UP: u16 = 1;
/// Queue size for RX and TX.
pub const QUEUE_SIZE: u16 = 256;
/// Index of the RX queue.
pub const RX_INDEX: usize = 0;
/// Index of the TX queue.
pub const TX_INDEX: usize = 1;

/// What the device did and refused, for the operator (and the tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Frames sent to the tap.
    pub tx_frames: u64,
    /// Their bytes (without headers).
    pub tx_bytes: u64,
    /// TX chains shorter than a header and an Ethernet header.
    pub tx_dropped_short: u64,
    /// TX chains longer than the largest frame.
    pub tx_dropped_oversized: u64,
    /// TX headers asking for checksum or segmentation offload (not negotiated).
    pub tx_dropped_offload: u64,
    /// TX chains with write-only descriptors or addresses outside guest memory.
    pub tx_bad_chains: u64,
    /// Frames the tap refused (full, down).
    pub tx_tap_errors: u64,
    /// Frames given to the guest.
    pub rx_frames: u64,
    /// Their bytes (without headers).
    pub rx_bytes: u64,
    /// Frames dropped because the guest's RX chain was too small.
    pub rx_dropped_small_buffer: u64,
    /// Tap reads shorter than a header.
    pub rx_dropped_short: u64,
    /// RX chains with read-only descriptors or addresses outside guest memory.
    pub rx_bad_chains: u64,
    /// Tap read errors other than EAGAIN.
    pub rx_tap_errors: u64,
}
