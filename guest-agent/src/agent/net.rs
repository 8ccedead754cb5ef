//! The guest's network as the host planned it: `condo.net=ADDR/PREFIX,GW[,DNS]` on the kernel
//! command line (condo_vmm::net::TenantAddrs::guest_cmdline writes it). PID 1 brings `lo` and
//! `eth0` up, gives eth0 its address, adds the default route and writes /etc/resolv.conf.
//! Through ioctls on an AF_INET socket: the guest kernel has no AF_PACKET, and four ioctls
//! need no netlink library.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// The guest's interface settings from `condo.net=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetBoot {
    /// eth0's address.
    pub addr: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// The default gateway (the host's end of the tap).
    pub gateway: Ipv4Addr,
    /// Name server for /etc/resolv.conf.
    pub dns: Option<Ipv4Addr>,
}

impl std::str::FromStr for NetBoot {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split(',');
        let cidr = parts.next().ok_or("expected ADDR/PREFIX,GW[,DNS]")?;
        let (addr, prefix) = cidr
            .split_once('/')
            .ok_or("expected ADDR/PREFIX,GW[,DNS]")?;
        let addr = addr.parse().map_err(|_| "the address is not IPv4")?;
        let prefix = match prefix.parse::<u8>() {
            Ok(p @ 1..=32) => p,
            _ => return Err("the prefix must be 1 to 32"),
        };
        let gateway = parts
            .next()
            .ok_or("expected ADDR/PREFIX,GW[,DNS]")?
            .parse()
            .map_err(|_| "the gateway is not IPv4")?;
        let dns = match parts.next() {
            None | Some("") => None,
            Some(text) => Some(text.parse().map_err(|_| "the name server is not IPv4")?),
        };
        if parts.next().is_some() {
            return Err("expected ADDR/PREFIX,GW[,DNS]");
        }
        Ok(NetBoot {
            addr,
            prefix,
            gateway,
            dns,
        })
    }
}

/// A step of the network setup that failed.
#[derive(Debug, thiserror::Error)]
#[error("network setup: {what} {iface}: {source}")]
pub struct NetSetupError {
    /// The step.
    pub what: &'static str,
    /// The interface.
    pub iface: String,
    /// OS error.
    pub source: io::Error,
}

fn inet_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; sockaddr is plain data.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ifreq(iface: &str) -> Result<libc::ifreq, NetSetupError> {
    if iface.is_empty() || iface.len() >= libc::IFNAMSIZ {
        return Err(NetSetupError {
            what: "interface name",
            iface: iface.into(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        });
    }
    // SAFETY: ifreq is plain data; all zeroes is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

/// `arg` is an ifreq or an RtEntry, as `request` expects.
fn ioctl<T>(
    sock: &OwnedFd,
    request: libc::Ioctl,
    arg: &mut T,
    what: &'static str,
    iface: &str,
) -> Result<(), NetSetupError> {
    let ptr = (arg as *mut T).cast::<libc::c_void>();
    // SAFETY: `ptr` points to a live ifreq or rtentry, as `request` expects.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request, ptr) } < 0 {
        return Err(NetSetupError {
            what,
            iface: iface.into(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Sets IFF_UP on `iface`.
pub fn bring_up(iface: &str) -> Result<(), NetSetupError> {
    let sock = inet_socket().map_err(|source| NetSetupError {
        what: "socket for",
        iface: iface.into(),
        source,
    })?;
    let mut req = ifreq(iface)?;
    ioctl(&sock, libc::SIOCGIFFLAGS, &mut req, "SIOCGIFFLAGS", iface)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    ioctl(
        &sock,
        libc::SIOCSIFFLAGS,
        &mut req,
        "SIOCSIFFLAGS (up)",
        iface,
    )
}

/// The kernel's struct rtentry (x86_64 layout); the libc crate has it only for musl.
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

const RTF_UP: libc::c_ushort = 0x0001;
const RTF_GATEWAY: libc::c_ushort = 0x0002;
const RTF_HOST: libc::c_ushort = 0x0004;

/// Configures `iface` as `net` says, with `lo` up too.
pub fn configure(iface: &str, net: &NetBoot) -> Result<(), NetSetupError> {
    bring_up("lo")?;
    set_address(iface, net.addr, net.prefix)?;
    bring_up(iface)?;
    add_route(Ipv4Addr::UNSPECIFIED, 0, Some(net.gateway), None)
}

/// Gives `iface` address `addr/prefix`.
pub fn set_address(iface: &str, addr: Ipv4Addr, prefix: u8) -> Result<(), NetSetupError> {
    let sock = inet_socket().map_err(|source| NetSetupError {
        what: "socket for",
        iface: iface.into(),
        source,
    })?;
    let mut req = ifreq(iface)?;
    req.ifr_ifru.ifru_addr = sockaddr_in(addr);
    ioctl(&sock, libc::SIOCSIFADDR, &mut req, "SIOCSIFADDR", iface)?;
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    req.ifr_ifru.ifru_netmask = sockaddr_in(Ipv4Addr::from(mask));
    ioctl(
        &sock,
        libc::SIOCSIFNETMASK,
        &mut req,
        "SIOCSIFNETMASK",
        iface,
    )
}

/// Adds a route to `dst/prefix` via `gateway`, or on link `dev` when there is no gateway.
pub fn add_route(
    dst: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
    dev: Option<&str>,
) -> Result<(), NetSetupError> {
    let shown = dev.unwrap_or("(default)").to_owned();
    let sock = inet_socket().map_err(|source| NetSetupError {
        what: "socket for a route on",
        iface: shown.clone(),
        source,
    })?;
    let mut dev_name: Vec<u8> = dev
        .unwrap_or("")
        .bytes()
        .chain(std::iter::once(0))
        .collect();
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    let mut flags = RTF_UP;
    if gateway.is_some() {
        flags |= RTF_GATEWAY;
    }
    if prefix == 32 {
        flags |= RTF_HOST;
    }
    let mut route = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr_in(dst),
        rt_gateway: sockaddr_in(gateway.unwrap_or(Ipv4Addr::UNSPECIFIED)),
        rt_genmask: sockaddr_in(Ipv4Addr::from(mask)),
        rt_flags: flags,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: if dev.is_some() {
            dev_name.as_mut_ptr().cast()
        } else {
            std::ptr::null_mut()
        },
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    ioctl(&sock, libc::SIOCADDRT, &mut route, "SIOCADDRT", &shown)
}

/// Writes `resolv` (e.g. /etc/resolv.conf) naming `dns`.
pub fn write_resolv_conf(resolv: &Path, dns: Ipv4Addr) -> io::Result<()> {
    if let Some(dir) = resolv.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(resolv, format!("nameserver {dns}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_condo_net() {
        let net: NetBoot = "10.231.0.18/30,10.231.0.17,1.1.1.1".parse().unwrap();
        assert_eq!(net.addr, Ipv4Addr::new(10, 231, 0, 18));
        assert_eq!(
            (net.prefix, net.gateway),
            (30, Ipv4Addr::new(10, 231, 0, 17))
        );
        assert_eq!(net.dns, Some(Ipv4Addr::new(1, 1, 1, 1)));
        let net: NetBoot = "10.0.0.2/24,10.0.0.1".parse().unwrap();
        assert_eq!(net.dns, None);
        for bad in [
            "",
            "10.0.0.2",
            "10.0.0.2/33,10.0.0.1",
            "10.0.0.2/0,10.0.0.1",
            "x/24,10.0.0.1",
            "10.0.0.2/24,gw",
            "10.0.0.2/24,10.0.0.1,dns",
            "10.0.0.2/24,10.0.0.1,1.1.1.1,extra",
        ] {
            assert!(bad.parse::<NetBoot>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rtentry_has_the_kernels_size() {
        assert_eq!(std::mem::size_of::<RtEntry>(), 120);
    }

    #[test]
    fn writes_resolv_conf() {
        let dir = std::env::temp_dir().join(format!("condo-resolv-{}", std::process::id()));
        let path = dir.join("etc/resolv.conf");
        write_resolv_conf(&path, Ipv4Addr::new(9, 9, 9, 9)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "nameserver 9.9.9.9\n"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
