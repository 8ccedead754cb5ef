//! condo's guest agent and container runtime.
//!
//! - `runtime`: creates and runs OCI containers (in a guest, or directly on a host);
//! - `agent`: PID 1 of a tenant VM, serving the host over vsock.
pub mod agent;
pub mod runtime;
