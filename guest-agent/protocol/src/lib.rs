//! Wire protocol between the condo host and its guest agent (see README.md for the design).
//!
//! A connection carries frames: a u32 big-endian length, then that many bytes (at most
//! [`MAX_FRAME_LEN`]) of JSON holding an [`Envelope`]: `{"v": 1, "id": N, "body": ...}`. The
//! client sends [`Request`] bodies; the agent answers each with one [`Response`] body carrying
//! the same id. Requests on one connection are served concurrently and answered in completion
//! order, so a client may multiplex by id; [`Client`] keeps one request in flight.

pub mod client;
pub mod frame;
pub mod messages;
pub mod vsock_uds;

pub use client::{Client, ClientError};
pub use frame::{
    decode, encode, read_frame, read_message, write_message, Envelope, FrameError, MAX_FRAME_LEN,
};
pub use messages::*;

/// Version of the wire protocol; every envelope carries it and a peer refuses any other.
pub const PROTOCOL_VERSION: u32 = 1;

/// Default vsock port of the agent.
pub const DEFAULT_VSOCK_PORT: u32 = 1024;

#[cfg(test)]
mod tests;
