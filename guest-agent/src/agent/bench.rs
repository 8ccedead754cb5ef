//! Transport benchmarks between a host and a guest (`scripts/bench vsock`):
//! - latency: round trips of the agent protocol's Ping on one connection;
//! - throughput: raw bytes over a stream to or from `condo-agent bench-server` in the guest.
//!
//! Stream protocol of the bench server (one request per connection): the client sends one op
//! byte and a big-endian u64 byte count. `U` (upload, host → guest): the client sends that many
//! bytes, the server reads them all and answers the count (u64, big-endian). `D` (download,
//! guest → host): the server sends that many bytes and closes.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use condo_protocol::Client;

/// Default vsock port of the bench server.
pub const BENCH_PORT: u32 = 5201;
const CHUNK: usize = 64 * 1024;

/// Which way the bytes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Direction {
    /// Host → guest.
    Upload,
    /// Guest → host.
    Download,
}

/// Serves one bench request on `stream`; returns the bytes moved.
pub fn serve_one<S: Read + Write>(stream: &mut S) -> io::Result<u64> {
    let mut head = [0u8; 9];
    stream.read_exact(&mut head)?;
    let mut count = [0u8; 8];
    count.copy_from_slice(&head[1..]);
    let bytes = u64::from_be_bytes(count);
    match head[0] {
        b'U' => {
            let got = io::copy(&mut (&mut *stream).take(bytes), &mut io::sink())?;
            stream.write_all(&got.to_be_bytes())?;
            Ok(got)
        }
        b'D' => {
            let chunk = vec![0x5au8; CHUNK];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(CHUNK as u64) as usize;
                stream.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            stream.flush()?;
            Ok(bytes)
        }
        op => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bench: unknown op byte {op:#x} (want U or D)"),
        )),
    }
}

/// Moves `bytes` in `direction` over `stream` (a connection to the bench server); returns how
/// long it took, from the request to the last byte (download) or the server's count (upload).
pub fn throughput<S: Read + Write>(
    stream: &mut S,
    direction: Direction,
    bytes: u64,
) -> io::Result<Duration> {
    let start = Instant::now();
    let op = match direction {
        Direction::Upload => b'U',
        Direction::Download => b'D',
    };
    let mut head = [0u8; 9];
    head[0] = op;
    head[1..].copy_from_slice(&bytes.to_be_bytes());
    stream.write_all(&head)?;
    let moved = match direction {
        Direction::Upload => {
            let chunk = vec![0xa5u8; CHUNK];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(CHUNK as u64) as usize;
                stream.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            let mut count = [0u8; 8];
            stream.read_exact(&mut count)?;
            u64::from_be_bytes(count)
        }
        Direction::Download => io::copy(&mut (&mut *stream).take(bytes), &mut io::sink())?,
    };
    if moved != bytes {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("bench: {moved} of {bytes} bytes moved"),
        ));
    }
    Ok(start.elapsed())
}

/// `count` Ping round trips on one connection; returns each one's duration.
pub fn ping_latencies<S: Read + Write>(
    client: &mut Client<S>,
    count: usize,
) -> Result<Vec<Duration>, condo_protocol::ClientError> {
    let mut all = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        client.ping()?;
        all.push(start.elapsed());
    }
    Ok(all)
}

/// The `q` quantile (0.0..=1.0) of `samples`, by nearest rank.
pub fn quantile(samples: &mut [Duration], q: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let rank = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len());
    samples.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;
    use std::thread;

    #[test]
    fn upload_and_download_move_every_byte() {
        for direction in [Direction::Upload, Direction::Download] {
            let (mut client, mut server) = UnixStream::pair().unwrap();
            let served = thread::spawn(move || serve_one(&mut server).unwrap());
            let bytes = 3 * CHUNK as u64 + 17;
            throughput(&mut client, direction, bytes).unwrap();
            assert_eq!(served.join().unwrap(), bytes, "{direction:?}");
        }
    }

    #[test]
    fn short_download_is_an_error() {
        let (mut client, mut server) = UnixStream::pair().unwrap();
        let server = thread::spawn(move || {
            let mut head = [0u8; 9];
            server.read_exact(&mut head).unwrap();
            server.write_all(&[0u8; 10]).unwrap();
        });
        let err = throughput(&mut client, Direction::Download, 100).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
        server.join().unwrap();
    }

    #[test]
    fn unknown_op_is_refused() {
        let (mut client, mut server) = UnixStream::pair().unwrap();
        client.write_all(b"X\0\0\0\0\0\0\0\x01").unwrap();
        assert_eq!(
            serve_one(&mut server).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(quantile(&mut samples, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(
            quantile(&mut samples, 0.99),
            Some(Duration::from_millis(99))
        );
        assert_eq!(
            quantile(&mut samples, 1.0),
            Some(Duration::from_millis(100))
        );
        assert_eq!(quantile(&mut [], 0.5), None);
    }
}
