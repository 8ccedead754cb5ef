//! `condo exec NAME CMD...`: another process in a running container, stdio attached; returns
//! its exit code.

use anyhow::{Context, Result};
use clap::Args;
use condo_protocol::{ExecProcess, ProcessRef, StdioPipes};

use super::containers::{agent, attach_and_wait, exit_code, locate, Attach, ContainerRecord};
use super::spec::{self, ProcessFlags};

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The tenant holding the container (default: the one that has it).
    #[arg(long, value_name = "NAME")]
    tenant: Option<String>,
    /// Forward our stdin to the process.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Give the process a pseudo-terminal (stdout and stderr both go to it) of our window's
    /// size, resized with it while attached; with -i our terminal is in raw mode while attached.
    #[arg(short = 't', long)]
    tty: bool,
    #[command(flatten)]
    process: ProcessFlags,
    /// Container name.
    name: String,
    /// Command and arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub fn run(args: ExecArgs) -> Result<i32> {
    let tenant = locate(&args.name, args.tenant.as_deref())?;
    let record = ContainerRecord::load(&tenant, &args.name)
        .with_context(|| format!("no record of container {:?}", args.name))?;
    // The container's own process: same user, env, capabilities, seccomp; then the flags.
    let mut process = record.process.clone();
    process.set_args(Some(args.command.clone()));
    process.set_terminal(Some(false));
    process.set_console_size(None);
    let env = process.env().clone().unwrap_or_default();
    spec::apply_flags(&mut process, &args.process, env)?;
    if args.tty {
        super::terminal::request_terminal(&mut process);
    }
    let exec_id = format!(
        "exec-{}-{}",
        std::process::id(),
        super::containers::now_unix()
    );
    let mut client = agent(&tenant)?;
    client
        .exec(ExecProcess {
            container_id: args.name.clone(),
            exec_id: exec_id.clone(),
            process: Box::new(process),
            stdio: StdioPipes {
                stdin: args.interactive,
                stdout: true,
                stderr: !args.tty,
            },
        })
        .map_err(|err| tenant.agent_error(err))
        .with_context(|| format!("cannot exec in container {:?}", args.name))?;
    let process = ProcessRef::exec(&args.name, &exec_id);
    let attach = Attach {
        stdin: args.interactive,
        terminal: args.tty,
    };
    let status = attach_and_wait(&tenant, &process, attach)?;
    Ok(exit_code(&status))
}
