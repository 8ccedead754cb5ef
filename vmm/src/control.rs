//! The VMM's control socket, served by its event loop: one line in, one JSON line out.
//!
//! - `status` → `{"state":"running","vcpus":N,"memory_mib":M,"uptime_ms":T}`
//! - `stop` → `{"state":"stopping"}`, then the VM ends as if the VMM got SIGTERM (exit 143).
//!
//! The socket is bound by the VMM's parent (outside the jail, mode 0600: only root talks to
//! it) and handed over as a listening descriptor, as the vsock socket is.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

/// Longest request line.
const MAX_LINE: usize = 256;

/// What a request asks, parsed (pure: unit-tested without sockets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRequest {
    Status,
    Stop,
}

/// Parses one request line.
pub fn parse_request(line: &str) -> Result<ControlRequest, String> {
    match line.trim() {
        "status" => Ok(ControlRequest::Status),
        "stop" => Ok(ControlRequest::Stop),
        other => Err(format!(
            "unknown request {:?} (status or stop)",
            other.chars().take(32).collect::<String>()
        )),
    }
}

/// The control socket's event handler.
pub struct ControlSocket {
    listener: UnixListener,
    connections: HashMap<RawFd, (UnixStream, Vec<u8>)>,
    stop_requested: Arc<AtomicBool>,
    vcpus: u8,
    memory_mib: u64,
    started: Instant,
}

impl ControlSocket {
    /// Takes ownership of the listening socket `fd`.
    ///
    /// # Safety
    /// `fd` must be a listening Unix socket owned by nobody else.
    pub unsafe fn from_listener_fd(
        fd: RawFd,
        stop_requested: Arc<AtomicBool>,
        vcpus: u8,
        memory_mib: u64,
    ) -> std::io::Result<Self> {
        // SAFETY: the caller hands over a listening socket it owns.
        let listener = unsafe { UnixListener::from_raw_fd(fd) };
        // Before the VMM thread's seccomp filter is in place (the VM is still being built).
        listener.set_nonblocking(true)?;
        Ok(ControlSocket {
            listener,
            connections: HashMap::new(),
            stop_requested,
            vcpus,
            memory_mib,
            started: Instant::now(),
        })
    }

    fn reply(&self, line: &str) -> String {
        match parse_request(line) {
            Ok(ControlRequest::Status) => format!(
                "{{\"state\":\"running\",\"vcpus\":{},\"memory_mib\":{},\"uptime_ms\":{}}}\n",
                self.vcpus,
                self.memory_mib,
                self.started.elapsed().as_millis()
            ),
            Ok(ControlRequest::Stop) => {
                self.stop_requested.store(true, Ordering::Release);
                "{\"state\":\"stopping\"}\n".to_owned()
            }
            Err(error) => format!("{{\"error\":{:?}}}\n", error),
        }
    }

    fn accept(&mut self, ops: &mut EventOps) {
        while let Some(stream) = accept_nonblocking(&self.listener) {
            let fd = stream.as_raw_fd();
            if ops.add(Events::new(&stream, EventSet::IN)).is_ok() {
                self.connections.insert(fd, (stream, Vec::new()));
            }
        }
    }

    /// Reads what a connection sent; answers and closes it once a line (or EOF) is in.
    fn serve(&mut self, fd: RawFd, ops: &mut EventOps) {
        let Some((stream, buf)) = self.connections.get_mut(&fd) else {
            return;
        };
        let mut chunk = [0u8; MAX_LINE];
        let done = match stream.read(&mut chunk) {
            Ok(0) => true,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                buf.contains(&b'\n') || buf.len() >= MAX_LINE
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                false
            }
            Err(_) => true,
        };
        if !done {
            return;
        }
        if let Some((mut stream, buf)) = self.connections.remove(&fd) {
            let _ = ops.remove(Events::new(&stream, EventSet::IN));
            let line = String::from_utf8_lossy(&buf);
            let line = line.split('\n').next().unwrap_or_default().to_owned();
            let _ = stream.write_all(self.reply(&line).as_bytes());
        }
    }
}

/// accept4 with SOCK_NONBLOCK: the VMM thread's seccomp filter has no ioctl(FIONBIO), which
/// std's set_nonblocking uses.
fn accept_nonblocking(listener: &UnixListener) -> Option<UnixStream> {
    // SAFETY: accept4 with null address arguments only returns a new descriptor (checked).
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    // SAFETY: a fresh descriptor that nothing else owns.
    (fd >= 0).then(|| UnixStream::from(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
}

impl MutEventSubscriber for ControlSocket {
    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::new(&self.listener, EventSet::IN));
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.fd() == self.listener.as_raw_fd() {
            self.accept(ops);
        } else {
            self.serve(events.fd(), ops);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_unknown_ones_are_named() {
        assert_eq!(parse_request("status\n"), Ok(ControlRequest::Status));
        assert_eq!(parse_request(" stop "), Ok(ControlRequest::Stop));
        let err = parse_request("reboot").unwrap_err();
        assert!(err.contains("\"reboot\""), "{err}");
    }

    #[test]
    fn stop_sets_the_flag_and_status_reports() {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("c.sock")).unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(listener);
        let flag = Arc::new(AtomicBool::new(false));
        // SAFETY: a fresh listening socket this test owns.
        let control = unsafe { ControlSocket::from_listener_fd(fd, flag.clone(), 2, 256) }.unwrap();
        assert!(control
            .reply("status")
            .contains("\"vcpus\":2,\"memory_mib\":256"));
        assert!(!flag.load(Ordering::Acquire));
        assert_eq!(control.reply("stop"), "{\"state\":\"stopping\"}\n");
        assert!(flag.load(Ordering::Acquire));
    }
}
