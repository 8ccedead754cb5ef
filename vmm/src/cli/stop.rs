//! `condo stop NAME...`: SIGTERM, then SIGKILL after the grace time.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use condo_protocol::ProcessRef;

use super::containers::{agent, describe_exit, locate};

#[derive(Debug, Args)]
pub struct StopArgs {
    /// The tenant holding the containers (default: the one that has each).
    #[arg(long, value_name = "NAME")]
    tenant: Option<String>,
    /// Seconds between SIGTERM and SIGKILL.
    #[arg(short = 't', long = "time", value_name = "SECS", default_value_t = 10)]
    time: u64,
    /// Container names.
    #[arg(required = true)]
    names: Vec<String>,
}

pub fn run(args: StopArgs) -> Result<i32> {
    let mut code = 0;
    for name in &args.names {
        match stop_one(name, args.tenant.as_deref(), Duration::from_secs(args.time)) {
            Ok(status) => println!("{name}: {status}"),
            Err(err) => {
                eprintln!("condo: {err:#}");
                code = 1;
            }
        }
    }
    Ok(code)
}

fn stop_one(name: &str, tenant: Option<&str>, grace: Duration) -> Result<String> {
    let tenant = locate(name, tenant)?;
    let init = ProcessRef::init(name);
    let mut client = agent(&tenant)?;
    let running = client
        .list()
        .map_err(|err| tenant.agent_error(err))?
        .iter()
        .any(|c| c.id == name && c.status == "running");
    if running {
        client
            .signal(init.clone(), libc::SIGTERM)
            .map_err(|err| tenant.agent_error(err))?;
        // A wait on its own connection, cut short by a read timeout after the grace time.
        let mut waiter = agent(&tenant)?;
        let timeout = grace.max(Duration::from_millis(1));
        waiter.stream().set_read_timeout(Some(timeout))?;
        if let Ok(status) = waiter.wait(init.clone()) {
            return Ok(describe_exit(&status));
        }
        // Still running (or a signal that failed because it just exited): SIGKILL.
        let _ = client.signal(init.clone(), libc::SIGKILL);
    }
    let status = client
        .wait(init)
        .map_err(|err| tenant.agent_error(err))
        .with_context(|| format!("waiting for container {name:?}"))?;
    Ok(describe_exit(&status))
}
