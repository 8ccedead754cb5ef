//! `condo tenant create NAME`: a tenant's microVM (or host supervisor), ready when this returns.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use condo_vmm::devices::legacy::MIN_CONSOLE_LIMIT;
use condo_vmm::tenant::{self, Isolation, Tenant, TenantConfig};

use super::containers::{now_unix, parse_size};
use super::image_ref;

/// How long a new tenant's agent gets to answer (a guest in the emulated host boots in ~10 s).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Tenant name: 1-64 of [a-z0-9-].
    name: String,
    #[command(flatten)]
    pub shape: TenantShape,
}

/// How a tenant is made; shared with `condo run` (which creates its tenant on first use).
#[derive(Debug, Args, Default, Clone)]
pub struct TenantShape {
    /// Where containers run: vm (the tenant's own microVM) or process (directly on this host).
    #[arg(long, value_name = "vm|process")]
    pub isolation: Option<Isolation>,
    /// vCPUs of the tenant's VM (1-32).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub vcpus: u8,
    /// Memory of the tenant's VM (e.g. 256m, 1g).
    #[arg(long, value_name = "SIZE", default_value = "256m")]
    pub memory: String,
    /// Guest kernel (vmlinux or bzImage); default $CONDO_KERNEL.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Images to attach (repeatable); `condo run` attaches its image to a tenant it creates.
    #[arg(long = "image", value_name = "REF")]
    pub images: Vec<String>,
    /// Give the tenant a network: a tap on a routed /28 of 10.231.0.0/16, outbound NAT,
    /// isolation from other tenants (vm isolation only).
    #[arg(long)]
    pub net: bool,
    /// Name server for the tenant's guest (default: the host's first non-loopback one, else
    /// 1.1.1.1).
    #[arg(long, value_name = "IP", requires = "net")]
    pub dns: Option<std::net::Ipv4Addr>,
    /// Most the tenant's console.log holds (e.g. 256k, 4m; at least 4k; default 1m): past it
    /// the VMM keeps the latest output behind a line saying how much was dropped (vm
    /// isolation only).
    #[arg(long, value_name = "SIZE")]
    pub console_limit: Option<String>,
}

/// The host's first non-loopback IPv4 name server, else 1.1.1.1.
fn default_dns() -> std::net::Ipv4Addr {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse::<std::net::Ipv4Addr>().ok())
        .find(|addr| !addr.is_loopback())
        .unwrap_or(std::net::Ipv4Addr::new(1, 1, 1, 1))
}

impl TenantShape {
    /// The config of tenant `name`, with `extra_image` attached too.
    pub fn config(&self, name: &str, extra_image: Option<&str>) -> Result<TenantConfig> {
        tenant::validate_name(name)?;
        if !(1..=32).contains(&self.vcpus) {
            bail!("invalid --vcpus {}: must be within 1-32", self.vcpus);
        }
        let memory = parse_size(&self.memory)?;
        let memory_mib = memory >> 20;
        if memory_mib < 64 {
            bail!(
                "invalid --memory {:?}: a tenant needs at least 64m",
                self.memory
            );
        }
        let console_limit = self
            .console_limit
            .as_deref()
            .map(parse_console_limit)
            .transpose()?;
        let mut images = Vec::new();
        for reference in self.images.iter().map(String::as_str).chain(extra_image) {
            let image = image_ref::resolve(reference)?.attached;
            if !images
                .iter()
                .any(|i: &tenant::AttachedImage| i.digest == image.digest)
            {
                images.push(image);
            }
        }
        Ok(TenantConfig {
            name: name.to_owned(),
            isolation: self.isolation.unwrap_or_default(),
            vcpus: self.vcpus,
            memory_mib,
            kernel: self.kernel.clone(),
            initrd: None,
            images,
            net: self.net.then(|| tenant::net::TenantNet {
                index: 0, // allocated when the tenant is made
                dns: self.dns.unwrap_or_else(default_dns),
            }),
            console_limit,
            created_unix: now_unix(),
        })
    }
}

fn parse_console_limit(text: &str) -> Result<u64> {
    let bytes = parse_size(text)?;
    if bytes < MIN_CONSOLE_LIMIT {
        bail!("invalid --console-limit {text:?}: must be at least {MIN_CONSOLE_LIMIT} bytes (4k)");
    }
    Ok(bytes)
}

/// Creates the tenant; the error says why and nothing of it is left.
pub fn create(config: &TenantConfig) -> Result<Tenant> {
    Ok(tenant::create(config, READY_TIMEOUT)?)
}

pub fn run(args: CreateArgs) -> Result<i32> {
    let config = args.shape.config(&args.name, None)?;
    create(&config)?;
    println!("{}", args.name);
    Ok(0)
}
