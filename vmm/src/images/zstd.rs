//! zstd layers (`tar+zstd`) through ruzstd, a pure-Rust decoder. ruzstd's streaming decoder
//! reads one frame; layers may hold several (zstd:chunked writes one per file, plus skippable
//! frames), so this reader decodes frame after frame until the input ends.

use std::io::{BufRead, Read};

use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};

/// The zstd frame magic, little-endian on the wire.
pub const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Decodes a sequence of zstd frames.
pub struct ZstdReader<R> {
    source: R,
    decoder: FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> ZstdReader<R> {
    /// Reads frames from `source`.
    pub fn new(source: R) -> Self {
        ZstdReader {
            source,
            decoder: FrameDecoder::new(),
            in_frame: false,
        }
    }

    /// Starts the next frame; false at the end of the input.
    fn next_frame(&mut self) -> std::io::Result<bool> {
        loop {
            if self.source.fill_buf()?.is_empty() {
                return Ok(false);
            }
            match self.decoder.reset(&mut self.source) {
                Ok(()) => return Ok(true),
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    let skipped = std::io::copy(
                        &mut (&mut self.source).take(length.into()),
                        &mut std::io::sink(),
                    )?;
                    if skipped != u64::from(length) {
                        return Err(invalid("truncated skippable frame"));
                    }
                }
                Err(e) => return Err(invalid(e)),
            }
        }
    }
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

impl<R: BufRead> Read for ZstdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                if !self.next_frame()? {
                    return Ok(0);
                }
                self.in_frame = true;
            }
            while self.decoder.can_collect() < buf.len() && !self.decoder.is_finished() {
                let wanted = buf.len() - self.decoder.can_collect();
                self.decoder
                    .decode_blocks(&mut self.source, BlockDecodingStrategy::UptoBytes(wanted))
                    .map_err(invalid)?;
            }
            let n = self.decoder.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if self.decoder.is_finished() && self.decoder.can_collect() == 0 {
                self.in_frame = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruzstd::encoding::{compress_to_vec, CompressionLevel};

    #[test]
    fn decodes_several_frames_and_skips_skippable_ones() {
        let a = vec![1u8; 100_000];
        let b = b"second frame".to_vec();
        let mut input = compress_to_vec(&a[..], CompressionLevel::Fastest);
        // A skippable frame (magic 0x184D2A50, length 3) between the two.
        input.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 9, 9, 9]);
        input.extend_from_slice(&compress_to_vec(&b[..], CompressionLevel::Fastest));
        let mut out = Vec::new();
        ZstdReader::new(&input[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), a.len() + b.len());
        assert_eq!(&out[a.len()..], b);
    }

    #[test]
    fn garbage_is_an_error() {
        let mut input = MAGIC.to_vec();
        input.extend_from_slice(b"definitely not a zstd frame header or block");
        let mut out = Vec::new();
        assert!(ZstdReader::new(&input[..]).read_to_end(&mut out).is_err());
    }
}
