//! virtio-vsock: the guest's sockets to the host, served through a Unix socket with
//! Firecracker's conventions (`CONNECT <port>\n` → `OK <host_port>\n`; guest-initiated
//! connections to port P go to `<uds>_<P>`).

pub mod packet;
