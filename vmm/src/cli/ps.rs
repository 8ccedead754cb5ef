//! `condo ps`: containers of every tenant (or one), running ones unless -a.

use std::time::Duration;

use anyhow::Result;
use clap::Args;
use condo_protocol::{ContainerInfo, ProcessRef};
use condo_vmm::tenant::{Liveness, Tenant};
use serde::Serialize;

use super::containers::{describe_exit, tenants, ContainerRecord};

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Only this tenant's containers.
    #[arg(long, value_name = "NAME")]
    tenant: Option<String>,
    /// Stopped containers too.
    #[arg(short, long)]
    all: bool,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub name: String,
    pub tenant: String,
    pub image: String,
    /// created, running, exited (N), killed (SIG), or `tenant dead`.
    pub status: String,
    pub running: bool,
    pub pid: Option<i32>,
    pub command: String,
    pub created_unix: u64,
}

/// The rows of one tenant: its records joined with what its agent reports.
pub fn rows_of(tenant: &Tenant) -> Vec<Row> {
    let alive = tenant.liveness() == Liveness::Running;
    let mut client = if alive {
        tenant.connect(Duration::from_secs(5)).ok()
    } else {
        None
    };
    let listed: Vec<ContainerInfo> = client
        .as_mut()
        .and_then(|c| c.list().ok())
        .unwrap_or_default();
    let mut rows = Vec::new();
    for name in ContainerRecord::names(tenant) {
        let Some(record) = ContainerRecord::load(tenant, &name) else {
            continue;
        };
        let info = listed.iter().find(|c| c.id == name);
        let (status, running, pid) = match (info, client.as_mut()) {
            (Some(info), Some(client)) if info.status == "stopped" => {
                let status = client
                    .wait(ProcessRef::init(&name))
                    .map(|s| describe_exit(&s))
                    .unwrap_or_else(|_| "stopped".into());
                (status, false, None)
            }
            (Some(info), _) => (info.status.clone(), true, info.pid),
            (None, _) if !alive => ("tenant dead".into(), false, None),
            (None, _) => ("gone".into(), false, None),
        };
        let args = record.process.args().clone().unwrap_or_default();
        rows.push(Row {
            name,
            tenant: tenant.name.clone(),
            image: record.image,
            status,
            running,
            pid,
            command: args.join(" "),
            created_unix: record.created_unix,
        });
    }
    rows
}

pub fn run(args: PsArgs) -> Result<i32> {
    let mut rows = Vec::new();
    for tenant in tenants(args.tenant.as_deref())? {
        rows.extend(
            rows_of(&tenant)
                .into_iter()
                .filter(|r| args.all || r.running),
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    println!(
        "{:<20} {:<16} {:<16} {:<18} {:>7}  COMMAND",
        "NAME", "TENANT", "IMAGE", "STATUS", "PID"
    );
    for row in rows {
        let mut command = row.command;
        if command.len() > 40 {
            command.truncate(37);
            command.push_str("...");
        }
        println!(
            "{:<20} {:<16} {:<16} {:<18} {:>7}  {}",
            row.name,
            row.tenant,
            row.image,
            row.status,
            row.pid.map(|p| p.to_string()).unwrap_or_default(),
            command
        );
    }
    Ok(0)
}
