//! `kill`: signal the init of a created or running container.

use std::path::Path;

use super::state::state;
use super::{RuntimeError, Status};

/// Signals every process of the container (its cgroup's members), not only the init.
pub(crate) fn kill_all(root: &Path, id: &str, signal: i32) -> Result<(), RuntimeError> {
    let st = state(root, id)?;
    let Some(cg) = st.cgroup.as_ref().or(st.device_cgroup.as_ref()) else {
        return kill(root, id, signal);
    };
    let procs = cg.join("cgroup.procs");
    let text = std::fs::read_to_string(&procs).map_err(|e| RuntimeError::io("read", procs, e))?;
    for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        // SAFETY: kill only sends a signal; a process gone meanwhile gives ESRCH, ignored.
        unsafe { libc::kill(pid, signal) };
    }
    Ok(())
}

pub(crate) fn kill(root: &Path, id: &str, signal: i32) -> Result<(), RuntimeError> {
    let st = state(root, id)?;
    if st.status == Status::Stopped {
        return Err(RuntimeError::WrongState {
            id: id.to_string(),
            status: st.status.to_string(),
            action: "kill",
            needed: "created or running",
        });
    }
    if !(1..=64).contains(&signal) {
        return Err(RuntimeError::spec(
            "signal",
            format!("{signal} is not a signal number"),
        ));
    }
    // SAFETY: kill only sends a signal; pid and start time were checked by `state`.
    if unsafe { libc::kill(st.pid, signal) } < 0 {
        return Err(RuntimeError::last_os("kill"));
    }
    Ok(())
}
