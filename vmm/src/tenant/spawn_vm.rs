//! `--isolation vm`: the tenant's supervisor is condo's VMM, detached: `condo-vmm` (the lean
//! binary of `condo vm run`, from `$CONDO_VMM` or next to condo), else condo itself as
//! `condo vm run` (jailed as root, exactly as in the foreground) with the tenant's kernel,
//! the agent's initramfs, its image disks (read-only, /dev/vda... in order) and a vsock device
//! whose host side is the tenant's `vsock.sock`.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::initramfs::agent_initramfs;
use super::process::{agent_binary, open_console};
use super::{io_error, Result, Tenant, TenantError};

/// The VMM a tenant runs for its whole life: `condo-vmm` when there is one (it links only the
/// VM, its devices and the jail: about 2 MiB less resident memory than condo with its image
/// store and container CLI), else `condo vm run`. Returns the program and the arguments
/// that come before `vm run`'s flags.
fn vmm_command(condo: PathBuf) -> (PathBuf, &'static [&'static str]) {
    let lean = std::env::var_os("CONDO_VMM")
        .map(PathBuf::from)
        .or_else(|| condo.parent().map(|dir| dir.join("condo-vmm")))
        .filter(|path| path.is_file());
    match lean {
        Some(path) => (path, &[]),
        None => (condo, &["vm", "run"]),
    }
}

/// The guest's vsock context id (each VMM has its own vsock device, so one id fits all).
pub const GUEST_CID: u32 = 3;

/// The guest kernel: the tenant's, else `$CONDO_KERNEL` (a vmlinux or bzImage, or the
/// directory `scripts/build-guest-kernel` prints, holding vmlinux).
pub fn default_kernel() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os("CONDO_KERNEL")?);
    Some(if path.is_dir() {
        path.join("vmlinux")
    } else {
        path
    })
}

/// Starts the tenant's VMM detached; writes vmm.pid. Does not wait for the agent.
pub fn spawn_vm(tenant: &Tenant) -> Result<i32> {
    let mut config = tenant.config()?;
    let kernel = config
        .kernel
        .clone()
        .or_else(default_kernel)
        .ok_or_else(|| {
            TenantError::Invalid(format!(
                "tenant {:?}: no guest kernel: pass --kernel PATH or set CONDO_KERNEL \
             (scripts/build-guest-kernel prints the directory holding vmlinux)",
                tenant.name
            ))
        })?;
    if !kernel.is_file() {
        return Err(TenantError::Invalid(format!(
            "guest kernel {} is not a file",
            kernel.display()
        )));
    }
    let initrd = match &config.initrd {
        Some(path) => path.clone(),
        None => agent_initramfs(&agent_binary())?,
    };
    config.kernel = Some(kernel.clone());
    config.initrd = Some(initrd.clone());
    tenant.write_config(&config)?;

    let exe =
        std::env::current_exe().map_err(io_error("cannot find condo's own binary", &tenant.dir))?;
    let (exe, verb) = vmm_command(exe);
    // The VMM's own messages; the guest's console goes to console.log (made by the jail, which
    // hands it to the VMM's uid).
    let vmm_log = open_console(&tenant.path("vmm.log"))?;
    let mut command = Command::new(&exe);
    command
        .args(verb)
        .arg("--kernel")
        .arg(&kernel)
        .arg("--initrd")
        .arg(&initrd)
        .args(["--vcpus", &config.vcpus.to_string()])
        .args(["--memory", &config.memory_mib.to_string()])
        .arg("--console")
        .arg(tenant.path("console.log"))
        .args(["--jail-id", &tenant.name]);
    if let Some(limit) = config.console_limit {
        command.args(["--console-limit", &limit.to_string()]);
    }
    for image in &config.images {
        command
            .arg("--disk")
            .arg(format!("{},ro", image.fs_path.display()));
    }
    if let Some(net) = &config.net {
        let addrs = net.addrs()?;
        command
            .arg("--net")
            .arg(format!("tap={},mac={}", addrs.tap, addrs.guest_mac))
            .arg("--cmdline")
            .arg(format!(
                "{} {}",
                crate::config::DEFAULT_CMDLINE,
                addrs.guest_cmdline(net.dns)
            ));
    }
    command.arg("--control").arg(tenant.path("control.sock"));
    command.arg("--vsock").arg(format!(
        "cid={GUEST_CID},uds={}",
        tenant.path("vsock.sock").display()
    ));
    command
        .stdin(Stdio::null())
        .stdout(
            vmm_log
                .try_clone()
                .map_err(io_error("cannot duplicate", &tenant.path("vmm.log")))?,
        )
        .stderr(vmm_log);
    // SAFETY: setsid() is async-signal-safe and touches only the child's own session: the
    // VMM must not die with the CLI's terminal or process group.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let child = command.spawn().map_err(|source| TenantError::Spawn {
        name: tenant.name.clone(),
        program: exe.display().to_string(),
        source,
    })?;
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    tenant.write_pid(pid)?;
    drop(child);
    Ok(pid)
}
