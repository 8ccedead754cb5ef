//! The agent's side of a new process's stdio, made before the process: pipes for the streams
//! the client asked for, or, when the process's spec asks for a terminal, a console socket
//! over which the runtime sends the master of the pty it makes inside the container (runc's
//! console-socket protocol). With a terminal, the output (stdout and stderr, which share the
//! pty) drains from the master into the stdout log, and stdin is written to the master.

use std::fs::File;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use condo_protocol::{ErrorKind, ErrorReply, ProcessRef, StdioPipes};
use nix::sys::socket::{
    recvmsg, setsockopt, socketpair, sockopt, AddressFamily, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use nix::sys::time::TimeVal;

use super::output_log::OutputLog;
use super::processes::{PipeEnd, ProcessPipes};
use super::SpawnIo;

/// How long the runtime may take to send a terminal's master once the process exists (it is
/// sent before create or exec returns: this only bounds a runtime that broke the protocol).
const MASTER_TIMEOUT: Duration = Duration::from_secs(10);

fn internal(message: impl Into<String>) -> ErrorReply {
    ErrorReply::new(ErrorKind::Internal, message)
}

/// What is left to do once the process exists.
pub struct PendingStdio {
    pipes: ProcessPipes,
    /// The agent's end of the console socket, and whether the client writes stdin.
    console: Option<(OwnedFd, bool)>,
}

/// Prepares the stdio of `process`: a terminal when `terminal`, else the pipes in `stdio`.
pub fn prepare(
    stdio: StdioPipes,
    terminal: bool,
    process: &ProcessRef,
) -> Result<(SpawnIo, PendingStdio), ErrorReply> {
    if terminal {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|errno| internal(format!("console socket of {process}: {errno}")))?;
        let io = SpawnIo {
            terminal: Some(theirs),
            ..SpawnIo::default()
        };
        let pending = PendingStdio {
            pipes: ProcessPipes::default(),
            console: Some((ours, stdio.stdin)),
        };
        return Ok((io, pending));
    }
    let (io, pipes) = make_pipes(stdio, process)?;
    Ok((
        io,
        PendingStdio {
            pipes,
            console: None,
        },
    ))
}

impl PendingStdio {
    /// The agent's ends, once the process exists (for a terminal: its master, received now).
    pub fn finish(self, process: &ProcessRef) -> Result<ProcessPipes, ErrorReply> {
        let Some((socket, with_stdin)) = self.console else {
            return Ok(self.pipes);
        };
        let master = receive_fd(&socket, MASTER_TIMEOUT)
            .map_err(|why| internal(format!("terminal of {process}: {why}")))?;
        let master = File::from(master);
        let stdin = if with_stdin {
            let writer = master
                .try_clone()
                .map_err(|err| internal(format!("terminal of {process}: dup: {err}")))?;
            Some(shared(writer))
        } else {
            None
        };
        let resizer = master
            .try_clone()
            .map_err(|err| internal(format!("terminal of {process}: dup: {err}")))?;
        let output = OutputLog::pump(master, format!("terminal of {process}")).map_err(|err| {
            internal(format!(
                "cannot start the terminal pump of {process}: {err}"
            ))
        })?;
        Ok(ProcessPipes {
            stdin,
            stdout: Some(output),
            stderr: None,
            terminal: Some(Arc::new(resizer)),
        })
    }
}

/// Sets the window size of the terminal whose master is `master` (TIOCSWINSZ); the kernel
/// signals SIGWINCH to its foreground process group when the size changed.
pub fn set_window_size(master: &File, rows: u16, cols: u16) -> Result<(), nix::errno::Errno> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ only reads the winsize behind the valid pointer; `master` is an open
    // descriptor for the duration of the call.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    nix::errno::Errno::result(rc).map(drop)
}

/// Receives one descriptor sent with SCM_RIGHTS on `socket`, waiting at most `timeout`.
fn receive_fd(socket: &OwnedFd, timeout: Duration) -> Result<OwnedFd, String> {
    let timeval = TimeVal::new(i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX), 0);
    setsockopt(socket, sockopt::ReceiveTimeout, &timeval)
        .map_err(|errno| format!("SO_RCVTIMEO: {errno}"))?;
    let mut name = [0u8; 64];
    let mut iov = [IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!(std::os::fd::RawFd);
    let message = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|errno| format!("no pty master from the runtime: {errno}"))?;
    let mut received = None;
    let cmsgs = message
        .cmsgs()
        .map_err(|errno| format!("the runtime's message: {errno}"))?;
    for cmsg in cmsgs {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: the kernel just installed `fd` in this process for us; nothing else
                // owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                if received.is_none() {
                    received = Some(owned);
                }
            }
        }
    }
    received.ok_or_else(|| "the runtime's message carried no descriptor".to_owned())
}

fn shared(file: File) -> PipeEnd {
    Arc::new(Mutex::new(Some(file)))
}

/// Makes the pipes asked for: the process's ends go into `SpawnIo`, the agent keeps the others.
fn make_pipes(
    stdio: StdioPipes,
    process: &ProcessRef,
) -> Result<(SpawnIo, ProcessPipes), ErrorReply> {
    let pipe = || -> Result<(OwnedFd, OwnedFd), ErrorReply> {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|errno| internal(format!("pipe2 failed: {errno}")))
    };
    let mut io = SpawnIo::default();
    let mut pipes = ProcessPipes::default();
    if stdio.stdin {
        let (read, write) = pipe()?;
        io.stdin = Some(read);
        pipes.stdin = Some(shared(File::from(write)));
    }
    let pump = |fd: OwnedFd, name: &str| {
        OutputLog::pump(File::from(fd), format!("{name} of {process}"))
            .map_err(|err| internal(format!("cannot start the {name} pump of {process}: {err}")))
    };
    if stdio.stdout {
        let (read, write) = pipe()?;
        io.stdout = Some(write);
        pipes.stdout = Some(pump(read, "stdout")?);
    }
    if stdio.stderr {
        let (read, write) = pipe()?;
        io.stderr = Some(write);
        pipes.stderr = Some(pump(read, "stderr")?);
    }
    Ok((io, pipes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A connected pair of Unix stream sockets, as the runtime's console socket is.
    fn stream_pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    #[test]
    fn a_descriptor_sent_over_the_console_socket_is_received() {
        let (ours, theirs) = stream_pair();
        let (read, write) = nix::unistd::pipe().unwrap();
        let fds = [write.as_raw_fd()];
        let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
        let iov = [std::io::IoSlice::new(b"/dev/ptmx")];
        nix::sys::socket::sendmsg::<()>(theirs.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
            .unwrap();
        drop(write);
        let received = receive_fd(&ours, Duration::from_secs(5)).unwrap();
        File::from(received).write_all(b"through").unwrap();
        let mut text = String::new();
        File::from(read).read_to_string(&mut text).unwrap();
        assert_eq!(text, "through");
    }

    #[test]
    fn a_runtime_that_sends_nothing_is_an_error_not_a_hang() {
        let (ours, theirs) = stream_pair();
        drop(theirs);
        let err = receive_fd(&ours, Duration::from_secs(5)).unwrap_err();
        assert!(err.contains("no descriptor"), "{err}");
    }

    #[test]
    fn window_size_is_set_through_the_master() {
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty writes two descriptors into the valid out-pointers; the name,
        // termios and winsize arguments may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: openpty returned two fresh descriptors that nothing else owns.
        let (master, slave) = unsafe { (File::from_raw_fd(master), File::from_raw_fd(slave)) };
        set_window_size(&master, 50, 132).unwrap();
        let mut size = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes a winsize into the valid, exclusively borrowed `size`.
        let rc = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
        assert_eq!(rc, 0);
        assert_eq!((size.ws_row, size.ws_col), (50, 132));
    }
}
