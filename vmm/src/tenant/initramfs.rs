//! The guest's initramfs: the static condo-agent as /init, plus /dev/console so that the
//! kernel hands init a console. Written as an uncompressed newc cpio archive (the kernel always
//! reads those), cached under `${CONDO_CACHE:-/var/cache/condo}/initramfs/` by the agent's
//! size and modification time.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{io_error, Result, TenantError};

/// `${CONDO_CACHE:-/var/cache/condo}`.
fn cache_dir() -> PathBuf {
    std::env::var_os("CONDO_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/condo"))
}

/// The initramfs for `agent` (built once, then taken from the cache).
pub fn agent_initramfs(agent: &Path) -> Result<PathBuf> {
    let meta = fs::metadata(agent).map_err(io_error("cannot read the agent", agent))?;
    let bytes = fs::read(agent).map_err(io_error("cannot read the agent", agent))?;
    if has_interpreter(&bytes) {
        return Err(TenantError::Invalid(format!(
            "{} is linked dynamically; the guest needs a static condo-agent \
             (RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release \
             --target x86_64-unknown-linux-gnu, or set CONDO_AGENT)",
            agent.display()
        )));
    }
    let dir = cache_dir().join("initramfs");
    let out = dir.join(format!(
        "agent-{}-{}.cpio",
        meta.size(),
        meta.mtime_nsec() + meta.mtime() * 1_000_000_000
    ));
    if out.exists() {
        return Ok(out);
    }
    fs::create_dir_all(&dir).map_err(io_error("cannot create", &dir))?;
    let tmp = dir.join(format!(".tmp-{}", std::process::id()));
    fs::write(&tmp, newc_archive(&bytes)).map_err(io_error("cannot write", &tmp))?;
    fs::rename(&tmp, &out).map_err(io_error("cannot rename into", &out))?;
    Ok(out)
}

/// An ELF with a PT_INTERP program header is dynamically linked.
fn has_interpreter(elf: &[u8]) -> bool {
    let read_u16 = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let read_u32 = |at: usize| {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let read_u64 = |at: usize| {
        elf.get(at..at + 8).map(|b| {
            let mut word = [0u8; 8];
            word.copy_from_slice(b);
            u64::from_le_bytes(word)
        })
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) =
        (read_u64(0x20), read_u16(0x36), read_u16(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).any(|i| {
        let at = usize::try_from(phoff).unwrap_or(usize::MAX) + i * usize::from(phentsize);
        read_u32(at) == Some(3) // PT_INTERP
    })
}

struct Entry<'a> {
    name: &'a str,
    mode: u32,
    rdev: (u32, u32),
    data: &'a [u8],
}

fn newc_archive(agent: &[u8]) -> Vec<u8> {
    let entries = [
        Entry {
            name: "dev",
            mode: 0o040755,
            rdev: (0, 0),
            data: &[],
        },
        Entry {
            name: "dev/console",
            mode: 0o020600,
            rdev: (5, 1),
            data: &[],
        },
        Entry {
            name: "init",
            mode: 0o100755,
            rdev: (0, 0),
            data: agent,
        },
        Entry {
            name: "TRAILER!!!",
            mode: 0,
            rdev: (0, 0),
            data: &[],
        },
    ];
    let mut out = Vec::new();
    for (ino, entry) in entries.iter().enumerate() {
        let name_len = entry.name.len() + 1;
        let _ = write!(
            out,
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            ino + 1,
            entry.mode,
            0,
            0,
            1,
            0,
            entry.data.len(),
            0,
            0,
            entry.rdev.0,
            entry.rdev.1,
            name_len,
            0
        );
        out.extend_from_slice(entry.name.as_bytes());
        out.push(0);
        pad4(&mut out);
        out.extend_from_slice(entry.data);
        pad4(&mut out);
    }
    out
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_is_newc_with_aligned_entries() {
        let archive = newc_archive(b"#!agent");
        assert!(archive.starts_with(b"070701"));
        assert_eq!(archive.len() % 4, 0);
        let text = String::from_utf8_lossy(&archive);
        assert!(
            text.contains("dev/console") && text.contains("init") && text.contains("TRAILER!!!")
        );
    }

    #[test]
    fn garbage_is_not_a_dynamic_elf() {
        assert!(!has_interpreter(b"not an elf"));
    }
}
