//! What the device needs from its tap: one frame (with its virtio_net_hdr_v1) per call,
//! non-blocking. A trait so the hostile-guest tests can use a fake tap (and its EAGAIN).

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use crate::net::Tap;

/// A non-blocking source and sink of frames, each preceded by a 12-byte virtio_net_hdr_v1.
pub trait TapIo: Send {
    /// Reads one frame into `buf`; `WouldBlock` when none is waiting.
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one frame.
    fn write_frame(&mut self, frame: &[u8]) -> io::Result<usize>;
    /// The descriptor to wait on for incoming frames (None: nothing to wait on).
    fn event_fd(&self) -> Option<RawFd>;
}

impl TapIo for Tap {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Tap::read_frame(self, buf)
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        Tap::write_frame(self, frame)
    }

    fn event_fd(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }
}
