//! `condo net ...`: a tenant's host networking by tenant index, for operators and tests (the
//! tenant commands call the same library, condo_vmm::net).

use std::net::Ipv4Addr;

use clap::{Args, Subcommand};

use condo_vmm::net::{NetHost, PortSpec, Published, TenantAddrs};

/// `condo net ...`
#[derive(Debug, Subcommand)]
pub enum NetCommand {
    /// Make tenant N's tap, address, route, NAT and isolation rules; print the guest's side.
    Up(UpArgs),
    /// Remove every rule and device tenant N has (nothing to remove is not an error).
    Down(IndexArgs),
    /// Replace tenant N's published ports (none given: unpublish all).
    Publish(PublishArgs),
}

/// Which tenant.
#[derive(Debug, Args)]
pub struct IndexArgs {
    /// Tenant index in 10.231.0.0/16 (0-4095): its /28 block.
    #[arg(long, value_name = "N")]
    index: u32,
}

/// `condo net up`
#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    index: IndexArgs,
    /// Owner (uid and gid) of the tap: the tenant's jail uid.
    #[arg(long, value_name = "UID")]
    tap_owner: Option<u32>,
    /// Name server the guest is told to use.
    #[arg(long, value_name = "IP", default_value = "1.1.1.1")]
    dns: Ipv4Addr,
}

/// `condo net publish`
#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    index: IndexArgs,
    /// HOSTPORT:PORT[/tcp|udp] (repeatable).
    #[arg(short = 'p', long = "publish", value_name = "HOSTPORT:PORT[/PROTO]")]
    ports: Vec<PortSpec>,
    /// Address in the tenant's block the ports go to (default: the guest's).
    #[arg(long, value_name = "IP")]
    to: Option<Ipv4Addr>,
}

/// Runs a `condo net` command; returns the exit code.
pub fn run(command: NetCommand) -> i32 {
    match do_run(command) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("condo: {e}");
            1
        }
    }
}

fn do_run(command: NetCommand) -> Result<(), condo_vmm::net::NetError> {
    let host = NetHost::host();
    match command {
        NetCommand::Up(args) => {
            let a = TenantAddrs::for_index(args.index.index)?;
            host.up(&a, args.tap_owner)?;
            println!(
                "tap={} mac={} guest={} gateway={} block={}\n{}",
                a.tap,
                a.guest_mac,
                a.guest,
                a.host,
                a.block_cidr(),
                a.guest_cmdline(args.dns)
            );
            Ok(())
        }
        NetCommand::Down(args) => host.remove_tenant(&TenantAddrs::for_index(args.index)?),
        NetCommand::Publish(args) => {
            let a = TenantAddrs::for_index(args.index.index)?;
            let target = args.to.unwrap_or(a.guest);
            let ports: Vec<Published> = args
                .ports
                .into_iter()
                .map(|spec| Published { spec, target })
                .collect();
            host.set_ports(&a, &ports)
        }
    }
}
