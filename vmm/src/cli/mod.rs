//! The `condo` command line: one file per verb.

pub mod image;
pub mod vm_jail;
pub mod vm_run;

use clap::{Parser, Subcommand};

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
    /// Virtual machines.
    #[command(subcommand)]
    Vm(VmCommand),
    /// Container images: import, list, remove.
    #[command(subcommand)]
    Image(image::ImageCommand),
}

/// `condo vm ...`
#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Boot a VM in the foreground; exits with it (0 guest reset, 1 could not start,
    /// 3 guest died, 128+N killed by signal N).
    Run(Box<vm_run::RunArgs>),
}

/// Runs the parsed command; returns the process exit code.
pub fn dispatch(cli: Cli) -> i32 {
    match cli.command {
        Command::Vm(VmCommand::Run(args)) => vm_run::run(*args),
        Command::Image(command) => image::run(command),
    }
}
