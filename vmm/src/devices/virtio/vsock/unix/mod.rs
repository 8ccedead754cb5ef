//! The Unix-socket backend of virtio-vsock.

pub mod connection;
pub mod muxer;

pub use muxer::Muxer;
