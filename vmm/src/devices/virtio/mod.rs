//! virtio devices (the transport lands with issue-virtio).

pub mod vsock;
