//! condo's guest agent. As PID 1 of a tenant VM it mounts the basics, reaps orphans and serves
//! the condo protocol on vsock (port from `condo.port=N`, default 1024); it never exits but
//! powers the VM off. Elsewhere (host tests) it serves `--unix PATH` or `--port N`.

use std::path::PathBuf;
use std::process::ExitCode;

use std::time::Duration;

use clap::{Parser, Subcommand};
use condo_agent::agent::ctl::{self, Target};
use condo_agent::agent::launch::{self, ListenOn};
use condo_agent::agent::runtime_backend::RuntimeBackend;
use condo_agent::agent::{self, bench, cmdline, disks, init, log, reaper};
use condo_agent::runtime::defaults::{default_spec, SpecOptions};
use condo_protocol::CreateContainer;

/// State of the runtime and bundles when the agent is PID 1.
const GUEST_STATE_DIR: &str = "/run/condo";

#[derive(Parser, Debug)]
#[command(
    name = "condo-agent",
    version,
    about = "condo's guest agent (normally PID 1 of a VM)"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Serve on this Unix socket instead of vsock.
    #[arg(long, value_name = "PATH", conflicts_with = "port")]
    unix: Option<PathBuf>,
    /// vsock port to listen on.
    #[arg(long, value_name = "N", default_value_t = condo_protocol::DEFAULT_VSOCK_PORT)]
    port: u32,
    /// Directory for the runtime's state and the containers' bundles.
    #[arg(long, value_name = "DIR", default_value = "/run/condo-agent")]
    state_dir: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Talk to a running agent (debugging, real-guest tests).
    Ctl {
        /// unix:PATH, vsock:CID:PORT or vsock-uds:PATH[:PORT] (a VMM's vsock Unix socket)
        #[arg(long)]
        target: Target,
        /// Keep retrying the connection this long (the agent may still be booting).
        #[arg(long, value_name = "SECS", default_value_t = 0)]
        wait: u64,
        #[command(subcommand)]
        action: CtlAction,
    },
    /// Serve raw-stream bench requests (scripts/bench vsock) on vsock or a Unix socket.
    BenchServer {
        /// vsock port.
        #[arg(long, default_value_t = bench::BENCH_PORT)]
        port: u32,
        /// Serve this Unix socket instead.
        #[arg(long, value_name = "PATH")]
        unix: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum CtlAction {
    Ping,
    /// Round trips of Ping on one connection: prints the median and the 99th percentile.
    Latency {
        #[arg(long, default_value_t = 1000)]
        count: usize,
    },
    /// Moves BYTES to or from `condo-agent bench-server` (the target's port is the server's)
    /// and prints the throughput.
    Throughput {
        #[arg(long, value_enum)]
        direction: bench::Direction,
        #[arg(long, default_value_t = 256 << 20)]
        bytes: u64,
    },
    BootTimings,
    /// Print the OOM events after sequence number AFTER, waiting up to TIMEOUT_MS for one.
    OomEvents {
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 0)]
        timeout_ms: u32,
    },
    /// Run a container from ROOTFS with the strict defaults; its output goes to ours and its
    /// exit code (or 128 + signal) becomes ours.
    Run {
        #[arg(long)]
        rootfs: PathBuf,
        #[arg(long, default_value = "ctl-run")]
        id: String,
        /// Memory limit in bytes (cgroup v2 memory.max).
        #[arg(long, value_name = "BYTES")]
        memory: Option<i64>,
        /// Limit on the number of processes (cgroup v2 pids.max).
        #[arg(long, value_name = "N")]
        pids: Option<i64>,
        /// `vm`: share the VM's network (its eth0) instead of a network namespace of its own.
        #[arg(long, value_name = "vm|own", default_value = "own", value_parser = ["vm", "own"])]
        network: String,
        #[arg(required = true, trailing_var_arg = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let start_ns = agent::boottime_ns();
    // PID 1 is a guest's init, unless told to serve a Unix socket: then it is the supervisor
    // of `--isolation process`, PID 1 of its own pid namespace on a host.
    if std::process::id() == 1 && !std::env::args_os().any(|arg| arg == "--unix") {
        run_as_init(start_ns)
    }
    let args = Args::parse();
    if let Some(Command::BenchServer { port, unix }) = args.command {
        let err = bench_server(port, unix);
        log(format_args!("bench-server: {err}"));
        return ExitCode::FAILURE;
    }
    if let Some(Command::Ctl {
        target,
        wait,
        action,
    }) = args.command
    {
        return match ctl(&target, Duration::from_secs(wait), action) {
            Ok(code) => code,
            Err(err) => {
                log(format_args!("ctl: {err:#}"));
                ExitCode::from(125)
            }
        };
    }
    if let Err(err) = reaper::become_subreaper() {
        log(format_args!("cannot become a child subreaper: {err}"));
        return ExitCode::FAILURE;
    }
    let listen = match args.unix {
        Some(path) => ListenOn::Unix(path),
        None => ListenOn::Vsock { port: args.port },
    };
    let err = serve(&args.state_dir, listen, start_ns);
    log(format_args!("{err}"));
    ExitCode::FAILURE
}

fn serve(state_dir: &std::path::Path, listen: ListenOn, start_ns: u64) -> anyhow::Error {
    let runtime_root = state_dir.join("runtime");
    match RuntimeBackend::new(&runtime_root) {
        Ok(backend) => launch::run(backend, state_dir.join("bundles"), listen, start_ns).into(),
        Err(err) => anyhow::anyhow!(
            "cannot open the runtime at {}: {err}",
            runtime_root.display()
        ),
    }
}

/// PID 1: set the guest up, serve, and power off if serving ever ends. Never returns.
fn run_as_init(start_ns: u64) -> ! {
    init::attach_console();
    if let Err(err) = init::leave_initramfs() {
        log(format_args!(
            "{err}; containers will not be able to pivot_root"
        ));
    }
    for err in init::mount_basics() {
        log(format_args!("{err}"));
    }
    init::attach_console();
    match init::delegate_cgroup_controllers() {
        Ok(controllers) => log(format_args!("cgroup v2 controllers: {controllers}")),
        Err(err) => log(format_args!("{err}")),
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let (config, errors) = cmdline::parse(&cmdline);
    for err in errors {
        log(format_args!("{err}; using the default"));
    }
    if let Err(err) = init::protect_from_oom_killer() {
        log(format_args!("cannot set PID 1's oom_score_adj: {err}"));
    }
    if let Err(err) = init::set_hostname(&config.hostname) {
        log(format_args!("{err}"));
    }
    for err in disks::mount_disks(&config.disks) {
        log(format_args!("{err}"));
    }
    if let Some(net) = &config.net {
        match condo_agent::agent::net::configure("eth0", net) {
            Ok(()) => log(format_args!(
                "eth0: {}/{} via {}",
                net.addr, net.prefix, net.gateway
            )),
            Err(err) => log(format_args!("{err}")),
        }
        if let Some((block, prefix)) = config.net_block {
            match agent::container_net::enable(block, prefix) {
                Ok(()) => log(format_args!("containers' network: {block}/{prefix}")),
                Err(err) => log(format_args!("cannot enable IP forwarding: {err}")),
            }
        }
        if let Some(dns) = net.dns {
            let resolv = std::path::Path::new("/etc/resolv.conf");
            if let Err(err) = condo_agent::agent::net::write_resolv_conf(resolv, dns) {
                log(format_args!("cannot write {}: {err}", resolv.display()));
            }
        }
    }
    // The kernel starts init with an almost empty environment; container specs set their own.
    std::env::set_var(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    let listen = match config.unix_socket {
        Some(path) => ListenOn::Unix(path),
        None => ListenOn::Vsock {
            port: config.vsock_port,
        },
    };
    let err = serve(std::path::Path::new(GUEST_STATE_DIR), listen, start_ns);
    log(format_args!("{err}; powering off"));
    init::power_off()
}

/// Serves bench requests until accepting fails; each connection in its own thread.
fn bench_server(port: u32, unix: Option<PathBuf>) -> std::io::Error {
    fn serve<S: std::io::Read + std::io::Write + Send + 'static>(
        accept: impl Fn() -> std::io::Result<S>,
    ) -> std::io::Error {
        loop {
            match accept() {
                Ok(mut stream) => {
                    std::thread::spawn(move || {
                        if let Err(err) = bench::serve_one(&mut stream) {
                            log(format_args!("bench-server: {err}"));
                        }
                    });
                }
                Err(err) => return err,
            }
        }
    }
    match unix {
        Some(path) => match std::os::unix::net::UnixListener::bind(&path) {
            Ok(listener) => serve(|| listener.accept().map(|(s, _)| s)),
            Err(err) => err,
        },
        None => {
            let address = vsock::VsockAddr::new(vsock::VMADDR_CID_ANY, port);
            match vsock::VsockListener::bind(&address) {
                Ok(listener) => serve(|| listener.accept().map(|(s, _)| s)),
                Err(err) => err,
            }
        }
    }
}

fn ctl(target: &Target, wait: Duration, action: CtlAction) -> anyhow::Result<ExitCode> {
    match action {
        CtlAction::Latency { count } => {
            let mut client = ctl::connect(target, wait)?;
            let mut samples = bench::ping_latencies(&mut client, count)?;
            let mut us = |q| {
                bench::quantile(&mut samples, q)
                    .map(|d| d.as_secs_f64() * 1e6)
                    .unwrap_or(f64::NAN)
            };
            let (median, p99) = (us(0.5), us(0.99));
            println!("latency: {count} pings, median {median:.1} us, p99 {p99:.1} us");
        }
        CtlAction::Throughput { direction, bytes } => {
            let mut stream = ctl::connect_stream(target, wait)?;
            let took = bench::throughput(&mut stream, direction, bytes)?;
            let mib = bytes as f64 / f64::from(1u32 << 20);
            println!(
                "throughput {direction:?}: {bytes} bytes in {:.3} s = {:.1} MiB/s",
                took.as_secs_f64(),
                mib / took.as_secs_f64()
            );
        }
        CtlAction::Ping => {
            let (version, protocol) = ctl::connect(target, wait)?.ping()?;
            println!("pong: agent {version}, protocol {protocol}");
        }
        CtlAction::BootTimings => {
            let timings = ctl::connect(target, wait)?.boot_timings()?;
            let ms = |ns: u64| ns as f64 / 1e6;
            println!(
                "agent start {:.1} ms, ready {:.1} ms, now {:.1} ms after kernel start",
                ms(timings.agent_start_ns),
                ms(timings.agent_ready_ns),
                ms(timings.now_ns)
            );
        }
        CtlAction::OomEvents { after, timeout_ms } => {
            let events = ctl::connect(target, wait)?.wait_oom_events(after, timeout_ms)?;
            for event in events {
                println!(
                    "oom-event seq={} container={}",
                    event.seq, event.container_id
                );
            }
        }
        CtlAction::Run {
            rootfs,
            id,
            memory,
            pids,
            network,
            args,
        } => {
            // Wait for the agent here; run_container itself connects without retrying.
            drop(ctl::connect(target, wait)?);
            let spec = default_spec(&SpecOptions {
                args,
                memory_limit: memory,
                pids_limit: pids,
                host_network: network == "vm",
                ..SpecOptions::default()
            })?;
            let create = CreateContainer {
                container_id: id,
                spec: Box::new(spec),
                rootfs: rootfs.to_string_lossy().into_owned(),
                stdio: condo_protocol::StdioPipes::NONE,
                auto_remove: false,
            };
            let status = ctl::run_container(target, create)?;
            if status.oom_killed {
                log(format_args!(
                    "ctl: the container was killed for lack of memory (OOM)"
                ));
            }
            let code = match (status.code, status.signal) {
                (Some(code), _) => code,
                (None, Some(signal)) => 128 + signal,
                (None, None) => 255,
            };
            return Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)));
        }
    }
    Ok(ExitCode::SUCCESS)
}
