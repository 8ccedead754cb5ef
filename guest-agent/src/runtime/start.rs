//! `start`: open exec.fifo for reading, which releases the blocked init into execve.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;

use super::hooks;
use super::namespaces;
use super::state::state;
use super::state_store::{self, EXEC_FIFO};
use super::validate::load_bundle_spec;
use super::{RuntimeError, Status};

/// How long the init may take to answer once the fifo is open (it is already blocked on it).
const START_TIMEOUT_MS: i32 = 10_000;

pub(crate) fn start(root: &Path, id: &str) -> Result<(), RuntimeError> {
    let _lock = state_store::lock(root, id)?;
    let mut st = state(root, id)?;
    if st.status != Status::Created {
        return Err(RuntimeError::WrongState {
            id: id.to_string(),
            status: st.status.to_string(),
            action: "start",
            needed: "created",
        });
    }
    let fifo_path = state_store::container_dir(root, id).join(EXEC_FIFO);
    let fifo = namespaces::open(&fifo_path, libc::O_RDONLY | libc::O_NONBLOCK)?;
    let pidfd = namespaces::pidfd_open(st.pid)
        .ok_or_else(|| RuntimeError::last_os("pidfd_open of the container init"))?;
    let mut fds = [
        libc::pollfd {
            fd: fifo.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: fds is a valid array of two pollfds.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, START_TIMEOUT_MS) };
    let mut byte = [0u8; 1];
    // SAFETY: fifo is ours; File takes a duplicate so `fifo` keeps its own.
    let mut file = unsafe { std::fs::File::from_raw_fd(libc::dup(fifo.as_raw_fd())) };
    let got = if n > 0 && fds[0].revents & libc::POLLIN != 0 {
        file.read(&mut byte).unwrap_or(0)
    } else {
        0
    };
    if got != 1 {
        return Err(RuntimeError::Setup(format!(
            "container {id:?} init did not take the start signal (it exited or timed out)"
        )));
    }
    std::fs::remove_file(&fifo_path).map_err(|e| RuntimeError::io("remove", fifo_path, e))?;
    st.status = Status::Running;
    state_store::save(root, &st)?;
    // The spec: a failing poststart hook is a warning; the container keeps running.
    if let Ok(spec) = load_bundle_spec(&st.bundle) {
        if let Err(e) = hooks::run("poststart", &hooks::of(spec.hooks(), "poststart"), &st) {
            eprintln!("condo-runtime: warning: {e}");
        }
    }
    Ok(())
}
