//! Containers with a network namespace of their own get a veth pair to the VM, routed (no
//! bridge, no NAT in the VM): the container's `eth0` holds one address of the tenant's block
//! as a /32 with its default route via 169.254.1.1, which the VM's end (`vc<N>`) holds; the VM
//! routes that /32 to `vc<N>` and forwards, and the host already routes the whole block to
//! the VM. Enabled by PID 1 when `condo.net.block=` names the block; the veth is made with one
//! rtnetlink message (the guest has no `ip` and no netlink library), the addresses and routes
//! with the ioctls of `net`.

use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Mutex, OnceLock};

use super::net::{add_route, bring_up, set_address, NetSetupError};

/// Spec annotation by which the host picks a container's address (it publishes ports to it).
pub const ADDRESS_ANNOTATION: &str = "dev.condo.network.address";
/// The VM's end of every container veth.
pub const LINK_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// First and last offsets of container addresses in the block (base+1..3 are the link's).
const FIRST: u32 = 4;

struct ContainerNet {
    block: Ipv4Addr,
    size: u32,
    /// container id -> address offset in the block.
    taken: Mutex<BTreeMap<String, u32>>,
}

static CONTAINER_NET: OnceLock<ContainerNet> = OnceLock::new();

/// Parses `ADDR/PREFIX` of `condo.net.block=`.
pub fn parse_block(text: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, prefix) = text.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok().filter(|p| (24..=29).contains(p))?;
    let size = 1u32 << (32 - u32::from(prefix));
    (u32::from(addr) % size == 0).then_some((addr, prefix))
}

/// Turns container networking on for block `block/prefix` (PID 1, once eth0 is up).
pub fn enable(block: Ipv4Addr, prefix: u8) -> io::Result<()> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1\n")?;
    let _ = CONTAINER_NET.set(ContainerNet {
        block,
        size: 1u32 << (32 - u32::from(prefix)),
        taken: Mutex::new(BTreeMap::new()),
    });
    Ok(())
}

fn net_ns_of(pid: i32) -> io::Result<std::fs::File> {
    std::fs::File::open(format!("/proc/{pid}/ns/net"))
}

/// Gives container `id` (its init is `pid`) a routed veth when it has a network namespace of
/// its own; returns its address: `requested` (from the host, which counts up from the block's
/// first container address) or the highest free one. Nothing to do (None) when networking is
/// off or the container shares the VM's network.
pub fn attach(
    id: &str,
    pid: i32,
    requested: Option<Ipv4Addr>,
) -> Result<Option<Ipv4Addr>, NetSetupError> {
    let Some(net) = CONTAINER_NET.get() else {
        return Ok(None);
    };
    let err = |what: &'static str, source: io::Error| NetSetupError {
        what,
        iface: format!("of container {id}"),
        source,
    };
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net")).map_err(|e| err("netns", e))?;
    let ours = std::fs::read_link("/proc/self/ns/net").map_err(|e| err("netns", e))?;
    if theirs == ours {
        return Ok(None);
    }
    let offset = {
        let mut taken = net.taken.lock().unwrap_or_else(|p| p.into_inner());
        let is_free = |o: &u32| !taken.values().any(|t| t == o);
        let offset = match requested {
            Some(addr) => {
                let offset = u32::from(addr).wrapping_sub(u32::from(net.block));
                if !(FIRST..net.size - 1).contains(&offset) || !is_free(&offset) {
                    let why = format!("{addr} is not a free container address of the block");
                    return Err(err("address", io::Error::other(why)));
                }
                offset
            }
            None => (FIRST..net.size - 1).rev().find(is_free).ok_or_else(|| {
                err(
                    "address",
                    io::Error::other("no free address in the tenant's block"),
                )
            })?,
        };
        taken.insert(id.to_owned(), offset);
        offset
    };
    let addr = Ipv4Addr::from(u32::from(net.block) + offset);
    let made = plumb(pid, offset, addr);
    if made.is_err() {
        detach(id);
    }
    made.map(|()| Some(addr))
}

/// Frees container `id`'s address (its veth went with its namespace).
pub fn detach(id: &str) {
    if let Some(net) = CONTAINER_NET.get() {
        net.taken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

fn plumb(pid: i32, offset: u32, addr: Ipv4Addr) -> Result<(), NetSetupError> {
    let vm_end = format!("vc{offset}");
    let err = |what: &'static str, source: io::Error| NetSetupError {
        what,
        iface: vm_end.clone(),
        source,
    };
    create_veth(&vm_end, "eth0", pid).map_err(|e| err("RTM_NEWLINK veth", e))?;
    set_address(&vm_end, LINK_GATEWAY, 32)?;
    bring_up(&vm_end)?;
    add_route(addr, 32, None, Some(&vm_end))?;
    let ns = net_ns_of(pid).map_err(|e| err("open the container's netns for", e))?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns on this short-lived thread only, with a namespace fd we own.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(err(
                        "setns into the container for",
                        io::Error::last_os_error(),
                    ));
                }
                bring_up("lo")?;
                set_address("eth0", addr, 32)?;
                bring_up("eth0")?;
                add_route(LINK_GATEWAY, 32, None, Some("eth0"))?;
                add_route(Ipv4Addr::UNSPECIFIED, 0, Some(LINK_GATEWAY), None)
            })
            .join()
            .unwrap_or_else(|_| Err(err("thread for", io::Error::other("panicked"))))
    })
}

// rtnetlink constants (linux/rtnetlink.h, if_link.h, veth.h).
const RTM_NEWLINK: u16 = 16;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_PID: u16 = 19;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFINFOMSG_LEN: usize = 16;

fn pad(buf: &mut Vec<u8>) {
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
}

fn attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = (4 + payload.len()) as u16;
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    pad(buf);
}

fn nested(buf: &mut Vec<u8>, kind: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&kind.to_ne_bytes());
    fill(buf);
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    pad(buf);
}

fn cstr(name: &str) -> Vec<u8> {
    name.bytes().chain(std::iter::once(0)).collect()
}

/// The RTM_NEWLINK request for veth `name` whose peer `peer` is made in `pid`'s netns.
pub fn veth_request(name: &str, peer: &str, pid: i32, seq: u32) -> Vec<u8> {
    let mut body = vec![0u8; IFINFOMSG_LEN]; // ifinfomsg: AF_UNSPEC, all zero
    attr(&mut body, IFLA_IFNAME, &cstr(name));
    nested(&mut body, IFLA_LINKINFO, |info| {
        attr(info, IFLA_INFO_KIND, b"veth\0");
        nested(info, IFLA_INFO_DATA, |data| {
            nested(data, VETH_INFO_PEER, |peer_msg| {
                peer_msg.extend_from_slice(&[0u8; IFINFOMSG_LEN]);
                attr(peer_msg, IFLA_IFNAME, &cstr(peer));
                attr(peer_msg, IFLA_NET_NS_PID, &(pid as u32).to_ne_bytes());
            });
        });
    });
    let mut msg = Vec::with_capacity(16 + body.len());
    msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE;
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&body);
    msg
}

fn create_veth(name: &str, peer: &str, pid: i32) -> io::Result<()> {
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let msg = veth_request(name, peer, pid, 1);
    // SAFETY: sockaddr_nl is plain data; zeroed then the family set (the kernel as peer).
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: msg and kernel are live for the call; lengths match them.
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut reply = [0u8; 1024];
    // SAFETY: reply is valid for its length.
    let got = unsafe { libc::recv(sock.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
    let got = usize::try_from(got).map_err(|_| io::Error::last_os_error())?;
    ack_result(reply.get(..got).unwrap_or(&[]))
}

/// The result in an rtnetlink ACK (an NLMSG_ERROR whose error is 0 on success).
pub fn ack_result(reply: &[u8]) -> io::Result<()> {
    let field = |at: usize| {
        reply
            .get(at..at + 2)
            .map(|b| u16::from_ne_bytes([b[0], b[1]]))
    };
    if field(4) != Some(NLMSG_ERROR) {
        return Err(io::Error::other("rtnetlink: no ACK in the reply"));
    }
    let code = reply
        .get(16..20)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| io::Error::other("rtnetlink: short ACK"))?;
    match code {
        0 => Ok(()),
        negative => Err(io::Error::from_raw_os_error(-negative)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_parse_aligned_only() {
        assert_eq!(
            parse_block("10.231.0.16/28"),
            Some((Ipv4Addr::new(10, 231, 0, 16), 28))
        );
        for bad in [
            "10.231.0.17/28",
            "10.231.0.16",
            "10.231.0.16/33",
            "x/28",
            "10.0.0.0/8",
        ] {
            assert_eq!(parse_block(bad), None, "{bad}");
        }
    }

    #[test]
    fn veth_request_layout() {
        let msg = veth_request("vc4", "eth0", 1234, 7);
        assert_eq!(msg.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(msg[0..4].try_into().unwrap()) as usize,
            msg.len()
        );
        assert_eq!(u16::from_ne_bytes([msg[4], msg[5]]), RTM_NEWLINK);
        let text = String::from_utf8_lossy(&msg);
        assert!(text.contains("vc4\0") && text.contains("veth\0") && text.contains("eth0\0"));
        assert!(msg.windows(4).any(|w| w == 1234u32.to_ne_bytes()));
    }

    #[test]
    fn acks_and_errors() {
        let mut ack = vec![0u8; 36];
        ack[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert!(ack_result(&ack).is_ok());
        ack[16..20].copy_from_slice(&(-libc::EEXIST).to_ne_bytes());
        assert_eq!(
            ack_result(&ack).unwrap_err().raw_os_error(),
            Some(libc::EEXIST)
        );
        assert!(ack_result(&[0u8; 8]).is_err());
    }
}
