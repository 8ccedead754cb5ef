//! `--isolation process`: the tenant's supervisor is condo-agent on this host, serving
//! `agent.sock`, as PID 1 of its own pid and mount namespaces (made by util-linux `unshare`,
//! which stays as its parent and takes it down with it: `--kill-child`). When the supervisor
//! dies the kernel kills every process of the namespace, the tenant's containers included, and
//! its mounts (the loop-mounted images) go with the mount namespace.

use std::fs::{File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{io_error, Result, Tenant, TenantError};

/// Finds condo-agent: `$CONDO_AGENT`, else next to the running condo, else on PATH.
pub fn agent_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CONDO_AGENT") {
        return PathBuf::from(path);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("condo-agent")))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("condo-agent"))
}

pub(super) fn open_console(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_error("cannot open", path))
}

/// Starts the tenant's host agent detached; writes vmm.pid. Does not wait for it to be ready.
pub fn spawn_process_supervisor(tenant: &Tenant) -> Result<i32> {
    let agent = agent_binary();
    let console = open_console(&tenant.path("console.log"))?;
    let console_err = console
        .try_clone()
        .map_err(io_error("cannot duplicate", &tenant.path("console.log")))?;
    let mut command = Command::new("unshare");
    command
        .args([
            "--pid",
            "--fork",
            "--mount",
            "--propagation",
            "private",
            "--mount-proc",
            "--kill-child",
            "--",
        ])
        .arg(&agent)
        .arg("--unix")
        .arg(tenant.path("agent.sock"))
        .arg("--state-dir")
        .arg(tenant.path("agent"))
        .stdin(Stdio::null())
        .stdout(console)
        .stderr(console_err);
    // SAFETY: setsid() is async-signal-safe and touches only the child's own session; the
    // supervisor must not die with the CLI's terminal or process group.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let child = command.spawn().map_err(|source| TenantError::Spawn {
        name: tenant.name.clone(),
        program: format!("unshare ... {}", agent.display()),
        source,
    })?;
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    tenant.write_pid(pid)?;
    // The child is not waited for: it outlives this CLI (and is reaped by init).
    drop(child);
    Ok(pid)
}
