//! Framing: every message is a 4-byte big-endian length followed by that many bytes of JSON.
//!
//! The length bound is checked before any body byte is read or allocated, so a peer cannot make
//! the other side allocate more than [`MAX_FRAME_LEN`].

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::PROTOCOL_VERSION;

/// Largest body a frame may carry (1 MiB). Stdio chunks are capped well below it.
pub const MAX_FRAME_LEN: u32 = 1 << 20;

/// Why a frame could not be read, written or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the stream cleanly between two frames.
    #[error("connection closed by peer")]
    Closed,
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame: expected {expected} bytes of {part}, got {got}")]
    Truncated {
        part: &'static str,
        expected: usize,
        got: usize,
    },
    /// The announced length is over the limit; the stream cannot be resynchronised.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: u64, max: u32 },
    /// The body is not the JSON of a message envelope.
    #[error("malformed message body: {0}")]
    Malformed(#[source] serde_json::Error),
    /// The envelope is well formed but names a protocol version this side does not speak.
    #[error("unsupported protocol version {got} in message {id} (this side speaks {supported})")]
    UnsupportedVersion { id: u64, got: u32, supported: u32 },
    /// The envelope is well formed but its body is not a known message.
    #[error("message {id} has an unknown or invalid body: {source}")]
    BadBody {
        id: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error("frame I/O failed: {0}")]
    Io(#[from] io::Error),
}

impl FrameError {
    /// Whether the stream is still aligned on a frame boundary after this error, so that the
    /// connection may go on (after an error reply).
    pub fn stream_usable(&self) -> bool {
        matches!(
            self,
            FrameError::Malformed(_)
                | FrameError::UnsupportedVersion { .. }
                | FrameError::BadBody { .. }
        )
    }

    /// The request id the error concerns, when the envelope could be read that far.
    pub fn message_id(&self) -> Option<u64> {
        match self {
            FrameError::UnsupportedVersion { id, .. } | FrameError::BadBody { id, .. } => Some(*id),
            _ => None,
        }
    }
}

/// The outer layer of every message: protocol version, request id, and the body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<B> {
    /// Protocol version of the sender; must equal [`PROTOCOL_VERSION`].
    pub v: u32,
    /// Request id chosen by the client; replies carry the id of their request.
    pub id: u64,
    pub body: B,
}

impl<B> Envelope<B> {
    pub fn new(id: u64, body: B) -> Self {
        Envelope {
            v: PROTOCOL_VERSION,
            id,
            body,
        }
    }
}

/// Envelope read in two steps so that the version and id are known even when the body is not.
#[derive(Deserialize)]
struct RawEnvelope {
    v: u32,
    id: u64,
    body: serde_json::Value,
}

/// Encodes one message as a complete frame (length prefix included).
pub fn encode<B: Serialize>(message: &Envelope<B>) -> Result<Vec<u8>, FrameError> {
    let mut frame = vec![0u8; 4];
    serde_json::to_writer(&mut frame, message).map_err(FrameError::Malformed)?;
    let body_len = frame.len() - 4;
    let len = u32::try_from(body_len)
        .ok()
        .filter(|len| *len <= MAX_FRAME_LEN)
        .ok_or(FrameError::TooLarge {
            len: body_len as u64,
            max: MAX_FRAME_LEN,
        })?;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    Ok(frame)
}

/// Decodes a frame body (without its length prefix) into a message.
pub fn decode<B: DeserializeOwned>(body: &[u8]) -> Result<Envelope<B>, FrameError> {
    let raw: RawEnvelope = serde_json::from_slice(body).map_err(FrameError::Malformed)?;
    if raw.v != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion {
            id: raw.id,
            got: raw.v,
            supported: PROTOCOL_VERSION,
        });
    }
    let body = serde_json::from_value(raw.body)
        .map_err(|source| FrameError::BadBody { id: raw.id, source })?;
    Ok(Envelope {
        v: raw.v,
        id: raw.id,
        body,
    })
}

/// Writes one message as a frame.
pub fn write_message<W: Write, B: Serialize>(
    writer: &mut W,
    message: &Envelope<B>,
) -> Result<(), FrameError> {
    let frame = encode(message)?;
    writer.write_all(&frame)?;
    writer.flush()?;
    Ok(())
}

/// Reads one frame body. Returns [`FrameError::Closed`] on a clean end of stream.
pub fn read_frame<R: Read>(reader: &mut R) -> Result<Vec<u8>, FrameError> {
    let mut prefix = [0u8; 4];
    let got = read_full(reader, &mut prefix)?;
    if got == 0 {
        return Err(FrameError::Closed);
    }
    if got < prefix.len() {
        return Err(FrameError::Truncated {
            part: "length prefix",
            expected: prefix.len(),
            got,
        });
    }
    let len = u32::from_be_bytes(prefix);
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len: u64::from(len),
            max: MAX_FRAME_LEN,
        });
    }
    let mut body = vec![0u8; len as usize];
    let got = read_full(reader, &mut body)?;
    if got < body.len() {
        return Err(FrameError::Truncated {
            part: "body",
            expected: body.len(),
            got,
        });
    }
    Ok(body)
}

/// Reads one frame and decodes it.
pub fn read_message<R: Read, B: DeserializeOwned>(
    reader: &mut R,
) -> Result<Envelope<B>, FrameError> {
    let body = read_frame(reader)?;
    decode(&body)
}

/// Fills `buf` as far as the stream allows; returns how many bytes were read (short only at EOF).
fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> Result<usize, FrameError> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(FrameError::Io(err)),
        }
    }
    Ok(filled)
}
