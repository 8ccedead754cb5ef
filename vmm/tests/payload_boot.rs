//! Boots the tiny payloads from tests/payloads on the host's KVM through the `condo`
//! binary. Skipped (with the reason) where /dev/kvm is missing.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use common::{condo, kvm_or_skip, payload, run, run_with_input, stderr, stdout, RUN_TIMEOUT};

fn vm_run(name: &str, extra: &[&str]) -> Command {
    let mut cmd = condo();
    cmd.args(["vm", "run", "--kernel"])
        .arg(payload(name))
        .args(["--memory", "64"])
        .args(extra);
    cmd
}

fn scratch_dir() -> PathBuf {
    common::scratch_dir("payload-boot")
}

#[test]
fn serial_output_and_i8042_reset_exit_0() {
    if !kvm_or_skip("serial_output_and_i8042_reset_exit_0") {
        return;
    }
    let out = run(vm_run("hello", &[]));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "Hello from the condo test payload\n");
}

#[test]
fn payload_sees_the_command_line_through_boot_params() {
    if !kvm_or_skip("payload_sees_the_command_line_through_boot_params") {
        return;
    }
    let out = run(vm_run(
        "cmdline",
        &["--cmdline", "console=ttyS0 marker=c0nd0 quiet"],
    ));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "cmdline: [console=ttyS0 marker=c0nd0 quiet]\n"
    );
}

#[test]
fn mmio_accesses_exit_and_unbacked_reads_return_ones() {
    if !kvm_or_skip("mmio_accesses_exit_and_unbacked_reads_return_ones") {
        return;
    }
    let out = run(vm_run("mmio", &[]));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "mmio read: ffffffff\n");
}

#[test]
fn triple_fault_exits_3_with_reason() {
    if !kvm_or_skip("triple_fault_exits_3_with_reason") {
        return;
    }
    let out = run(vm_run("triple_fault", &[]));
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stdout(&out), "about to triple fault\n");
    assert!(
        stderr(&out).contains("triple fault (KVM_EXIT_SHUTDOWN)"),
        "{}",
        stderr(&out)
    );
    // Where the guest died, for whoever debugs it: it was in 64-bit mode (EFER.LMA).
    let err = stderr(&out);
    let efer = err
        .split("EFER=0x")
        .nth(1)
        .and_then(|rest| u64::from_str_radix(rest.trim_end(), 16).ok());
    assert!(err.contains("RIP=0x"), "{err}");
    assert_eq!(efer.map(|e| e & 0x400), Some(0x400), "{err}");
}

#[test]
fn mp_table_lists_every_vcpu() {
    if !kvm_or_skip("mp_table_lists_every_vcpu") {
        return;
    }
    for n in ["1", "2", "32"] {
        let out = run(vm_run("cpus", &["--vcpus", n]));
        assert_eq!(out.status.code(), Some(0), "{n} vCPUs: {}", stderr(&out));
        assert_eq!(stdout(&out), format!("cpus: {n}\n"));
    }
}

#[test]
fn pvh_entry_boots() {
    if !kvm_or_skip("pvh_entry_boots") {
        return;
    }
    let out = run(vm_run("pvh_hello", &[]));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "Hello from the condo test payload\n");
}

#[test]
fn stdin_reaches_the_guest_even_before_its_uart_is_ready() {
    if !kvm_or_skip("stdin_reaches_the_guest_even_before_its_uart_is_ready") {
        return;
    }
    // The input is written before the VM starts: it must wait for the guest's driver.
    let out = run_with_input(vm_run("echo_input", &[]), b"typed early\n");
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "got: typed early\n");
}

#[test]
fn console_to_file() {
    if !kvm_or_skip("console_to_file") {
        return;
    }
    let log = scratch_dir().join("console.log");
    let out = run(vm_run("hello", &["--console", log.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "Hello from the condo test payload\n"
    );
}

/// The flood payload's lines: "flood XXXXXXXX\n" for 0..0x2000, then "flood done\n".
const FLOOD_LINES: u32 = 0x2000;
const FLOOD_BYTES: usize = 0x2000 * 15 + 11;

#[test]
fn console_file_keeps_the_latest_output_within_its_limit() {
    if !kvm_or_skip("console_file_keeps_the_latest_output_within_its_limit") {
        return;
    }
    let log = scratch_dir().join("flood.log");
    let limit = 16 * 1024;
    let out = run(vm_run(
        "flood",
        &["--console", log.to_str().unwrap(), "--console-limit", "16k"],
    ));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.len() <= limit, "{} bytes > {limit}", text.len());
    assert!(
        text.ends_with(&format!("flood {:08x}\nflood done\n", FLOOD_LINES - 1)),
        "{text}"
    );
    // A notice counting what was dropped, then whole consecutive lines: nothing else lost.
    let (notice, kept) = text.split_once('\n').unwrap();
    let dropped: usize = notice
        .strip_prefix("[condo: ")
        .and_then(|rest| rest.split_once(" bytes of earlier console output dropped"))
        .map(|(n, _)| n.parse().unwrap())
        .unwrap_or_else(|| panic!("no drop notice: {notice:?}"));
    assert_eq!(dropped + kept.len(), FLOOD_BYTES);
    let counters: Vec<u32> = kept
        .lines()
        .filter(|line| *line != "flood done")
        .map(|line| {
            let hex = line.strip_prefix("flood ");
            let hex = hex.unwrap_or_else(|| panic!("stray line {line:?}"));
            u32::from_str_radix(hex, 16).unwrap()
        })
        .collect();
    assert!(counters.len() > 500, "only {} lines kept", counters.len());
    assert!(counters.windows(2).all(|w| w[1] == w[0] + 1), "{kept}");
}

#[test]
fn json_config_file() {
    if !kvm_or_skip("json_config_file") {
        return;
    }
    let config = scratch_dir().join("vm.json");
    let json = serde_json::json!({"kernel": payload("cpus"), "vcpus": 3, "memory_mib": 32});
    std::fs::write(&config, json.to_string()).unwrap();
    let mut cmd = condo();
    cmd.args(["vm", "run", "--config"]).arg(&config);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "cpus: 3\n");
}

#[test]
fn memory_above_the_mmio_hole() {
    if !kvm_or_skip("memory_above_the_mmio_hole") {
        return;
    }
    // 4 GiB of guest RAM: 3 GiB below the hole, 1 GiB above 4 GiB (mapped lazily).
    let mut cmd = condo();
    cmd.args(["vm", "run", "--kernel"])
        .arg(payload("hello"))
        .args(["--memory", "4096"]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "Hello from the condo test payload\n");
}

#[test]
fn initrd_larger_than_memory_is_refused() {
    if !kvm_or_skip("initrd_larger_than_memory_is_refused") {
        return;
    }
    let initrd = scratch_dir().join("big.cpio");
    let mut bytes = b"070701".to_vec();
    bytes.resize(6 << 20, 0);
    std::fs::write(&initrd, bytes).unwrap();
    let mut cmd = condo();
    cmd.args(["vm", "run", "--kernel"])
        .arg(payload("hello"))
        .args(["--memory", "4", "--initrd", initrd.to_str().unwrap()]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(initrd.to_str().unwrap()) && err.contains("do not fit"),
        "{err}"
    );
}

#[test]
fn sigterm_ends_the_vm_with_143() {
    if !kvm_or_skip("sigterm_ends_the_vm_with_143") {
        return;
    }
    // echo_input waits for input forever; stdin stays open.
    let mut child = vm_run("echo_input", &[])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut prefix = [0u8; 5];
        let _ = std::io::Read::read_exact(lines.get_mut(), &mut prefix);
        let _ = tx.send(prefix);
        let mut rest = String::new();
        let _ = lines.read_line(&mut rest);
    });
    let prefix = rx.recv_timeout(RUN_TIMEOUT).expect("guest output");
    assert_eq!(&prefix, b"got: ");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(RUN_TIMEOUT)
        .expect("condo exits after SIGTERM")
        .unwrap();
    assert_eq!(out.status.code(), Some(143), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("signal 15"));
}

#[test]
fn pvm_host_refuses_linux_images() {
    if !kvm_or_skip("pvm_host_refuses_linux_images") {
        return;
    }
    if !std::path::Path::new("/sys/module/kvm_pvm").exists() {
        eprintln!("SKIP pvm_host_refuses_linux_images: this host's KVM is not PVM");
        return;
    }
    let mut bz = vec![0u8; 0x1000];
    bz[0x202..0x206].copy_from_slice(b"HdrS");
    bz[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
    bz[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes());
    let image = scratch_dir().join("fake-bzImage");
    std::fs::write(&image, bz).unwrap();
    let mut cmd = condo();
    cmd.args(["vm", "run", "--kernel"])
        .arg(&image)
        .env_remove("CONDO_ALLOW_PVM_LINUX");
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("PVM")
            && err.contains("hardware virtualization")
            && err.contains("scripts/emulated-kvm-host"),
        "{err}"
    );
}

/// Starts `cmd` on the spin payload (its vCPU never leaves KVM_RUN by itself), waits for its
/// line, sends `signal` and waits (bounded) for the VMM to end; returns its output.
// Test support: failing loudly is the point.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
fn signal_a_spinning_vm(mut cmd: Command, signal: &str) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = lines.read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(RUN_TIMEOUT).expect("guest output");
    assert_eq!(line, "spinning\n");
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(RUN_TIMEOUT)
        .unwrap_or_else(|_| panic!("the VMM still runs {RUN_TIMEOUT:?} after SIG{signal}"))
        .unwrap()
}

#[test]
fn signals_end_a_vm_whose_vcpu_never_leaves_kvm_run() {
    if !kvm_or_skip("signals_end_a_vm_whose_vcpu_never_leaves_kvm_run") {
        return;
    }
    // `condo vm run`, jailed when root: condo forwards the signal into the jail.
    let out = signal_a_spinning_vm(vm_run("spin", &[]), "TERM");
    assert_eq!(out.status.code(), Some(143), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("signal 15"), "{}", stderr(&out));
    // condo-vmm unjailed: the VMM's own signal handling kicks the vCPU out of KVM_RUN.
    let mut vmm = Command::new(env!("CARGO_BIN_EXE_condo-vmm"));
    vmm.args(["--no-jail", "--memory", "64", "--kernel"])
        .arg(payload("spin"));
    let out = signal_a_spinning_vm(vmm, "INT");
    assert_eq!(out.status.code(), Some(130), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("signal 2"), "{}", stderr(&out));
}
