//! `condo wait NAME...`: blocks until each container has exited and prints its exit code (as a
//! foreground run returns it: 128+N for signal N, 137 for an OOM kill). A `run -d --rm`
//! container is removed by the time its wait returns; one that is already gone still gets its
//! exit code while its agent remembers it (the last 256 removed).

use anyhow::{Context, Result};
use clap::Args;
use condo_protocol::ProcessRef;

use super::containers::{agent, exit_code, locate_unpruned, prune_auto_removed};

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The tenant holding the containers (default: the one that has each).
    #[arg(long, value_name = "NAME")]
    tenant: Option<String>,
    /// Container names.
    #[arg(required = true)]
    names: Vec<String>,
}

pub fn run(args: WaitArgs) -> Result<i32> {
    let mut code = 0;
    for name in &args.names {
        match wait_one(name, args.tenant.as_deref()) {
            Ok(exit) => println!("{exit}"),
            Err(err) => {
                eprintln!("condo: {err:#}");
                code = 1;
            }
        }
    }
    Ok(code)
}

fn wait_one(name: &str, tenant: Option<&str>) -> Result<i32> {
    let tenant = locate_unpruned(name, tenant)?;
    let waited = agent(&tenant)?.wait(ProcessRef::init(name));
    // Its agent answers once an auto-remove container is gone: its host side goes too.
    prune_auto_removed(&tenant);
    let status = waited
        .map_err(|err| tenant.agent_error(err))
        .with_context(|| format!("waiting for container {name:?}"))?;
    Ok(exit_code(&status))
}
