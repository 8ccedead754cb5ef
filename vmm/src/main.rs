//! `condo`: the command line that drives tenant microVMs and their containers.

mod cli;

use clap::Parser;

/// Bad command-line input is a "could not start", like any other bad input.
const EXIT_BAD_USAGE: i32 = 1;

fn main() {
    let code = match cli::Cli::try_parse() {
        Ok(parsed) => cli::dispatch(parsed),
        Err(e) => {
            let _ = e.print();
            if e.use_stderr() {
                EXIT_BAD_USAGE
            } else {
                0 // --help, --version
            }
        }
    };
    std::process::exit(code);
}
