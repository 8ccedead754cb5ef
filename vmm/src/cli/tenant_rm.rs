//! `condo tenant rm NAME`: stops the tenant's VM (or supervisor) and removes all it left.

use anyhow::Result;
use clap::Args;
use condo_vmm::tenant::{self, Liveness, Tenant};

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Tenant names.
    #[arg(required = true)]
    names: Vec<String>,
    /// Remove even when containers are running (they are killed).
    #[arg(long, short)]
    force: bool,
}

pub fn run(args: RmArgs) -> Result<i32> {
    let mut code = 0;
    for name in &args.names {
        match remove_one(name, args.force) {
            Ok(()) => println!("{name}"),
            Err(err) => {
                eprintln!("condo: {err:#}");
                code = 1;
            }
        }
    }
    Ok(code)
}

fn remove_one(name: &str, force: bool) -> Result<()> {
    let tenant = Tenant::open(name)?;
    if tenant.liveness() == Liveness::Dead {
        eprintln!(
            "condo: tenant {name:?} was dead (its supervisor, pid {}, had exited); cleaning up",
            tenant.pid().unwrap_or(0)
        );
    }
    Ok(tenant::remove(&tenant, force)?)
}
