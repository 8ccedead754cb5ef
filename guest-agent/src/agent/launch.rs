//! Starting the agent: bind the listener, start the reaper, serve. Shared by the PID 1 path
//! (settings from the kernel command line) and the host path (settings from flags).

use std::io;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;

use super::{log, reaper, serve, Agent, ContainerBackend, ServerLimits};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenOn {
    Vsock { port: u32 },
    Unix(PathBuf),
}

impl std::fmt::Display for ListenOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenOn::Vsock { port } => write!(f, "vsock port {port}"),
            ListenOn::Unix(path) => write!(f, "unix socket {}", path.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot start the reaper: {0}")]
    Reaper(#[source] io::Error),
    #[error("cannot listen on {listen}: {source}")]
    Listen {
        listen: ListenOn,
        #[source]
        source: io::Error,
    },
    #[error("serving {listen} failed: {source}")]
    Serve {
        listen: ListenOn,
        #[source]
        source: io::Error,
    },
}

/// Runs the agent until serving fails; returns why. `start_ns` is boottime_ns() at main's start.
pub fn run<B: ContainerBackend>(
    backend: B,
    bundle_dir: PathBuf,
    listen: ListenOn,
    start_ns: u64,
) -> LaunchError {
    let agent = Arc::new(Agent::new(backend, bundle_dir, start_ns));
    let reaping = Arc::clone(&agent);
    if let Err(err) = reaper::start(move |pid, status| reaping.child_exited(pid, status)) {
        return LaunchError::Reaper(err);
    }
    let limits = ServerLimits::default();
    let listen_error = |source| LaunchError::Listen {
        listen: listen.clone(),
        source,
    };
    let source = match &listen {
        ListenOn::Vsock { port } => {
            let address = vsock::VsockAddr::new(vsock::VMADDR_CID_ANY, *port);
            match vsock::VsockListener::bind(&address) {
                Ok(listener) => {
                    ready(&agent, &listen);
                    serve(listener, agent, limits)
                }
                Err(err) => return listen_error(err),
            }
        }
        ListenOn::Unix(path) => {
            if let Some(parent) = path.parent() {
                if let Err(err) = std::fs::create_dir_all(parent) {
                    return listen_error(err);
                }
            }
            // A socket file left by an earlier run would make bind fail.
            if let Err(err) = std::fs::remove_file(path) {
                if err.kind() != io::ErrorKind::NotFound {
                    return listen_error(err);
                }
            }
            match UnixListener::bind(path) {
                Ok(listener) => {
                    ready(&agent, &listen);
                    serve(listener, agent, limits)
                }
                Err(err) => return listen_error(err),
            }
        }
    };
    LaunchError::Serve { listen, source }
}

fn ready<B: ContainerBackend>(agent: &Agent<B>, listen: &ListenOn) {
    agent.mark_ready();
    // Tests and the host wait for this line on the console.
    log(format_args!("ready on {listen}"));
}
