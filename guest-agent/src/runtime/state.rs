//! `state` and `list`: the stored state with the status refreshed from the live process;
//! and recording exits reported by the reaper.

use std::path::Path;

use super::namespaces::proc_start;
use super::state_store::{self, EXEC_FIFO};
use super::{cgroups, ContainerState, ExitStatus, RuntimeError, Status};

/// Whether the init recorded in `state` is still alive (same pid *and* start time, not a zombie).
pub(crate) fn init_alive(state: &ContainerState) -> bool {
    state.pid > 0
        && state.exit.is_none()
        && matches!(proc_start(state.pid), Some((start, s)) if start == state.init_start_time && s != 'Z' && s != 'X')
}

/// The status as it is now.
pub(crate) fn refresh(root: &Path, mut state: ContainerState) -> ContainerState {
    if state.status == Status::Stopped {
        return state;
    }
    state.status = if !init_alive(&state) {
        Status::Stopped
    } else if state_store::container_dir(root, &state.id)
        .join(EXEC_FIFO)
        .exists()
    {
        Status::Created
    } else {
        Status::Running
    };
    state
}

pub(crate) fn state(root: &Path, id: &str) -> Result<ContainerState, RuntimeError> {
    Ok(refresh(root, state_store::load(root, id)?))
}

pub(crate) fn list(root: &Path) -> Result<Vec<ContainerState>, RuntimeError> {
    let mut out = Vec::new();
    for id in state_store::ids(root)? {
        if let Ok(s) = state(root, &id) {
            out.push(s);
        }
    }
    Ok(out)
}

/// Records the exit of `pid`; `known` is the container id when the caller already knows it.
pub(crate) fn record_exit(
    root: &Path,
    pid: i32,
    status: ExitStatus,
    known: Option<String>,
) -> Option<String> {
    let states: Vec<ContainerState> = match &known {
        Some(id) => state_store::load(root, id).ok().into_iter().collect(),
        None => state_store::ids(root)
            .ok()?
            .iter()
            .filter_map(|id| state_store::load(root, id).ok())
            .filter(|s| s.pid == pid)
            .collect(),
    };
    let Some(found) = states.into_iter().next() else {
        return known;
    };
    let Ok(_lock) = state_store::lock(root, &found.id) else {
        return Some(found.id);
    };
    // Re-read under the lock: `start` may have saved in between.
    let Ok(mut state) = state_store::load(root, &found.id) else {
        return Some(found.id);
    };
    if state.pid == pid && state.exit.is_none() {
        let oom = status.signal == Some(libc::SIGKILL)
            && state.cgroup.as_deref().is_some_and(cgroups::oom_killed);
        state.exit = Some(ExitStatus {
            oom_killed: oom,
            ..status
        });
        state.status = Status::Stopped;
        let _ = state_store::save(root, &state);
    }
    Some(state.id)
}
