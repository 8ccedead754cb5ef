//! `condo tenant rm`: stop the supervisor, wait until every process of the tenant is gone,
//! remove what the host kept for it (device cgroups of its containers, the VMM's jail), then
//! the run directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{io_error, Isolation, Liveness, Result, Tenant, TenantError};

/// How long the supervisor and its processes get to disappear.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
/// A VMM gets this long after SIGTERM before SIGKILL.
const VMM_STOP_GRACE: Duration = Duration::from_secs(5);

/// Removes the tenant. Without `force`, a running tenant with running containers is refused.
pub fn remove(tenant: &Tenant, force: bool) -> Result<()> {
    let config = tenant.config().ok();
    if tenant.liveness() == Liveness::Running && !force {
        let mut client = tenant.connect(Duration::from_secs(5))?;
        let running: Vec<String> = client
            .list()
            .map_err(|source| tenant.agent_error(source))?
            .into_iter()
            .filter(|c| c.status == "running" || c.status == "created")
            .map(|c| c.id)
            .collect();
        if !running.is_empty() {
            return Err(TenantError::Invalid(format!(
                "tenant {:?} has running containers ({}); stop them or use --force",
                tenant.name,
                running.join(", ")
            )));
        }
    }
    if let Some(pid) = tenant.pid() {
        if tenant.liveness() == Liveness::Running {
            let isolation = config.as_ref().map(|c| c.isolation).unwrap_or_default();
            stop_supervisor(tenant, pid, isolation)?;
        }
    }
    wait_for_tenant_processes(tenant)?;
    remove_container_cgroups(&tenant.path("agent/runtime"));
    if config
        .as_ref()
        .is_some_and(|c| c.isolation == Isolation::Vm)
    {
        remove_vmm_jail(&tenant.name);
    }
    if let Some(net) = config.as_ref().and_then(|c| c.net) {
        // Every rule, port and the tap; the index is freed. Nothing there is not an error.
        super::net::down(&tenant.name, &net)?;
    }
    fs::remove_dir_all(&tenant.dir).map_err(io_error("cannot remove", &tenant.dir))
}

fn stop_supervisor(tenant: &Tenant, pid: i32, isolation: Isolation) -> Result<()> {
    let pid = Pid::from_raw(pid);
    // The process supervisor takes its namespace down with SIGKILL; the VMM cleans its jail up
    // on SIGTERM.
    let first = match isolation {
        Isolation::Process => Signal::SIGKILL,
        Isolation::Vm => Signal::SIGTERM,
    };
    // A VMM is asked through its control socket first (an orderly stop, served by its event
    // loop); SIGTERM does the same when the socket does not answer.
    let asked = isolation == Isolation::Vm
        && tenant
            .control("stop", Duration::from_secs(2))
            .is_ok_and(|reply| reply.contains("stopping"));
    if !asked {
        let _ = kill(pid, first);
    }
    let deadline = Instant::now() + VMM_STOP_GRACE;
    while tenant.liveness() == Liveness::Running && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if tenant.liveness() == Liveness::Running {
        let _ = kill(pid, Signal::SIGKILL);
    }
    Ok(())
}

/// Pids of live processes whose command line names the tenant's run directory.
pub(crate) fn tenant_processes(tenant: &Tenant) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'));
            !zombie
                && fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|cmdline| tenant.named_in(&cmdline))
        })
        .collect()
}

fn wait_for_tenant_processes(tenant: &Tenant) -> Result<()> {
    let deadline = Instant::now() + EXIT_TIMEOUT;
    loop {
        let left = tenant_processes(tenant);
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(TenantError::Invalid(format!(
                "processes of tenant {:?} are still alive after {} s: {left:?}",
                tenant.name,
                EXIT_TIMEOUT.as_secs()
            )));
        }
        for pid in left {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The runtime's state of each container names its cgroups; a supervisor that died did not
/// remove them. Best effort: a cgroup that cannot be removed is reported, not fatal.
fn remove_container_cgroups(runtime_root: &Path) {
    let Ok(entries) = fs::read_dir(runtime_root) else {
        return;
    };
    for entry in entries.flatten() {
        let state_file = entry.path().join("state.json");
        let Ok(text) = fs::read(&state_file) else {
            continue;
        };
        let Ok(state) = serde_json::from_slice::<serde_json::Value>(&text) else {
            continue;
        };
        for key in ["cgroup", "deviceCgroup"] {
            if let Some(dir) = state.get(key).and_then(|v| v.as_str()).map(PathBuf::from) {
                if let Err(err) = remove_cgroup_dir(&dir) {
                    eprintln!(
                        "condo: warning: cannot remove cgroup {}: {err}",
                        dir.display()
                    );
                }
            }
        }
    }
}

fn remove_cgroup_dir(dir: &Path) -> std::io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            // EBUSY while the killed processes are still leaving it.
            Err(err) if Instant::now() >= deadline => return Err(err),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// A VMM killed with SIGKILL leaves its jail directory, its cgroup and its uid behind (the
/// jail's keeper, which removes them on a normal exit, died with it).
fn remove_vmm_jail(name: &str) {
    let jail = Path::new(crate::jail::config::DEFAULT_BASE_DIR).join(name);
    if jail.exists() {
        if let Err(err) = fs::remove_dir_all(&jail) {
            eprintln!(
                "condo: warning: cannot remove jail {}: {err}",
                jail.display()
            );
        }
    }
    let cgroup = Path::new(crate::jail::config::DEFAULT_CGROUP_ROOT)
        .join("condo")
        .join(name);
    if cgroup.exists() {
        if let Err(err) = remove_cgroup_dir(&cgroup) {
            eprintln!(
                "condo: warning: cannot remove cgroup {}: {err}",
                cgroup.display()
            );
        }
    }
    let uids = Path::new(crate::jail::config::DEFAULT_BASE_DIR).join("uids");
    if uids.exists() {
        if let Err(err) = crate::jail::uid_alloc::release(&uids, name) {
            eprintln!("condo: warning: cannot release the uid of tenant {name}: {err}");
        }
    }
}
