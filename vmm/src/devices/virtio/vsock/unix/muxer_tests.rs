//! The muxer over real Unix sockets in a temp dir, with the test playing the guest.

use super::*;
use crate::devices::virtio::vsock::packet::MAX_PAYLOAD;
use condo_protocol::vsock_uds;
use std::io::Write;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const GUEST_CID: u64 = 3;
const WAIT: Duration = Duration::from_secs(10);

struct Guest {
    muxer: Muxer,
    uds: PathBuf,
    _dir: tempfile::TempDir,
}

fn guest_pkt(op: Op, src_port: u32, dst_port: u32, payload: &[u8]) -> TxPacket {
    TxPacket {
        hdr: PacketHeader {
            src_cid: GUEST_CID,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            len: payload.len() as u32,
            type_: TYPE_STREAM,
            op: op as u16,
            flags: 0,
            buf_alloc: 256 * 1024,
            fwd_cnt: 0,
        },
        payload: payload.to_vec(),
    }
}

impl Guest {
    fn new() -> Guest {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("vsock.sock");
        let muxer = Muxer::new(GUEST_CID, &uds).unwrap();
        Guest {
            muxer,
            uds,
            _dir: dir,
        }
    }

    /// Waits (up to 50 ms) for the muxer's epoll fd, handles events, returns the packets it
    /// has for the guest.
    fn pump(&mut self) -> Vec<(PacketHeader, Vec<u8>)> {
        let mut pfd = libc::pollfd {
            fd: self.muxer.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, its count, a bounded timeout.
        unsafe { libc::poll(&mut pfd, 1, 50) };
        self.muxer.process_events();
        let mut out = Vec::new();
        while let Some(pkt) = self.muxer.recv_pkt(MAX_PAYLOAD as usize) {
            out.push(pkt);
        }
        out
    }

    /// Pumps until a packet with `op` shows up; returns it.
    fn wait_for(&mut self, op: Op) -> (PacketHeader, Vec<u8>) {
        let deadline = Instant::now() + WAIT;
        let mut stash = VecDeque::new();
        loop {
            stash.extend(self.pump());
            if let Some(i) = stash.iter().position(|(h, _)| h.op() == Some(op)) {
                return stash.remove(i).unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "no {op:?} within {WAIT:?}: {stash:?}"
            );
        }
    }
}

#[test]
fn host_client_connects_and_bytes_flow_both_ways() {
    let mut guest = Guest::new();
    let uds = guest.uds.clone();
    let client = thread::spawn(move || {
        let mut stream = vsock_uds::connect(&uds, 1024, WAIT).unwrap();
        stream.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).unwrap();
        buf
    });
    let (req, _) = guest.wait_for(Op::Request);
    assert_eq!((req.dst_cid, req.dst_port), (GUEST_CID, 1024));
    assert!(req.src_port >= FIRST_LOCAL_PORT);
    guest
        .muxer
        .send_pkt(&guest_pkt(Op::Response, 1024, req.src_port, &[]));
    let (data_hdr, data) = guest.wait_for(Op::Rw);
    assert_eq!(
        (data_hdr.src_port, data.as_slice()),
        (req.src_port, &b"ping"[..])
    );
    // Written to the host stream right away: no pump needed (a pump here could eat the
    // SHUTDOWN that follows the client's close).
    guest
        .muxer
        .send_pkt(&guest_pkt(Op::Rw, 1024, req.src_port, b"pong"));
    assert_eq!(&client.join().unwrap(), b"pong");
    // The client is gone: the host side shuts down, the guest's RST ends the connection.
    guest.wait_for(Op::Shutdown);
    guest
        .muxer
        .send_pkt(&guest_pkt(Op::Rst, 1024, req.src_port, &[]));
    assert_eq!(guest.muxer.connection_count(), 0);
}

#[test]
fn nobody_listening_in_the_guest_resets_the_host_client() {
    let mut guest = Guest::new();
    let uds = guest.uds.clone();
    let client = thread::spawn(move || vsock_uds::connect(&uds, 9999, WAIT).map(|_| ()));
    let (req, _) = guest.wait_for(Op::Request);
    guest
        .muxer
        .send_pkt(&guest_pkt(Op::Rst, 9999, req.src_port, &[]));
    let err = client.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
    assert_eq!(guest.muxer.connection_count(), 0);
}

#[test]
fn a_silent_guest_times_the_request_out() {
    let mut guest = Guest::new();
    let uds = guest.uds.clone();
    let client = thread::spawn(move || vsock_uds::connect(&uds, 1024, WAIT).map(|_| ()));
    guest.wait_for(Op::Request);
    // No answer: after CONN_REQUEST_TIMEOUT the muxer resets it on both sides.
    guest.wait_for(Op::Rst);
    let err = client.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
    assert_eq!(guest.muxer.connection_count(), 0);
}

#[test]
fn guest_initiated_connection_reaches_uds_underscore_port() {
    let mut guest = Guest::new();
    let mut path = guest.uds.clone().into_os_string();
    path.push("_52");
    let listener = UnixListener::bind(&path).unwrap();
    guest.muxer.send_pkt(&guest_pkt(Op::Request, 5000, 52, &[]));
    let (resp, _) = guest.wait_for(Op::Response);
    assert_eq!((resp.src_port, resp.dst_port), (52, 5000));
    let (mut host_end, _) = listener.accept().unwrap();
    guest.muxer.send_pkt(&guest_pkt(Op::Rw, 5000, 52, b"hi"));
    let mut buf = [0u8; 2];
    host_end.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hi");
    host_end.write_all(b"yo").unwrap();
    let (_, data) = guest.wait_for(Op::Rw);
    assert_eq!(data, b"yo");
}

#[test]
fn guest_connection_to_a_port_without_listener_is_reset() {
    let mut guest = Guest::new();
    guest.muxer.send_pkt(&guest_pkt(Op::Request, 5000, 53, &[]));
    let (rst, _) = guest.wait_for(Op::Rst);
    assert_eq!(
        (rst.src_port, rst.dst_port, rst.dst_cid),
        (53, 5000, GUEST_CID)
    );
    assert_eq!(guest.muxer.connection_count(), 0);
}

#[test]
fn misaddressed_and_stray_packets() {
    let mut guest = Guest::new();
    // Spoofed source CID, or not addressed to the host: dropped without an answer.
    let mut spoofed = guest_pkt(Op::Request, 5000, 52, &[]);
    spoofed.hdr.src_cid = 4;
    guest.muxer.send_pkt(&spoofed);
    let mut elsewhere = guest_pkt(Op::Request, 5000, 52, &[]);
    elsewhere.hdr.dst_cid = 7;
    guest.muxer.send_pkt(&elsewhere);
    assert!(!guest.muxer.has_pending_rx());
    // An RST for nothing: ignored (answering RST with RST would ping-pong).
    guest.muxer.send_pkt(&guest_pkt(Op::Rst, 5000, 52, &[]));
    assert!(!guest.muxer.has_pending_rx());
    // Data for no connection, an unknown type, an unknown op: RST.
    guest.muxer.send_pkt(&guest_pkt(Op::Rw, 5000, 52, b"x"));
    let mut dgram = guest_pkt(Op::Request, 5001, 52, &[]);
    dgram.hdr.type_ = 2;
    guest.muxer.send_pkt(&dgram);
    let mut unknown = guest_pkt(Op::Rw, 5002, 52, &[]);
    unknown.hdr.op = 42;
    guest.muxer.send_pkt(&unknown);
    let rsts: Vec<u32> = guest.pump().iter().map(|(h, _)| h.dst_port).collect();
    assert_eq!(rsts, [5000, 5001, 5002]);
}

#[test]
fn queued_rsts_stay_bounded_when_the_guest_gives_no_rx_buffers() {
    let mut guest = Guest::new();
    for port in 0..(MAX_QUEUED_RSTS as u32 * 3) {
        guest.muxer.send_pkt(&guest_pkt(Op::Rw, port, 52, b"x"));
    }
    assert_eq!(guest.muxer.rst_queue.len(), MAX_QUEUED_RSTS);
}

#[test]
fn bad_handshakes_close_the_client() {
    let mut guest = Guest::new();
    for line in [
        &b"HELLO 1\n"[..],
        b"CONNECT x\n",
        b"CONNECT 99999999999\n",
        &[b'A'; 40],
    ] {
        let mut client = UnixStream::connect(&guest.uds).unwrap();
        client.write_all(line).unwrap();
        client.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 8];
        loop {
            assert!(guest.pump().is_empty(), "no REQUEST for {line:?}");
            match client.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => panic!("{line:?}: unexpected reply {:?}", &buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("{e}"),
            }
            assert!(Instant::now() < deadline, "{line:?} left open");
        }
    }
    assert_eq!(guest.muxer.connection_count(), 0);
}

#[test]
fn many_concurrent_streams_each_get_their_own_bytes() {
    const CLIENTS: u32 = 64;
    let mut guest = Guest::new();
    let (done_tx, done_rx) = mpsc::channel();
    for i in 0..CLIENTS {
        let uds = guest.uds.clone();
        let done = done_tx.clone();
        thread::spawn(move || {
            let result = (|| -> io::Result<Vec<u8>> {
                let mut stream = vsock_uds::connect(&uds, 1024, WAIT)?;
                let message = format!("client {i} says hello");
                stream.write_all(message.as_bytes())?;
                let mut echo = vec![0u8; message.len()];
                stream.read_exact(&mut echo)?;
                Ok(echo)
            })();
            let _ = done.send((i, result));
        });
    }
    // The guest: accept every REQUEST, echo every RW.
    let deadline = Instant::now() + WAIT * 3;
    let mut finished = 0;
    while finished < CLIENTS {
        for (hdr, data) in guest.pump() {
            match hdr.op() {
                Some(Op::Request) => {
                    guest
                        .muxer
                        .send_pkt(&guest_pkt(Op::Response, hdr.dst_port, hdr.src_port, &[]))
                }
                Some(Op::Rw) => {
                    guest
                        .muxer
                        .send_pkt(&guest_pkt(Op::Rw, hdr.dst_port, hdr.src_port, &data))
                }
                Some(Op::Shutdown) => {
                    guest
                        .muxer
                        .send_pkt(&guest_pkt(Op::Rst, hdr.dst_port, hdr.src_port, &[]))
                }
                _ => {}
            }
        }
        while let Ok((i, result)) = done_rx.try_recv() {
            let echo = result.unwrap();
            assert_eq!(echo, format!("client {i} says hello").as_bytes());
            finished += 1;
        }
        assert!(
            Instant::now() < deadline,
            "{finished}/{CLIENTS} clients done"
        );
    }
}

#[test]
fn an_existing_socket_path_is_refused_and_kept() {
    let guest = Guest::new();
    let err = Muxer::new(GUEST_CID, &guest.uds).err().unwrap();
    assert!(err.to_string().contains("vsock.sock"), "{err}");
    assert!(guest.uds.exists(), "the first muxer's socket stays");
    let path = guest.uds.clone();
    drop(guest.muxer);
    assert!(!path.exists(), "removed when the muxer goes");
}
