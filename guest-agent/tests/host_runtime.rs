//! Host tests of the container runtime (root, no VM): isolation defaults, process lifecycle,
//! stdio, and bad specs leaving nothing behind. They skip, saying why, when not root.

// Helpers of these tests fail loudly on purpose, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;

use common::*;
use condo_agent::runtime::defaults::SpecOptions;
use condo_agent::runtime::{ExitStatus, ProcessIo, Runtime, RuntimeError, Status};

/// Runs container `id` of `bundle` to completion: (exit, stdout, stderr).
fn run(rt: &Runtime, id: &str, bundle: &Path) -> (ExitStatus, String, String) {
    let (out_r, out_w) = pipe();
    let (err_r, err_w) = pipe();
    let io = ProcessIo {
        stdout: Some(out_w),
        stderr: Some(err_w),
        ..ProcessIo::default()
    };
    let state = rt.create(id, bundle, io).unwrap();
    rt.start(id).unwrap();
    let exit = wait_exit_within(rt, state.pid, 30);
    let (out, err) = (read_all(out_r), read_all(err_r));
    rt.delete(id, false).unwrap();
    (exit, out, err)
}

fn sh(script: &str) -> SpecOptions {
    args(&["sh", "-c", script])
}

#[test]
fn namespaces_are_in_effect() {
    require_root!();
    let _g = serial();
    let names = ["pid", "mnt", "uts", "ipc", "net", "cgroup"];
    let script: String = names
        .iter()
        .map(|n| format!("readlink /proc/self/ns/{n};"))
        .collect();
    let bundle = bundle("ns", sh(&script), |_| {});
    let rt = Runtime::new(state_root("ns")).unwrap();
    let (exit, out, err) = run(&rt, "ns", &bundle);
    assert_eq!(exit.code, Some(0), "{err}");
    let inside: Vec<&str> = out.lines().collect();
    assert_eq!(inside.len(), names.len(), "{out}");
    for (name, inside) in names.iter().zip(inside) {
        let host = std::fs::read_link(format!("/proc/self/ns/{name}")).unwrap();
        assert_ne!(
            host.to_string_lossy(),
            inside,
            "{name} namespace is the host's"
        );
        assert!(inside.starts_with(name), "{inside}");
    }
}

#[test]
fn default_capabilities_no_new_privs_and_seccomp() {
    require_root!();
    let _g = serial();
    let bundle = bundle(
        "caps",
        sh("grep -E '^(CapEff|CapBnd|CapPrm|NoNewPrivs|Seccomp|SigIgn|SigBlk):' /proc/self/status; hostname"),
        |_| {},
    );
    let rt = Runtime::new(state_root("caps")).unwrap();
    let (exit, out, err) = run(&rt, "caps", &bundle);
    assert_eq!(exit.code, Some(0), "{err}");
    for line in [
        "CapEff:\t00000000a80425fb",
        "CapBnd:\t00000000a80425fb",
        "CapPrm:\t00000000a80425fb",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
        // Nothing ignored or blocked leaks in from the runtime (Rust ignores SIGPIPE).
        "SigIgn:\t0000000000000000",
        "SigBlk:\t0000000000000000",
        "condo",
    ] {
        assert!(out.lines().any(|l| l == line), "missing {line:?} in {out}");
    }
}

#[test]
fn cap_drop_all_leaves_no_capabilities() {
    require_root!();
    let _g = serial();
    let opts = SpecOptions {
        cap_drop_all: true,
        ..sh("grep CapEff /proc/self/status")
    };
    let bundle = bundle("nocaps", opts, |_| {});
    let rt = Runtime::new(state_root("nocaps")).unwrap();
    let (_, out, _) = run(&rt, "nocaps", &bundle);
    assert_eq!(out.trim(), "CapEff:\t0000000000000000");
}

#[test]
fn seccomp_denies_with_eperm_and_clone3_with_enosys() {
    require_root!();
    let _g = serial();
    let bundle = bundle(
        "seccomp",
        args(&["/probe/condo-runtime", "probe"]),
        with_probe,
    );
    let rt = Runtime::new(state_root("seccomp")).unwrap();
    let (exit, out, err) = run(&rt, "seccomp", &bundle);
    assert_eq!(exit.code, Some(0), "{err}");
    let verdict = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} missing in {out}"))
            .parse::<i32>()
            .unwrap()
    };
    for denied in [
        "clone_newuser",
        "unshare_newns",
        "mount",
        "keyctl",
        "socket_vsock",
        "personality_read_implies_exec",
    ] {
        assert_eq!(verdict(denied), libc::EPERM, "{denied}: {out}");
    }
    assert_eq!(verdict("clone3"), libc::ENOSYS, "{out}");
    for allowed in ["socket_unix", "personality_query", "getpid"] {
        assert_eq!(verdict(allowed), 0, "{allowed}: {out}");
    }
}

#[test]
fn without_seccomp_the_same_calls_pass_the_filter() {
    require_root!();
    let _g = serial();
    let opts = SpecOptions {
        no_seccomp: true,
        ..args(&["/probe/condo-runtime", "probe"])
    };
    let bundle = bundle("noseccomp", opts, with_probe);
    let rt = Runtime::new(state_root("noseccomp")).unwrap();
    let (_, out, _) = run(&rt, "noseccomp", &bundle);
    assert!(
        out.lines()
            .any(|l| l == "keyctl=126" || l == "keyctl=0" || l == "keyctl=2"),
        "{out}"
    );
    assert!(!out.lines().any(|l| l == "clone3=38"), "{out}");
}

#[test]
fn masked_paths_are_unreadable_and_proc_sys_read_only() {
    require_root!();
    let _g = serial();
    let script = "for f in /proc/keys /proc/timer_list; do echo $f=$(wc -c < $f); done; \
                  echo acpi=$(ls /proc/acpi | wc -l); echo firmware=$(ls /sys/firmware | wc -l); \
                  echo 1 > /proc/sys/kernel/domainname && echo sys=writable; \
                  grep -E ' /proc/(sys|sysrq-trigger|bus|fs|irq) ' /proc/self/mountinfo | awk '{print $5, $6}'; \
                  if [ -e /proc/sysrq-trigger ]; then echo c > /proc/sysrq-trigger && echo sysrq=writable; fi; true";
    let bundle = bundle("masked", sh(script), |_| {});
    let rt = Runtime::new(state_root("masked")).unwrap();
    let (exit, out, err) = run(&rt, "masked", &bundle);
    assert_eq!(exit.code, Some(0), "{err}");
    for line in ["/proc/keys=0", "/proc/timer_list=0", "acpi=0", "firmware=0"] {
        assert!(out.lines().any(|l| l == line), "missing {line:?} in {out}");
    }
    assert!(!out.contains("writable"), "{out}");
    assert!(err.contains("Read-only file system"), "{err}");
    let sys = out
        .lines()
        .find(|l| l.starts_with("/proc/sys "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        sys.split(' ').nth(1).unwrap().split(',').any(|o| o == "ro"),
        "{sys}"
    );
}

#[test]
fn exit_codes_propagate() {
    require_root!();
    let _g = serial();
    let bundle = bundle("exit42", sh("exit 42"), |_| {});
    let rt = Runtime::new(state_root("exit42")).unwrap();
    let (exit, _, _) = run(&rt, "exit42", &bundle);
    assert_eq!(
        exit,
        ExitStatus {
            code: Some(42),
            signal: None,
            oom_killed: false
        }
    );
    // Through the CLI too: `run` exits with the container's code.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_condo-runtime"))
        .arg("--root")
        .arg(state_root("exit42-cli"))
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg("exit42-cli")
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(42));
}

#[test]
fn signals_propagate_and_kill_rules_hold() {
    require_root!();
    let _g = serial();
    let bundle = bundle("sig", args(&["sleep", "1000"]), |_| {});
    let rt = Runtime::new(state_root("sig")).unwrap();
    let state = rt.create("sig", &bundle, ProcessIo::default()).unwrap();
    assert_eq!(state.status, Status::Created);
    rt.start("sig").unwrap();
    assert_eq!(rt.state("sig").unwrap().status, Status::Running);
    rt.kill("sig", libc::SIGKILL).unwrap();
    let exit = wait_exit_within(&rt, state.pid, 30);
    assert_eq!(exit.signal, Some(libc::SIGKILL));
    assert_eq!(exit.shell_code(), 137);
    let st = rt.state("sig").unwrap();
    assert_eq!(st.status, Status::Stopped);
    assert_eq!(st.exit.unwrap().signal, Some(9));
    assert!(matches!(
        rt.kill("sig", libc::SIGTERM),
        Err(RuntimeError::WrongState { .. })
    ));
    rt.delete("sig", false).unwrap();
}

#[test]
fn lifecycle_errors_follow_the_spec() {
    require_root!();
    let _g = serial();
    let bundle = bundle("life", args(&["sleep", "1000"]), |_| {});
    let rt = Runtime::new(state_root("life")).unwrap();
    assert!(matches!(rt.state("nope"), Err(RuntimeError::NotFound(_))));
    let state = rt.create("life", &bundle, ProcessIo::default()).unwrap();
    assert!(matches!(
        rt.create("life", &bundle, ProcessIo::default()),
        Err(RuntimeError::AlreadyExists(_))
    ));
    assert!(matches!(
        rt.delete("life", false),
        Err(RuntimeError::WrongState { .. })
    ));
    rt.start("life").unwrap();
    let again = rt.start("life").unwrap_err().to_string();
    assert!(
        again.contains("running") && again.contains("start"),
        "{again}"
    );
    assert!(matches!(
        rt.delete("life", false),
        Err(RuntimeError::WrongState { .. })
    ));
    assert_eq!(rt.list().unwrap().len(), 1);
    rt.delete("life", true).unwrap();
    let exit = wait_exit_within(&rt, state.pid, 30);
    assert_eq!(exit.signal, Some(libc::SIGKILL));
    assert!(matches!(rt.state("life"), Err(RuntimeError::NotFound(_))));
    assert!(rt.list().unwrap().is_empty());
}

#[test]
fn exec_runs_in_the_container() {
    require_root!();
    let _g = serial();
    let bundle = bundle("exec", args(&["sleep", "1000"]), |_| {});
    let rt = Runtime::new(state_root("exec")).unwrap();
    let init = rt.create("exec", &bundle, ProcessIo::default()).unwrap();
    let early = rt
        .exec("exec", &exec_process(&["true"]), ProcessIo::default())
        .unwrap();
    assert_eq!(
        wait_exit_within(&rt, early, 30).code,
        Some(0),
        "exec into a created container"
    );
    rt.start("exec").unwrap();
    let (out_r, out_w) = pipe();
    let process = exec_process(&["sh", "-c", "echo pid=$$; cat /proc/1/cmdline | tr '\\0' ' '; echo; grep CapEff /proc/self/status; exit 3"]);
    let pid = rt
        .exec(
            "exec",
            &process,
            ProcessIo {
                stdout: Some(out_w),
                ..ProcessIo::default()
            },
        )
        .unwrap();
    let exit = wait_exit_within(&rt, pid, 30);
    let out = read_all(out_r);
    assert_eq!(exit.code, Some(3), "{out}");
    assert!(
        out.contains("sleep 1000"),
        "sees the container's pid 1: {out}"
    );
    assert!(!out.contains("pid=1\n"), "{out}");
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    let missing = rt
        .exec(
            "exec",
            &exec_process(&["no-such-binary"]),
            ProcessIo::default(),
        )
        .unwrap_err()
        .to_string();
    assert!(missing.contains("no-such-binary"), "{missing}");
    rt.delete("exec", true).unwrap();
    wait_exit_within(&rt, init.pid, 30);
}

fn exec_process(cmd: &[&str]) -> oci_spec::runtime::Process {
    let spec = condo_agent::runtime::defaults::default_spec(&args(cmd)).unwrap();
    spec.process().clone().unwrap()
}

#[test]
fn stdin_stdout_stderr_stream() {
    require_root!();
    let _g = serial();
    let bundle = bundle(
        "stdio",
        sh("while read line; do echo out:$line; echo err:$line >&2; done"),
        |_| {},
    );
    let rt = Runtime::new(state_root("stdio")).unwrap();
    let (in_r, in_w) = pipe();
    let (out_r, out_w) = pipe();
    let (err_r, err_w) = pipe();
    let io = ProcessIo {
        stdin: Some(in_r),
        stdout: Some(out_w),
        stderr: Some(err_w),
        terminal: None,
    };
    let state = rt.create("stdio", &bundle, io).unwrap();
    rt.start("stdio").unwrap();
    let mut stdin = std::fs::File::from(in_w);
    stdin.write_all(b"one\ntwo\n").unwrap();
    drop(stdin);
    let exit = wait_exit_within(&rt, state.pid, 30);
    assert_eq!(exit.code, Some(0));
    assert_eq!(read_all(out_r), "out:one\nout:two\n");
    assert_eq!(read_all(err_r), "err:one\nerr:two\n");
    rt.delete("stdio", false).unwrap();
}

#[test]
fn terminal_is_sent_over_the_console_socket() {
    require_root!();
    let _g = serial();
    let opts = SpecOptions {
        terminal: true,
        ..sh("tty; echo done")
    };
    let bundle = bundle("tty", opts, |_| {});
    let rt = Runtime::new(state_root("tty")).unwrap();
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let io = ProcessIo {
        terminal: Some(OwnedFd::from(theirs)),
        ..ProcessIo::default()
    };
    let state = rt.create("tty", &bundle, io).unwrap();
    let master = recv_fd(&ours);
    rt.start("tty").unwrap();
    let exit = wait_exit_within(&rt, state.pid, 30);
    assert_eq!(exit.code, Some(0));
    let mut out = Vec::new();
    let mut f = std::fs::File::from(master);
    let mut buf = [0u8; 256];
    // The slave side is gone once the container exited: read until EIO/EOF.
    while let Ok(n) = std::io::Read::read(&mut f, &mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("/dev/pts/0"), "{out}");
    assert!(out.contains("done"), "{out}");
    rt.delete("tty", false).unwrap();
}

fn recv_fd(sock: &std::os::unix::net::UnixStream) -> OwnedFd {
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut data = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut cbuf = [0u8; 64];
    // SAFETY: msghdr is plain old data.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = cbuf.len();
    // SAFETY: msg points at valid buffers for the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
    assert!(n > 0);
    // SAFETY: the kernel filled a SCM_RIGHTS header holding one descriptor.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        assert!(!cmsg.is_null());
        assert_eq!((*cmsg).cmsg_type, libc::SCM_RIGHTS);
        OwnedFd::from_raw_fd(std::ptr::read_unaligned(
            libc::CMSG_DATA(cmsg).cast::<i32>(),
        ))
    }
}

/// Creates `id` from a spec broken by `edit`; asserts the error names `field` and `value` and
/// that nothing is left: no state directory, no child process, no mount, no cgroup.
fn assert_rejected(
    id: &str,
    opts: SpecOptions,
    edit: impl FnOnce(&mut serde_json::Value),
    field: &str,
    value: &str,
) {
    let bundle = bundle(id, opts, edit);
    let root = state_root(id);
    let rt = Runtime::new(&root).unwrap();
    let (mounts, kids) = (mount_count(), children());
    let err = rt
        .create(id, &bundle, ProcessIo::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(field),
        "{id}: error does not name {field:?}: {err}"
    );
    assert!(
        err.contains(value),
        "{id}: error does not name {value:?}: {err}"
    );
    assert!(!root.join(id).exists(), "{id}: state directory left behind");
    assert_eq!(
        std::fs::read_dir(&root).unwrap().count(),
        0,
        "{id}: files left in the state root"
    );
    assert_eq!(children(), kids, "{id}: process left behind");
    assert_eq!(mount_count(), mounts, "{id}: mount left behind");
    assert!(
        !Path::new("/sys/fs/cgroup/condo").join(id).exists(),
        "{id}: cgroup left behind"
    );
}

#[test]
fn bad_specs_are_rejected_and_leave_nothing() {
    require_root!();
    let _g = serial();
    let _ = rootfs();
    assert_rejected(
        "bad-ns",
        args(&["true"]),
        |v| {
            v["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"type": "bogus"}));
        },
        "linux.namespaces[6].type",
        "bogus",
    );
    assert_rejected(
        "bad-cwd",
        args(&["true"]),
        |v| v["process"]["cwd"] = "relative/dir".into(),
        "process.cwd",
        "relative/dir",
    );
    assert_rejected(
        "bad-cap",
        args(&["true"]),
        |v| {
            v["process"]["capabilities"]["bounding"]
                .as_array_mut()
                .unwrap()
                .push("CAP_FLY".into());
        },
        "process.capabilities.bounding[14]",
        "CAP_FLY",
    );
    assert_rejected(
        "bad-root",
        args(&["true"]),
        |v| v["root"]["path"] = "/nonexistent/rootfs".into(),
        "root.path",
        "/nonexistent/rootfs",
    );
    // Found only inside the container (after namespaces and mounts exist): still nothing left.
    assert_rejected(
        "bad-bin",
        args(&["no-such-binary"]),
        |_| {},
        "process.args[0]",
        "no-such-binary",
    );
    assert_rejected(
        "bad-mount",
        args(&["true"]),
        |v| {
            v["mounts"].as_array_mut().unwrap().push(serde_json::json!({"destination": "/x", "type": "bind", "source": "/nonexistent-src", "options": ["bind"]}));
        },
        "mounts[7].source",
        "/nonexistent-src",
    );
}

#[test]
fn limits_without_cgroup_v2_fail_naming_the_controller() {
    require_root!();
    let _g = serial();
    if condo_agent::runtime::cgroups::is_cgroup2(Path::new("/sys/fs/cgroup")) {
        eprintln!("SKIP: this host has cgroup v2; limits are tested by tests/real-guest/runtime-cgroups.sh");
        return;
    }
    let opts = SpecOptions {
        pids_limit: Some(32),
        ..args(&["true"])
    };
    assert_rejected(
        "nov2",
        opts,
        |_| {},
        "\"pids\"",
        "linux.resources.pids.limit",
    );
}

#[test]
fn read_only_root_and_writable_overlay() {
    require_root!();
    let _g = serial();
    let opts = SpecOptions {
        read_only: true,
        ..sh("touch /made-here && echo wrote")
    };
    let bundle_ro = bundle("ro", opts, |_| {});
    let rt = Runtime::new(state_root("ro")).unwrap();
    let (exit, out, err) = run(&rt, "ro", &bundle_ro);
    assert_ne!(exit.code, Some(0));
    assert!(
        !out.contains("wrote") && err.contains("Read-only"),
        "{out} {err}"
    );
    let overlay = bundle("ovl", sh("touch /made-here && echo wrote"), |v| {
        v["annotations"] = serde_json::json!({"dev.condo.rootfs.overlay": "state"});
    });
    let (exit, out, err) = run(&rt, "ovl", &overlay);
    assert_eq!(exit.code, Some(0), "{err}");
    assert_eq!(out, "wrote\n");
    assert!(
        !rootfs().join("made-here").exists(),
        "the image stayed untouched"
    );
}

#[test]
fn user_namespace_maps_root() {
    require_root!();
    let _g = serial();
    let opts = SpecOptions {
        userns_host_id: Some(100_000),
        ..sh("cat /proc/self/uid_map; id -u; grep CapEff /proc/self/status")
    };
    let bundle = bundle("userns", opts, |_| {});
    let rt = Runtime::new(state_root("userns")).unwrap();
    let (exit, out, err) = run(&rt, "userns", &bundle);
    assert_eq!(exit.code, Some(0), "{err}");
    let fields: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(fields, ["0", "100000", "65536"], "{out}");
    assert!(out.lines().any(|l| l == "0"), "{out}");
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
}

#[test]
fn hooks_get_the_state_and_a_failing_one_undoes_create() {
    require_root!();
    let _g = serial();
    let out = state_root("hooks-out");
    std::fs::create_dir_all(&out).unwrap();
    let (pre, post) = (out.join("prestart.json"), out.join("poststop.json"));
    let hook = |file: &Path| serde_json::json!({"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}", file.display())]});
    let (pre_hook, post_hook) = (hook(&pre), hook(&post));
    let bundle = bundle("hooks", args(&["true"]), |v| {
        v["hooks"] = serde_json::json!({"prestart": [pre_hook], "poststop": [post_hook]});
    });
    let rt = Runtime::new(state_root("hooks")).unwrap();
    let (exit, _, _) = run(&rt, "hooks", &bundle);
    assert_eq!(exit.code, Some(0));
    let pre: serde_json::Value = serde_json::from_slice(&std::fs::read(&pre).unwrap()).unwrap();
    assert_eq!(pre["id"], "hooks");
    assert_eq!(pre["status"], "created");
    assert!(pre["pid"].as_i64().unwrap() > 0);
    let post: serde_json::Value = serde_json::from_slice(&std::fs::read(&post).unwrap()).unwrap();
    assert_eq!(post["status"], "stopped");
    assert_rejected(
        "hook-fails",
        args(&["true"]),
        |v| {
            v["hooks"] = serde_json::json!({"prestart": [{"path": "/bin/false"}]});
        },
        "hooks.prestart[0]",
        "/bin/false",
    );
}

#[test]
fn cli_run_forwards_signals_to_the_container() {
    require_root!();
    let _g = serial();
    use std::io::BufRead;
    let script = "trap 'echo got-term; exit 9' TERM; echo ready; while :; do sleep 0.05; done";
    let bundle = bundle("fwd", sh(script), |_| {});
    let mut cli = std::process::Command::new(env!("CARGO_BIN_EXE_condo-runtime"))
        .arg("--root")
        .arg(state_root("fwd"))
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg("fwd")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(cli.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    // SAFETY: kill only sends a signal to our child.
    unsafe { libc::kill(cli.id() as i32, libc::SIGTERM) };
    assert_eq!(lines.next().unwrap().unwrap(), "got-term");
    assert_eq!(cli.wait().unwrap().code(), Some(9));
}

#[test]
fn device_rules_hold_without_cgroup_v2() {
    require_root!();
    let _g = serial();
    let v1 = Path::new(condo_agent::runtime::devices::V1_DEVICES_ROOT);
    if !condo_agent::runtime::devices::v1_available(v1) {
        eprintln!("SKIP: no cgroup v1 devices hierarchy (on cgroup v2 the eBPF device program is tested by tests/real-guest/runtime-cgroups.sh)");
        return;
    }
    let bundle = bundle("devices", args(&["sleep", "1000"]), |_| {});
    let rt = Runtime::new(state_root("devices")).unwrap();
    let state = rt.create("devices", &bundle, ProcessIo::default()).unwrap();
    let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", state.pid)).unwrap();
    let rel = cgroup
        .lines()
        .find_map(|l| l.split_once(":devices:").map(|(_, p)| p.to_string()))
        .unwrap();
    assert_eq!(rel, "/condo/devices");
    let list = std::fs::read_to_string(v1.join("condo/devices/devices.list")).unwrap();
    assert!(!list.contains("a *:* rwm"), "{list}");
    for allowed in ["c 1:3 rwm", "c 1:9 rwm", "c 136:* rwm", "c 5:2 rwm"] {
        assert!(
            list.lines().any(|l| l == allowed),
            "{allowed} missing: {list}"
        );
    }
    assert!(
        !list.lines().any(|l| l.starts_with("b ")),
        "block devices allowed: {list}"
    );
    rt.delete("devices", true).unwrap();
    wait_exit_within(&rt, state.pid, 30);
    assert!(
        !v1.join("condo/devices").exists(),
        "devices cgroup left behind"
    );
}

/// Waits (bounded) for child `pid` to exit, then reaps it through the runtime.
fn wait_exit_within(rt: &Runtime, pid: i32, secs: i32) -> ExitStatus {
    // SAFETY: pidfd_open has no pointer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    assert!(fd >= 0, "pidfd_open({pid})");
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: pfd is valid for the call; fd is closed right after.
    let ready = unsafe { libc::poll(&mut pfd, 1, secs * 1000) };
    // SAFETY: closing the pidfd we opened.
    unsafe { libc::close(fd) };
    assert_eq!(ready, 1, "pid {pid} still running after {secs}s");
    rt.wait_child(pid).unwrap()
}

#[test]
fn kill_all_reaches_exec_processes() {
    require_root!();
    let _g = serial();
    let bundle = bundle("killall", args(&["sleep", "1000"]), |_| {});
    let rt = Runtime::new(state_root("killall")).unwrap();
    let init = rt.create("killall", &bundle, ProcessIo::default()).unwrap();
    rt.start("killall").unwrap();
    let extra = rt
        .exec(
            "killall",
            &exec_process(&["sleep", "1000"]),
            ProcessIo::default(),
        )
        .unwrap();
    // SIGTERM: the exec'd sleep dies of it; the init (PID 1 of its namespace, no handler) is
    // immune, so only kill_all can have reached the exec'd process.
    rt.kill_all("killall", libc::SIGTERM).unwrap();
    assert_eq!(wait_exit_within(&rt, extra, 10).signal, Some(libc::SIGTERM));
    assert_eq!(rt.state("killall").unwrap().status, Status::Running);
    rt.delete("killall", true).unwrap();
    assert_eq!(
        wait_exit_within(&rt, init.pid, 10).signal,
        Some(libc::SIGKILL)
    );
}
