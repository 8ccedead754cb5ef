//! The console file, bounded: a guest that prints forever must not fill the host's disk.
//!
//! The file keeps the most recent output (the tail is what an operator reads). When a write
//! would take it past its limit, the last half of the limit is moved to the start of the file,
//! behind a line saying how much was dropped, and the file is truncated there. Everything goes
//! through the descriptor the VMM already holds (pread64, pwrite64, ftruncate): the jailed VMM
//! cannot open its run directory. Copying half the limit once per half limit of output keeps
//! the cost per guest byte constant, so the guest never waits on it for long.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

/// Default size bound of a console file.
pub const DEFAULT_CONSOLE_LIMIT: u64 = 1 << 20;
/// Smallest bound accepted: room for the drop notice and a useful tail.
pub const MIN_CONSOLE_LIMIT: u64 = 4096;

/// Bytes moved per pread/pwrite while compacting.
const COPY_CHUNK: usize = 64 << 10;

/// A console file that never grows past `limit` bytes. Its writer must be the only one.
pub struct BoundedConsoleFile {
    file: File,
    limit: u64,
    /// Bytes in the file.
    len: u64,
    /// Length of the drop notice at the start of the file (0 before the first compaction).
    notice_len: u64,
    /// Guest bytes dropped so far.
    dropped: u64,
}

impl BoundedConsoleFile {
    /// Wraps `file`, which must be empty and open for reading and writing; `limit` is at least
    /// [`MIN_CONSOLE_LIMIT`] (smaller values are raised to it).
    pub fn new(file: File, limit: u64) -> Self {
        Self {
            file,
            limit: limit.max(MIN_CONSOLE_LIMIT),
            len: 0,
            notice_len: 0,
            dropped: 0,
        }
    }

    /// Guest bytes dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Keeps the last half limit of the guest's output followed by `incoming`, starting at a
    /// line when there is one, behind the drop notice.
    fn compact(&mut self, incoming: &[u8]) -> io::Result<()> {
        let keep = self.limit / 2;
        let incoming_len = incoming.len() as u64;
        let incoming_kept = incoming_len.min(keep);
        let incoming_skipped = incoming_len - incoming_kept;
        let mut from_file = (keep - incoming_kept).min(self.len - self.notice_len);
        let mut src = self.len - from_file;
        let mut chunk = vec![0u8; COPY_CHUNK.min(usize::try_from(from_file).unwrap_or(0))];
        if from_file > 0 {
            // Start after the first newline of the kept part: the tail begins with a whole line.
            self.file.read_exact_at(&mut chunk, src)?;
            if let Some(at) = chunk.iter().position(|&b| b == b'\n') {
                let cut = at as u64 + 1;
                src += cut;
                from_file -= cut;
            }
        }
        self.dropped += src - self.notice_len + incoming_skipped;
        let notice = format!(
            "[condo: {} bytes of earlier console output dropped; console.log keeps the last {} bytes]\n",
            self.dropped, self.limit
        );
        let dst = notice.len() as u64;
        // src > limit / 2 > dst (see the tests): a forward copy never overwrites what it has
        // still to read.
        let mut copied = 0;
        while copied < from_file {
            let n = (from_file - copied).min(chunk.len() as u64);
            let piece = &mut chunk[..usize::try_from(n).unwrap_or(0)];
            self.file.read_exact_at(piece, src + copied)?;
            self.file.write_all_at(piece, dst + copied)?;
            copied += n;
        }
        self.file.write_all_at(notice.as_bytes(), 0)?;
        let tail = &incoming[usize::try_from(incoming_skipped).unwrap_or(0)..];
        self.file.write_all_at(tail, dst + from_file)?;
        let new_len = dst + from_file + incoming_kept;
        self.file.set_len(new_len)?;
        self.len = new_len;
        self.notice_len = dst;
        Ok(())
    }
}

impl Write for BoundedConsoleFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.len + buf.len() as u64 <= self.limit {
            self.file.write_all_at(buf, self.len)?;
            self.len += buf.len() as u64;
            return Ok(buf.len());
        }
        if let Err(e) = self.compact(buf) {
            // The file's contents are unknown now: start it over rather than let it grow.
            let _ = self.file.set_len(0);
            self.len = 0;
            self.notice_len = 0;
            return Err(e);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bounded console on an anonymous file, and a second handle to read it.
    fn bounded(limit: u64) -> (BoundedConsoleFile, File) {
        let file = tempfile::tempfile().unwrap();
        let reader = file.try_clone().unwrap();
        (BoundedConsoleFile::new(file, limit), reader)
    }

    fn contents(reader: &File) -> Vec<u8> {
        let len = reader.metadata().unwrap().len();
        let mut buf = vec![0u8; len as usize];
        reader.read_exact_at(&mut buf, 0).unwrap();
        buf
    }

    /// Numbered lines as a guest prints them, one byte per write as the UART does.
    fn print_lines(console: &mut BoundedConsoleFile, lines: std::ops::Range<u32>) -> u64 {
        let mut total = 0;
        for i in lines {
            for b in format!("line {i:08}\n").bytes() {
                console.write_all(&[b]).unwrap();
                total += 1;
            }
        }
        total
    }

    /// The drop notice's count, and the text after it.
    fn split_notice(text: &str) -> (u64, &str) {
        let (notice, rest) = text.split_once('\n').unwrap();
        let count = notice
            .strip_prefix("[condo: ")
            .and_then(|n| n.split_once(' '))
            .map(|(n, _)| n.parse().unwrap())
            .unwrap_or_else(|| panic!("no drop notice: {notice:?}"));
        (count, rest)
    }

    #[test]
    fn output_under_the_limit_is_kept_whole() {
        let (mut console, reader) = bounded(MIN_CONSOLE_LIMIT);
        let total = print_lines(&mut console, 0..100);
        assert!(total <= MIN_CONSOLE_LIMIT);
        assert_eq!(contents(&reader).len() as u64, total);
        assert!(String::from_utf8(contents(&reader))
            .unwrap()
            .starts_with("line 00000000\nline 00000001\n"));
        assert_eq!(console.dropped(), 0);
    }

    #[test]
    fn the_file_stays_within_the_limit_and_ends_with_the_latest_output() {
        let limit = 8192;
        let (mut console, reader) = bounded(limit);
        let mut total = 0;
        for round in 0..20u32 {
            total += print_lines(&mut console, round * 100..(round + 1) * 100);
            let len = reader.metadata().unwrap().len();
            assert!(len <= limit, "round {round}: {len} bytes > {limit}");
        }
        let text = String::from_utf8(contents(&reader)).unwrap();
        assert!(text.ends_with("line 00001998\nline 00001999\n"), "{text}");
        let (dropped, kept) = split_notice(&text);
        // Nothing lost but what the notice counts; whole, consecutive lines after it.
        assert_eq!(dropped + kept.len() as u64, total);
        assert_eq!(console.dropped(), dropped);
        let numbers: Vec<u32> = kept
            .lines()
            .map(|l| l.strip_prefix("line ").unwrap().parse().unwrap())
            .collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{kept}");
        assert!(
            kept.len() as u64 >= limit / 2 - 14,
            "kept {} bytes",
            kept.len()
        );
    }

    #[test]
    fn output_without_newlines_is_still_bounded() {
        let limit = MIN_CONSOLE_LIMIT;
        let (mut console, reader) = bounded(limit);
        for i in 0..50_000u32 {
            console.write_all(&[b'a' + (i % 26) as u8]).unwrap();
        }
        let data = contents(&reader);
        assert!(data.len() as u64 <= limit);
        let text = String::from_utf8(data).unwrap();
        let (dropped, kept) = split_notice(&text);
        assert_eq!(dropped + kept.len() as u64, 50_000);
        // The last byte written was 'a' + 49_999 % 26.
        assert_eq!(kept.as_bytes().last(), Some(&(b'a' + (49_999 % 26) as u8)));
    }

    #[test]
    fn a_write_larger_than_the_limit_keeps_its_own_tail() {
        let limit = MIN_CONSOLE_LIMIT;
        let (mut console, reader) = bounded(limit);
        print_lines(&mut console, 0..10);
        let big: Vec<u8> = (0..3 * limit).map(|i| b'0' + (i % 10) as u8).collect();
        console.write_all(&big).unwrap();
        let data = contents(&reader);
        assert!(data.len() as u64 <= limit);
        assert!(data.ends_with(&big[big.len() - 100..]));
        let text = String::from_utf8(data).unwrap();
        let (dropped, kept) = split_notice(&text);
        assert_eq!(dropped + kept.len() as u64, 140 + 3 * limit);
    }

    #[test]
    fn a_limit_below_the_minimum_is_raised() {
        let (console, _reader) = bounded(10);
        assert_eq!(console.limit, MIN_CONSOLE_LIMIT);
    }
}
