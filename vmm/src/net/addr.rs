//! The per-tenant address plan: a routed /28 per tenant out of 10.231.0.0/16, by tenant index.
//!
//! ```text
//! block  10.231.X.Y/28 = base .. base+15      (index i: base = 10.231.0.0 + 16 * i)
//! link   base/30 on the tap: host base+1, guest (VM eth0) base+2
//! rest   base+4 .. base+14: container addresses, routed by the host via the guest
//! ```
//! Routed links instead of a shared bridge: each tenant sits alone on its own layer-2 segment
//! (its tap), so ARP games cannot reach another tenant, and isolation is a matter of IP rules.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use super::NetError;

/// Base of the tenant address space.
pub const TENANT_SPACE: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 0);
/// Prefix of the tenant address space.
pub const TENANT_SPACE_PREFIX: u8 = 16;
/// Addresses per tenant (a /28).
pub const BLOCK_SIZE: u32 = 16;
/// Prefix of a tenant's block.
pub const BLOCK_PREFIX: u8 = 28;
/// Prefix of the host <-> guest link inside the block.
pub const LINK_PREFIX: u8 = 30;
/// How many tenants the space holds.
pub const MAX_TENANTS: u32 = 1 << (32 - TENANT_SPACE_PREFIX - (32 - BLOCK_PREFIX));
/// First and last container address offsets inside a block.
const FIRST_CONTAINER: u32 = 4;
const LAST_CONTAINER: u32 = 14;

/// An Ethernet MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// A random locally administered unicast MAC (for VMs given none).
    pub fn random_local() -> Mac {
        let mut bytes = [0u8; 6];
        // getrandom cannot fail for a 6-byte request once the pool is up; fall back to the clock
        // and pid, which is still unique enough for a default MAC.
        // SAFETY: the buffer is valid for 6 writable bytes.
        let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        if got != 6 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            bytes[..4].copy_from_slice(&nanos.to_le_bytes());
            bytes[4..].copy_from_slice(&(std::process::id() as u16).to_le_bytes());
        }
        bytes[0] = (bytes[0] & 0xfe) | 0x02;
        Mac(bytes)
    }

    /// Whether the address is multicast (a NIC must not have one).
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for Mac {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NetError::BadMac(s.to_owned());
        let mut bytes = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        let mac = Mac(bytes);
        if mac.is_multicast() {
            return Err(bad());
        }
        Ok(mac)
    }
}

/// Everything the host and the guest need to know about one tenant's network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantAddrs {
    /// Tenant index in the address space (0 .. MAX_TENANTS).
    pub index: u32,
    /// First address of the tenant's /28.
    pub block: Ipv4Addr,
    /// The host's end of the tap link (the guest's gateway).
    pub host: Ipv4Addr,
    /// The VM's eth0 address.
    pub guest: Ipv4Addr,
    /// The VM's MAC: fixed by the index so the host can check it without extra state.
    pub guest_mac: Mac,
    /// The tap device's name on the host.
    pub tap: String,
}

impl TenantAddrs {
    /// The plan of tenant number `index`.
    pub fn for_index(index: u32) -> Result<TenantAddrs, NetError> {
        if index >= MAX_TENANTS {
            return Err(NetError::IndexOutOfRange {
                index,
                max: MAX_TENANTS,
            });
        }
        let base = u32::from(TENANT_SPACE) + index * BLOCK_SIZE;
        let [hi, lo] = (index as u16).to_be_bytes();
        Ok(TenantAddrs {
            index,
            block: Ipv4Addr::from(base),
            host: Ipv4Addr::from(base + 1),
            guest: Ipv4Addr::from(base + 2),
            guest_mac: Mac([0x02, 0xc0, 0xd0, 0x00, hi, lo]),
            tap: format!("condo{index}"),
        })
    }

    /// The block in CIDR notation.
    pub fn block_cidr(&self) -> String {
        format!("{}/{BLOCK_PREFIX}", self.block)
    }

    /// Container address number `n` (0-based) inside the block.
    pub fn container(&self, n: u32) -> Result<Ipv4Addr, NetError> {
        let offset = FIRST_CONTAINER + n;
        if offset > LAST_CONTAINER {
            return Err(NetError::NoContainerAddress {
                n,
                max: LAST_CONTAINER - FIRST_CONTAINER + 1,
            });
        }
        Ok(Ipv4Addr::from(u32::from(self.block) + offset))
    }

    /// Whether `addr` lies in this tenant's block.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & !(BLOCK_SIZE - 1) == u32::from(self.block)
    }

    /// The guest kernel command line parameter the agent reads: `condo.net=ADDR/PREFIX,GW,DNS`.
    pub fn guest_cmdline(&self, dns: Ipv4Addr) -> String {
        format!(
            "condo.net={}/{LINK_PREFIX},{},{dns} condo.net.block={}",
            self.guest,
            self.host,
            self.block_cidr()
        )
    }
}

/// Whether `addr` lies in the tenant space.
pub fn in_tenant_space(addr: Ipv4Addr) -> bool {
    u32::from(addr) >> (32 - TENANT_SPACE_PREFIX) == u32::from(TENANT_SPACE) >> 16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_of_first_and_last_tenants() {
        let first = TenantAddrs::for_index(0).unwrap();
        assert_eq!(first.block, Ipv4Addr::new(10, 231, 0, 0));
        assert_eq!(first.host, Ipv4Addr::new(10, 231, 0, 1));
        assert_eq!(first.guest, Ipv4Addr::new(10, 231, 0, 2));
        assert_eq!(first.tap, "condo0");
        let last = TenantAddrs::for_index(MAX_TENANTS - 1).unwrap();
        assert_eq!(last.block, Ipv4Addr::new(10, 231, 255, 240));
        assert_eq!(last.guest_mac.to_string(), "02:c0:d0:00:0f:ff");
        assert!(last.tap.len() <= 15, "tap name fits IFNAMSIZ");
        let err = TenantAddrs::for_index(MAX_TENANTS).unwrap_err().to_string();
        assert!(err.contains("4096"), "{err}");
    }

    #[test]
    fn blocks_do_not_overlap_and_containers_stay_inside() {
        let a = TenantAddrs::for_index(7).unwrap();
        let b = TenantAddrs::for_index(8).unwrap();
        assert!(!a.contains(b.block) && !b.contains(a.guest));
        assert_eq!(a.container(0).unwrap(), Ipv4Addr::new(10, 231, 0, 116));
        assert!(a.contains(a.container(10).unwrap()));
        assert!(a.container(11).is_err());
        assert!(in_tenant_space(a.guest) && !in_tenant_space(Ipv4Addr::new(10, 232, 0, 1)));
    }

    #[test]
    fn mac_parsing_and_random() {
        let mac: Mac = "02:ab:cd:ef:01:23".parse().unwrap();
        assert_eq!(mac.to_string(), "02:ab:cd:ef:01:23");
        for bad in [
            "",
            "02:ab:cd:ef:01",
            "02:ab:cd:ef:01:23:45",
            "0g:00:00:00:00:00",
            "01:00:5e:00:00:01",
            "2:ab:cd:ef:01:23",
        ] {
            let err = bad.parse::<Mac>().unwrap_err().to_string();
            assert!(err.contains(bad), "{bad}: {err}");
        }
        let random = Mac::random_local();
        assert_eq!(random.0[0] & 0x03, 0x02, "local, unicast: {random}");
    }

    #[test]
    fn guest_cmdline_names_address_gateway_dns() {
        let a = TenantAddrs::for_index(1).unwrap();
        assert_eq!(
            a.guest_cmdline(Ipv4Addr::new(1, 1, 1, 1)),
            "condo.net=10.231.0.18/30,10.231.0.17,1.1.1.1 condo.net.block=10.231.0.16/28"
        );
    }
}
