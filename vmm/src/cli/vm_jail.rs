//! The jail flags of `condo vm run` and how a run is jailed: as root the VMM runs in its jail
//! (namespaces, own uid, cgroup, rlimits, seccomp per thread); `--no-jail` is for debugging.

use std::path::{Path, PathBuf};

use clap::Args;

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;

use condo_vmm::config::{Console, VmConfig, VsockConfig};
use condo_vmm::jail::{
    self, seccomp, uid_alloc, CgroupLimits, CgroupPolicy, ExposeMode, ExposedFile, JailConfig,
    JailExit, RealSys, ThreadKind,
};
use condo_vmm::{RunOptions, VmExit};

const EXIT_CANNOT_START: i32 = 1;

/// Jail flags of `condo vm run`.
#[derive(Debug, Default, Args)]
pub struct JailArgs {
    /// DEBUGGING ONLY: run the VMM unjailed (no namespaces, no own uid, no cgroup, no seccomp).
    #[arg(long)]
    no_jail: bool,
    /// Tenant name the jail is made for ([a-z0-9-], at most 64); default vm-<pid>.
    #[arg(long, value_name = "NAME")]
    jail_id: Option<String>,
    /// Where jails are built.
    #[arg(long, value_name = "DIR", default_value = jail::config::DEFAULT_BASE_DIR)]
    jail_base: PathBuf,
    /// The VMM's uid and gid (default: one per tenant, from the allocation in the base dir).
    #[arg(long, value_name = "UID")]
    jail_uid: Option<u32>,
    /// Run without the per-tenant cgroup (hosts without cgroup v2 controllers). Also given by
    /// CONDO_JAIL_NO_CGROUP=1.
    #[arg(long, env = "CONDO_JAIL_NO_CGROUP", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0, default_missing_value = "true")]
    jail_no_cgroup: bool,
    /// RLIMIT_FSIZE of the VMM in bytes (a longer console file kills it with SIGXFSZ; keep it
    /// above --console-limit).
    #[arg(long, value_name = "BYTES")]
    jail_max_file_size: Option<u64>,
    /// RLIMIT_NOFILE of the VMM.
    #[arg(long, value_name = "N")]
    jail_max_open_files: Option<u64>,
    /// Test hook: a thread of this kind (vmm|vcpu) makes a forbidden system call.
    #[arg(long, hide = true, value_name = "KIND", value_parser = parse_thread_kind)]
    test_forbidden_syscall: Option<ThreadKind>,
}

fn parse_thread_kind(s: &str) -> Result<ThreadKind, String> {
    s.parse::<ThreadKind>().map_err(|e| e.to_string())
}

/// Runs the VM through `boot`, jailed unless asked otherwise; returns condo's exit code.
pub fn run(
    config: VmConfig,
    mut options: RunOptions,
    args: &JailArgs,
    boot: fn(&VmConfig, &RunOptions) -> i32,
) -> i32 {
    if args.no_jail {
        eprintln!(
            "condo: WARNING: --no-jail: the VMM runs with condo's own privileges, namespaces \
             and no seccomp filter. For debugging only: a guest that escapes owns this host."
        );
        return boot(&config, &options);
    }
    options.thread_hook = Some(seccomp::thread_hook(args.test_forbidden_syscall));
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "condo: warning: not root: the VMM runs without its jail (namespaces, own uid, \
             cgroup); its seccomp filters still apply"
        );
        return boot(&config, &options);
    }
    // What needs the host's /proc and /sys is checked before the jail hides them.
    if let Err(e) = condo_vmm::builder::preflight(&config, &options) {
        eprintln!("condo: cannot start the VM: {e}");
        return EXIT_CANNOT_START;
    }
    options.checked_outside = true;
    // The jailed VMM cannot create a socket at the operator's path: bind it here, hand over
    // the descriptor.
    let vsock_listener = match bind_vsock_listener(&config) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("condo: cannot start the VM: {e}");
            return EXIT_CANNOT_START;
        }
    };
    options.vsock_listener_fd = vsock_listener.as_ref().map(|l| l.as_raw_fd());
    let remove_vsock_socket = || {
        if let (Some(vsock), Some(_)) = (&config.vsock, &vsock_listener) {
            let _ = std::fs::remove_file(&vsock.uds_path);
        }
    };
    let anonymous = args.jail_id.is_none();
    let id = args
        .jail_id
        .clone()
        .unwrap_or_else(|| format!("vm-{}", std::process::id()));
    let new_console_file = match &config.console {
        Console::File(path) if !path.exists() => Some(path.clone()),
        _ => None,
    };
    let jailed = match jail_config(&config, args, &id, options.vsock_listener_fd) {
        Ok(jailed) => jailed,
        Err(e) => {
            eprintln!("condo: cannot start the VM: jail: {e}");
            remove_vsock_socket();
            if let Some(path) = &new_console_file {
                let _ = std::fs::remove_file(path);
            }
            if anonymous && args.jail_uid.is_none() {
                // Nothing was started: the uid allocated for this run goes back too.
                let _ = uid_alloc::release(&uids_file(&args.jail_base), &id);
            }
            return EXIT_CANNOT_START;
        }
    };
    let (mut cfg, inside) = jailed;
    if let Some(fd) = options.control_listener_fd {
        cfg.keep_fds.push(fd);
    }
    let outcome = jail::run_jailed(&cfg, &RealSys, || boot(&inside, &options));
    remove_vsock_socket();
    let started = !matches!(outcome, Ok(JailExit::Exited(EXIT_CANNOT_START)) | Err(_));
    if let (false, Some(path)) = (started, &new_console_file) {
        // As the VMM does unjailed: a VM that could not start leaves no console file.
        let _ = std::fs::remove_file(path);
    }
    if anonymous && args.jail_uid.is_none() {
        // A run without a tenant name gives its uid back.
        let _ = uid_alloc::release(&uids_file(&args.jail_base), &id);
    }
    match outcome {
        Ok(JailExit::Exited(code)) => code,
        Ok(JailExit::Signaled(sig)) => {
            report_signal(sig);
            128 + sig
        }
        Err(e) => {
            eprintln!("condo: cannot start the VM: jail: {e}");
            EXIT_CANNOT_START
        }
    }
}

fn uids_file(base: &Path) -> PathBuf {
    base.join("uids")
}

/// The jail for `config`, and the VM configuration as the VMM sees it inside.
fn jail_config(
    config: &VmConfig,
    args: &JailArgs,
    id: &str,
    vsock_listener_fd: Option<RawFd>,
) -> Result<(JailConfig, VmConfig), jail::JailError> {
    jail::config::validate_id(id)?;
    let uid = match args.jail_uid {
        Some(uid) => uid,
        None => {
            std::fs::create_dir_all(&args.jail_base)
                .map_err(|e| jail::JailError::io("create jail base", &args.jail_base, e))?;
            let range = uid_alloc::UidRange::default();
            uid_alloc::allocate(&uids_file(&args.jail_base), range, id)?
        }
    };
    let cgroup = if args.jail_no_cgroup {
        eprintln!(
            "condo: WARNING: --jail-no-cgroup: the VMM runs without a cgroup: nothing bounds \
             its CPU, memory or number of tasks"
        );
        CgroupPolicy::Disabled
    } else {
        let overhead = jail::config::DEFAULT_VMM_OVERHEAD_MIB;
        CgroupPolicy::Required(CgroupLimits::for_vm(
            u32::from(config.vcpus),
            config.memory_mib,
            overhead,
        ))
    };
    let mut cfg = JailConfig::new(id, uid, uid, cgroup);
    cfg.base_dir = args.jail_base.clone();
    if let Some(bytes) = args.jail_max_file_size {
        cfg.rlimits.file_size = bytes;
        if matches!(config.console, Console::File(_)) && bytes < config.console_limit {
            eprintln!(
                "condo: WARNING: --jail-max-file-size {bytes} is below --console-limit {}: \
                 a guest that prints that much kills its VMM (SIGXFSZ)",
                config.console_limit
            );
        }
    }
    if let Some(n) = args.jail_max_open_files {
        cfg.rlimits.open_files = n;
    }
    // Files keep their (absolute) host path inside the jail: the VMM's configuration and its
    // messages stay those of the operator.
    let mut inside = config.clone();
    let mut expose = |given: &Path, mode: ExposeMode| -> PathBuf {
        let path = std::path::absolute(given).unwrap_or_else(|_| given.to_path_buf());
        cfg.files.push(ExposedFile {
            source: std::fs::canonicalize(given).unwrap_or_else(|_| path.clone()),
            inside: path.clone(),
            mode,
        });
        path
    };
    inside.kernel = expose(&config.kernel, ExposeMode::LinkOrCopy);
    if let Some(initrd) = &config.initrd {
        inside.initrd = Some(expose(initrd, ExposeMode::LinkOrCopy));
    }
    for (disk, inside_disk) in config.disks.iter().zip(inside.disks.iter_mut()) {
        // Read-only disks: a read-only bind mount (the jailed uid cannot write through it,
        // whatever the file's mode). Read-write disks become the tenant's (BindReadWrite).
        let mode = if disk.read_only {
            check_readable_by(&disk.path, uid)?;
            ExposeMode::BindReadOnly
        } else {
            ExposeMode::BindReadWrite
        };
        inside_disk.path = expose(&disk.path, mode);
    }
    if let Console::File(path) = &config.console {
        // Made (or truncated) here as the VMM would, then handed to the tenant and bound in.
        std::fs::File::create(path).map_err(|e| jail::JailError::io("create console", path, e))?;
        // At a fixed path inside: the host path may lie under /run (a tenant's run directory,
        // /run/condo/tenants/<name>/console.log), and the jail's /run is the VMM's own.
        cfg.files.push(ExposedFile {
            source: std::fs::canonicalize(path).unwrap_or_else(|_| path.clone()),
            inside: PathBuf::from(CONSOLE_INSIDE),
            mode: ExposeMode::BindReadWrite,
        });
        inside.console = Console::File(PathBuf::from(CONSOLE_INSIDE));
    }
    if let (Some(vsock), Some(fd)) = (&config.vsock, vsock_listener_fd) {
        cfg.keep_fds.push(fd);
        inside.vsock = Some(expose_vsock_dir(&mut cfg, vsock)?);
    }
    attach_taps(&mut cfg, &mut inside)?;
    Ok((cfg, inside))
}

/// A read-only disk stays the operator's: the jailed VMM (uid `uid`, gid the same) must be
/// able to read it as it is.
fn check_readable_by(path: &Path, uid: u32) -> Result<(), jail::JailError> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::metadata(path).map_err(|e| jail::JailError::io("read-only disk", path, e))?;
    let mode = meta.mode();
    let readable = (meta.uid() == uid && mode & 0o400 != 0)
        || (meta.gid() == uid && mode & 0o040 != 0)
        || mode & 0o004 != 0;
    if readable {
        return Ok(());
    }
    Err(jail::JailError::InvalidConfig(format!(
        "read-only disk {}: mode {:o} does not let the jailed VMM (uid {uid}) read it; \
         make it readable by others (chmod o+r)",
        path.display(),
        mode & 0o7777
    )))
}

/// Where the console file appears inside the jail.
const CONSOLE_INSIDE: &str = "/console.log";

/// Where the vsock socket's directory appears inside the jail (host paths under /run cannot
/// keep their name: the jail's /run is the VMM's own).
const VSOCK_DIR_INSIDE: &str = "/vsock";

/// Binds the vsock device's listening socket at the operator's path, as root on the host,
/// mode 0600: only root (condo's CLI) connects to it; other tenants' uids cannot.
fn bind_vsock_listener(config: &VmConfig) -> Result<Option<UnixListener>, String> {
    let Some(vsock) = &config.vsock else {
        return Ok(None);
    };
    let path = &vsock.uds_path;
    let listener =
        UnixListener::bind(path).map_err(|e| format!("vsock socket {}: {e}", path.display()))?;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        let _ = std::fs::remove_file(path);
        return Err(format!("vsock socket {}: chmod 600: {e}", path.display()));
    }
    Ok(Some(listener))
}

/// Exposes the socket's directory read-only inside the jail, so that guest-initiated
/// connections reach the host's `<uds>_<port>` listeners; returns the vsock configuration as
/// the VMM sees it.
fn expose_vsock_dir(
    cfg: &mut JailConfig,
    vsock: &VsockConfig,
) -> Result<VsockConfig, jail::JailError> {
    let given = std::path::absolute(&vsock.uds_path).unwrap_or_else(|_| vsock.uds_path.clone());
    let (Some(dir), Some(name)) = (given.parent(), given.file_name()) else {
        return Err(jail::JailError::InvalidConfig(format!(
            "vsock uds {}: no directory or file name",
            vsock.uds_path.display()
        )));
    };
    cfg.files.push(ExposedFile {
        source: std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()),
        inside: PathBuf::from(VSOCK_DIR_INSIDE),
        mode: ExposeMode::BindDirReadOnly,
    });
    Ok(VsockConfig {
        guest_cid: vsock.guest_cid,
        uds_path: Path::new(VSOCK_DIR_INSIDE).join(name),
    })
}

/// The jail's network namespace cannot see the host's taps: attach each one here, in the
/// host's namespace, and hand the descriptor to the jailed VMM (kept across its fd cleanup).
fn attach_taps(cfg: &mut JailConfig, inside: &mut VmConfig) -> Result<(), jail::JailError> {
    use std::os::fd::IntoRawFd;
    for net in &mut inside.net {
        let tap = condo_vmm::net::Tap::open(&net.tap)
            .map_err(|e| jail::JailError::InvalidConfig(format!("--net tap={}: {e}", net.tap)))?;
        let fd = tap.into_fd().into_raw_fd();
        cfg.keep_fds.push(fd);
        net.tap_fd = Some(fd);
    }
    Ok(())
}

fn report_signal(sig: i32) {
    let why = match sig {
        libc::SIGSYS => " (SIGSYS: a system call outside its seccomp allowlist)",
        libc::SIGXFSZ => " (SIGXFSZ: it wrote past its file-size limit)",
        libc::SIGKILL => " (SIGKILL: killed, e.g. by the cgroup's memory limit)",
        _ => "",
    };
    eprintln!("condo: the VMM was killed by signal {sig}{why}");
}

/// For `boot` closures: the VMM's own exit reporting (kept in vm_run).
pub fn exit_code_of(result: Result<VmExit, condo_vmm::Error>) -> i32 {
    match result {
        Ok(exit) => {
            match &exit {
                VmExit::Reset => {}
                VmExit::GuestDied(why) => eprintln!("condo: guest died: {why}"),
                VmExit::Signal(n) => eprintln!("condo: stopped by signal {n}"),
            }
            exit.exit_code()
        }
        Err(e) => {
            eprintln!("condo: cannot start the VM: {e}");
            EXIT_CANNOT_START
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use condo_vmm::config::VsockConfig;
    use std::os::unix::ffi::OsStrExt;

    /// Connects to `path` from a child process running as `uid`; returns the child's errno
    /// (0: connected).
    fn connect_as(uid: u32, path: &Path) -> i32 {
        let mut addr_path = path.as_os_str().as_bytes().to_vec();
        addr_path.push(0);
        // SAFETY: the child only makes async-signal-safe calls (setgid, setuid, socket,
        // connect, _exit) on memory prepared before the fork.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                // SAFETY: plain system calls on valid, NUL-terminated data; _exit never returns.
                unsafe {
                    if libc::setgid(uid) != 0 || libc::setuid(uid) != 0 {
                        libc::_exit(100);
                    }
                    let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                    let mut addr: libc::sockaddr_un = std::mem::zeroed();
                    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
                    for (d, s) in addr.sun_path.iter_mut().zip(&addr_path) {
                        *d = *s as libc::c_char;
                    }
                    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
                    let rc = libc::connect(fd, std::ptr::addr_of!(addr).cast(), len);
                    let errno = if rc == 0 {
                        0
                    } else {
                        *libc::__errno_location()
                    };
                    libc::_exit(errno);
                }
            }
            nix::unistd::ForkResult::Parent { child } => {
                match nix::sys::wait::waitpid(child, None).unwrap() {
                    nix::sys::wait::WaitStatus::Exited(_, code) => code,
                    other => panic!("connect child ended as {other:?}"),
                }
            }
        }
    }

    #[test]
    fn the_vsock_socket_is_roots_alone() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: checking which uids may connect needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // Searchable by everyone: only the socket's own mode may keep other uids out.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut config = VmConfig::with_kernel("/k");
        config.vsock = Some(VsockConfig {
            guest_cid: 3,
            uds_path: dir.path().join("v.sock"),
        });
        let listener = bind_vsock_listener(&config).unwrap().unwrap();
        let path = dir.path().join("v.sock");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(connect_as(0, &path), 0, "root (condo's CLI) connects");
        // Another tenant's VMM uid, and nobody.
        for uid in [900_123, 65534] {
            assert_eq!(connect_as(uid, &path), libc::EACCES, "uid {uid}");
        }
        drop(listener);
    }

    #[test]
    fn binding_over_an_existing_path_fails_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        std::fs::write(&path, b"keep").unwrap();
        let mut config = VmConfig::with_kernel("/k");
        config.vsock = Some(VsockConfig {
            guest_cid: 3,
            uds_path: path.clone(),
        });
        let err = bind_vsock_listener(&config).unwrap_err();
        assert!(err.contains("v.sock"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"keep");
    }
}
