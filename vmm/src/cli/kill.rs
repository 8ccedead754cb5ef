//! `condo kill NAME...`: sends a signal (default KILL) to each container's init.

use anyhow::Result;
use clap::Args;
use condo_protocol::ProcessRef;

use super::containers::{agent, locate, parse_signal};

#[derive(Debug, Args)]
pub struct KillArgs {
    /// The tenant holding the containers (default: the one that has each).
    #[arg(long, value_name = "NAME")]
    tenant: Option<String>,
    /// Signal: name (TERM, SIGTERM) or number.
    #[arg(short, long, value_name = "SIGNAL", default_value = "KILL")]
    signal: String,
    /// Container names.
    #[arg(required = true)]
    names: Vec<String>,
}

pub fn run(args: KillArgs) -> Result<i32> {
    let signal = parse_signal(&args.signal)?;
    let mut code = 0;
    for name in &args.names {
        let sent = locate(name, args.tenant.as_deref()).and_then(|tenant| {
            agent(&tenant)?
                .signal(ProcessRef::init(name), signal)
                .map_err(|err| tenant.agent_error(err).into())
        });
        match sent {
            Ok(()) => println!("{name}"),
            Err(err) => {
                eprintln!("condo: {err:#}");
                code = 1;
            }
        }
    }
    Ok(code)
}
