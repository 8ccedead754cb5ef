//! `-t`: a pseudo-terminal for the container's process. The runtime makes the pty inside the
//! container (its own devpts) and the agent keeps the master; here the process is marked
//! `terminal` with our window size, and our own terminal is put in raw mode while we are
//! attached (keys, Ctrl-C included, go to the container's terminal, which does the line
//! editing and signals), then restored: when the guard drops, and on a signal that ends condo.
//! While attached, a change of our window's size (SIGWINCH) is passed on to the container's
//! terminal, as docker and podman do.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, IntoRawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

use anyhow::Context;
use condo_protocol::{Client, ProcessRef};
use nix::fcntl::OFlag;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::termios::{self, SetArg, Termios};
use oci_spec::runtime::Process;

/// Size when our stdout is not a terminal: the classic 24x80.
const DEFAULT_SIZE: (u16, u16) = (24, 80);

/// Marks `process` as wanting a terminal of our window's size.
pub fn request_terminal(process: &mut Process) {
    let (rows, cols) = window_size();
    let size = oci_spec::runtime::BoxBuilder::default()
        .height(u64::from(rows))
        .width(u64::from(cols))
        .build()
        .ok();
    process.set_terminal(Some(true));
    process.set_console_size(size);
}

/// Rows and columns of our terminal (stdout, else stdin), or 24x80.
pub fn window_size() -> (u16, u16) {
    terminal_size().unwrap_or(DEFAULT_SIZE)
}

/// Rows and columns of our terminal (stdout, else stdin); None when neither is one.
fn terminal_size() -> Option<(u16, u16)> {
    for fd in [libc::STDOUT_FILENO, libc::STDIN_FILENO] {
        let mut size = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes a winsize into the valid, exclusively borrowed `size`.
        let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) };
        if rc == 0 && size.ws_row > 0 && size.ws_col > 0 {
            return Some((size.ws_row, size.ws_col));
        }
    }
    None
}

/// Write end of the pipe the SIGWINCH handler signals through (-1 until installed).
static WINCH_PIPE: AtomicI32 = AtomicI32::new(-1);

/// Passes our window's size on to `process`'s terminal now and after every SIGWINCH, on a
/// thread of its own that lives as long as condo (it sleeps on a pipe between signals).
pub fn forward_resizes(mut client: Client<UnixStream>, process: ProcessRef) -> anyhow::Result<()> {
    // Non-blocking write end: a handler never blocks on a full pipe (a pending byte already
    // says "look again").
    let (read_end, write_end) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).context("cannot make the SIGWINCH pipe")?;
    nix::fcntl::fcntl(&write_end, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
        .context("cannot make the SIGWINCH pipe non-blocking")?;
    // Kept open for the life of condo: the handler may run at any time.
    WINCH_PIPE.store(write_end.into_raw_fd(), Ordering::SeqCst);
    // SA_RESTART: our reads of stdin and the agent's sockets go on across the signal.
    let action = SigAction::new(
        SigHandler::Handler(note_window_change),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler only calls write(2), async-signal-safe, on a descriptor that stays
    // open.
    unsafe { sigaction(Signal::SIGWINCH, &action) }.context("cannot handle SIGWINCH")?;
    let mut changes = File::from(read_end);
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        // A resize between the process's start and the handler's install is sent here; the
        // same size again changes nothing in the container.
        loop {
            if let Some((rows, cols)) = terminal_size() {
                let sent = client.resize_terminal(process.clone(), rows, cols);
                // An agent's refusal is for this size; a broken connection ends forwarding.
                if matches!(&sent, Err(err) if err.agent_error().is_none()) {
                    return;
                }
            }
            match changes.read(&mut buf) {
                Ok(1..) => {}
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(0) | Err(_) => return,
            }
        }
    });
    Ok(())
}

extern "C" fn note_window_change(_signal: libc::c_int) {
    let fd = WINCH_PIPE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe and reads one byte of a valid buffer; a full
        // pipe (EAGAIN) already holds a pending change.
        unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
    }
}

/// Our stdin's terminal settings before raw mode, for the signal handler.
static SAVED: OnceLock<libc::termios> = OnceLock::new();

/// Signals that end condo with the terminal still raw unless handled.
const ENDING_SIGNALS: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
];

/// Our stdin in raw mode for as long as this lives (a no-op when stdin is not a terminal).
pub struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    /// Puts stdin in raw mode if it is a terminal.
    pub fn enter() -> anyhow::Result<RawMode> {
        let stdin = std::io::stdin();
        let fd = stdin.as_fd();
        if !nix::unistd::isatty(fd).unwrap_or(false) {
            return Ok(RawMode { saved: None });
        }
        let saved = termios::tcgetattr(fd)
            .map_err(|errno| anyhow::anyhow!("cannot read the terminal's settings: {errno}"))?;
        let _ = SAVED.set(libc::termios::from(saved.clone()));
        install_restoring_handlers();
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSADRAIN, &raw)
            .map_err(|errno| anyhow::anyhow!("cannot put the terminal in raw mode: {errno}"))?;
        Ok(RawMode { saved: Some(saved) })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let stdin = std::io::stdin();
            let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSADRAIN, saved);
        }
    }
}

/// A signal that would end condo first restores the terminal, then ends it as it would have.
fn install_restoring_handlers() {
    let action = SigAction::new(
        SigHandler::Handler(restore_and_reraise),
        SaFlags::SA_RESETHAND,
        SigSet::empty(),
    );
    for signal in ENDING_SIGNALS {
        // SAFETY: the handler only calls async-signal-safe functions (tcsetattr, raise) on
        // data that no longer changes (SAVED is set before).
        let _ = unsafe { sigaction(signal, &action) };
    }
}

extern "C" fn restore_and_reraise(signal: libc::c_int) {
    if let Some(saved) = SAVED.get() {
        // SAFETY: tcsetattr reads a valid termios; it is async-signal-safe.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSADRAIN, saved) };
    }
    // SAFETY: SA_RESETHAND put back the default action: the same signal now ends condo as
    // it would have.
    unsafe { libc::raise(signal) };
}
