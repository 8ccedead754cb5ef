//! A tenant's network (`condo tenant create --net`, `condo run -p`): its index in the address
//! plan (one number per tenant name, file-locked, in `${CONDO_RUN_DIR}/net-indexes`), its tap
//! and rules through condo_vmm::net, and its published ports (`ports.json` in its run
//! directory, one entry per container port; the host's rules are rebuilt from it).

use std::fs::File;
use std::net::Ipv4Addr;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::{io_error, run_root, Result, Tenant, TenantError};
use crate::jail::uid_alloc::{self, UidRange};
use crate::net::{NetHost, PortSpec, Published, TenantAddrs};

/// The allocation file keeps numbers from 1000 up (its format's floor): index = number - 1000.
const INDEX_BASE: u32 = 1000;

/// A tenant's network as config.json records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantNet {
    /// Index in the address plan (`condo_vmm::net::TenantAddrs::for_index`).
    pub index: u32,
    /// Name server the guest is told to use.
    pub dns: Ipv4Addr,
}

impl TenantNet {
    /// The addresses, MAC and tap of this index.
    pub fn addrs(&self) -> Result<TenantAddrs> {
        Ok(TenantAddrs::for_index(self.index)?)
    }
}

/// One published port of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRecord {
    /// The container.
    pub container: String,
    /// `HOSTPORT:PORT/PROTO`.
    pub spec: String,
    /// Where it goes: the container's own address, or (none) the guest's.
    #[serde(default)]
    pub target: Option<Ipv4Addr>,
}

/// Spec annotation by which condo picks the address of a container with a network namespace
/// of its own (the agent's `container_net::ADDRESS_ANNOTATION`).
pub const ADDRESS_ANNOTATION: &str = "dev.condo.network.address";

fn indexes_file() -> std::path::PathBuf {
    run_root().join("net-indexes")
}

/// The tenant's index: the one it has, or the lowest free one.
pub fn allocate_index(name: &str) -> Result<u32> {
    std::fs::create_dir_all(run_root()).map_err(io_error("cannot create", &run_root()))?;
    let range = UidRange {
        first: INDEX_BASE,
        count: crate::net::addr::MAX_TENANTS,
    };
    uid_alloc::allocate(&indexes_file(), range, name)
        .map(|n| n - INDEX_BASE)
        .map_err(|e| TenantError::Invalid(format!("tenant {name:?}: network index: {e}")))
}

/// Makes the tenant's tap and rules.
pub fn up(net: &TenantNet) -> Result<TenantAddrs> {
    let addrs = net.addrs()?;
    NetHost::host().up(&addrs, None)?;
    Ok(addrs)
}

/// Removes the tenant's tap, rules and ports, and frees its index; nothing there is fine.
pub fn down(name: &str, net: &TenantNet) -> Result<()> {
    NetHost::host().remove_tenant(&net.addrs()?)?;
    uid_alloc::release(&indexes_file(), name)
        .map_err(|e| TenantError::Invalid(format!("tenant {name:?}: network index: {e}")))
}

fn read_ports(tenant: &Tenant) -> Result<Vec<PortRecord>> {
    let path = tenant.path("ports.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|source| TenantError::BadConfig {
            name: tenant.name.clone(),
            path,
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_error("cannot read", &path)(e)),
    }
}

/// Makes `specs` the published ports of `container` (none: unpublish it), to `target` (the
/// container's own address) or the guest's (it shares the VM's network), and rebuilds the
/// host's rules.
pub fn publish(
    tenant: &Tenant,
    container: &str,
    specs: &[PortSpec],
    target: Option<Ipv4Addr>,
) -> Result<()> {
    let config = tenant.config()?;
    let Some(net) = config.net else {
        if specs.is_empty() {
            return Ok(());
        }
        return Err(TenantError::Invalid(format!(
            "tenant {:?} has no network: create it with `condo tenant create --net`",
            tenant.name
        )));
    };
    let addrs = net.addrs()?;
    let _lock = lock_net_state(tenant)?;
    let mut records = read_ports(tenant)?;
    records.retain(|r| r.container != container);
    records.extend(specs.iter().map(|spec| PortRecord {
        container: container.to_owned(),
        spec: spec.to_string(),
        target,
    }));
    let published = records
        .iter()
        .map(|r| {
            Ok(Published {
                spec: r.spec.parse()?,
                target: r.target.unwrap_or(addrs.guest),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    NetHost::host().set_ports(&addrs, &published)?;
    let path = tenant.path("ports.json");
    let text = serde_json::to_string_pretty(&records).unwrap_or_default();
    std::fs::write(&path, text).map_err(io_error("cannot write", &path))
}

/// The address of `container` (network namespace of its own) in a tenant with a network: the
/// lowest free container address, kept in `addresses.json` until [`release_address`]. The
/// agent hands out addresses it is not told from the top of the block, so they do not meet.
pub fn assign_address(tenant: &Tenant, container: &str) -> Result<Option<Ipv4Addr>> {
    let Some(net) = tenant.config()?.net else {
        return Ok(None);
    };
    let addrs = net.addrs()?;
    let _lock = lock_net_state(tenant)?;
    let mut taken = read_addresses(tenant)?;
    let free = (0..)
        .map_while(|n| addrs.container(n).ok())
        .find(|a| !taken.values().any(|t| t == a));
    let addr = free.ok_or_else(|| {
        TenantError::Invalid(format!(
            "tenant {:?}: no free container address in {}",
            tenant.name,
            addrs.block_cidr()
        ))
    })?;
    taken.insert(container.to_owned(), addr);
    write_addresses(tenant, &taken)?;
    Ok(Some(addr))
}

/// Frees `container`'s address.
pub fn release_address(tenant: &Tenant, container: &str) -> Result<()> {
    let _lock = lock_net_state(tenant)?;
    let mut taken = read_addresses(tenant)?;
    if taken.remove(container).is_some() {
        write_addresses(tenant, &taken)?;
    }
    Ok(())
}

/// Held while `ports.json` or `addresses.json` is read, changed and written: two `condo run`
/// in one tenant at once must not hand out one address twice or lose a published port.
fn lock_net_state(tenant: &Tenant) -> Result<Flock<File>> {
    let path = tenant.path("net.lock");
    let file = File::options()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_error("cannot open", &path))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| io_error("cannot lock", &path)(errno.into()))
}

type Addresses = std::collections::BTreeMap<String, Ipv4Addr>;

fn read_addresses(tenant: &Tenant) -> Result<Addresses> {
    let path = tenant.path("addresses.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|source| TenantError::BadConfig {
            name: tenant.name.clone(),
            path,
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Addresses::new()),
        Err(e) => Err(io_error("cannot read", &path)(e)),
    }
}

fn write_addresses(tenant: &Tenant, taken: &Addresses) -> Result<()> {
    let path = tenant.path("addresses.json");
    let text = serde_json::to_string_pretty(taken).unwrap_or_default();
    std::fs::write(&path, text).map_err(io_error("cannot write", &path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::{Isolation, TenantConfig};

    fn tenant_with_net(dir: &std::path::Path) -> Tenant {
        let tenant = Tenant {
            name: "acme".into(),
            dir: dir.to_path_buf(),
        };
        let config = TenantConfig {
            name: "acme".into(),
            isolation: Isolation::Vm,
            vcpus: 1,
            memory_mib: 128,
            kernel: None,
            initrd: None,
            images: vec![],
            net: Some(TenantNet {
                index: 5,
                dns: Ipv4Addr::new(192, 0, 2, 53),
            }),
            console_limit: None,
            created_unix: 0,
        };
        tenant.write_config(&config).unwrap();
        tenant
    }

    #[test]
    fn concurrent_runs_get_distinct_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let tenant = tenant_with_net(dir.path());
        let names: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
        let got: Vec<Ipv4Addr> = std::thread::scope(|s| {
            let handles: Vec<_> = names
                .iter()
                .map(|name| s.spawn(|| assign_address(&tenant, name).unwrap().unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let distinct: std::collections::BTreeSet<_> = got.iter().collect();
        assert_eq!(
            distinct.len(),
            names.len(),
            "addresses handed out twice: {got:?}"
        );
        // All of them were recorded, and releasing one frees exactly it.
        assert_eq!(read_addresses(&tenant).unwrap().len(), names.len());
        release_address(&tenant, "c3").unwrap();
        let again = assign_address(&tenant, "c9").unwrap().unwrap();
        assert_eq!(
            again, got[3],
            "the lowest free address is the one c3 gave back"
        );
        assert!(!read_addresses(&tenant).unwrap().contains_key("c3"));
    }
}
