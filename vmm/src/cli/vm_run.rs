//! `condo vm run`: boot a VM in the foreground.

use std::path::PathBuf;

use clap::Args;

use condo_vmm::config::{Console, DiskConfig, VmConfig, VsockConfig, DEFAULT_CMDLINE};
use condo_vmm::host::pvm_override_set;
use condo_vmm::net::NetConfig;
use condo_vmm::{run_vm, RunOptions};

/// Exit code when the VM could not start.
const EXIT_CANNOT_START: i32 = 1;

/// Flags of `condo vm run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Boot configuration as a JSON file (fields: kernel, initrd, cmdline, vcpus, memory_mib,
    /// console, console_limit (bytes), disks: [{path, read_only}], net: [{tap, mac}],
    /// vsock: {guest_cid, uds_path}); the flags below are then not allowed.
    #[arg(long, value_name = "FILE.json", conflicts_with_all = ["kernel", "initrd", "cmdline", "vcpus", "memory", "console", "console_limit", "disk", "net", "vsock"])]
    config: Option<PathBuf>,
    /// Kernel: ELF vmlinux (PVH entry when present) or bzImage.
    #[arg(long, value_name = "PATH", required_unless_present = "config")]
    kernel: Option<PathBuf>,
    /// Initramfs.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, value_name = "STR", default_value = DEFAULT_CMDLINE)]
    cmdline: String,
    /// Number of vCPUs (1-32).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u8))]
    vcpus: u8,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 128)]
    memory: u64,
    /// Serial console: stdout (stdin feeds the guest) or a file path.
    #[arg(long, value_name = "stdout|PATH", default_value = "stdout")]
    console: Console,
    /// Most bytes the console file holds (e.g. 64k, 1m; at least 4k): past it the file keeps
    /// the latest output behind a line saying how much was dropped. Not applied to stdout.
    #[arg(long, value_name = "SIZE", default_value = "1m", value_parser = parse_console_limit)]
    console_limit: u64,
    /// A virtio-blk disk from a raw image file, read-only with `,ro`; repeat for more
    /// (/dev/vda, /dev/vdb, ... in the guest, in this order).
    #[arg(long, value_name = "PATH[,ro]")]
    disk: Vec<DiskConfig>,
    /// virtio-vsock device: the guest's CID (>= 3) and the host Unix socket to create
    /// (`CONNECT <port>` on it reaches the guest's port; guest connections to port P go to
    /// PATH_P).
    #[arg(long, value_name = "cid=N,uds=PATH")]
    vsock: Option<VsockConfig>,
    /// A virtio-net interface on host tap NAME (repeatable); the MAC is random when not given.
    #[arg(long, value_name = "tap=NAME[,mac=MAC]")]
    net: Vec<NetConfig>,
    /// Control socket to create (mode 0600): a line `status` or `stop` in, one JSON line out;
    /// `stop` ends the VM as SIGTERM does.
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    #[command(flatten)]
    jail: super::vm_jail::JailArgs,
}

impl RunArgs {
    fn into_config(self) -> Result<VmConfig, condo_vmm::config::ConfigError> {
        if let Some(path) = self.config {
            return VmConfig::from_json_file(&path);
        }
        Ok(VmConfig {
            kernel: self.kernel.unwrap_or_default(),
            initrd: self.initrd,
            cmdline: self.cmdline,
            vcpus: self.vcpus,
            memory_mib: self.memory,
            console: self.console,
            console_limit: self.console_limit,
            disks: self.disk,
            vsock: self.vsock,
            net: self.net,
        })
    }
}

fn parse_console_limit(text: &str) -> Result<u64, String> {
    condo_vmm::size::parse_size(text).map_err(|e| e.to_string())
}

/// Boots the VM (jailed, see vm_jail); returns the exit code.
pub fn run(mut args: RunArgs) -> i32 {
    let jail = std::mem::take(&mut args.jail);
    let control_path = args.control.take();
    let config = match args.into_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("condo: {e}");
            return EXIT_CANNOT_START;
        }
    };
    // Bound here, before any jail: the jailed VMM could not create it at this path.
    let control = match control_path.as_deref().map(bind_control).transpose() {
        Ok(control) => control,
        Err(e) => {
            eprintln!("condo: {e}");
            return EXIT_CANNOT_START;
        }
    };
    let options = RunOptions {
        thread_hook: None,
        allow_pvm_linux: pvm_override_set(),
        checked_outside: false,
        control_listener_fd: control.as_ref().map(std::os::fd::AsRawFd::as_raw_fd),
        ..Default::default()
    };
    let code = super::vm_jail::run(config, options, &jail, boot);
    if let Some(path) = &control_path {
        let _ = std::fs::remove_file(path);
    }
    code
}

fn bind_control(path: &std::path::Path) -> Result<std::os::unix::net::UnixListener, String> {
    use std::os::unix::fs::PermissionsExt;
    let listener = std::os::unix::net::UnixListener::bind(path)
        .map_err(|e| format!("control socket {}: {e}", path.display()))?;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        let _ = std::fs::remove_file(path);
        return Err(format!("control socket {}: chmod 600: {e}", path.display()));
    }
    Ok(listener)
}

fn boot(config: &VmConfig, options: &RunOptions) -> i32 {
    super::vm_jail::exit_code_of(run_vm(config, options))
}
