//! A small client of the agent for debugging and real-guest tests (`condo-agent ctl ...`):
//! connect over vsock or a Unix socket, ping, read boot timings, run a container to its end.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use condo_protocol::{
    Client, ClientError, CreateContainer, ExitStatus, OutputStream, ProcessRef, StdioPipes,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Unix(PathBuf),
    Vsock {
        cid: u32,
        port: u32,
    },
    /// A VMM's vsock Unix socket (Firecracker's `CONNECT <port>` handshake).
    VsockUds {
        path: PathBuf,
        port: u32,
    },
}

impl std::str::FromStr for Target {
    type Err = String;

    /// `unix:PATH`, `vsock:CID:PORT` or `vsock-uds:PATH[:PORT]` (port defaults to the agent's).
    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = text.strip_prefix("vsock-uds:") {
            return parse_vsock_uds(rest).ok_or_else(|| {
                format!("{text:?} is not vsock-uds:PATH[:PORT] (PORT a number, PATH not empty)")
            });
        }
        let bad =
            || format!("{text:?} is neither unix:PATH, vsock:CID:PORT nor vsock-uds:PATH[:PORT]");
        let rest = text.strip_prefix("vsock:").ok_or_else(bad)?;
        let (cid, port) = rest.split_once(':').ok_or_else(bad)?;
        Ok(Target::Vsock {
            cid: cid.parse().map_err(|_| bad())?,
            port: port.parse().map_err(|_| bad())?,
        })
    }
}

/// `PATH[:PORT]`: a trailing `:digits` is the port, so a path may itself hold colons.
fn parse_vsock_uds(rest: &str) -> Option<Target> {
    let (path, port) = match rest.rsplit_once(':') {
        Some((path, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            (path, port.parse().ok()?)
        }
        _ => (rest, condo_protocol::DEFAULT_VSOCK_PORT),
    };
    if path.is_empty() {
        return None;
    }
    Some(Target::VsockUds {
        path: PathBuf::from(path),
        port,
    })
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
            Target::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
            Target::VsockUds { path, port } => write!(f, "vsock-uds:{}:{port}", path.display()),
        }
    }
}

/// A connection to the agent, either kind.
pub enum AgentStream {
    Unix(UnixStream),
    Vsock(vsock::VsockStream),
}

impl io::Read for AgentStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            AgentStream::Unix(stream) => stream.read(buf),
            AgentStream::Vsock(stream) => stream.read(buf),
        }
    }
}

impl io::Write for AgentStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            AgentStream::Unix(stream) => stream.write(buf),
            AgentStream::Vsock(stream) => stream.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot connect to the agent at {target} within {waited:?}: {source}")]
    Connect {
        target: Target,
        waited: Duration,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot copy the container's output: {0}")]
    Output(#[source] io::Error),
    #[error("stderr reader thread failed")]
    StderrThread,
}

/// How long one vsock-uds handshake may take; the VMM answers at once unless the guest is slow.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects, retrying until `wait` has passed (the agent may still be booting).
pub fn connect(target: &Target, wait: Duration) -> Result<Client<AgentStream>, CtlError> {
    connect_stream(target, wait).map(Client::new)
}

/// A raw stream to `target` (for the bench server), retrying like [`connect`].
pub fn connect_stream(target: &Target, wait: Duration) -> Result<AgentStream, CtlError> {
    let deadline = Instant::now() + wait;
    loop {
        let attempt = match target {
            Target::Unix(path) => UnixStream::connect(path).map(AgentStream::Unix),
            Target::Vsock { cid, port } => {
                vsock::VsockStream::connect_with_cid_port(*cid, *port).map(AgentStream::Vsock)
            }
            Target::VsockUds { path, port } => {
                condo_protocol::vsock_uds::connect(path, *port, HANDSHAKE_TIMEOUT)
                    .map(AgentStream::Unix)
            }
        };
        match attempt {
            Ok(stream) => return Ok(stream),
            Err(source) if Instant::now() >= deadline => {
                return Err(CtlError::Connect {
                    target: target.clone(),
                    waited: wait,
                    source,
                })
            }
            // Retrying a refused connect: the agent is not listening yet.
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Creates, starts and waits for a container, copying its stdout and stderr to ours; deletes
/// it at the end. Returns its exit status.
pub fn run_container(target: &Target, create: CreateContainer) -> Result<ExitStatus, CtlError> {
    let id = create.container_id.clone();
    let mut client = connect(target, Duration::ZERO)?;
    client.create(CreateContainer {
        stdio: StdioPipes {
            stdin: false,
            stdout: true,
            stderr: true,
        },
        auto_remove: false,
        ..create
    })?;
    let init = ProcessRef::init(&id);
    // Stderr on a second connection so that neither stream can stall the other.
    let mut stderr_client = connect(target, Duration::ZERO)?;
    let stderr_init = init.clone();
    let stderr_copier = std::thread::spawn(move || -> Result<(), CtlError> {
        copy_stream(
            &mut stderr_client,
            &stderr_init,
            OutputStream::Stderr,
            &mut io::stderr(),
        )
    });
    let started = client.start(&id);
    let copied = started
        .map_err(CtlError::from)
        .and_then(|()| copy_stream(&mut client, &init, OutputStream::Stdout, &mut io::stdout()));
    let status = copied.and_then(|()| Ok(client.wait(init)?));
    let stderr_result = stderr_copier.join().map_err(|_| CtlError::StderrThread);
    let deleted = client.delete(&id, true);
    let status = status?;
    stderr_result??;
    deleted?;
    Ok(status)
}

fn copy_stream(
    client: &mut Client<AgentStream>,
    process: &ProcessRef,
    stream: OutputStream,
    out: &mut impl Write,
) -> Result<(), CtlError> {
    loop {
        let chunk = client.read_output(process.clone(), stream, 64 * 1024)?;
        if chunk.is_empty() {
            return Ok(());
        }
        out.write_all(&chunk).map_err(CtlError::Output)?;
        out.flush().map_err(CtlError::Output)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            "unix:/run/a.sock".parse::<Target>(),
            Ok(Target::Unix("/run/a.sock".into()))
        );
        assert_eq!(
            "vsock:3:1024".parse::<Target>(),
            Ok(Target::Vsock { cid: 3, port: 1024 })
        );
        assert_eq!(
            "vsock-uds:/run/t/vsock.sock".parse::<Target>(),
            Ok(Target::VsockUds {
                path: "/run/t/vsock.sock".into(),
                port: 1024
            })
        );
        assert_eq!(
            "vsock-uds:/run/a:b/v.sock:52".parse::<Target>(),
            Ok(Target::VsockUds {
                path: "/run/a:b/v.sock".into(),
                port: 52
            })
        );
        for bad in [
            "",
            "tcp:1",
            "vsock:3",
            "vsock:x:1",
            "vsock:3:-1",
            "vsock-uds:",
            "vsock-uds::5",
            "vsock-uds:/a:99999999999",
        ] {
            let err = bad.parse::<Target>().unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }
}
