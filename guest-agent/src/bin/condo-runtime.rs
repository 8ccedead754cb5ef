//! condo-runtime: an OCI runtime command line (runc-compatible arguments) over
//! condo_agent::runtime, for containers directly on a host.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use clap::{Args, Parser, Subcommand};
use condo_agent::runtime::defaults::{default_spec, SpecOptions};
use condo_agent::runtime::{ContainerState, ProcessIo, Runtime, DEFAULT_ROOT};

/// println! that ignores a closed stdout (e.g. `condo-runtime state x | head -1`) instead of
/// panicking on EPIPE.
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

#[derive(Parser, Debug)]
#[command(
    name = "condo-runtime",
    version,
    about = "condo's OCI container runtime"
)]
struct Cli {
    /// Directory for container state.
    #[arg(long, global = true, default_value = DEFAULT_ROOT)]
    root: PathBuf,
    /// Also append errors to this file (runc's --log).
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Log format of --log: text or json.
    #[arg(long = "log-format", global = true, default_value = "text")]
    log_format: String,
    /// Accepted for runc compatibility.
    #[arg(long, global = true, hide = true)]
    debug: bool,
    /// Accepted for runc compatibility (condo manages cgroupfs v2 directly).
    #[arg(long = "systemd-cgroup", global = true, hide = true)]
    systemd_cgroup: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct CreateArgs {
    /// Bundle directory (holding config.json).
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// Write the container init's pid here.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Unix socket to receive the pty master (when process.terminal is true).
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Accepted for runc compatibility.
    #[arg(long = "no-pivot", hide = true)]
    no_pivot: bool,
    /// Accepted for runc compatibility.
    #[arg(long = "no-new-keyring", hide = true)]
    no_new_keyring: bool,
    /// Accepted for runc compatibility (only 0 is supported).
    #[arg(long = "preserve-fds", default_value_t = 0, hide = true)]
    preserve_fds: u32,
    id: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a container; its process waits for `start`.
    Create(CreateArgs),
    /// Start a created container.
    Start { id: String },
    /// Print a container's state as JSON.
    State { id: String },
    /// Send a signal (default SIGTERM) to a container's init.
    Kill {
        id: String,
        signal: Option<String>,
        /// Signal every process of the container, not only its init.
        #[arg(short, long)]
        all: bool,
    },
    /// Delete a container (must be stopped unless --force).
    Delete {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Create, start and wait for a container; delete it afterwards unless --detach.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        #[arg(short, long)]
        detach: bool,
        /// Keep the container's state after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// Run a process in a running container.
    Exec(ExecArgs),
    /// List containers.
    #[command(alias = "ps")]
    List {
        #[arg(short, long, default_value = "table")]
        format: String,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Print a container's cgroup figures as JSON.
    Stats { id: String },
    /// Write a config.json with condo's strict defaults (Docker's) into the bundle.
    Spec(SpecArgs),
    /// Inside a container: report which sandboxed syscalls fail and with which errno.
    #[command(hide = true)]
    Probe,
}

#[derive(Args, Debug)]
struct ExecArgs {
    /// process.json to run (OCI process); else the command after the id.
    #[arg(short, long)]
    process: Option<PathBuf>,
    #[arg(short, long)]
    tty: bool,
    #[arg(long)]
    cwd: Option<PathBuf>,
    #[arg(short, long)]
    env: Vec<String>,
    /// `UID[:GID]`
    #[arg(short, long)]
    user: Option<String>,
    #[arg(short, long)]
    detach: bool,
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Args, Debug)]
struct SpecArgs {
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// Command of the container (default: sh).
    #[arg(long, num_args = 1.., allow_hyphen_values = true)]
    args: Vec<String>,
    #[arg(long)]
    terminal: bool,
    #[arg(long)]
    hostname: Option<String>,
    /// Tighten: no capabilities at all.
    #[arg(long = "cap-drop-all")]
    cap_drop_all: bool,
    /// Tighten: read-only root filesystem.
    #[arg(long = "read-only")]
    read_only: bool,
    /// Tighten: user namespace mapping container root to this host id (65536 ids).
    #[arg(long)]
    userns: Option<u32>,
    /// Loosen: add a capability to the 14 defaults.
    #[arg(long = "cap-add")]
    cap_add: Vec<String>,
    /// Remove a capability from the defaults.
    #[arg(long = "cap-drop")]
    cap_drop: Vec<String>,
    /// Loosen: no seccomp filter.
    #[arg(long = "no-seccomp")]
    no_seccomp: bool,
    /// Loosen: no_new_privs off.
    #[arg(long = "allow-new-privileges")]
    allow_new_privileges: bool,
    /// Loosen: no masked or read-only /proc and /sys paths.
    #[arg(long = "unmask-paths")]
    unmask_paths: bool,
    /// Loosen: share the host's network namespace.
    #[arg(long = "host-network")]
    host_network: bool,
    /// Memory limit in bytes (cgroup v2).
    #[arg(long)]
    memory: Option<i64>,
    /// Maximum number of pids (cgroup v2).
    #[arg(long)]
    pids: Option<i64>,
    /// Refused with a pointer to --userns (runc's rootless spec is not generated).
    #[arg(long, hide = true)]
    rootless: bool,
}

fn main() {
    let cli = Cli::parse();
    let code = match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("condo-runtime: {msg}");
            log_error(&cli, &msg);
            1
        }
    };
    std::process::exit(code);
}

fn log_error(cli: &Cli, msg: &str) {
    let Some(path) = &cli.log else { return };
    let line = if cli.log_format == "json" {
        serde_json::json!({"level": "error", "msg": msg}).to_string()
    } else {
        format!("level=error msg={msg:?}")
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

fn run(cli: &Cli) -> Result<i32> {
    let runtime = || Runtime::new(&cli.root).context("opening the state root");
    match &cli.command {
        Command::Create(args) => {
            create(&runtime()?, args)?;
            Ok(0)
        }
        Command::Start { id } => {
            runtime()?.start(id)?;
            Ok(0)
        }
        Command::State { id } => {
            print_json(&oci_state(&runtime()?.state(id)?))?;
            Ok(0)
        }
        Command::Kill { id, signal, all } => {
            let signal = parse_signal(signal.as_deref().unwrap_or("SIGTERM"))?;
            if *all {
                runtime()?.kill_all(id, signal)?;
            } else {
                runtime()?.kill(id, signal)?;
            }
            Ok(0)
        }
        Command::Delete { force, id } => {
            runtime()?.delete(id, *force)?;
            Ok(0)
        }
        Command::Run {
            create: args,
            detach,
            keep,
        } => run_container(&runtime()?, args, *detach, *keep),
        Command::Exec(args) => exec(&runtime()?, args),
        Command::List { format, quiet } => list(&runtime()?, format, *quiet),
        Command::Stats { id } => {
            print_json(&runtime()?.stats(id)?)?;
            Ok(0)
        }
        Command::Spec(args) => spec(args),
        Command::Probe => {
            probe();
            Ok(0)
        }
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    out!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// The OCI state document (runtime-spec "state" operation), plus condo's extras.
fn oci_state(s: &ContainerState) -> serde_json::Value {
    let mut v = condo_agent::runtime::hooks::oci_state_json(s);
    v["created"] = s.created.clone().into();
    if let Some(exit) = &s.exit {
        v["exit"] = serde_json::to_value(exit).unwrap_or_default();
    }
    v
}

fn own_stdio() -> Result<ProcessIo> {
    let dup = |fd: std::os::fd::BorrowedFd<'_>| -> Result<Option<OwnedFd>> {
        Ok(Some(fd.try_clone_to_owned()?))
    };
    Ok(ProcessIo {
        stdin: dup(std::io::stdin().as_fd())?,
        stdout: dup(std::io::stdout().as_fd())?,
        stderr: dup(std::io::stderr().as_fd())?,
        terminal: None,
    })
}

fn io_for(console_socket: Option<&Path>) -> Result<ProcessIo> {
    let mut io = own_stdio()?;
    if let Some(path) = console_socket {
        let sock = UnixStream::connect(path)
            .with_context(|| format!("connecting to console socket {}", path.display()))?;
        io.terminal = Some(OwnedFd::from(sock));
    }
    Ok(io)
}

fn write_pid_file(path: Option<&Path>, pid: i32) -> Result<()> {
    if let Some(path) = path {
        // Write then rename, so readers never see an empty file.
        let tmp = path.with_extension("condo-tmp");
        std::fs::write(&tmp, pid.to_string())
            .with_context(|| format!("writing pid file {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("writing pid file {}", path.display()))?;
    }
    Ok(())
}

fn create(rt: &Runtime, args: &CreateArgs) -> Result<ContainerState> {
    if args.preserve_fds != 0 {
        bail!("--preserve-fds {} is not supported", args.preserve_fds);
    }
    let io = io_for(args.console_socket.as_deref())?;
    let state = rt.create(&args.id, &args.bundle, io)?;
    if let Err(e) = write_pid_file(args.pid_file.as_deref(), state.pid) {
        let _ = rt.delete(&args.id, true);
        return Err(e);
    }
    Ok(state)
}

fn run_container(rt: &Runtime, args: &CreateArgs, detach: bool, keep: bool) -> Result<i32> {
    let state = create(rt, args)?;
    if !detach {
        // Before start: a signal sent once the container runs must already be forwarded.
        forward_signals(state.pid);
    }
    if let Err(e) = rt.start(&args.id) {
        let _ = rt.delete(&args.id, true);
        return Err(e.into());
    }
    if detach {
        return Ok(0);
    }
    let exit = rt.wait_child(state.pid)?;
    if !keep {
        rt.delete(&args.id, true)?;
    }
    if exit.oom_killed {
        eprintln!("condo-runtime: container {} was OOM-killed", args.id);
    }
    Ok(exit.shell_code())
}

/// Forwards the usual terminal and job-control signals sent to us to the container's init,
/// as runc does in the foreground (a thread sigwait()s for them; they are blocked here).
fn forward_signals(pid: i32) {
    const FORWARDED: [i32; 7] = [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGWINCH,
    ];
    // SAFETY: sigset_t is plain old data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid sigset_t; the mask applies to this thread and threads it spawns.
    unsafe {
        libc::sigemptyset(&mut set);
        for sig in FORWARDED {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    std::thread::spawn(move || loop {
        let mut sig = 0;
        // SAFETY: set and sig are valid for the call; sigwait only reads set.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            // SAFETY: kill only sends a signal.
            unsafe { libc::kill(pid, sig) };
        }
    });
}

fn exec(rt: &Runtime, args: &ExecArgs) -> Result<i32> {
    let process = exec_process(rt, args)?;
    // The exec'd process is our direct child (CLONE_PARENT): we can wait for it.
    let io = io_for(args.console_socket.as_deref())?;
    let pid = rt.exec(&args.id, &process, io)?;
    write_pid_file(args.pid_file.as_deref(), pid)?;
    if args.detach {
        return Ok(0);
    }
    forward_signals(pid);
    Ok(rt.wait_child(pid)?.shell_code())
}

/// The process to exec: --process, or the container's process with the command and flags.
fn exec_process(rt: &Runtime, args: &ExecArgs) -> Result<oci_spec::runtime::Process> {
    if let Some(path) = &args.process {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let raw: serde_json::Value =
            serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))?;
        condo_agent::runtime::validate::check_raw_process(&raw, "process")?;
        return serde_json::from_value(raw).with_context(|| format!("parsing {}", path.display()));
    }
    if args.command.is_empty() {
        bail!("exec needs a command or --process");
    }
    let state = rt.state(&args.id)?;
    let spec = condo_agent::runtime::validate::load_bundle_spec(&state.bundle)?;
    let mut process = spec
        .process()
        .clone()
        .context("the container's config has no process")?;
    process.set_args(Some(args.command.clone()));
    process.set_terminal(Some(args.tty));
    if let Some(cwd) = &args.cwd {
        process.set_cwd(cwd.clone());
    }
    let mut env = process.env().clone().unwrap_or_default();
    env.extend(args.env.iter().cloned());
    process.set_env(Some(env));
    if let Some(user) = &args.user {
        let (uid, gid) = match user.split_once(':') {
            Some((u, g)) => (u.parse()?, g.parse()?),
            None => (user.parse()?, 0),
        };
        let mut u = process.user().clone();
        u.set_uid(uid);
        u.set_gid(gid);
        process.set_user(u);
    }
    Ok(process)
}

fn list(rt: &Runtime, format: &str, quiet: bool) -> Result<i32> {
    let states = rt.list()?;
    if quiet {
        for s in &states {
            out!("{}", s.id);
        }
    } else if format == "json" {
        print_json(&states.iter().map(oci_state).collect::<Vec<_>>())?;
    } else {
        out!(
            "{:<24} {:<8} {:<10} {:<22} BUNDLE",
            "ID",
            "PID",
            "STATUS",
            "CREATED"
        );
        for s in &states {
            out!(
                "{:<24} {:<8} {:<10} {:<22} {}",
                s.id,
                s.pid,
                s.status,
                s.created,
                s.bundle.display()
            );
        }
    }
    Ok(0)
}

fn spec(args: &SpecArgs) -> Result<i32> {
    if args.rootless {
        bail!("--rootless specs are not generated; use --userns HOSTID for a user namespace");
    }
    let opts = SpecOptions {
        args: args.args.clone(),
        terminal: args.terminal,
        hostname: args.hostname.clone(),
        cap_drop_all: args.cap_drop_all,
        read_only: args.read_only,
        userns_host_id: args.userns,
        cap_add: args.cap_add.clone(),
        cap_drop: args.cap_drop.clone(),
        no_seccomp: args.no_seccomp,
        no_new_privileges_off: args.allow_new_privileges,
        unmask_paths: args.unmask_paths,
        host_network: args.host_network,
        memory_limit: args.memory,
        pids_limit: args.pids,
    };
    let spec = default_spec(&opts)?;
    let path = args.bundle.join("config.json");
    if path.exists() {
        bail!("{} already exists", path.display());
    }
    let text = serde_json::to_string_pretty(&spec)?;
    std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    Ok(0)
}

fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return Ok(n);
    }
    let name = s.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    Ok(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "WINCH" => libc::SIGWINCH,
        "ALRM" => libc::SIGALRM,
        "PIPE" => libc::SIGPIPE,
        _ => bail!("unknown signal {s:?}"),
    })
}

/// Prints `name=errno` (0 = allowed) for syscalls the default profile must refuse, plus a few it
/// must allow, so tests and operators can see the sandbox from inside.
fn probe() {
    fn errno_of(rc: libc::c_long) -> i32 {
        if rc < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        } else {
            0
        }
    }
    let clone_newuser = {
        let flags = (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong;
        // SAFETY: fork-like clone without CLONE_VM; a child (rc 0) exits at once.
        let rc = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
        if rc == 0 {
            // SAFETY: leave the probe child immediately.
            unsafe { libc::_exit(0) };
        }
        if rc > 0 {
            // SAFETY: reap the probe child.
            unsafe { libc::waitpid(rc as i32, std::ptr::null_mut(), 0) };
        }
        errno_of(rc)
    };
    // SAFETY: every call below passes only integers or null pointers the kernel checks.
    let results = unsafe {
        [
            (
                "clone3",
                errno_of(libc::syscall(libc::SYS_clone3, 0usize, 0usize)),
            ),
            ("clone_newuser", clone_newuser),
            (
                "unshare_newns",
                errno_of(libc::unshare(libc::CLONE_NEWNS) as libc::c_long),
            ),
            (
                "mount",
                errno_of(libc::mount(
                    c"none".as_ptr(),
                    c"/nonexistent-condo-probe".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    std::ptr::null(),
                ) as libc::c_long),
            ),
            (
                "keyctl",
                errno_of(libc::syscall(libc::SYS_keyctl, 0, -1, 0)),
            ),
            (
                "socket_vsock",
                errno_of(libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0) as libc::c_long),
            ),
            (
                "socket_unix",
                errno_of(libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) as libc::c_long),
            ),
            (
                "personality_query",
                errno_of(libc::personality(0xffff_ffff) as libc::c_long),
            ),
            (
                "personality_read_implies_exec",
                errno_of(libc::personality(0x0040_0000) as libc::c_long),
            ),
            ("getpid", errno_of(libc::getpid() as libc::c_long)),
        ]
    };
    for (name, errno) in results {
        out!("{name}={errno}");
    }
}
