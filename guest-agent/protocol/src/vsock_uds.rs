//! Host side of a virtio-vsock device exposed as a Unix socket (Firecracker's convention).
//!
//! The VMM listens on a Unix socket. A host client connects, writes `CONNECT <port>\n` and reads
//! back `OK <host_port>\n`; from then on the stream carries the bytes of a vsock connection to
//! the guest's `port`. When nobody listens in the guest, the VMM closes the Unix stream instead
//! of answering.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Longest handshake reply we accept: `OK 4294967295\n` is 14 bytes.
const MAX_REPLY_LEN: usize = 32;

/// Connects to `port` in the guest through the VMM's vsock Unix socket at `uds`.
///
/// `timeout` bounds the whole handshake (connect, request, reply). On success the returned
/// stream has no read or write timeout left set. Errors:
/// - `ConnectionRefused`/`NotFound` from the Unix connect (no VMM listening at `uds`);
/// - `ConnectionReset` when the VMM closed the stream without `OK` (nobody listens on `port`);
/// - `TimedOut` when no full reply came within `timeout`;
/// - `InvalidData` for a reply that is not `OK <n>\n`.
pub fn connect(uds: &Path, port: u32, timeout: Duration) -> io::Result<UnixStream> {
    let deadline = Instant::now() + timeout;
    let mut stream = UnixStream::connect(uds).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("connect to vsock socket {}: {e}", uds.display()),
        )
    })?;
    stream.set_write_timeout(Some(remaining(deadline)?))?;
    stream.write_all(format!("CONNECT {port}\n").as_bytes())?;
    let reply = read_reply_line(&mut stream, deadline).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("vsock CONNECT {port} via {}: {e}", uds.display()),
        )
    })?;
    parse_ok_reply(&reply)?;
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
    Ok(stream)
}

/// Parses `OK <host_port>` (without the newline) and returns the host port.
pub fn parse_ok_reply(line: &str) -> io::Result<u32> {
    line.strip_prefix("OK ")
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected vsock handshake reply {line:?} (want \"OK <port>\")"),
            )
        })
}

fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "vsock handshake timed out",
        ));
    }
    Ok(left)
}

/// Reads one byte at a time up to `\n`: anything after the newline already belongs to the
/// connection's payload and must stay in the socket.
fn read_reply_line(stream: &mut UnixStream, deadline: Instant) -> io::Result<String> {
    let mut line = Vec::with_capacity(16);
    loop {
        stream.set_read_timeout(Some(remaining(deadline)?))?;
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "closed by the VMM before OK (nobody listening on that port in the guest?)",
                ))
            }
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => {
                line.push(byte[0]);
                if line.len() > MAX_REPLY_LEN {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "vsock handshake reply too long",
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "vsock handshake timed out",
                ))
            }
            Err(e) => return Err(e),
        }
    }
    String::from_utf8(line).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "vsock handshake reply is not UTF-8",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::os::unix::net::UnixListener;
    use std::thread;

    fn temp_socket(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("condo-vsock-uds-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("v.sock")
    }

    #[test]
    fn handshake_then_bytes_flow() {
        let path = temp_socket("ok");
        let listener = UnixListener::bind(&path).unwrap();
        let server = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = io::BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert_eq!(line, "CONNECT 1024\n");
            // Reply and payload in one write: the client must not swallow the payload.
            (&stream).write_all(b"OK 1073741824\nhello").unwrap();
        });
        let mut stream = connect(&path, 1024, Duration::from_secs(5)).unwrap();
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        server.join().unwrap();
    }

    #[test]
    fn closed_without_ok_is_connection_reset() {
        let path = temp_socket("reset");
        let listener = UnixListener::bind(&path).unwrap();
        let server = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            drop(stream);
        });
        let err = connect(&path, 7, Duration::from_secs(5)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        server.join().unwrap();
    }

    #[test]
    fn silent_server_times_out() {
        let path = temp_socket("silent");
        let listener = UnixListener::bind(&path).unwrap();
        let err = connect(&path, 7, Duration::from_millis(200)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        drop(listener);
    }

    #[test]
    fn bad_reply_is_invalid_data() {
        assert_eq!(parse_ok_reply("OK 52").unwrap(), 52);
        for bad in ["", "OK", "OK x", "ERR 1", "OK -1", "ok 5"] {
            assert_eq!(
                parse_ok_reply(bad).unwrap_err().kind(),
                io::ErrorKind::InvalidData,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn missing_socket_names_the_path() {
        let path = temp_socket("missing");
        let err = connect(&path, 1, Duration::from_secs(1)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("v.sock"), "{err}");
    }
}
