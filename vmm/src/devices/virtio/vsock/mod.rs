//! virtio-vsock: the guest's sockets to the host, served through a Unix socket with
//! Firecracker's conventions (`CONNECT <port>\n` → `OK <host_port>\n`; guest-initiated
//! connections to port P go to `<uds>_<P>`).
//!
//! - [`device`]: the virtio device (queues rx, tx, event) and [`event_handler`]'s hookup to the
//!   VMM's event loop;
//! - [`packet`]: the header and payload, read from and written to descriptor chains;
//! - [`unix`]: the backend: per-stream state machine with credit-based flow control
//!   ([`unix::connection`]) and the muxer over host Unix sockets ([`unix::muxer`]).

use std::path::PathBuf;
use std::time::Duration;

pub mod device;
mod event_handler;
pub mod packet;
pub mod unix;

pub use device::Vsock;

/// The host's context id (VMADDR_CID_HOST).
pub const HOST_CID: u64 = 2;
/// Smallest CID a guest may have (0, 1 and 2 are reserved).
pub const MIN_GUEST_CID: u64 = 3;
/// Live streams per VM; more REQUESTs are reset.
pub const MAX_CONNECTIONS: usize = 1024;
/// Host clients accepted but not yet through their `CONNECT` line.
pub const MAX_PENDING_HANDSHAKES: usize = 256;
/// RSTs waiting for an RX buffer; beyond that, new ones are dropped.
pub const MAX_QUEUED_RSTS: usize = 1024;
/// How long a host-initiated connection waits for the guest's RESPONSE.
pub const CONN_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection the host closed waits for the guest's RST.
pub const CONN_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors setting up the vsock backend.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The host listening socket could not be created.
    #[error("vsock socket {path}: {source}", path = path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The guest CID is reserved or out of range.
    #[error("vsock guest cid {0}: must be between {MIN_GUEST_CID} and {max} (0-2 are reserved)", max = u32::MAX)]
    Cid(u64),
    /// epoll or timerfd setup failed.
    #[error("vsock epoll setup: {0}")]
    Epoll(std::io::Error),
}
