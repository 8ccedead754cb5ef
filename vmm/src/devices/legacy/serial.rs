//! The console: a 16550A UART from rust-vmm's vm-superio (the emulation Firecracker and
//! Cloud Hypervisor share), plus an input buffer so that bytes typed before the guest's
//! driver is ready are not lost.

use std::collections::VecDeque;
use std::io::{self, Write};

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

const OFFSET_DATA: u8 = 0;
const OFFSET_IER: u8 = 1;
const IER_RECEIVED_DATA: u8 = 1;

/// Raises the UART's interrupt line through an irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Where guest console output goes.
pub type ConsoleOutput = Box<dyn Write + Send>;

/// COM1 with its pending input.
pub struct SerialConsole {
    uart: Serial<IrqTrigger, NoEvents, ConsoleOutput>,
    pending_input: VecDeque<u8>,
}

impl SerialConsole {
    /// A UART that interrupts through `irq` and writes to `out`.
    pub fn new(irq: IrqTrigger, out: ConsoleOutput) -> Self {
        Self {
            uart: Serial::new(irq, out),
            pending_input: VecDeque::new(),
        }
    }

    /// Guest read of register `offset`.
    pub fn read(&mut self, offset: u8) -> u8 {
        let value = self.uart.read(offset);
        if offset == OFFSET_DATA {
            self.feed_pending();
        }
        value
    }

    /// Guest write of register `offset`. Output errors (e.g. a closed stdout) are dropped:
    /// the guest must not stall because nobody reads its console.
    pub fn write(&mut self, offset: u8, value: u8) {
        let _ = self.uart.write(offset, value);
        if offset == OFFSET_IER {
            self.feed_pending();
        }
    }

    /// Host input for the guest (stdin).
    pub fn queue_input(&mut self, bytes: &[u8]) {
        self.pending_input.extend(bytes);
        self.feed_pending();
    }

    /// Bytes waiting for the guest to take them.
    pub fn pending_input_len(&self) -> usize {
        self.pending_input.len()
    }

    /// Moves pending input into the receive FIFO, only once the guest's driver has enabled
    /// the receive interrupt: before that, its probing reads would swallow the bytes.
    fn feed_pending(&mut self) {
        if self.uart.state().interrupt_enable & IER_RECEIVED_DATA == 0 {
            return;
        }
        while !self.pending_input.is_empty() && self.uart.fifo_capacity() > 0 {
            let (chunk, _) = self.pending_input.as_slices();
            let Ok(taken) = self.uart.enqueue_raw_bytes(chunk) else {
                return;
            };
            self.pending_input.drain(..taken);
        }
    }

    /// Flushes console output.
    pub fn flush(&mut self) {
        let _ = self.uart.writer_mut().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn console() -> (SerialConsole, Shared) {
        let out = Shared::default();
        let irq = IrqTrigger(EventFd::new(0).unwrap());
        (SerialConsole::new(irq, Box::new(out.clone())), out)
    }

    #[test]
    fn output_reaches_the_writer() {
        let (mut c, out) = console();
        for b in b"hi\n" {
            c.write(OFFSET_DATA, *b);
        }
        assert_eq!(out.0.lock().unwrap().as_slice(), b"hi\n");
    }

    #[test]
    fn input_waits_until_receive_interrupt_enabled() {
        let (mut c, _) = console();
        c.queue_input(b"ab");
        // Driver probing reads the data register before enabling interrupts.
        assert_eq!(c.read(OFFSET_DATA), 0);
        assert_eq!(c.pending_input_len(), 2);
        c.write(OFFSET_IER, IER_RECEIVED_DATA);
        assert_eq!(c.pending_input_len(), 0);
        assert_eq!(c.read(OFFSET_DATA), b'a');
        assert_eq!(c.read(OFFSET_DATA), b'b');
    }

    #[test]
    fn input_beyond_fifo_is_kept_until_read() {
        let (mut c, _) = console();
        c.write(OFFSET_IER, IER_RECEIVED_DATA);
        let input: Vec<u8> = (0..100u8).collect();
        c.queue_input(&input);
        assert_eq!(c.pending_input_len(), 100 - 64);
        let read: Vec<u8> = (0..100).map(|_| c.read(OFFSET_DATA)).collect();
        assert_eq!(read, input);
    }
}
