//! A booted VM at run time: releases the vCPU threads, runs the main event loop (vCPU stop
//! events, exit signals, console input) and stops every vCPU thread at the end.

use std::io::{IsTerminal, Read};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, LocalFlags, SetArg, Termios};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::builder::EventSubscriber;
use crate::devices::legacy::SerialConsole;
use crate::hooks::{run_thread_hook, ThreadHook, ThreadKind};
use crate::vstate::exit::StopReason;
use crate::vstate::vcpu::VcpuMessage;
use crate::Error;

/// Signals that end the VM with exit code 128 + signal number.
const EXIT_SIGNALS: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];
/// How long vCPU threads get to run their hooks and report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to keep kicking vCPU threads out of KVM_RUN at the end.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);
const KICK_INTERVAL: Duration = Duration::from_millis(5);

/// How a VM ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmExit {
    /// The guest reset or shut down the machine.
    Reset,
    /// The guest died (triple fault, unrecoverable exit); the text says why.
    GuestDied(String),
    /// The VMM received this signal.
    Signal(i32),
}

impl VmExit {
    /// Process exit code for `condo vm run`.
    pub fn exit_code(&self) -> i32 {
        match self {
            VmExit::Reset => 0,
            VmExit::GuestDied(_) => 3,
            VmExit::Signal(n) => 128 + n,
        }
    }
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: the signal's only job is to make KVM_RUN return EINTR.
}

/// Installs the handler for the signal that kicks vCPUs out of KVM_RUN.
pub fn install_kick_handler() -> Result<(), Error> {
    register_signal_handler(SIGRTMIN(), kick_handler).map_err(|e| Error::Signals(e.to_string()))
}

/// Blocks the exit signals (in this thread and the threads it starts) and returns a
/// signalfd that receives them.
pub fn block_exit_signals() -> Result<SignalFd, Error> {
    let mut mask = SigSet::empty();
    for signal in EXIT_SIGNALS {
        mask.add(signal);
    }
    mask.thread_block()
        .map_err(|e| Error::Signals(e.to_string()))?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| Error::Signals(e.to_string()))
}

/// A started vCPU thread.
pub struct VcpuThread {
    /// The thread.
    pub handle: JoinHandle<()>,
    /// Releases it (true) or tells it to quit (false).
    pub release: Sender<bool>,
}

/// Everything the main thread needs once the VM is built.
pub struct Running {
    /// vCPU threads, Paused.
    pub threads: Vec<VcpuThread>,
    /// Their reports.
    pub events: Receiver<VcpuMessage>,
    /// Set to make the vCPU threads leave.
    pub stop: Arc<AtomicBool>,
    /// Written by a vCPU that stopped the VM.
    pub stop_evt: Arc<EventFd>,
    /// Exit signals.
    pub signals: SignalFd,
    /// The console UART.
    pub serial: Arc<Mutex<SerialConsole>>,
    /// Whether stdin feeds the console.
    pub stdin_attached: bool,
    /// Device event handlers (virtio queues and backends), served by the event loop.
    pub subscribers: Vec<EventSubscriber>,
    /// Set by the control socket's `stop`: the VM ends as if the VMM got SIGTERM.
    pub stop_requested: Arc<AtomicBool>,
}

impl Running {
    /// Releases the vCPUs after the main thread's hook, runs until the VM ends, stops all
    /// vCPU threads. On error nothing is left running. The flag says whether every vCPU
    /// thread has ended (if not, guest memory must outlive the process).
    pub fn run(mut self, hook: Option<&ThreadHook>) -> Result<(VmExit, bool), Error> {
        if let Err(e) = self
            .wait_ready()
            .and_then(|()| run_thread_hook(hook, ThreadKind::Vmm).map_err(Error::ThreadHook))
        {
            self.stop_threads();
            return Err(e);
        }
        for thread in &self.threads {
            let _ = thread.release.send(true);
        }
        let terminal = RawTerminal::enter(self.stdin_attached);
        let outcome = self.event_loop();
        drop(terminal);
        let all_stopped = self.stop_threads();
        if let Ok(mut serial) = self.serial.lock() {
            serial.flush();
        }
        outcome.map(|exit| (exit, all_stopped))
    }

    fn wait_ready(&self) -> Result<(), Error> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut ready = 0;
        while ready < self.threads.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(VcpuMessage::Ready(_)) => ready += 1,
                Ok(VcpuMessage::HookFailed(_, e)) => return Err(Error::ThreadHook(e)),
                Ok(_) => {}
                Err(_) => {
                    return Err(Error::ThreadHook(format!(
                        "vCPU threads not ready after {READY_TIMEOUT:?}"
                    )))
                }
            }
        }
        Ok(())
    }

    fn event_loop(&self) -> Result<VmExit, Error> {
        let mut manager: EventManager<EventSubscriber> =
            EventManager::new().map_err(|e| Error::EventLoop(format!("{e:?}")))?;
        for subscriber in &self.subscribers {
            manager.add_subscriber(subscriber.clone());
        }
        let main: EventSubscriber = Arc::new(Mutex::new(MainLoop {
            stop_evt: self.stop_evt.clone(),
            signals_fd: self.signals.as_raw_fd(),
            serial: self.serial.clone(),
            stdin: self.stdin_attached.then(std::io::stdin),
        }));
        manager.add_subscriber(main);
        loop {
            manager
                .run()
                .map_err(|e| Error::EventLoop(format!("{e:?}")))?;
            if let Some(signal) = self.read_signal() {
                return Ok(VmExit::Signal(signal));
            }
            if self.stop_requested.load(Ordering::Acquire) {
                return Ok(VmExit::Signal(libc::SIGTERM));
            }
            while let Ok(message) = self.events.try_recv() {
                if let VcpuMessage::Stopped(_, reason) = message {
                    return Ok(match reason {
                        StopReason::Reset => VmExit::Reset,
                        StopReason::GuestDied(why) => VmExit::GuestDied(why),
                    });
                }
            }
        }
    }

    fn read_signal(&self) -> Option<i32> {
        self.signals
            .read_signal()
            .ok()
            .flatten()
            .map(|info| info.ssi_signo as i32)
    }

    /// Makes every vCPU thread leave (kicking it out of KVM_RUN) and joins them.
    fn stop_threads(&mut self) -> bool {
        self.stop.store(true, Ordering::Release);
        for thread in &self.threads {
            let _ = thread.release.send(false);
        }
        // A thread is done once it said Finished (its last act) or has ended.
        let mut done = vec![false; self.threads.len()];
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            let running: Vec<&VcpuThread> = self
                .threads
                .iter()
                .zip(&done)
                .filter(|(t, done)| !**done && !t.handle.is_finished())
                .map(|(t, _)| t)
                .collect();
            if running.is_empty() || Instant::now() >= deadline {
                break;
            }
            for thread in running {
                let _ = thread.handle.kill(SIGRTMIN());
            }
            match self.events.recv_timeout(KICK_INTERVAL) {
                Ok(VcpuMessage::Finished(cpu) | VcpuMessage::HookFailed(cpu, _)) => {
                    if let Some(slot) = done.get_mut(usize::from(cpu)) {
                        *slot = true;
                    }
                }
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                // Every thread has dropped its sender: all have ended.
                Err(RecvTimeoutError::Disconnected) => done.fill(true),
            }
        }
        let all_done = done
            .iter()
            .zip(&self.threads)
            .all(|(d, t)| *d || t.handle.is_finished());
        if all_done {
            for thread in self.threads.drain(..) {
                let _ = thread.handle.join();
            }
        }
        all_done
    }
}

/// The main thread's event sources.
struct MainLoop {
    stop_evt: Arc<EventFd>,
    signals_fd: i32,
    serial: Arc<Mutex<SerialConsole>>,
    stdin: Option<std::io::Stdin>,
}

impl MutEventSubscriber for MainLoop {
    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::new(self.stop_evt.as_ref(), EventSet::IN));
        let _ = ops.add(Events::new_raw(self.signals_fd, EventSet::IN));
        if let Some(stdin) = &self.stdin {
            // A regular file cannot be polled: such input is not attached.
            if ops.add(Events::new(stdin, EventSet::IN)).is_err() {
                self.stdin = None;
            }
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.stop_evt.as_raw_fd() {
            let _ = self.stop_evt.read();
        } else if fd == self.signals_fd {
            // Read by the loop itself through the SignalFd.
        } else if let Some(stdin) = &mut self.stdin {
            let mut buf = [0u8; 4096];
            match stdin.lock().read(&mut buf) {
                Ok(n) if n > 0 => {
                    if let Ok(mut serial) = self.serial.lock() {
                        serial.queue_input(&buf[..n]);
                    }
                }
                _ => {
                    let _ = ops.remove(events);
                    self.stdin = None;
                }
            }
        }
    }
}

/// The terminal in raw mode (keys go to the guest) while the VM runs, except that Ctrl-C
/// still signals the VMM.
struct RawTerminal(Option<Termios>);

impl RawTerminal {
    fn enter(attached: bool) -> Self {
        let stdin = std::io::stdin();
        if !attached || !stdin.is_terminal() {
            return Self(None);
        }
        let Ok(saved) = termios::tcgetattr(&stdin) else {
            return Self(None);
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        raw.local_flags |= LocalFlags::ISIG;
        let _ = termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        Self(Some(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, saved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_cli_contract() {
        assert_eq!(VmExit::Reset.exit_code(), 0);
        assert_eq!(VmExit::GuestDied("triple fault".into()).exit_code(), 3);
        assert_eq!(VmExit::Signal(libc::SIGTERM).exit_code(), 143);
        assert_eq!(VmExit::Signal(libc::SIGINT).exit_code(), 130);
    }
}
