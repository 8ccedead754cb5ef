//! sha256 digests: parsing `sha256:<hex>`, hashing while reading.

use std::io::Read;

use sha2::{Digest as _, Sha256};

use super::{Error, Result};

/// Length of a sha256 digest in hex.
pub const HEX_LEN: usize = 64;

/// Whether `hex` is 64 lowercase hex digits.
pub fn is_sha256_hex(hex: &str) -> bool {
    hex.len() == HEX_LEN && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The hex part of `sha256:<hex>`; `what` names where the digest was found.
pub fn parse_sha256(digest: &str, what: &str) -> Result<String> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if is_sha256_hex(hex) => Ok(hex.to_string()),
        _ => Err(Error::BadDigest {
            what: what.to_string(),
            digest: digest.to_string(),
        }),
    }
}

/// Lowercase hex of bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// `sha256:<hex>` of a byte slice.
pub fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256:{}", to_hex(&Sha256::digest(bytes)))
}

/// Checks that `bytes` hash to `expected` (`sha256:<hex>`).
pub fn verify(bytes: &[u8], expected: &str, what: &str) -> Result<()> {
    let actual = sha256_of(bytes);
    if actual == expected {
        Ok(())
    } else {
        Err(Error::DigestMismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            actual,
        })
    }
}

/// A reader that hashes what passes through it and counts the bytes.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Reads the rest of the stream (so the digest covers all of it) and returns
    /// `sha256:<hex>` and the total byte count.
    pub fn finish(mut self) -> std::io::Result<(String, u64)> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        let digest = format!("sha256:{}", to_hex(&self.hasher.finalize()));
        Ok((digest, self.count))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_sha256_with_64_lowercase_hex() {
        let hex = "a".repeat(64);
        assert_eq!(parse_sha256(&format!("sha256:{hex}"), "x").unwrap(), hex);
        assert!(parse_sha256(&format!("sha512:{hex}"), "x").is_err());
        assert!(parse_sha256(&format!("sha256:{}", "A".repeat(64)), "x").is_err());
        assert!(parse_sha256("sha256:abc", "x").is_err());
        assert!(parse_sha256(&format!("sha256:../{}", "a".repeat(61)), "x").is_err());
    }

    #[test]
    fn hashing_reader_covers_the_whole_stream() {
        let data = b"hello world";
        let mut reader = HashingReader::new(&data[..]);
        let mut first = [0u8; 5];
        reader.read_exact(&mut first).unwrap();
        let (digest, count) = reader.finish().unwrap();
        assert_eq!(count, 11);
        assert_eq!(digest, sha256_of(data));
        assert_eq!(
            digest,
            "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
    }
}
