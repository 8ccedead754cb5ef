//! `condo rm NAME...`: removes stopped containers (running ones with -f, killing them).

use anyhow::Result;
use clap::Args;
use condo_protocol::ErrorKind;
use condo_vmm::tenant::Liveness;

use super::containers::{agent, locate, ContainerRecord};

#[derive(Debug, Args)]
pub struct RmArgs {
    /// The tenant holding the containers (default: the one that has each).
    #[arg(long, value_name = "NAME")]
    tenant: Option<String>,
    /// Kill running containers first.
    #[arg(short, long)]
    force: bool,
    /// Container names.
    #[arg(required = true)]
    names: Vec<String>,
}

pub fn run(args: RmArgs) -> Result<i32> {
    let mut code = 0;
    for name in &args.names {
        match remove_one(name, args.tenant.as_deref(), args.force) {
            Ok(()) => println!("{name}"),
            Err(err) => {
                eprintln!("condo: {err:#}");
                code = 1;
            }
        }
    }
    Ok(code)
}

fn remove_one(name: &str, tenant: Option<&str>, force: bool) -> Result<()> {
    let tenant = locate(name, tenant)?;
    // A dead tenant took its containers with it: only the record is left.
    if tenant.liveness() != Liveness::Dead {
        let deleted = agent(&tenant)?.delete(name, force);
        match deleted {
            Ok(()) => {}
            Err(err)
                if err
                    .agent_error()
                    .is_some_and(|e| e.kind == ErrorKind::NotFound) => {}
            Err(err) => {
                let hint = if err
                    .agent_error()
                    .is_some_and(|e| e.kind == ErrorKind::InvalidState)
                {
                    " (stop it first, or rm -f)"
                } else {
                    ""
                };
                return Err(anyhow::Error::new(tenant.agent_error(err))
                    .context(format!("cannot remove container {name:?}{hint}")));
            }
        }
    }
    ContainerRecord::remove(&tenant, name);
    // Its published ports go with it.
    condo_vmm::tenant::net::publish(&tenant, name, &[], None)?;
    condo_vmm::tenant::net::release_address(&tenant, name)?;
    Ok(())
}
