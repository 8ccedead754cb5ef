//! The jail for real, on this host, as root: `run_jailed` with test bodies that look at their
//! own cell from inside, and a watcher that looks at the jailed process from the host's /proc.
//! A custom harness (harness = false): the jail forks, which it refuses to do from a
//! multi-threaded process such as libtest's runner.
// clippy.toml allows expect in #[test] functions; a custom harness has none, so say it here.
#![allow(clippy::expect_used)]

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use condo_vmm::jail::{
    run_jailed, uid_alloc, CgroupLimits, CgroupPolicy, DeviceNode, ExposeMode, ExposedFile,
    JailConfig, JailError, JailExit, RealSys, ThreadKind,
};

mod jail_support;
use jail_support::*;

type Scenario = fn(&Host) -> Result<(), String>;

const TIMEOUT: Duration = Duration::from_secs(20);

struct Host {
    base: PathBuf,
    images: PathBuf,
    uids: PathBuf,
}

impl Host {
    fn config(&self, id: &str) -> JailConfig {
        let range = uid_alloc::UidRange {
            first: 910_000,
            count: 100,
        };
        let uid = uid_alloc::allocate(&self.uids, range, id).expect("uid");
        let mut cfg = JailConfig::new(id, uid, uid, CgroupPolicy::Disabled);
        cfg.base_dir = self.base.clone();
        cfg.devices = vec![DeviceNode::Kvm, DeviceNode::Tun];
        let kernel = self.images.join("vmlinux");
        let disk = self.images.join(format!("{id}.img"));
        fs::write(&kernel, b"not really a kernel").expect("kernel");
        fs::write(&disk, vec![0u8; 4096]).expect("disk");
        chmod(&kernel, 0o644);
        chmod(&disk, 0o600);
        cfg.files = vec![
            ExposedFile {
                source: kernel,
                inside: "/vmlinux".into(),
                mode: ExposeMode::LinkOrCopy,
            },
            ExposedFile {
                source: disk,
                inside: "/disk.img".into(),
                mode: ExposeMode::BindReadWrite,
            },
        ];
        cfg
    }
}

/// From inside: uid, pid 1, hostname, capabilities, no_new_privs, rlimits, environment, fds,
/// and a root holding only what the VMM was given.
fn inside_the_cell(host: &Host) -> Result<(), String> {
    let cfg = host.config("inside");
    let uid = cfg.uid;
    let stray = fs::File::open("/dev/null").map_err(|e| e.to_string())?;
    let stray_fd = stray.as_raw_fd();
    std::env::set_var("CONDO_SECRET", "leak");
    let host_has_kvm = Path::new("/dev/kvm").exists();
    let exit = run_jailed(&cfg, &RealSys, || {
        let problems = look_around(uid, stray_fd, host_has_kvm);
        for p in &problems {
            eprintln!("  inside: {p}");
        }
        i32::from(!problems.is_empty()) * 42
    })
    .map_err(|e| e.to_string())?;
    std::env::remove_var("CONDO_SECRET");
    expect_exit(exit, JailExit::Exited(0))?;
    expect_gone(&cfg.jail_dir())
}

fn look_around(uid: u32, stray_fd: i32, host_has_kvm: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            problems.push(what);
        }
    };
    // SAFETY: getuid/getgid/getpid take no arguments.
    let (ruid, rgid, pid) = unsafe { (libc::getuid(), libc::getgid(), libc::getpid()) };
    check(ruid == uid && rgid == uid, format!("uid {ruid} gid {rgid}"));
    // The jail's init is PID 1, the VMM its only child.
    check(pid == 2, format!("pid {pid} in its namespace"));
    let host = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned());
    check(
        host.as_deref() == Ok("inside"),
        format!("hostname {host:?}"),
    );
    for set in [
        caps::CapSet::Effective,
        caps::CapSet::Permitted,
        caps::CapSet::Inheritable,
        caps::CapSet::Ambient,
        caps::CapSet::Bounding,
    ] {
        let held = caps::read(None, set)
            .map(|c| c.len())
            .map_err(|e| e.to_string());
        check(held == Ok(0), format!("{set:?} capabilities {held:?}"));
    }
    // SAFETY: PR_GET_NO_NEW_PRIVS takes plain integers.
    let nnp = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
    check(nnp == 1, format!("no_new_privs {nnp}"));
    let fsize = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_FSIZE);
    check(
        fsize == Ok((1 << 30, 1 << 30)),
        format!("RLIMIT_FSIZE {fsize:?}"),
    );
    let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    check(vars.is_empty(), format!("environment {vars:?}"));
    // SAFETY: F_GETFD only asks whether the descriptor is open.
    let stray_open = unsafe { libc::fcntl(stray_fd, libc::F_GETFD) } != -1;
    check(!stray_open, format!("inherited fd {stray_fd} still open"));
    let mut names: Vec<String> = fs::read_dir("/")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    check(
        names == ["dev", "disk.img", "run", "vmlinux"],
        format!("root holds {names:?}"),
    );
    let kvm = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm");
    // The node is made in the jail either way; it opens when the host has KVM.
    check(kvm.is_ok() || !host_has_kvm, format!("/dev/kvm: {kvm:?}"));
    let tun = fs::metadata("/dev/net/tun").map(|m| m.file_type().is_char_device());
    check(matches!(tun, Ok(true)), format!("/dev/net/tun: {tun:?}"));
    let disk = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/disk.img");
    check(disk.is_ok(), format!("own disk: {disk:?}"));
    let kernel_write = fs::OpenOptions::new().write(true).open("/vmlinux");
    check(kernel_write.is_err(), "kernel writable".to_owned());
    check(
        fs::write("/planted", b"x").is_err(),
        "root writable".to_owned(),
    );
    check(
        fs::write("/run/sock-dir-probe", b"x").is_ok(),
        "run not writable".to_owned(),
    );
    problems
}

/// Two tenants at once: different uids; A cannot reach B's disk, socket or directory, neither
/// through the mount namespace (not visible) nor, outside it, through permissions.
fn tenants_are_apart(host: &Host) -> Result<(), String> {
    let a = host.config("tenant-a");
    let b = host.config("tenant-b");
    if a.uid == b.uid {
        return Err(format!("both tenants got uid {}", a.uid));
    }
    let b_disk = b.files[1].source.clone();
    let b_root = b.root_dir();
    let b_socket = b_root.join("run/control.sock");
    let (ready_r, ready_w) = pipe();
    let (go_r, go_w) = pipe();
    let mut b_cfg = b.clone();
    b_cfg.keep_fds = vec![ready_w.as_raw_fd(), go_r.as_raw_fd()];
    let runner = spawn_runner(|| {
        run_jailed(&b_cfg, &RealSys, || {
            let listener = UnixListener::bind("/run/control.sock");
            let _ = write_fd(
                ready_w.as_raw_fd(),
                if listener.is_ok() { b"1" } else { b"0" },
            );
            let _ = read_fd(go_r.as_raw_fd());
            0
        })
    });
    drop(ready_w);
    drop(go_r);
    let ready = wait_readable(&ready_r, TIMEOUT)?;
    if ready != b"1" {
        return Err(format!("tenant B did not come up: {ready:?}"));
    }
    let vmm_b = find_jailed_vmm(runner)?;
    let b_uid = status_field(vmm_b, "Uid")?;
    let outcome = (|| {
        if !b_uid.starts_with(&b.uid.to_string()) {
            return Err(format!("tenant B's VMM runs as {b_uid}"));
        }
        let exit = run_jailed(&a, &RealSys, || {
            let reached = [
                fs::File::open(&b_disk).is_ok(),
                fs::read_dir(&b_root).is_ok(),
                UnixStream::connect(&b_socket).is_ok(),
            ];
            i32::from(reached.iter().any(|r| *r)) * 42
        })
        .map_err(|e| e.to_string())?;
        expect_exit(exit, JailExit::Exited(0))?;
        // Outside any namespace, A's uid alone is refused by permissions.
        let denied = as_uid(a.uid, || {
            let reached = [
                fs::File::open(&b_disk).is_ok(),
                fs::read_dir(b_root.join("run")).is_ok(),
                fs::read_dir(&b_root).is_ok() && fs::read_dir(b.jail_dir()).is_ok(),
                UnixStream::connect(&b_socket).is_ok(),
            ];
            i32::from(reached.iter().any(|r| *r)) * 43
        })?;
        if denied != 0 {
            return Err("tenant A's uid reaches tenant B's files on the host".to_owned());
        }
        Ok(())
    })();
    write_fd(go_w.as_raw_fd(), b"go").map_err(|e| e.to_string())?;
    let runner_exit = wait_child(runner, TIMEOUT)?;
    outcome?;
    if runner_exit != 0 {
        return Err(format!("tenant B's runner exited {runner_exit}"));
    }
    expect_gone(&a.jail_dir())?;
    expect_gone(&b.jail_dir())
}

/// A VMM writing past RLIMIT_FSIZE dies of SIGXFSZ and condo sees that signal.
fn file_size_limit_kills(host: &Host) -> Result<(), String> {
    let mut cfg = host.config("fsize");
    cfg.rlimits.file_size = 64 * 1024;
    let exit = run_jailed(&cfg, &RealSys, || {
        let mut file = match fs::File::create("/run/console.log") {
            Ok(f) => f,
            Err(_) => return 41,
        };
        for _ in 0..100 {
            let _ = file.write_all(&[b'x'; 4096]);
        }
        40
    })
    .map_err(|e| e.to_string())?;
    expect_exit(exit, JailExit::Signaled(libc::SIGXFSZ))?;
    if exit.exit_code() != 128 + libc::SIGXFSZ {
        return Err(format!("exit code {}", exit.exit_code()));
    }
    expect_gone(&cfg.jail_dir())
}

/// Every thread of a jailed VMM that installed its filter shows Seccomp 2, CapEff 0, its uid
/// and NoNewPrivs from the host's /proc; a forbidden syscall in either kind of thread kills
/// the VMM with SIGSYS.
fn seccomp_per_thread(host: &Host) -> Result<(), String> {
    let cfg = host.config("seccomp");
    let uid = cfg.uid;
    let (ready_r, ready_w) = pipe();
    let (go_r, go_w) = pipe();
    let mut run_cfg = cfg.clone();
    run_cfg.keep_fds = vec![ready_w.as_raw_fd(), go_r.as_raw_fd()];
    let runner = spawn_runner(|| {
        run_jailed(&run_cfg, &RealSys, || {
            threads_with_filters(ready_w.as_raw_fd(), go_r.as_raw_fd(), None)
        })
    });
    drop(ready_w);
    drop(go_r);
    let ready = wait_readable(&ready_r, TIMEOUT)?;
    let checked = (|| {
        if ready != b"ok" {
            return Err(format!("jailed threads not ready: {ready:?}"));
        }
        let vmm = find_jailed_vmm(runner)?;
        let tasks = thread_statuses(vmm)?;
        if tasks.len() != 2 {
            return Err(format!("{} threads, expected 2", tasks.len()));
        }
        for (tid, status) in &tasks {
            for (field, want) in [
                ("Seccomp", "2".to_owned()),
                ("CapEff", "0000000000000000".to_owned()),
                ("CapBnd", "0000000000000000".to_owned()),
                ("NoNewPrivs", "1".to_owned()),
                ("Uid", format!("{uid}\t{uid}\t{uid}\t{uid}")),
            ] {
                let got = field_of(status, field);
                if got != want {
                    return Err(format!("thread {tid}: {field} {got:?}, expected {want:?}"));
                }
            }
        }
        Ok(())
    })();
    let _ = write_fd(go_w.as_raw_fd(), b"go");
    let runner_exit = wait_child(runner, TIMEOUT)?;
    checked?;
    if runner_exit != 0 {
        return Err(format!("runner exited {runner_exit}"));
    }
    for kind in ThreadKind::ALL {
        let (ready_r, ready_w) = pipe();
        let (go_r, go_w) = pipe();
        let mut run_cfg = cfg.clone();
        run_cfg.keep_fds = vec![ready_w.as_raw_fd(), go_r.as_raw_fd()];
        drop(go_w);
        let exit = run_jailed(&run_cfg, &RealSys, || {
            threads_with_filters(ready_w.as_raw_fd(), go_r.as_raw_fd(), Some(kind))
        })
        .map_err(|e| e.to_string())?;
        drop(ready_r);
        expect_exit(exit, JailExit::Signaled(libc::SIGSYS))
            .map_err(|e| format!("forbidden syscall on a {kind:?} thread: {e}"))?;
    }
    expect_gone(&cfg.jail_dir())
}

/// A vCPU-like thread and the main thread each install their own filter, report, wait.
fn threads_with_filters(ready: i32, go: i32, forbidden_in: Option<ThreadKind>) -> i32 {
    let (filtered_tx, filtered_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let vcpu = std::thread::spawn(move || {
        let installed = condo_vmm::jail::install_filter(ThreadKind::Vcpu).is_ok();
        let _ = filtered_tx.send(installed);
        if forbidden_in == Some(ThreadKind::Vcpu) {
            condo_vmm::jail::seccomp::make_forbidden_syscall();
        }
        let _ = release_rx.recv();
    });
    let vcpu_ok = filtered_rx.recv().unwrap_or(false);
    let vmm_ok = condo_vmm::jail::install_filter(ThreadKind::Vmm).is_ok();
    if forbidden_in == Some(ThreadKind::Vmm) {
        condo_vmm::jail::seccomp::make_forbidden_syscall();
    }
    let _ = write_fd(ready, if vcpu_ok && vmm_ok { b"ok" } else { b"no" });
    let _ = read_fd(go);
    let _ = release_tx.send(());
    let _ = vcpu.join();
    0
}

/// On a host without cgroup v2 controllers the jail refuses plainly and leaves nothing.
fn cgroup_refused_without_v2(host: &Host) -> Result<(), String> {
    let mut cfg = host.config("no-cgroup");
    cfg.cgroup = CgroupPolicy::Required(CgroupLimits::for_vm(1, 64, 64));
    let v2_with_controllers = fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
        .map(|c| {
            ["cpu", "memory", "pids"]
                .iter()
                .all(|w| c.split_whitespace().any(|x| x == *w))
        })
        .unwrap_or(false);
    if v2_with_controllers {
        println!("  (this host has cgroup v2 controllers: the refusal cannot be seen here)");
        return Ok(());
    }
    match run_jailed(&cfg, &RealSys, || 0) {
        Err(JailError::NoCgroupV2(message)) => {
            println!("  refused: {message}");
            expect_gone(&cfg.jail_dir())
        }
        other => Err(format!("expected a refusal, got {other:?}")),
    }
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("jail_process: SKIP: the jail needs root (mknod, namespaces, setuid)");
        println!("0 passed, 0 failed");
        return;
    }
    let scratch = tempfile::Builder::new()
        .prefix("condo-jail-test")
        .tempdir()
        .expect("scratch dir");
    chmod(scratch.path(), 0o755);
    let host = Host {
        base: scratch.path().join("jail"),
        images: scratch.path().join("images"),
        uids: scratch.path().join("uids"),
    };
    fs::create_dir(&host.images).expect("images dir");
    chmod(&host.images, 0o755);
    let scenarios: [(&str, Scenario); 5] = [
        ("inside_the_cell", inside_the_cell),
        ("tenants_are_apart", tenants_are_apart),
        ("file_size_limit_kills", file_size_limit_kills),
        ("seccomp_per_thread", seccomp_per_thread),
        ("cgroup_refused_without_v2", cgroup_refused_without_v2),
    ];
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (mut passed, mut failed) = (0, 0);
    for (name, scenario) in scenarios {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let started = Instant::now();
        match scenario(&host) {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({:?})", started.elapsed());
            }
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED: {e}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
