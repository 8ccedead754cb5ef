//! `delete`: remove a stopped container's cgroup and state (with force, kill it first).

use std::path::Path;

use super::devices;
use super::hooks;
use super::state::state;
use super::validate::load_bundle_spec;
use super::{cgroups, namespaces, state_store, ContainerState, RuntimeError, Status};

const KILL_TIMEOUT_MS: i32 = 10_000;

pub(crate) fn delete(root: &Path, id: &str, force: bool) -> Result<(), RuntimeError> {
    let lock = state_store::lock(root, id)?;
    let st = state(root, id)?;
    if st.status != Status::Stopped {
        if !force {
            return Err(RuntimeError::WrongState {
                id: id.to_string(),
                status: st.status.to_string(),
                action: "delete",
                needed: "stopped (or --force)",
            });
        }
        let pidfd = namespaces::pidfd_open(st.pid);
        // SAFETY: kill only sends a signal to the checked init pid.
        unsafe { libc::kill(st.pid, libc::SIGKILL) };
        if let Some(fd) = pidfd {
            if !namespaces::wait_pidfd(&fd, KILL_TIMEOUT_MS) {
                return Err(RuntimeError::Setup(format!(
                    "container {id:?} init (pid {}) did not die after SIGKILL",
                    st.pid
                )));
            }
        }
    }
    if let Some(cg) = &st.cgroup {
        cgroups::remove(cg)?;
    }
    if let Some(cg) = &st.device_cgroup {
        devices::v1_remove(cg)?;
    }
    let dir = state_store::container_dir(root, id);
    std::fs::remove_dir_all(&dir)
        .map_err(|e| RuntimeError::io("remove state directory", dir, e))?;
    drop(lock);
    // The spec: a failing poststop hook is a warning; the container is gone either way.
    if let Ok(spec) = load_bundle_spec(&st.bundle) {
        let stopped = ContainerState {
            status: Status::Stopped,
            ..st
        };
        if let Err(e) = hooks::run("poststop", &hooks::of(spec.hooks(), "poststop"), &stopped) {
            eprintln!("condo-runtime: warning: {e}");
        }
    }
    Ok(())
}
