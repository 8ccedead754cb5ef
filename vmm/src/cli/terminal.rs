//! `-t`: a pseudo-terminal for the container's process. The runtime makes the pty inside the
//! container (its own devpts) and the agent keeps the master; here the process is marked
//! `terminal` with our window size, and our own terminal is put in raw mode while we are
//! attached (keys, Ctrl-C included, go to the container's terminal, which does the line
//! editing and signals), then restored: when the guard drops, and on a signal that ends condo.

use std::os::fd::AsFd;
use std::sync::OnceLock;

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
            return (size.ws_row, size.ws_col);
        }
    }
    DEFAULT_SIZE
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
