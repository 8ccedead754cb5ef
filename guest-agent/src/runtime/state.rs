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

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(root: &Path, id: &str, pid: i32) -> ContainerState {
        let state = ContainerState {
            oci_version: "1.0.2".into(),
            id: id.into(),
            status: Status::Running,
            pid,
            bundle: "/b".into(),
            annotations: Default::default(),
            created: state_store::now_rfc3339(),
            cgroup: None,
            device_cgroup: None,
            init_start_time: 1,
            exit: None,
        };
        std::fs::create_dir_all(state_store::container_dir(root, id)).unwrap();
        state_store::save(root, &state).unwrap();
        state
    }

    #[test]
    fn exits_are_recorded_once_and_found_by_pid() {
        let root = std::env::temp_dir().join(format!("condo-state-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        stored(&root, "a", 4_000_001);
        stored(&root, "b", 4_000_002);
        let killed = ExitStatus {
            code: None,
            signal: Some(9),
            oom_killed: false,
        };
        assert_eq!(
            record_exit(&root, 4_000_002, killed, None),
            Some("b".into())
        );
        let b = state(&root, "b").unwrap();
        assert_eq!(b.status, Status::Stopped);
        assert_eq!(b.exit, Some(killed));
        // A second report (e.g. a reused pid) does not overwrite the first.
        let later = ExitStatus {
            code: Some(0),
            signal: None,
            oom_killed: false,
        };
        assert_eq!(record_exit(&root, 4_000_002, later, None), Some("b".into()));
        assert_eq!(state(&root, "b").unwrap().exit, Some(killed));
        // Unknown pids belong to no container; a known exec'd pid keeps its container.
        assert_eq!(record_exit(&root, 4_000_003, later, None), None);
        assert_eq!(
            record_exit(&root, 4_000_004, later, Some("a".into())),
            Some("a".into())
        );
        assert_eq!(state_store::load(&root, "a").unwrap().exit, None);
        // A pid that is not alive (or not the recorded process) reads as stopped.
        assert_eq!(state(&root, "a").unwrap().status, Status::Stopped);
        assert_eq!(list(&root).unwrap().len(), 2);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
