//! `condo inspect NAME`: a container's record, state, exit status and resource use.

use anyhow::{Context, Result};
use clap::Args;
use condo_vmm::tenant::Liveness;
use serde_json::json;

use super::containers::{agent, locate, ContainerRecord};
use super::ps::rows_of;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The tenant holding the container (default: the one that has it).
    #[arg(long, value_name = "NAME")]
    tenant: Option<String>,
    /// JSON output (the default form is also JSON, pretty-printed; --json is compact).
    #[arg(long)]
    json: bool,
    /// Container name.
    name: String,
}

pub fn run(args: InspectArgs) -> Result<i32> {
    let tenant = locate(&args.name, args.tenant.as_deref())?;
    let record = ContainerRecord::load(&tenant, &args.name)
        .with_context(|| format!("no record of container {:?}", args.name))?;
    let row = rows_of(&tenant).into_iter().find(|r| r.name == args.name);
    let stats = if tenant.liveness() == Liveness::Running && row.as_ref().is_some_and(|r| r.running)
    {
        agent(&tenant)?.stats(&args.name).ok()
    } else {
        None
    };
    let config = tenant.config()?;
    let value = json!({
        "name": record.name,
        "tenant": {"name": tenant.name, "isolation": config.isolation, "state": tenant.liveness(), "run_dir": tenant.dir},
        "image": {"reference": record.image, "digest": record.image_digest},
        "status": row.as_ref().map(|r| r.status.clone()),
        "running": row.as_ref().is_some_and(|r| r.running),
        "pid": row.as_ref().and_then(|r| r.pid),
        "created_unix": record.created_unix,
        "process": record.process,
        "stats": stats,
    });
    if args.json {
        println!("{}", serde_json::to_string(&value)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&value)?);
    }
    Ok(0)
}
