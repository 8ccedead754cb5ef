//! On-disk state of containers: `root/<id>/state.json` and the `exec.fifo` the init blocks on.

use std::path::{Path, PathBuf};

use super::{ContainerState, RuntimeError};

pub(crate) const STATE_FILE: &str = "state.json";
pub(crate) const EXEC_FIFO: &str = "exec.fifo";

/// Container ids become directory and cgroup names: keep them to a safe alphabet.
pub(crate) fn validate_id(id: &str) -> Result<(), RuntimeError> {
    let invalid = |reason| {
        Err(RuntimeError::InvalidId {
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() {
        return invalid("empty");
    }
    if id.len() > 128 {
        return invalid("longer than 128 bytes");
    }
    if id == "." || id == ".." {
        return invalid("a path component");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'))
    {
        return invalid("only [A-Za-z0-9._+-] are allowed");
    }
    Ok(())
}

pub(crate) fn container_dir(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}

/// An exclusive flock(2) on a container's state directory, held while its state is read,
/// changed and written (start vs a concurrent record_exit, CLI vs agent).
#[derive(Debug)]
pub(crate) struct StateLock(#[allow(dead_code)] std::fs::File);

pub(crate) fn lock(root: &Path, id: &str) -> Result<StateLock, RuntimeError> {
    validate_id(id)?;
    let dir = container_dir(root, id);
    let file = match std::fs::File::open(&dir) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RuntimeError::NotFound(id.to_string()))
        }
        Err(e) => return Err(RuntimeError::io("open state directory", dir, e)),
    };
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) } == 0 {
            return Ok(StateLock(file));
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(RuntimeError::io("lock state directory", dir, err));
        }
    }
}

pub(crate) fn load(root: &Path, id: &str) -> Result<ContainerState, RuntimeError> {
    validate_id(id)?;
    let path = container_dir(root, id).join(STATE_FILE);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RuntimeError::NotFound(id.to_string()))
        }
        Err(e) => return Err(RuntimeError::io("read state", path, e)),
    };
    serde_json::from_slice(&text).map_err(|e| RuntimeError::CorruptState {
        id: id.to_string(),
        reason: format!("{}: {e}", path.display()),
    })
}

/// Writes the state atomically (temporary file + rename) so readers never see half of it.
pub(crate) fn save(root: &Path, state: &ContainerState) -> Result<(), RuntimeError> {
    let dir = container_dir(root, &state.id);
    let tmp = dir.join(".state.json.tmp");
    let text = serde_json::to_vec_pretty(state).map_err(|e| RuntimeError::CorruptState {
        id: state.id.clone(),
        reason: e.to_string(),
    })?;
    std::fs::write(&tmp, text).map_err(|e| RuntimeError::io("write state", &tmp, e))?;
    let path = dir.join(STATE_FILE);
    std::fs::rename(&tmp, &path).map_err(|e| RuntimeError::io("write state", path, e))
}

/// Ids of all containers that have a state file.
pub(crate) fn ids(root: &Path) -> Result<Vec<String>, RuntimeError> {
    let entries =
        std::fs::read_dir(root).map_err(|e| RuntimeError::io("list state root", root, e))?;
    let mut ids: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join(STATE_FILE).exists())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    ids.sort();
    Ok(ids)
}

/// Now as RFC 3339 UTC (no chrono dependency for one timestamp).
pub(crate) fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(validate_id("web-1.a_b+c").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(129)] {
            let err = validate_id(bad).unwrap_err().to_string();
            assert!(err.contains("invalid container id"), "{bad}: {err}");
        }
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
