//! One uid (and the same gid) per tenant, from a range reserved for condo. The allocation file
//! (`<base>/uids`, lines `<tenant> <uid>`) makes the choice stable across runs: a tenant keeps
//! its uid, so files it owns stay its own; a new tenant gets the lowest free uid.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::config::validate_id;
use super::JailError;

/// The uids condo hands to tenants: `first .. first + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    pub first: u32,
    pub count: u32,
}

impl Default for UidRange {
    /// Above the usual range of regular users and of the subuid ranges tools hand out first.
    fn default() -> Self {
        Self {
            first: 900_000,
            count: 65_536,
        }
    }
}

impl UidRange {
    pub fn validate(&self) -> Result<(), JailError> {
        let end = u64::from(self.first) + u64::from(self.count);
        if self.first < 1000 || self.count == 0 || end > u64::from(u32::MAX) {
            return Err(JailError::UidAllocation(format!(
                "uid range {}+{} must start at 1000 or above, be non-empty and end below 2^32-1",
                self.first, self.count
            )));
        }
        Ok(())
    }

    fn contains(&self, uid: u32) -> bool {
        uid >= self.first && u64::from(uid) < u64::from(self.first) + u64::from(self.count)
    }
}

/// Parses the allocation file; a malformed line is an error naming it (the file is condo's own).
pub fn parse(text: &str) -> Result<Vec<(String, u32)>, JailError> {
    let mut entries = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = line.split_whitespace();
        let parsed = match (fields.next(), fields.next(), fields.next()) {
            (Some(id), Some(uid), None) => uid.parse::<u32>().ok().map(|uid| (id.to_owned(), uid)),
            _ => None,
        };
        match parsed {
            Some(entry) => entries.push(entry),
            None => {
                return Err(JailError::UidAllocation(format!(
                    "line {} of the allocation file is not `<tenant> <uid>`: {line:?}",
                    number + 1
                )))
            }
        }
    }
    Ok(entries)
}

/// The uid of `id`: its existing entry, else the lowest free uid of the range (added to
/// `entries`). Returns the uid and whether `entries` changed.
pub fn assign(
    entries: &mut Vec<(String, u32)>,
    range: UidRange,
    id: &str,
) -> Result<(u32, bool), JailError> {
    range.validate()?;
    validate_id(id)?;
    if let Some((_, uid)) = entries.iter().find(|(name, _)| name == id) {
        if !range.contains(*uid) {
            return Err(JailError::UidAllocation(format!(
                "tenant {id:?} holds uid {uid}, outside the range {}+{}",
                range.first, range.count
            )));
        }
        return Ok((*uid, false));
    }
    let mut taken: Vec<u32> = entries.iter().map(|(_, uid)| *uid).collect();
    taken.sort_unstable();
    let mut candidate = range.first;
    for uid in taken {
        if uid == candidate {
            candidate += 1;
        } else if uid > candidate {
            break;
        }
    }
    if !range.contains(candidate) {
        return Err(JailError::UidAllocation(format!(
            "every uid of the range {}+{} is taken",
            range.first, range.count
        )));
    }
    entries.push((id.to_owned(), candidate));
    Ok((candidate, true))
}

/// Allocates (or finds) the uid of tenant `id` in the allocation file at `path`, under an
/// exclusive lock so two condo processes never hand out the same uid.
pub fn allocate(path: &Path, range: UidRange, id: &str) -> Result<u32, JailError> {
    // Durable: a lost entry after a crash could hand a tenant's uid (and files) to another.
    with_locked_file(path, true, |entries| assign(entries, range, id))
}

/// Forgets tenant `id` (its uid may be handed out again).
pub fn release(path: &Path, id: &str) -> Result<(), JailError> {
    // A lost release only keeps a uid taken: no fsync on this path (it ends every anonymous run).
    with_locked_file(path, false, |entries| {
        let before = entries.len();
        entries.retain(|(name, _)| name != id);
        Ok(((), entries.len() != before))
    })
}

fn with_locked_file<T>(
    path: &Path,
    durable: bool,
    change: impl FnOnce(&mut Vec<(String, u32)>) -> Result<(T, bool), JailError>,
) -> Result<T, JailError> {
    let io_err = |what, e| JailError::io(what, path, e);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_err("open uid allocation file", e))?;
    lock(&file).map_err(|e| io_err("lock uid allocation file", e))?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| io_err("read uid allocation file", e))?;
    let mut entries = parse(&text)?;
    let (value, changed) = change(&mut entries)?;
    if changed {
        let text: String = entries
            .iter()
            .map(|(id, uid)| format!("{id} {uid}\n"))
            .collect();
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(text.as_bytes()))
            .and_then(|()| if durable { file.sync_all() } else { Ok(()) })
            .map_err(|e| io_err("write uid allocation file", e))?;
    }
    // The lock goes with the descriptor.
    Ok(value)
}

fn lock(file: &File) -> std::io::Result<()> {
    // SAFETY: flock takes a descriptor this function borrows for the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RANGE: UidRange = UidRange {
        first: 100_000,
        count: 3,
    };

    #[test]
    fn same_tenant_same_uid_new_tenant_lowest_free() {
        let mut entries = Vec::new();
        assert_eq!(assign(&mut entries, RANGE, "a").unwrap(), (100_000, true));
        assert_eq!(assign(&mut entries, RANGE, "b").unwrap(), (100_001, true));
        assert_eq!(assign(&mut entries, RANGE, "a").unwrap(), (100_000, false));
        entries.retain(|(id, _)| id != "a");
        assert_eq!(assign(&mut entries, RANGE, "c").unwrap(), (100_000, true));
        assert_eq!(assign(&mut entries, RANGE, "d").unwrap(), (100_002, true));
        let err = assign(&mut entries, RANGE, "e").unwrap_err().to_string();
        assert!(err.contains("taken"), "{err}");
    }

    #[test]
    fn refuses_bad_ranges_ids_and_lines() {
        let mut entries = Vec::new();
        let low = UidRange {
            first: 0,
            count: 10,
        };
        assert!(assign(&mut entries, low, "a").is_err());
        let wraps = UidRange {
            first: u32::MAX - 1,
            count: 10,
        };
        assert!(assign(&mut entries, wraps, "a").is_err());
        assert!(assign(&mut entries, RANGE, "Bad/Name").is_err());
        assert!(parse("a 100000\nb\n")
            .unwrap_err()
            .to_string()
            .contains("line 2"));
        assert!(parse("a x\n").is_err());
        let mut outside = vec![("a".to_owned(), 5u32)];
        assert!(assign(&mut outside, RANGE, "a").is_err());
    }

    #[test]
    fn file_keeps_allocations_across_calls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uids");
        assert_eq!(allocate(&path, RANGE, "acme").unwrap(), 100_000);
        assert_eq!(allocate(&path, RANGE, "globex").unwrap(), 100_001);
        assert_eq!(allocate(&path, RANGE, "acme").unwrap(), 100_000);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "acme 100000\nglobex 100001\n"
        );
        release(&path, "acme").unwrap();
        assert_eq!(allocate(&path, RANGE, "initech").unwrap(), 100_000);
    }
}
