//! The connection state machine and its flow control, over real Unix stream pairs.

use super::*;
use crate::devices::virtio::vsock::packet::MAX_PAYLOAD;

const GUEST_CID: u64 = 3;
const LOCAL: u32 = 1 << 30;
const PEER: u32 = 1024;

fn guest_pkt(op: Op, payload: &[u8], buf_alloc: u32, fwd_cnt: u32) -> TxPacket {
    TxPacket {
        hdr: PacketHeader {
            src_cid: GUEST_CID,
            dst_cid: HOST_CID,
            src_port: PEER,
            dst_port: LOCAL,
            len: payload.len() as u32,
            type_: TYPE_STREAM,
            op: op as u16,
            flags: 0,
            buf_alloc,
            fwd_cnt,
        },
        payload: payload.to_vec(),
    }
}

fn shutdown_pkt(flags: u32) -> TxPacket {
    let mut pkt = guest_pkt(Op::Shutdown, &[], 4096, 0);
    pkt.hdr.flags = flags;
    pkt
}

/// A host-initiated connection past its handshake; returns it and the host client's end.
fn established() -> (Connection, UnixStream) {
    let (ours, client) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let mut conn = Connection::new_local(ours, LOCAL, PEER, GUEST_CID, Instant::now());
    let (req, _) = conn.recv_pkt(4096, Instant::now()).unwrap();
    assert_eq!(req.op(), Some(Op::Request));
    conn.send_pkt(&guest_pkt(Op::Response, &[], 4096, 0));
    assert_eq!(conn.state(), ConnState::Established);
    let mut ok = [0u8; 14];
    (&client).read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"OK 1073741824\n");
    (conn, client)
}

fn next_op(conn: &mut Connection) -> Option<Op> {
    conn.recv_pkt(MAX_PAYLOAD as usize, Instant::now())
        .and_then(|(hdr, _)| hdr.op())
}

#[test]
fn host_initiated_request_carries_the_right_addresses() {
    let (ours, _client) = UnixStream::pair().unwrap();
    let mut conn = Connection::new_local(ours, LOCAL, PEER, GUEST_CID, Instant::now());
    assert!(conn.has_pending_rx());
    let (hdr, payload) = conn.recv_pkt(4096, Instant::now()).unwrap();
    assert_eq!(
        (hdr.src_cid, hdr.dst_cid, hdr.src_port, hdr.dst_port),
        (HOST_CID, GUEST_CID, LOCAL, PEER)
    );
    assert_eq!(
        (hdr.op(), hdr.type_, hdr.buf_alloc),
        (Some(Op::Request), TYPE_STREAM, CONN_TX_BUF_SIZE)
    );
    assert!(payload.is_empty());
    assert!(!conn.has_pending_rx(), "one REQUEST only");
}

#[test]
fn guest_data_reaches_the_host_and_fwd_cnt_counts_it() {
    let (mut conn, client) = established();
    conn.send_pkt(&guest_pkt(Op::Rw, b"hello", 4096, 0));
    let mut buf = [0u8; 5];
    (&client).read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    conn.send_pkt(&guest_pkt(Op::CreditRequest, &[], 4096, 0));
    let (hdr, _) = conn.recv_pkt(4096, Instant::now()).unwrap();
    assert_eq!((hdr.op(), hdr.fwd_cnt), (Some(Op::CreditUpdate), 5));
}

#[test]
fn host_data_is_sent_within_the_guest_credit_only() {
    let (mut conn, client) = established();
    // The guest has room for 10 bytes.
    conn.send_pkt(&guest_pkt(Op::CreditUpdate, &[], 10, 0));
    (&client).write_all(&[7u8; 100]).unwrap();
    conn.notify(Interest {
        readable: true,
        writable: false,
    });
    let (hdr, data) = conn.recv_pkt(4096, Instant::now()).unwrap();
    assert_eq!((hdr.op(), data.len()), (Some(Op::Rw), 10));
    assert_eq!(conn.peer_avail_credit(), 0);
    assert!(!conn.has_pending_rx(), "no credit, nothing to send");
    assert!(
        !conn.interest().readable,
        "no credit, stop polling the host"
    );
    // The guest consumed 6 of them.
    conn.send_pkt(&guest_pkt(Op::CreditUpdate, &[], 10, 6));
    assert_eq!(conn.peer_avail_credit(), 6);
    let (_, data) = conn.recv_pkt(4096, Instant::now()).unwrap();
    assert_eq!(data.len(), 6);
}

#[test]
fn payload_respects_the_rx_buffer_size() {
    let (mut conn, client) = established();
    conn.send_pkt(&guest_pkt(Op::CreditUpdate, &[], 1 << 20, 0));
    (&client).write_all(&[1u8; 1000]).unwrap();
    conn.notify(Interest {
        readable: true,
        writable: false,
    });
    let (_, data) = conn.recv_pkt(300, Instant::now()).unwrap();
    assert_eq!(data.len(), 300);
}

#[test]
fn a_guest_sending_beyond_its_credit_is_reset() {
    let (mut conn, client) = established();
    // Nobody reads on the host: the socket buffer fills, then tx_buf.
    let chunk = vec![0u8; MAX_PAYLOAD as usize];
    let mut sent = 0u64;
    while conn.state() == ConnState::Established {
        conn.send_pkt(&guest_pkt(Op::Rw, &chunk, 4096, 0));
        sent += chunk.len() as u64;
        assert!(sent < 64 << 20, "never reset");
    }
    assert_eq!(conn.state(), ConnState::Killed);
    assert_eq!(next_op(&mut conn), Some(Op::Rst));
    assert!(conn.is_closed());
    drop(client);
}

#[test]
fn buffered_guest_data_drains_when_the_host_reads() {
    let (mut conn, client) = established();
    client.set_nonblocking(true).unwrap();
    let chunk = vec![9u8; 32 * 1024];
    let mut sent = 0usize;
    // Within credit: up to CONN_TX_BUF_SIZE in flight beyond what the host has read.
    while !conn.interest().writable {
        conn.send_pkt(&guest_pkt(Op::Rw, &chunk, 4096, 0));
        sent += chunk.len();
        assert!(sent < 16 << 20);
    }
    assert_eq!(conn.state(), ConnState::Established);
    let mut received = 0usize;
    let mut buf = vec![0u8; 65536];
    while received < sent {
        match (&client).read(&mut buf) {
            Ok(n) => received += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.notify(Interest {
                readable: false,
                writable: true,
            }),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(received, sent);
    assert!(!conn.interest().writable);
    let (hdr, _) = conn.recv_pkt(0, Instant::now()).unwrap();
    assert_eq!(
        (hdr.op(), hdr.fwd_cnt),
        (Some(Op::CreditUpdate), sent as u32)
    );
}

#[test]
fn host_eof_sends_shutdown_then_the_guest_rst_closes() {
    let (mut conn, client) = established();
    drop(client);
    conn.notify(Interest {
        readable: true,
        writable: false,
    });
    let (hdr, _) = conn.recv_pkt(4096, Instant::now()).unwrap();
    assert_eq!(hdr.op(), Some(Op::Shutdown));
    assert_eq!(hdr.flags, SHUTDOWN_RCV | SHUTDOWN_SEND);
    assert_eq!(conn.state(), ConnState::LocalClosed);
    assert!(conn.expiry().is_some(), "does not wait forever for the RST");
    conn.send_pkt(&guest_pkt(Op::Rst, &[], 0, 0));
    assert!(conn.is_closed());
    assert_eq!(next_op(&mut conn), None);
}

#[test]
fn guest_shutdown_send_gives_the_host_eof_and_full_shutdown_resets() {
    let (mut conn, client) = established();
    conn.send_pkt(&guest_pkt(Op::Rw, b"bye", 4096, 0));
    conn.send_pkt(&shutdown_pkt(SHUTDOWN_SEND));
    let mut all = Vec::new();
    (&client).read_to_end(&mut all).unwrap();
    assert_eq!(all, b"bye");
    assert_eq!(conn.state(), ConnState::Established);
    // Data after SHUTDOWN(SEND) breaks the protocol.
    let mut after = established().0;
    after.send_pkt(&shutdown_pkt(SHUTDOWN_SEND));
    after.send_pkt(&guest_pkt(Op::Rw, b"x", 4096, 0));
    assert_eq!(after.state(), ConnState::Killed);
    conn.send_pkt(&shutdown_pkt(SHUTDOWN_RCV));
    assert_eq!(next_op(&mut conn), Some(Op::Rst));
}

#[test]
fn guest_shutdown_rcv_stops_host_reads() {
    let (mut conn, client) = established();
    conn.send_pkt(&shutdown_pkt(SHUTDOWN_RCV));
    (&client).write_all(b"unwanted").unwrap();
    conn.notify(Interest {
        readable: true,
        writable: false,
    });
    assert!(!conn.has_pending_rx());
    assert!(!conn.interest().readable);
}

#[test]
fn protocol_violations_reset_the_connection() {
    for op in [Op::Request, Op::Response] {
        let (mut conn, _client) = established();
        conn.send_pkt(&guest_pkt(op, &[], 4096, 0));
        assert_eq!(next_op(&mut conn), Some(Op::Rst), "{op:?}");
    }
    let (mut conn, _client) = established();
    let mut unknown = guest_pkt(Op::Rw, &[], 4096, 0);
    unknown.hdr.op = 99;
    conn.send_pkt(&unknown);
    assert_eq!(next_op(&mut conn), Some(Op::Rst));
    // Data before the RESPONSE.
    let (ours, _client) = UnixStream::pair().unwrap();
    let mut conn = Connection::new_local(ours, LOCAL, PEER, GUEST_CID, Instant::now());
    conn.send_pkt(&guest_pkt(Op::Rw, b"early", 4096, 0));
    assert_eq!(next_op(&mut conn), Some(Op::Rst));
}

#[test]
fn guest_rst_during_request_closes_silently() {
    let (ours, client) = UnixStream::pair().unwrap();
    let mut conn = Connection::new_local(ours, LOCAL, PEER, GUEST_CID, Instant::now());
    let _ = conn.recv_pkt(4096, Instant::now());
    conn.send_pkt(&guest_pkt(Op::Rst, &[], 0, 0));
    assert!(conn.is_closed());
    assert_eq!(next_op(&mut conn), None);
    drop(conn);
    let mut rest = Vec::new();
    (&client).read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "no OK line for a refused connection");
}

#[test]
fn counters_wrap_around_u32() {
    let (mut conn, client) = established();
    conn.rx_cnt = Wrapping(u32::MAX - 2);
    conn.send_pkt(&guest_pkt(Op::CreditUpdate, &[], 100, u32::MAX - 2));
    assert_eq!(conn.peer_avail_credit(), 100);
    (&client).write_all(&[0u8; 10]).unwrap();
    conn.notify(Interest {
        readable: true,
        writable: false,
    });
    let (_, data) = conn.recv_pkt(4096, Instant::now()).unwrap();
    assert_eq!(data.len(), 10);
    assert_eq!(conn.peer_avail_credit(), 90);
}

#[test]
fn the_handshake_line_is_not_counted_as_forwarded_guest_data() {
    let (ours, client) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    client.set_nonblocking(true).unwrap();
    let mut conn = Connection::new_local(ours, LOCAL, PEER, GUEST_CID, Instant::now());
    let _ = conn.recv_pkt(4096, Instant::now());
    conn.send_pkt(&guest_pkt(Op::Response, &[], 4096, 0));
    // The client has not read the OK line yet; fill its socket so it stays partly queued.
    let chunk = vec![3u8; 60_000];
    let mut sent = 0usize;
    while !conn.interest().writable {
        conn.send_pkt(&guest_pkt(Op::Rw, &chunk, 4096, 0));
        sent += chunk.len();
    }
    let mut received = 0usize;
    let mut buf = vec![0u8; 65536];
    while received < sent + 14 {
        match (&client).read(&mut buf) {
            Ok(n) => received += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.notify(Interest {
                readable: false,
                writable: true,
            }),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(conn.state(), ConnState::Established);
    assert_eq!(conn.fwd_cnt.0 as usize, sent, "only guest payload counts");
}
