//! What the container verbs share: the host-side record of each container (which tenant holds
//! it, from which image, with which process), finding a container by name, moving its stdio,
//! exit codes, and parsing of sizes and signals.

use std::fs;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use condo_protocol::{Client, ExitStatus, OutputStream, ProcessRef, MAX_STDIO_CHUNK};
use condo_vmm::tenant::{Liveness, Tenant};
use serde::{Deserialize, Serialize};

/// Connect timeout to an agent (a vsock handshake goes through the VMM).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The terminal's end-of-file key (VEOF, Ctrl-D).
const END_OF_FILE_KEY: u8 = 0x04;
/// Default tenant of `condo run` and the container verbs.
pub const DEFAULT_TENANT: &str = "default";

/// Host-side record of a container: `<tenant run dir>/containers/<name>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub name: String,
    pub tenant: String,
    /// The reference given to `condo run`, and what it resolved to.
    pub image: String,
    pub image_digest: String,
    /// The container's process (exec starts from it: same user, env, cwd, capabilities).
    pub process: oci_spec::runtime::Process,
    pub created_unix: u64,
    /// `run -d --rm`: the agent removes the container when it exits; the CLI then drops this
    /// record (see [`prune_auto_removed`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_remove: bool,
}

impl ContainerRecord {
    fn path(tenant: &Tenant, name: &str) -> PathBuf {
        tenant.path("containers").join(format!("{name}.json"))
    }

    pub fn load(tenant: &Tenant, name: &str) -> Option<ContainerRecord> {
        let text = fs::read(Self::path(tenant, name)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub fn save(&self, tenant: &Tenant) -> Result<()> {
        let path = Self::path(tenant, &self.name);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let json = serde_json::to_vec_pretty(self)?;
        fs::write(&path, json).with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn remove(tenant: &Tenant, name: &str) {
        let _ = fs::remove_file(Self::path(tenant, name));
    }

    /// Names of the containers recorded for `tenant`.
    pub fn names(tenant: &Tenant) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(tenant.path("containers"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter_map(|f| f.strip_suffix(".json").map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The tenants to look in: the one named, or all; records of auto-removed containers are
/// dropped first, so that no verb finds a container its agent has removed.
pub fn tenants(only: Option<&str>) -> Result<Vec<Tenant>> {
    let tenants = match only {
        Some(name) => vec![Tenant::open(name)?],
        None => Tenant::list()?,
    };
    for tenant in &tenants {
        prune_auto_removed(tenant);
    }
    Ok(tenants)
}

/// Drops the host's side of `run -d --rm` containers the tenant's agent removed when they
/// exited: the record, published ports and address. The agent cannot (it may be in a VM), so
/// whichever command looks next does. Best effort: a tenant that does not answer keeps them.
pub fn prune_auto_removed(tenant: &Tenant) {
    let auto: Vec<String> = ContainerRecord::names(tenant)
        .into_iter()
        .filter(|name| ContainerRecord::load(tenant, name).is_some_and(|r| r.auto_remove))
        .collect();
    if auto.is_empty() || tenant.liveness() != Liveness::Running {
        return;
    }
    // Listed after the records were read: a record is saved only once its container exists.
    let Ok(listed) = tenant
        .connect(CONNECT_TIMEOUT)
        .map_err(anyhow::Error::from)
        .and_then(|mut client| Ok(client.list()?))
    else {
        return;
    };
    for name in auto
        .iter()
        .filter(|name| listed.iter().all(|c| &c.id != *name))
    {
        ContainerRecord::remove(tenant, name);
        let _ = condo_vmm::tenant::net::publish(tenant, name, &[], None);
        let _ = condo_vmm::tenant::net::release_address(tenant, name);
    }
}

/// Finds the tenant holding container `name` (searching every tenant unless one is named).
pub fn locate(name: &str, tenant: Option<&str>) -> Result<Tenant> {
    find(name, tenant, tenants(tenant)?)
}

/// As [`locate`], also when the container was removed on exit but its record is not pruned
/// yet (`condo wait` then still gets its exit status from the agent).
pub fn locate_unpruned(name: &str, tenant: Option<&str>) -> Result<Tenant> {
    let all = match tenant {
        Some(name) => vec![Tenant::open(name)?],
        None => Tenant::list()?,
    };
    find(name, tenant, all)
}

fn find(name: &str, tenant: Option<&str>, among: Vec<Tenant>) -> Result<Tenant> {
    condo_protocol::validate_id("container name", name)?;
    let mut found: Vec<Tenant> = among
        .into_iter()
        .filter(|t| ContainerRecord::load(t, name).is_some())
        .collect();
    match found.len() {
        0 => match tenant {
            Some(t) => bail!("no container {name:?} in tenant {t:?} (see `condo ps -a`)"),
            None => bail!("no container {name:?} (see `condo ps -a`)"),
        },
        1 => Ok(found.remove(0)),
        _ => bail!(
            "container name {name:?} is in several tenants ({}); name one with --tenant",
            found
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A client of a live tenant's agent; a dead tenant is an error saying so.
pub fn agent(tenant: &Tenant) -> Result<Client<UnixStream>> {
    if tenant.liveness() == Liveness::Dead {
        bail!(
            "tenant {:?} is dead (its supervisor exited); `condo tenant rm {}` cleans it up",
            tenant.name,
            tenant.name
        );
    }
    Ok(tenant.connect(CONNECT_TIMEOUT)?)
}

/// The exit code a foreground run returns: the code, 128+N for signal N, 137 for an OOM kill.
pub fn exit_code(status: &ExitStatus) -> i32 {
    if status.oom_killed {
        return 137;
    }
    match (status.code, status.signal) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 255,
    }
}

/// Human form of an exit status.
pub fn describe_exit(status: &ExitStatus) -> String {
    match (status.oom_killed, status.code, status.signal) {
        (true, _, _) => "exited (OOM killed)".to_owned(),
        (_, Some(code), _) => format!("exited ({code})"),
        (_, None, Some(signal)) => format!("killed ({})", signal_name(signal)),
        _ => "exited".to_owned(),
    }
}

fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| signal.to_string())
}

/// Copies a process's output stream to `out` until its end.
pub fn copy_output(
    client: &mut Client<UnixStream>,
    process: &ProcessRef,
    stream: OutputStream,
    out: &mut dyn Write,
) -> Result<()> {
    loop {
        let chunk = client.read_output(process.clone(), stream, MAX_STDIO_CHUNK)?;
        if chunk.is_empty() {
            return Ok(());
        }
        out.write_all(&chunk)?;
        out.flush()?;
    }
}

/// How a foreground process is attached: our stdin forwarded or not; on a terminal (its one
/// output stream is stdout) or on pipes.
#[derive(Debug, Clone, Copy)]
pub struct Attach {
    pub stdin: bool,
    pub terminal: bool,
}

/// Runs a started process to its end with our stdio attached: stdout here, stderr (unless it
/// has a terminal) and stdin (when asked) on their own connections so no stream stalls
/// another. Typing into its terminal: ours is raw meanwhile; on a terminal, our window's size
/// follows to its terminal. Returns its status.
pub fn attach_and_wait(
    tenant: &Tenant,
    process: &ProcessRef,
    attach: Attach,
) -> Result<ExitStatus> {
    let _raw = if attach.terminal && attach.stdin {
        Some(super::terminal::RawMode::enter()?)
    } else {
        None
    };
    let mut client = agent(tenant)?;
    if attach.terminal {
        super::terminal::forward_resizes(agent(tenant)?, process.clone())?;
    }
    let stderr_copier = if attach.terminal {
        None
    } else {
        let mut stderr_client = agent(tenant)?;
        let process = process.clone();
        Some(std::thread::spawn(move || {
            copy_output(
                &mut stderr_client,
                &process,
                OutputStream::Stderr,
                &mut std::io::stderr(),
            )
        }))
    };
    if attach.stdin {
        let mut stdin_client = agent(tenant)?;
        let process = process.clone();
        // Not joined: it may block reading our stdin after the process ended.
        std::thread::spawn(move || forward_stdin(&mut stdin_client, &process, attach.terminal));
    }
    copy_output(
        &mut client,
        process,
        OutputStream::Stdout,
        &mut std::io::stdout(),
    )?;
    let status = client.wait(process.clone())?;
    if let Some(copier) = stderr_copier {
        copier
            .join()
            .map_err(|_| anyhow!("the stderr copier of {process} panicked"))??;
    }
    Ok(status)
}

/// Copies our stdin to the process until it ends. A terminal does not end its input when a
/// writer closes it: the end of our stdin is passed on as the terminal's end-of-file key
/// (Ctrl-D, which ends the input when it comes at the start of a line).
fn forward_stdin(client: &mut Client<UnixStream>, process: &ProcessRef, terminal: bool) {
    use std::io::Read;
    let mut buf = vec![0u8; 64 * 1024];
    let mut input = std::io::stdin().lock();
    loop {
        match input.read(&mut buf) {
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(0) | Err(_) => break,
            Ok(read) => {
                if client.write_stdin(process.clone(), &buf[..read]).is_err() {
                    return;
                }
            }
        }
    }
    if terminal {
        let _ = client.write_stdin(process.clone(), &[END_OF_FILE_KEY]);
    }
    let _ = client.close_stdin(process.clone());
}

/// Parses a size: bytes, or a number with k, m, g (powers of 1024; an optional trailing `b`).
pub fn parse_size(text: &str) -> Result<u64> {
    Ok(condo_vmm::size::parse_size(text)?)
}

/// Parses a signal: `TERM`, `SIGTERM` or `15`.
pub fn parse_signal(text: &str) -> Result<i32> {
    if let Ok(number) = text.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(number)
            .map(|s| s as i32)
            .map_err(|_| anyhow!("invalid signal {text:?}"));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .map_err(|_| anyhow!("invalid signal {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse() {
        assert_eq!(parse_signal("TERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("sigkill").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("9").unwrap(), libc::SIGKILL);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("99").is_err());
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        let status = |code, signal, oom_killed| ExitStatus {
            code,
            signal,
            oom_killed,
        };
        assert_eq!(exit_code(&status(Some(3), None, false)), 3);
        assert_eq!(exit_code(&status(None, Some(15), false)), 143);
        assert_eq!(exit_code(&status(None, Some(9), true)), 137);
    }
}
