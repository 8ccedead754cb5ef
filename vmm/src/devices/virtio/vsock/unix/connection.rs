//! One vsock stream between the guest and a host Unix stream: its state machine and its
//! credit-based flow control (virtio spec 5.10.6.3).
//!
//! Guest → host: the guest may send at most `buf_alloc - (tx_cnt - fwd_cnt)` bytes, where
//! buf_alloc is [`CONN_TX_BUF_SIZE`] (what we buffer when the host stream is slow) and fwd_cnt
//! counts the bytes we have written to the host stream. A guest that sends beyond its credit is
//! hostile: the connection is reset, memory stays bounded.
//! Host → guest: we read from the host stream only as much as the guest's last advertised
//! buf_alloc/fwd_cnt allow, so the guest never has to drop data.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use crate::devices::virtio::vsock::packet::{
    Op, PacketHeader, TxPacket, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM,
};
use crate::devices::virtio::vsock::{CONN_SHUTDOWN_TIMEOUT, HOST_CID};

/// Bytes of guest data we hold for a host stream that is not reading; advertised as buf_alloc.
pub const CONN_TX_BUF_SIZE: u32 = 256 * 1024;
/// Advertise our fwd_cnt (CREDIT_UPDATE) once this many forwarded bytes are unannounced.
const CREDIT_UPDATE_THRESHOLD: u32 = CONN_TX_BUF_SIZE / 4;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// Host-initiated: REQUEST sent (or about to be), waiting for the guest's RESPONSE.
    LocalInit,
    /// Both sides open (possibly half-closed, see the shutdown flags).
    Established,
    /// The host stream ended: SHUTDOWN sent, waiting for the guest's RST.
    LocalClosed,
    /// To be reset: an RST goes to the guest, then the connection is dropped.
    Killed,
    /// Finished: drop it, send nothing.
    Closed,
}

/// Which events on the host stream the connection wants (for the muxer's epoll).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interest {
    /// Data to read from the host stream for the guest.
    pub readable: bool,
    /// Buffered guest data waiting for the host stream.
    pub writable: bool,
}

/// A stream between one guest port and one host Unix stream.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    local_port: u32,
    peer_port: u32,
    guest_cid: u64,
    state: ConnState,
    /// Guest data (and the `OK` handshake line) not yet written to the host stream.
    tx_buf: VecDeque<u8>,
    /// Bytes of the handshake line at the front of tx_buf (not guest payload: no credit).
    handshake_pending: usize,
    /// Guest payload bytes written to the host stream, ever.
    fwd_cnt: Wrapping<u32>,
    last_fwd_cnt_to_peer: Wrapping<u32>,
    /// Guest payload bytes received, ever (to check the guest against its credit).
    tx_cnt: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    /// Bytes sent to the guest, ever.
    rx_cnt: Wrapping<u32>,
    /// SHUTDOWN flags received from the guest.
    peer_shutdown: u32,
    /// The host stream may have data (or EOF) to read.
    host_readable: bool,
    pending_request: bool,
    pending_response: bool,
    pending_credit_update: bool,
    /// When a LocalInit or LocalClosed connection gives up on the guest.
    expiry: Option<Instant>,
}

impl Connection {
    /// A host-initiated connection: a REQUEST to `peer_port` is pending.
    pub fn new_local(
        stream: UnixStream,
        local_port: u32,
        peer_port: u32,
        guest_cid: u64,
        expiry: Instant,
    ) -> Connection {
        let mut conn = Connection::new(stream, local_port, peer_port, guest_cid);
        conn.state = ConnState::LocalInit;
        conn.pending_request = true;
        conn.expiry = Some(expiry);
        conn
    }

    /// A guest-initiated connection, already connected on the host: a RESPONSE is pending.
    pub fn new_peer(
        stream: UnixStream,
        local_port: u32,
        peer_port: u32,
        guest_cid: u64,
        request: &PacketHeader,
    ) -> Connection {
        let mut conn = Connection::new(stream, local_port, peer_port, guest_cid);
        conn.state = ConnState::Established;
        conn.pending_response = true;
        conn.peer_buf_alloc = request.buf_alloc;
        conn.peer_fwd_cnt = Wrapping(request.fwd_cnt);
        conn.host_readable = true;
        conn
    }

    fn new(stream: UnixStream, local_port: u32, peer_port: u32, guest_cid: u64) -> Connection {
        Connection {
            stream,
            local_port,
            peer_port,
            guest_cid,
            state: ConnState::Established,
            tx_buf: VecDeque::new(),
            handshake_pending: 0,
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_to_peer: Wrapping(0),
            tx_cnt: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            rx_cnt: Wrapping(0),
            peer_shutdown: 0,
            host_readable: false,
            pending_request: false,
            pending_response: false,
            pending_credit_update: false,
            expiry: None,
        }
    }

    /// Its state.
    pub fn state(&self) -> ConnState {
        self.state
    }

    /// The host stream (for epoll registration).
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// When the connection gives up waiting on the guest, if it waits.
    pub fn expiry(&self) -> Option<Instant> {
        self.expiry
    }

    /// Resets the connection (an RST goes to the guest).
    pub fn kill(&mut self) {
        if self.state != ConnState::Closed {
            self.state = ConnState::Killed;
        }
    }

    /// True once nothing more will be sent: the muxer drops it.
    pub fn is_closed(&self) -> bool {
        self.state == ConnState::Closed
    }

    /// How many bytes the guest can still take (its credit for us).
    pub fn peer_avail_credit(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Handles a packet the guest sent on this connection.
    pub fn send_pkt(&mut self, pkt: &TxPacket) {
        let hdr = &pkt.hdr;
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        match (self.state, hdr.op()) {
            (_, Some(Op::Rst)) => self.state = ConnState::Closed,
            (ConnState::Killed | ConnState::Closed, _) => {}
            (ConnState::LocalInit, Some(Op::Response)) => {
                self.state = ConnState::Established;
                self.expiry = None;
                self.host_readable = true;
                // The handshake line goes first, outside the credit accounting.
                let line = format!("OK {}\n", self.local_port);
                self.handshake_pending = line.len();
                self.tx_buf.extend(line.as_bytes());
                self.flush_tx_buf();
            }
            (ConnState::Established | ConnState::LocalClosed, Some(Op::Rw)) => {
                self.forward_guest_data(&pkt.payload)
            }
            (ConnState::Established | ConnState::LocalClosed, Some(Op::CreditUpdate)) => {}
            (ConnState::Established | ConnState::LocalClosed, Some(Op::CreditRequest)) => {
                self.pending_credit_update = true
            }
            (ConnState::Established | ConnState::LocalClosed, Some(Op::Shutdown)) => {
                self.peer_shutdown |= hdr.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
                self.apply_peer_shutdown();
            }
            // REQUEST on a live connection, RESPONSE out of turn, data before RESPONSE, an
            // unknown op: the guest broke the protocol.
            _ => self.kill(),
        }
    }

    fn forward_guest_data(&mut self, data: &[u8]) {
        if self.peer_shutdown & SHUTDOWN_SEND != 0 {
            return self.kill();
        }
        self.tx_cnt += Wrapping(data.len() as u32);
        let buffered = (self.tx_cnt - self.fwd_cnt).0;
        if buffered > CONN_TX_BUF_SIZE {
            // Beyond the credit we gave: a hostile or broken guest.
            return self.kill();
        }
        self.tx_buf.extend(data);
        self.flush_tx_buf();
    }

    /// The guest closed one or both directions.
    fn apply_peer_shutdown(&mut self) {
        if self.peer_shutdown & SHUTDOWN_SEND != 0 && self.tx_buf.is_empty() {
            // Best effort: the host reader sees EOF; the stream may already be gone.
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        if self.peer_shutdown == SHUTDOWN_RCV | SHUTDOWN_SEND && self.tx_buf.is_empty() {
            self.kill();
        }
    }

    /// Writes buffered guest data to the host stream as far as it takes it.
    fn flush_tx_buf(&mut self) {
        while !self.tx_buf.is_empty() {
            let (front, _) = self.tx_buf.as_slices();
            match self.stream.write(front) {
                Ok(0) => return self.kill(),
                Ok(n) => {
                    let handshake = n.min(self.handshake_pending);
                    self.handshake_pending -= handshake;
                    self.fwd_cnt += Wrapping((n - handshake) as u32);
                    self.tx_buf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return self.kill(),
            }
        }
        if (self.fwd_cnt - self.last_fwd_cnt_to_peer).0 >= CREDIT_UPDATE_THRESHOLD {
            self.pending_credit_update = true;
        }
        if self.tx_buf.is_empty() && self.peer_shutdown != 0 {
            self.apply_peer_shutdown();
        }
    }

    /// The host stream is ready: note it, and flush what waits for it.
    pub fn notify(&mut self, interest: Interest) {
        if interest.readable {
            self.host_readable = true;
        }
        if interest.writable {
            self.flush_tx_buf();
        }
    }

    /// Events to wait for on the host stream.
    pub fn interest(&self) -> Interest {
        let open = matches!(self.state, ConnState::Established);
        Interest {
            readable: open
                && !self.host_readable
                && self.peer_shutdown & SHUTDOWN_RCV == 0
                && self.peer_avail_credit() > 0,
            writable: !self.tx_buf.is_empty()
                && matches!(self.state, ConnState::Established | ConnState::LocalClosed),
        }
    }

    /// True when [`Self::recv_pkt`] may have a packet for the guest.
    pub fn has_pending_rx(&self) -> bool {
        match self.state {
            ConnState::Killed => true,
            ConnState::Closed => false,
            ConnState::LocalInit => self.pending_request,
            ConnState::Established | ConnState::LocalClosed => {
                self.pending_response
                    || self.pending_credit_update
                    || (self.state == ConnState::Established && self.can_read_host())
            }
        }
    }

    fn can_read_host(&self) -> bool {
        self.host_readable && self.peer_shutdown & SHUTDOWN_RCV == 0 && self.peer_avail_credit() > 0
    }

    fn header(&self, op: Op) -> PacketHeader {
        PacketHeader {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len: 0,
            type_: TYPE_STREAM,
            op: op as u16,
            flags: 0,
            buf_alloc: CONN_TX_BUF_SIZE,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    /// The next packet for the guest, with at most `max_payload` payload bytes.
    pub fn recv_pkt(
        &mut self,
        max_payload: usize,
        now: Instant,
    ) -> Option<(PacketHeader, Vec<u8>)> {
        let (hdr, payload) = self.next_rx(max_payload, now)?;
        self.last_fwd_cnt_to_peer = Wrapping(hdr.fwd_cnt);
        self.pending_credit_update = false;
        Some((hdr, payload))
    }

    fn next_rx(&mut self, max_payload: usize, now: Instant) -> Option<(PacketHeader, Vec<u8>)> {
        match self.state {
            ConnState::Closed => return None,
            ConnState::Killed => {
                self.state = ConnState::Closed;
                return Some((self.header(Op::Rst), Vec::new()));
            }
            ConnState::LocalInit => {
                if !self.pending_request {
                    return None;
                }
                self.pending_request = false;
                return Some((self.header(Op::Request), Vec::new()));
            }
            ConnState::Established | ConnState::LocalClosed => {}
        }
        if self.pending_response {
            self.pending_response = false;
            return Some((self.header(Op::Response), Vec::new()));
        }
        if self.state == ConnState::Established && self.can_read_host() {
            if let Some(packet) = self.read_host(max_payload, now) {
                return Some(packet);
            }
        }
        if self.pending_credit_update {
            return Some((self.header(Op::CreditUpdate), Vec::new()));
        }
        None
    }

    /// Reads host data for the guest, within its credit. EOF starts the close: SHUTDOWN now,
    /// RST from the guest (or the expiry) ends it.
    fn read_host(&mut self, max_payload: usize, now: Instant) -> Option<(PacketHeader, Vec<u8>)> {
        let want = max_payload.min(self.peer_avail_credit() as usize);
        let mut buf = vec![0u8; want];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.host_readable = false;
                    self.state = ConnState::LocalClosed;
                    self.expiry = Some(now + CONN_SHUTDOWN_TIMEOUT);
                    let mut hdr = self.header(Op::Shutdown);
                    hdr.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
                    return Some((hdr, Vec::new()));
                }
                Ok(n) => {
                    buf.truncate(n);
                    self.rx_cnt += Wrapping(n as u32);
                    return Some((self.header(Op::Rw), buf));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.host_readable = false;
                    return None;
                }
                Err(_) => {
                    self.kill();
                    return self.next_rx(max_payload, now);
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "connection_tests.rs"]
mod tests;
