//! The `condo` command line: one file per verb (thin: parse, validate, call, map the error).

pub mod containers;
pub mod exec;
pub mod image;
pub mod image_ref;
pub mod inspect;
pub mod kill;
pub mod logs;
pub mod net;
pub mod ps;
pub mod rm;
pub mod run;
pub mod spec;
pub mod stop;
pub mod tenant_create;
pub mod tenant_ls;
pub mod tenant_rm;
pub mod terminal;
pub mod vm_jail;
pub mod vm_run;
pub mod wait;

use clap::{Parser, Subcommand};

/// Exit code of `run`/`exec` when condo itself failed (the container's own codes pass through).
const EXIT_CONDO_FAILED: i32 = 125;
/// Exit code of the other verbs on failure.
const EXIT_FAILED: i32 = 1;

/// condo: microVM-hosted containers.
#[derive(Debug, Parser)]
#[command(name = "condo", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a container from an image in a tenant (created on first use); foreground runs
    /// return the container's exit code (128+N for signal N, 137 for OOM), condo's own
    /// failures 125.
    Run(Box<run::RunArgs>),
    /// Run another process in a running container.
    Exec(exec::ExecArgs),
    /// List containers.
    Ps(ps::PsArgs),
    /// Show a container's output (kept by its agent, last 1 MiB per stream).
    Logs(logs::LogsArgs),
    /// Stop containers: SIGTERM, then SIGKILL after a grace time.
    Stop(stop::StopArgs),
    /// Send a signal to containers.
    Kill(kill::KillArgs),
    /// Wait until containers have exited; print their exit codes.
    Wait(wait::WaitArgs),
    /// Remove containers.
    Rm(rm::RmArgs),
    /// Show a container's details.
    Inspect(inspect::InspectArgs),
    /// Tenants: one microVM (or host supervisor) each.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Virtual machines.
    #[command(subcommand)]
    Vm(VmCommand),
    /// Tenant host networking by index (tap, routes, nftables, published ports).
    #[command(subcommand)]
    Net(net::NetCommand),
    /// Container images: import, list, remove.
    #[command(subcommand)]
    Image(image::ImageCommand),
}

/// `condo tenant ...`
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant and wait until its agent answers.
    Create(tenant_create::CreateArgs),
    /// List tenants.
    Ls(tenant_ls::LsArgs),
    /// Remove tenants: stop the VM and remove everything it left.
    Rm(tenant_rm::RmArgs),
}

/// `condo vm ...`
#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Boot a VM in the foreground; exits with it (0 guest reset, 1 could not start,
    /// 3 guest died, 128+N killed by signal N).
    Run(Box<vm_run::RunArgs>),
}

fn report(result: anyhow::Result<i32>, failed: i32) -> i32 {
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("condo: {err:#}");
            failed
        }
    }
}

/// Runs the parsed command; returns the process exit code.
pub fn dispatch(cli: Cli) -> i32 {
    match cli.command {
        Command::Run(args) => report(run::run(*args), EXIT_CONDO_FAILED),
        Command::Exec(args) => report(exec::run(args), EXIT_CONDO_FAILED),
        Command::Ps(args) => report(ps::run(args), EXIT_FAILED),
        Command::Logs(args) => report(logs::run(args), EXIT_FAILED),
        Command::Stop(args) => report(stop::run(args), EXIT_FAILED),
        Command::Kill(args) => report(kill::run(args), EXIT_FAILED),
        Command::Wait(args) => report(wait::run(args), EXIT_FAILED),
        Command::Rm(args) => report(rm::run(args), EXIT_FAILED),
        Command::Inspect(args) => report(inspect::run(args), EXIT_FAILED),
        Command::Tenant(TenantCommand::Create(args)) => {
            report(tenant_create::run(args), EXIT_FAILED)
        }
        Command::Tenant(TenantCommand::Ls(args)) => report(tenant_ls::run(args), EXIT_FAILED),
        Command::Tenant(TenantCommand::Rm(args)) => report(tenant_rm::run(args), EXIT_FAILED),
        Command::Vm(VmCommand::Run(args)) => vm_run::run(*args),
        Command::Net(command) => net::run(command),
        Command::Image(command) => image::run(command),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
