//! Host networking for tenants (contract C5): a tap per tenant on a routed /28, outbound NAT,
//! anti-spoofing and tenant isolation with nftables, published ports, idempotent teardown.
//!
//! - `addr`: the address plan (block, link, guest MAC, tap name) of a tenant index;
//! - `tap`: persistent taps and the VMM's attached tap descriptor;
//! - `nft`: condo's nftables table as text, one transaction per change;
//! - `ports`: `HOSTPORT:PORT[/tcp|udp]`;
//! - `host`: applies all of it to the host (or to a network namespace in tests).
//!
//! Host-wide effects, on purpose: `net.ipv4.ip_forward=1` is set (and left set: other
//! software may rely on it). Another table whose forward chain drops by default (e.g. Docker's)
//! also drops tenant traffic: accept in one nftables table does not override a drop in another.

pub mod addr;
pub mod config;
pub mod host;
pub mod nft;
pub mod ports;
pub mod tap;

use std::net::Ipv4Addr;

pub use addr::{Mac, TenantAddrs};
pub use config::NetConfig;
pub use host::NetHost;
pub use nft::Published;
pub use ports::{PortSpec, Proto};
pub use tap::Tap;

/// Why a network operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A MAC address that does not parse, or is multicast.
    #[error("MAC address {0:?}: expected six hex pairs like 02:00:00:00:00:01, unicast")]
    BadMac(String),
    /// A published port that does not parse.
    #[error("published port {spec:?}: {why}")]
    BadPort {
        /// As given.
        spec: String,
        /// What is wrong.
        why: String,
    },
    /// Tenant index beyond the address space.
    #[error("tenant network index {index}: at most {max} tenants fit in 10.231.0.0/16")]
    IndexOutOfRange {
        /// Index.
        index: u32,
        /// Limit.
        max: u32,
    },
    /// No container address left in the block.
    #[error("container address {n}: a tenant's block holds {max}")]
    NoContainerAddress {
        /// Which.
        n: u32,
        /// Limit.
        max: u32,
    },
    /// A `--net` value that does not parse.
    #[error("--net {spec:?}: {why}")]
    BadNetSpec {
        /// As given.
        spec: String,
        /// What is wrong.
        why: String,
    },
    /// A tap name the kernel would refuse.
    #[error("tap name {0:?}: 1 to 15 characters, no '/', space or NUL")]
    BadTapName(String),
    /// A tun/tap ioctl failed.
    #[error("{what} tap {name}: {source}")]
    TapIoctl {
        /// The operation.
        what: &'static str,
        /// The tap.
        name: String,
        /// OS error.
        source: std::io::Error,
    },
    /// A descriptor that is not an IFF_TAP|IFF_NO_PI|IFF_VNET_HDR tap.
    #[error("{fd}: not a tap with IFF_NO_PI and IFF_VNET_HDR (flags {flags:#x})")]
    NotATap {
        /// Which descriptor.
        fd: String,
        /// Its flags.
        flags: i32,
    },
    /// The tenant's link does not exist.
    #[error("network link {0} does not exist (make the tenant's tap first)")]
    NoSuchLink(String),
    /// A command could not be run.
    #[error("{command}: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// OS error.
        source: std::io::Error,
    },
    /// A command failed.
    #[error("{command} failed: {stderr}{}", if input.is_empty() { String::new() } else { format!("\ninput was:\n{input}") })]
    Command {
        /// The command.
        command: String,
        /// Its standard input, if any.
        input: String,
        /// Its standard error.
        stderr: String,
    },
    /// Output that does not parse.
    #[error("{what}: unexpected output: {message}")]
    Parse {
        /// Whose output.
        what: &'static str,
        /// Parser's message.
        message: String,
    },
    /// A host port already published.
    #[error("host port {spec} is already published by {owner}")]
    PortTaken {
        /// The mapping asked for.
        spec: String,
        /// Who has it.
        owner: String,
    },
    /// A published port aimed outside the tenant.
    #[error("published port target {target} is outside the tenant's block {block}")]
    TargetOutsideTenant {
        /// Target.
        target: Ipv4Addr,
        /// The tenant's block.
        block: String,
    },
}
