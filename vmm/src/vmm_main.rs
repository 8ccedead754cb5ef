//! `condo-vmm`: `condo vm run` alone, in a binary that links only the VM, its devices and the
//! jail (not the image store, the container CLI or the guest agent's crate): the process that
//! runs for a tenant's whole life stays small. Same flags, same exit codes as `condo vm run`.

mod cli {
    #[path = "vm_jail.rs"]
    pub mod vm_jail;
    #[path = "vm_run.rs"]
    pub mod vm_run;
}

use clap::Parser;

/// condo-vmm: boot a VM in the foreground and exit with it (0 guest reset, 1 could not start,
/// 3 guest died, 128+N killed by signal N); the same as `condo vm run`.
#[derive(Debug, Parser)]
#[command(name = "condo-vmm", version, about)]
struct Args {
    #[command(flatten)]
    run: cli::vm_run::RunArgs,
}

fn main() {
    let code = match Args::try_parse() {
        Ok(args) => cli::vm_run::run(args.run),
        Err(e) => condo_vmm::usage_exit_code(&e),
    };
    std::process::exit(code);
}
