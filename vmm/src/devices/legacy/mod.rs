//! Legacy PC devices: the 16550 console UART and the i8042 (for its reset line).

mod i8042;
mod serial;

pub use i8042::I8042;
pub use serial::{ConsoleOutput, IrqTrigger, SerialConsole};
