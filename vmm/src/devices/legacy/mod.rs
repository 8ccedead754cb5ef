//! Legacy PC devices: the 16550 console UART (with its bounded console file) and the i8042
//! (for its reset line).

mod console_file;
mod i8042;
mod serial;

pub use console_file::{BoundedConsoleFile, DEFAULT_CONSOLE_LIMIT, MIN_CONSOLE_LIMIT};

pub use i8042::I8042;
pub use serial::{ConsoleOutput, IrqTrigger, SerialConsole};
