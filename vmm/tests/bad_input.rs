//! Bad input to `condo vm run`: exit code 1, a message naming the value, no hang.
//! These fail before KVM is touched, so they run on any host.

mod common;

use std::path::PathBuf;

use common::{condo, run, stderr};

fn scratch(name: &str, contents: &[u8]) -> PathBuf {
    common::scratch_file("bad-input", name, contents)
}

fn cpio() -> PathBuf {
    scratch(
        "initrd.cpio",
        b"070701 not really a full archive but the magic is right",
    )
}

fn fails_with(args: &[&str], expected: &[&str]) {
    let mut cmd = condo();
    cmd.arg("vm").arg("run").args(args);
    let out = run(cmd);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "args {args:?}: stderr {err}");
    for needle in expected {
        assert!(
            err.contains(needle),
            "args {args:?}: expected {needle:?} in {err:?}"
        );
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn zero_vcpus() {
    fails_with(
        &["--kernel", "/proc/self/exe", "--vcpus", "0"],
        &["--vcpus 0", "between 1 and 32"],
    );
}

#[test]
fn too_many_vcpus() {
    fails_with(
        &["--kernel", "/proc/self/exe", "--vcpus", "33"],
        &["--vcpus 33"],
    );
    fails_with(
        &["--kernel", "/proc/self/exe", "--vcpus", "1000"],
        &["1000"],
    );
}

#[test]
fn console_limit_too_small_or_not_a_size() {
    fails_with(
        &[
            "--kernel",
            "/proc/self/exe",
            "--console",
            "/dev/null",
            "--console-limit",
            "1k",
        ],
        &["--console-limit 1024 bytes", "at least 4096"],
    );
    fails_with(
        &["--kernel", "/proc/self/exe", "--console-limit", "12x"],
        &["--console-limit", "\"12x\"", "k, m or g"],
    );
}

#[test]
fn zero_memory() {
    fails_with(
        &["--kernel", "/proc/self/exe", "--memory", "0"],
        &["--memory 0 MiB"],
    );
}

#[test]
fn memory_beyond_host() {
    fails_with(
        &["--kernel", "/proc/self/exe", "--memory", "1000000000"],
        &["--memory 1000000000 MiB", "MemAvailable"],
    );
}

#[test]
fn missing_kernel() {
    fails_with(
        &["--kernel", "/nonexistent/vmlinux"],
        &["kernel /nonexistent/vmlinux", "No such file"],
    );
}

#[test]
fn kernel_is_a_directory() {
    fails_with(
        &["--kernel", "/tmp"],
        &["kernel /tmp", "not a regular file"],
    );
}

#[test]
fn empty_kernel() {
    let k = scratch("empty", b"");
    fails_with(
        &["--kernel", k.to_str().unwrap()],
        &[k.to_str().unwrap(), "empty"],
    );
}

#[test]
fn garbage_kernel() {
    let k = scratch("garbage", &[0x5a; 8192]);
    fails_with(
        &["--kernel", k.to_str().unwrap()],
        &[k.to_str().unwrap(), "neither an ELF vmlinux nor a bzImage"],
    );
}

#[test]
fn truncated_elf_kernel() {
    let mut bytes = vec![0u8; 64];
    bytes[..4].copy_from_slice(b"\x7fELF");
    bytes[4] = 2;
    bytes[18] = 62;
    bytes[32] = 64; // program headers right after the header...
    bytes[54] = 56;
    bytes[56] = 4; // ...four of them, past the end of the file
    let k = scratch("truncated.elf", &bytes);
    fails_with(
        &["--kernel", k.to_str().unwrap()],
        &[k.to_str().unwrap(), "malformed ELF"],
    );
}

#[test]
fn missing_initrd() {
    fails_with(
        &[
            "--kernel",
            "/proc/self/exe",
            "--initrd",
            "/nonexistent/initrd",
        ],
        &["initrd /nonexistent/initrd"],
    );
}

#[test]
fn garbage_initrd() {
    let i = scratch("garbage-initrd", b"this is not an archive");
    fails_with(
        &[
            "--kernel",
            "/proc/self/exe",
            "--initrd",
            i.to_str().unwrap(),
        ],
        &[i.to_str().unwrap(), "not an initramfs"],
    );
}

#[test]
fn cmdline_too_long() {
    let long = "x".repeat(3000);
    let k = std::env::current_exe().unwrap(); // a 64-bit ELF: the 2047-byte limit applies
    fails_with(
        &[
            "--kernel",
            k.to_str().unwrap(),
            "--initrd",
            cpio().to_str().unwrap(),
            "--cmdline",
            &long,
        ],
        &["--cmdline is 3000 bytes", "at most 2047"],
    );
}

#[test]
fn bad_config_file() {
    let c = scratch("bad.json", br#"{"kernel": "/k", "vcpu": 2}"#);
    fails_with(
        &["--config", c.to_str().unwrap()],
        &[c.to_str().unwrap(), "unknown field"],
    );
    fails_with(&["--config", "/nonexistent.json"], &["/nonexistent.json"]);
}

#[test]
fn config_file_and_flags_conflict() {
    let c = scratch("ok.json", br#"{"kernel": "/k"}"#);
    fails_with(
        &["--config", c.to_str().unwrap(), "--kernel", "/k"],
        &["cannot be used with"],
    );
}

#[test]
fn unknown_flag() {
    fails_with(&["--kernel", "/k", "--frobnicate"], &["--frobnicate"]);
}

#[test]
fn missing_disk() {
    fails_with(
        &[
            "--kernel",
            "/proc/self/exe",
            "--disk",
            "/nonexistent/d.img,ro",
        ],
        &["disk /nonexistent/d.img", "No such file"],
    );
}

#[test]
fn disk_is_a_directory() {
    fails_with(
        &["--kernel", "/proc/self/exe", "--disk", "/tmp,ro"],
        &["disk /tmp", "not a regular file"],
    );
}

#[test]
fn too_many_disks() {
    let d = scratch("disk.img", &[0u8; 1024]);
    let flag = format!("{},ro", d.display());
    let mut args = vec!["--kernel", "/proc/self/exe"];
    for _ in 0..20 {
        args.extend(["--disk", &flag]);
    }
    fails_with(&args, &["20 disks", "at most 19 virtio devices"]);
}

#[test]
fn disk_in_config_file() {
    let c = scratch(
        "disk.json",
        br#"{"kernel": "/proc/self/exe", "disks": [{"path": "/nonexistent/x.img"}]}"#,
    );
    fails_with(
        &["--config", c.to_str().unwrap()],
        &["disk /nonexistent/x.img"],
    );
    let c = scratch(
        "disk-bad.json",
        br#"{"kernel": "/k", "disks": [{"ro": true}]}"#,
    );
    fails_with(&["--config", c.to_str().unwrap()], &["unknown field"]);
}

#[test]
fn vsock_reserved_cid() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    for cid in ["0", "1", "2", "4294967296"] {
        fails_with(
            &[
                "--kernel",
                "/proc/self/exe",
                "--vsock",
                &format!("cid={cid},uds={}", uds.display()),
            ],
            &[&format!("vsock cid {cid}"), "reserved"],
        );
    }
    assert!(!uds.exists(), "nothing made for a refused VM");
}

#[test]
fn vsock_bad_syntax() {
    fails_with(
        &["--kernel", "/proc/self/exe", "--vsock", "cid=3"],
        &["cid=N,uds=PATH"],
    );
}

#[test]
fn vsock_existing_path_is_kept() {
    let existing = scratch("vsock-existing", b"someone else's file");
    fails_with(
        &[
            "--kernel",
            "/proc/self/exe",
            "--vsock",
            &format!("cid=3,uds={}", existing.display()),
        ],
        &["vsock-existing", "already exists"],
    );
    assert_eq!(std::fs::read(&existing).unwrap(), b"someone else's file");
}

#[test]
fn vsock_path_too_long_or_without_directory() {
    let long = format!("/tmp/{}", "x".repeat(120));
    fails_with(
        &[
            "--kernel",
            "/proc/self/exe",
            "--vsock",
            &format!("cid=3,uds={long}"),
        ],
        &["longer than the 107"],
    );
    fails_with(
        &[
            "--kernel",
            "/proc/self/exe",
            "--vsock",
            "cid=3,uds=/nonexistent-condo-dir/v.sock",
        ],
        &["/nonexistent-condo-dir", "does not exist"],
    );
}

#[test]
fn read_only_disk_the_jailed_vmm_cannot_read() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the jail (and its readability check) needs root");
        return;
    }
    let d = scratch("private.img", &[0u8; 1024]);
    std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let flag = format!("{},ro", d.display());
    fails_with(
        &["--kernel", "/proc/self/exe", "--disk", &flag],
        &[
            &format!("read-only disk {}", d.display()),
            "mode 600",
            "chmod o+r",
        ],
    );
}

#[test]
fn condo_vmm_is_vm_run_with_the_same_checks() {
    // The lean binary tenants run: same flags, same errors, same exit codes as `condo vm run`.
    let vmm = std::process::Command::new(env!("CARGO_BIN_EXE_condo-vmm"))
        .args(["--kernel", "/proc/self/exe", "--vcpus", "33"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&vmm.stderr);
    assert_eq!(vmm.status.code(), Some(1), "{err}");
    assert!(err.contains("--vcpus 33"), "{err}");
    let usage = std::process::Command::new(env!("CARGO_BIN_EXE_condo-vmm"))
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(1));
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_condo-vmm"))
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--vsock"));
}
