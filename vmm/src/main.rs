//! `condo`: the command line that drives tenant microVMs and their containers.

mod cli;

use clap::Parser;

fn main() {
    let code = match cli::Cli::try_parse() {
        Ok(parsed) => cli::dispatch(parsed),
        Err(e) => condo_vmm::usage_exit_code(&e),
    };
    std::process::exit(code);
}
