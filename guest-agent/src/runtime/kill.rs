//! `kill`: signal the init of a created or running container.

use std::path::Path;

use super::state::state;
use super::{RuntimeError, Status};

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
