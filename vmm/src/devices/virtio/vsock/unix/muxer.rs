//! The vsock backend: multiplexes the guest's streams onto host Unix sockets.
//!
//! - Host-initiated: a host client connects to the listening socket at `uds_path` and writes
//!   `CONNECT <port>\n`; we send REQUEST to the guest's `port` and, on its RESPONSE, answer the
//!   client `OK <local_port>\n`. An RST (nobody listens) closes the client's stream.
//! - Guest-initiated: a REQUEST to port P connects to `<uds_path>_<P>`; no listener there → RST.
//!
//! Everything the muxer waits on (the listener, each stream, a timer) sits in one epoll fd,
//! which the device registers with the VMM's event loop. The guest's packets arrive through
//! [`Muxer::send_pkt`]; packets for the guest leave through [`Muxer::recv_pkt`] as RX buffers
//! become available.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Instant;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::timerfd::TimerFd;

use super::connection::{Connection, Interest};
use crate::devices::virtio::vsock::packet::{Op, PacketHeader, TxPacket, TYPE_STREAM};
use crate::devices::virtio::vsock::{
    VsockError, CONN_REQUEST_TIMEOUT, HOST_CID, MAX_CONNECTIONS, MAX_PENDING_HANDSHAKES,
    MAX_QUEUED_RSTS,
};

/// Longest `CONNECT <port>\n` line (with some slack for spaces).
const MAX_HANDSHAKE_LEN: usize = 32;
const TOKEN_LISTENER: u64 = u64::MAX;
const TOKEN_TIMER: u64 = u64::MAX - 1;
/// Host-side ports of host-initiated connections start here (as in Firecracker), away from the
/// ports guests usually listen on.
const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// (host-side port, guest-side port).
type ConnKey = (u32, u32);

/// A host client that connected but has not sent its `CONNECT` line yet.
struct Handshake {
    stream: UnixStream,
}

/// See the module documentation.
pub struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    epoll: Epoll,
    timer: TimerFd,
    conns: HashMap<ConnKey, Connection>,
    /// Which connection each registered stream fd belongs to.
    fd_conn: HashMap<RawFd, ConnKey>,
    /// The interest each registered stream fd has in epoll now.
    fd_interest: HashMap<RawFd, Interest>,
    handshakes: HashMap<RawFd, Handshake>,
    /// Connections that may have packets for the guest, served round-robin.
    rxq: VecDeque<ConnKey>,
    in_rxq: HashSet<ConnKey>,
    /// RSTs for packets that match no connection.
    rst_queue: VecDeque<PacketHeader>,
    next_local_port: u32,
}

impl Muxer {
    /// Binds the host listening socket at `uds_path` (which must not exist).
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Muxer, VsockError> {
        let bind_err = |source| VsockError::Bind {
            path: uds_path.to_path_buf(),
            source,
        };
        let listener = UnixListener::bind(uds_path).map_err(bind_err)?;
        Muxer::with_listener(guest_cid, listener, uds_path)
    }

    /// A muxer serving a listener bound by someone else (the jail's parent binds it on the
    /// host, where the VMM cannot); `uds_path` is where guest-initiated `<uds>_<port>` sockets
    /// are looked up.
    pub fn with_listener(
        guest_cid: u64,
        listener: UnixListener,
        uds_path: &Path,
    ) -> Result<Muxer, VsockError> {
        let bind_err = |source| VsockError::Bind {
            path: uds_path.to_path_buf(),
            source,
        };
        listener.set_nonblocking(true).map_err(bind_err)?;
        let epoll = Epoll::new().map_err(VsockError::Epoll)?;
        let timer = TimerFd::new().map_err(|e| VsockError::Epoll(e.into()))?;
        let muxer = Muxer {
            guest_cid,
            uds_path: uds_path.to_path_buf(),
            listener,
            epoll,
            timer,
            conns: HashMap::new(),
            fd_conn: HashMap::new(),
            fd_interest: HashMap::new(),
            handshakes: HashMap::new(),
            rxq: VecDeque::new(),
            in_rxq: HashSet::new(),
            rst_queue: VecDeque::new(),
            next_local_port: FIRST_LOCAL_PORT,
        };
        muxer.epoll_add(muxer.listener.as_raw_fd(), EventSet::IN, TOKEN_LISTENER)?;
        muxer.epoll_add(muxer.timer.as_raw_fd(), EventSet::IN, TOKEN_TIMER)?;
        Ok(muxer)
    }

    /// The epoll fd to watch: readable when [`Self::process_events`] has work.
    pub fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Number of live connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// True when [`Self::recv_pkt`] may have a packet for the guest.
    pub fn has_pending_rx(&self) -> bool {
        !self.rst_queue.is_empty() || !self.rxq.is_empty()
    }

    fn epoll_add(&self, fd: RawFd, events: EventSet, token: u64) -> Result<(), VsockError> {
        self.epoll
            .ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))
            .map_err(VsockError::Epoll)
    }

    /// Handles whatever is ready on the epoll fd, without blocking.
    pub fn process_events(&mut self) {
        let mut events = [EpollEvent::default(); 32];
        let count = match self.epoll.wait(0, &mut events) {
            Ok(count) => count,
            Err(_) => return,
        };
        for event in &events[..count] {
            match event.data() {
                TOKEN_LISTENER => self.accept_clients(),
                TOKEN_TIMER => self.expire_connections(),
                token => self.stream_event(token as RawFd, event.event_set()),
            }
        }
    }

    fn accept_clients(&mut self) {
        loop {
            let stream = match accept_nonblocking(&self.listener) {
                Ok(stream) => stream,
                // WouldBlock: all accepted; other errors (EMFILE...): retry on the next event.
                Err(_) => return,
            };
            if self.handshakes.len() >= MAX_PENDING_HANDSHAKES {
                continue;
            }
            let fd = stream.as_raw_fd();
            if self.epoll_add(fd, EventSet::IN, fd as u64).is_ok() {
                self.handshakes.insert(fd, Handshake { stream });
            }
        }
    }

    fn stream_event(&mut self, fd: RawFd, events: EventSet) {
        if self.handshakes.contains_key(&fd) {
            return self.read_handshake(fd);
        }
        let Some(&key) = self.fd_conn.get(&fd) else {
            return;
        };
        // Errors and hang-ups show up as readable (EOF) or writable (EPIPE) on the next I/O.
        let broken = events.intersects(EventSet::ERROR | EventSet::HANG_UP);
        let interest = Interest {
            readable: events.contains(EventSet::IN) || broken,
            writable: events.contains(EventSet::OUT) || broken,
        };
        if let Some(conn) = self.conns.get_mut(&key) {
            conn.notify(interest);
        }
        self.refresh(key);
    }

    /// Reads the `CONNECT <port>\n` line without taking any byte after it (those are data).
    fn read_handshake(&mut self, fd: RawFd) {
        let Some(handshake) = self.handshakes.get(&fd) else {
            return;
        };
        let mut peek = [0u8; MAX_HANDSHAKE_LEN];
        let seen = match peek_stream(&handshake.stream, &mut peek) {
            Ok(0) | Err(_) => return self.drop_handshake(fd),
            Ok(n) => n,
        };
        let Some(newline) = peek[..seen].iter().position(|&b| b == b'\n') else {
            if seen == MAX_HANDSHAKE_LEN {
                self.drop_handshake(fd);
            }
            return; // Wait for the rest of the line.
        };
        let Some(mut handshake) = self.handshakes.remove(&fd) else {
            return;
        };
        let mut line = vec![0u8; newline + 1];
        let port = match handshake.stream.read_exact(&mut line) {
            Ok(()) => parse_connect(&line[..newline]),
            Err(_) => None,
        };
        let _ = self
            .epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        let Some(peer_port) = port else {
            return; // Not our protocol: dropping the stream closes it.
        };
        if self.conns.len() >= MAX_CONNECTIONS {
            return;
        }
        let Some(local_port) = self.allocate_local_port() else {
            return;
        };
        let expiry = Instant::now() + CONN_REQUEST_TIMEOUT;
        let conn = Connection::new_local(
            handshake.stream,
            local_port,
            peer_port,
            self.guest_cid,
            expiry,
        );
        self.add_connection((local_port, peer_port), conn);
    }

    fn drop_handshake(&mut self, fd: RawFd) {
        if self.handshakes.remove(&fd).is_some() {
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        }
    }

    fn allocate_local_port(&mut self) -> Option<u32> {
        let used: HashSet<u32> = self.conns.keys().map(|&(local, _)| local).collect();
        for _ in 0..=MAX_CONNECTIONS {
            let port = self.next_local_port;
            self.next_local_port = self.next_local_port.wrapping_add(1).max(FIRST_LOCAL_PORT);
            if !used.contains(&port) {
                return Some(port);
            }
        }
        None
    }

    fn add_connection(&mut self, key: ConnKey, conn: Connection) {
        let fd = conn.stream().as_raw_fd();
        if self.epoll_add(fd, EventSet::empty(), fd as u64).is_err() {
            return;
        }
        self.fd_conn.insert(fd, key);
        self.fd_interest.insert(fd, Interest::default());
        self.conns.insert(key, conn);
        self.refresh(key);
        self.arm_timer();
    }

    /// After anything happened to a connection: drop it if closed, update its epoll interest,
    /// queue it for RX if it has something for the guest.
    fn refresh(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get(&key) else {
            return;
        };
        let fd = conn.stream().as_raw_fd();
        if conn.is_closed() {
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
            self.fd_conn.remove(&fd);
            self.fd_interest.remove(&fd);
            self.conns.remove(&key);
            return;
        }
        let interest = conn.interest();
        if self.fd_interest.get(&fd) != Some(&interest) {
            let mut events = EventSet::empty();
            if interest.readable {
                events |= EventSet::IN;
            }
            if interest.writable {
                events |= EventSet::OUT;
            }
            let event = EpollEvent::new(events, fd as u64);
            if self.epoll.ctl(ControlOperation::Modify, fd, event).is_ok() {
                self.fd_interest.insert(fd, interest);
            }
        }
        if conn.has_pending_rx() && self.in_rxq.insert(key) {
            self.rxq.push_back(key);
        }
    }

    /// Handles a packet from the guest's TX queue.
    pub fn send_pkt(&mut self, pkt: &TxPacket) {
        let hdr = &pkt.hdr;
        // Spoofed or misdirected: drop it, as Firecracker does; nothing to answer to.
        if hdr.src_cid != self.guest_cid || hdr.dst_cid != HOST_CID {
            return;
        }
        let key = (hdr.dst_port, hdr.src_port);
        if hdr.type_ != TYPE_STREAM {
            return self.queue_rst(hdr);
        }
        if let Some(conn) = self.conns.get_mut(&key) {
            conn.send_pkt(pkt);
            return self.refresh(key);
        }
        match hdr.op() {
            Some(Op::Request) => self.guest_connect(hdr),
            Some(Op::Rst) => {}
            _ => self.queue_rst(hdr),
        }
    }

    /// A guest-initiated connection to host port `dst_port`: connect to `<uds>_<port>`.
    fn guest_connect(&mut self, hdr: &PacketHeader) {
        if self.conns.len() >= MAX_CONNECTIONS {
            return self.queue_rst(hdr);
        }
        let mut path = self.uds_path.clone().into_os_string();
        path.push(format!("_{}", hdr.dst_port));
        let Ok(stream) = connect_nonblocking(Path::new(&path)) else {
            return self.queue_rst(hdr);
        };
        let conn = Connection::new_peer(stream, hdr.dst_port, hdr.src_port, self.guest_cid, hdr);
        self.add_connection((hdr.dst_port, hdr.src_port), conn);
    }

    /// Answers `hdr` with an RST (bounded: a guest flooding us without RX buffers loses RSTs).
    fn queue_rst(&mut self, hdr: &PacketHeader) {
        if self.rst_queue.len() >= MAX_QUEUED_RSTS {
            return;
        }
        self.rst_queue.push_back(PacketHeader {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: hdr.dst_port,
            dst_port: hdr.src_port,
            len: 0,
            type_: hdr.type_,
            op: Op::Rst as u16,
            flags: 0,
            buf_alloc: 0,
            fwd_cnt: 0,
        });
    }

    /// The next packet for the guest, with at most `max_payload` payload bytes.
    pub fn recv_pkt(&mut self, max_payload: usize) -> Option<(PacketHeader, Vec<u8>)> {
        if let Some(hdr) = self.rst_queue.pop_front() {
            return Some((hdr, Vec::new()));
        }
        let now = Instant::now();
        while let Some(key) = self.rxq.pop_front() {
            self.in_rxq.remove(&key);
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            let packet = conn.recv_pkt(max_payload, now);
            // Re-queues it (at the back: round-robin) if it has more.
            self.refresh(key);
            if packet.is_some() {
                self.arm_timer();
                return packet;
            }
        }
        None
    }

    fn expire_connections(&mut self) {
        let _ = self.timer.wait();
        let now = Instant::now();
        let expired: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, conn)| conn.expiry().is_some_and(|at| at <= now))
            .map(|(&key, _)| key)
            .collect();
        for key in expired {
            if let Some(conn) = self.conns.get_mut(&key) {
                conn.kill();
            }
            self.refresh(key);
        }
        self.arm_timer();
    }

    /// Arms the timer for the earliest expiry, if any.
    fn arm_timer(&mut self) {
        let Some(next) = self.conns.values().filter_map(Connection::expiry).min() else {
            return;
        };
        let wait = next
            .saturating_duration_since(Instant::now())
            .max(std::time::Duration::from_millis(1));
        let _ = self.timer.reset(wait, None);
    }
}

impl Drop for Muxer {
    fn drop(&mut self) {
        // The socket file is ours: leave nothing behind for the next VM at this path.
        let _ = std::fs::remove_file(&self.uds_path);
    }
}

/// Parses `CONNECT <port>` (without the newline).
fn parse_connect(line: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(line).ok()?;
    let port = text.strip_prefix("CONNECT ")?.trim();
    port.parse().ok()
}

fn peek_stream(stream: &UnixStream, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: recv writes at most buf.len() bytes into buf, which we own mutably; the fd is
    // valid for the stream's lifetime.
    let ret = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret as usize)
}

/// accept4 with SOCK_NONBLOCK: one system call, and no FIONBIO ioctl for the seccomp filter.
fn accept_nonblocking(listener: &UnixListener) -> io::Result<UnixStream> {
    // SAFETY: accept4 with null address arguments only returns a new descriptor (checked).
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Connects without blocking: a listener with a full backlog gives EAGAIN (→ RST) instead of
/// stalling the VMM's event loop.
fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "path too long"));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket we own; OwnedFd closes it on every path.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: addr is a valid sockaddr_un of `len` bytes; fd is a valid socket.
    let ret = unsafe { libc::connect(fd, std::ptr::addr_of!(addr).cast(), len) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixStream::from(owned))
}

#[cfg(test)]
#[path = "muxer_tests.rs"]
mod tests;
