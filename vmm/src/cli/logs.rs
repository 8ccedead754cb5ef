//! `condo logs NAME`: the output the agent kept of a container (the last 1 MiB per stream);
//! with -f, follows it until the container ends.

use std::io::Write;
use std::thread;

use anyhow::{anyhow, Result};
use clap::Args;
use condo_protocol::{ErrorKind, OutputStream, ReadLog, MAX_STDIO_CHUNK};
use condo_vmm::tenant::Tenant;

use super::containers::{agent, locate, ContainerRecord};

/// How long one follow request waits for new output before asking again.
const FOLLOW_WAIT_MS: u32 = 5_000;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The tenant holding the container (default: the one that has it).
    #[arg(long, value_name = "NAME")]
    tenant: Option<String>,
    /// Follow the output until the container ends.
    #[arg(short, long)]
    follow: bool,
    /// Container name.
    name: String,
}

fn copy_log(tenant: &Tenant, name: &str, stream: OutputStream, follow: bool) -> Result<()> {
    let mut client = agent(tenant)?;
    let mut offset = 0;
    let mut first = true;
    loop {
        let read = client.read_log(ReadLog {
            container_id: name.to_owned(),
            stream,
            offset,
            max_bytes: MAX_STDIO_CHUNK,
            wait_ms: if follow { FOLLOW_WAIT_MS } else { 0 },
        });
        let (data, next, eof) = match read {
            Ok(chunk) => chunk,
            // A `run -d --rm` container removed while we read it: its log ended with it.
            Err(err)
                if !first
                    && err
                        .agent_error()
                        .is_some_and(|e| e.kind == ErrorKind::NotFound) =>
            {
                return Ok(())
            }
            Err(err) => return Err(tenant.agent_error(err).into()),
        };
        match stream {
            OutputStream::Stdout => std::io::stdout().write_all(&data)?,
            OutputStream::Stderr => std::io::stderr().write_all(&data)?,
        }
        offset = next;
        first = false;
        if eof || (data.is_empty() && !follow) {
            return Ok(());
        }
    }
}

pub fn run(args: LogsArgs) -> Result<i32> {
    let tenant = locate(&args.name, args.tenant.as_deref())?;
    // A container with a terminal has one stream: both outputs went to the terminal.
    let terminal = ContainerRecord::load(&tenant, &args.name)
        .and_then(|record| record.process.terminal())
        .unwrap_or(false);
    let stderr = (!terminal).then(|| {
        let (tenant, name) = (tenant.clone(), args.name.clone());
        thread::spawn(move || copy_log(&tenant, &name, OutputStream::Stderr, args.follow))
    });
    let stdout = copy_log(&tenant, &args.name, OutputStream::Stdout, args.follow);
    let stderr = match stderr {
        Some(copier) => copier
            .join()
            .map_err(|_| anyhow!("the stderr copier panicked"))?,
        None => Ok(()),
    };
    std::io::stdout().flush()?;
    stdout.and(stderr)?;
    Ok(0)
}
