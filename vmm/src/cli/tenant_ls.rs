//! `condo tenant ls`: tenants, their isolation, state and images.

use anyhow::Result;
use clap::Args;
use condo_vmm::tenant::Tenant;
use serde::Serialize;

#[derive(Debug, Args)]
pub struct LsArgs {
    /// JSON output.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row {
    name: String,
    isolation: String,
    state: String,
    pid: Option<i32>,
    vcpus: u8,
    memory_mib: u64,
    images: Vec<String>,
    run_dir: String,
}

pub fn run(args: LsArgs) -> Result<i32> {
    let mut rows = Vec::new();
    for tenant in Tenant::list()? {
        let config = tenant.config()?;
        rows.push(Row {
            state: tenant.liveness().to_string(),
            pid: tenant.pid(),
            isolation: config.isolation.to_string(),
            vcpus: config.vcpus,
            memory_mib: config.memory_mib,
            images: config
                .images
                .iter()
                .map(|i| i.names.first().cloned().unwrap_or_else(|| i.digest.clone()))
                .collect(),
            run_dir: tenant.dir.display().to_string(),
            name: tenant.name,
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    println!(
        "{:<20} {:<9} {:<9} {:>8} {:>5} {:>8}  IMAGES",
        "NAME", "ISOLATION", "STATE", "PID", "VCPUS", "MEMORY"
    );
    for row in rows {
        println!(
            "{:<20} {:<9} {:<9} {:>8} {:>5} {:>7}m  {}",
            row.name,
            row.isolation,
            row.state,
            row.pid.map(|p| p.to_string()).unwrap_or_default(),
            row.vcpus,
            row.memory_mib,
            row.images.join(",")
        );
    }
    Ok(0)
}
