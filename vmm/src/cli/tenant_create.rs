//! `condo tenant create NAME`: a tenant's microVM (or host supervisor), ready when this returns.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
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
            created_unix: now_unix(),
        })
    }
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
