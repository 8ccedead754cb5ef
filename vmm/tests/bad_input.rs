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
