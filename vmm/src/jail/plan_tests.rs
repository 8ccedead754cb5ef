//! The jail's plan checked against the recording mock: what is made, in which order, and that a
//! failure at any step leaves nothing behind.

use super::config::*;
use super::mock::MockSys;
use super::plan::{confine, prepare};
use super::JailError;

fn limits() -> CgroupLimits {
    CgroupLimits::for_vm(2, 128, DEFAULT_VMM_OVERHEAD_MIB)
}

fn config(cgroup: CgroupPolicy) -> JailConfig {
    let mut cfg = JailConfig::new("acme", 900_000, 900_000, cgroup);
    cfg.base_dir = "/srv/j".into();
    cfg.cgroup_root = "/cg".into();
    cfg.devices = vec![DeviceNode::Kvm, DeviceNode::Tun];
    cfg.files = vec![
        ExposedFile {
            source: "/img/vmlinux".into(),
            inside: "/img/vmlinux".into(),
            mode: ExposeMode::LinkOrCopy,
        },
        ExposedFile {
            source: "/img/initrd".into(),
            inside: "/img/initrd".into(),
            mode: ExposeMode::LinkOrCopy,
        },
        ExposedFile {
            source: "/img/disk.img".into(),
            inside: "/img/disk.img".into(),
            mode: ExposeMode::BindReadWrite,
        },
        ExposedFile {
            source: "/img/base.img".into(),
            inside: "/img/base.img".into(),
            mode: ExposeMode::BindReadOnly,
        },
    ];
    cfg.keep_fds = vec![7];
    cfg
}

fn host() -> MockSys {
    MockSys::new()
        .with_file("/srv", 0o755)
        .with_file("/img/vmlinux", 0o644)
        .with_file("/img/initrd", 0o600)
        .with_file("/img/disk.img", 0o600)
        .with_file("/img/base.img", 0o644)
}

fn made_under(sys: &MockSys, dir: &str) -> Vec<String> {
    let files = sys.files.borrow();
    let mut left: Vec<String> = files
        .keys()
        .filter(|p| p.starts_with(dir))
        .map(|p| p.display().to_string())
        .collect();
    left.sort();
    left
}

#[test]
fn prepare_builds_root_devices_files_and_cgroup() {
    let sys = host();
    let prepared = prepare(&config(CgroupPolicy::Required(limits())), &sys).unwrap();
    let expected = [
        "mkdir /srv/j 700",
        "mkdir /srv/j/acme 700",
        "mkdir /srv/j/acme/root 755",
        "mkdir /srv/j/acme/root/run 700",
        "chown /srv/j/acme/root/run 900000:900000",
        "mkdir /srv/j/acme/root/dev 755",
        "mknod /srv/j/acme/root/dev/kvm c 10:232 600",
        "chown /srv/j/acme/root/dev/kvm 900000:900000",
        "mkdir /srv/j/acme/root/dev/net 755",
        "mknod /srv/j/acme/root/dev/net/tun c 10:200 600",
        "chown /srv/j/acme/root/dev/net/tun 900000:900000",
        // World-readable, owner-only writable, same filesystem: a link.
        "mkdir /srv/j/acme/root/img 755",
        "link /img/vmlinux /srv/j/acme/root/img/vmlinux",
        // Not readable by the tenant: a private copy it owns.
        "copy /img/initrd /srv/j/acme/root/img/initrd 400",
        "chown /srv/j/acme/root/img/initrd 900000:900000",
        "chown /img/disk.img 900000:900000",
        "chmod /img/disk.img 600",
        "touch /srv/j/acme/root/img/disk.img 600",
        "touch /srv/j/acme/root/img/base.img 600",
        "read /cg/cgroup.controllers",
        "write /cg/cgroup.subtree_control +cpu +memory +pids",
        "mkdir /cg/condo 755",
        "write /cg/condo/cgroup.subtree_control +cpu +memory +pids",
        "mkdir /cg/condo/acme 755",
        "write /cg/condo/acme/cpu.max 200000 100000",
        "write /cg/condo/acme/memory.max 201326592",
        "write /cg/condo/acme/pids.max 18",
    ];
    assert_eq!(sys.calls(), expected);
    assert_eq!(prepared.bind_mounts.len(), 2);
    assert!(prepared.bind_mounts[1].read_only);

    prepared.cleanup(&sys).unwrap();
    assert!(made_under(&sys, "/srv/j/acme").is_empty());
    let calls = sys.calls();
    assert_eq!(
        &calls[calls.len() - 2..],
        ["rm -r /srv/j/acme", "rmdir /cg/condo/acme"]
    );
}

#[test]
fn confine_runs_in_a_safe_order() {
    let sys = host();
    let cfg = config(CgroupPolicy::Required(limits()));
    let prepared = prepare(&cfg, &sys).unwrap();
    sys.calls.borrow_mut().clear();
    confine(&cfg, &prepared, &sys, &[9]).unwrap();
    let expected = [
        // The host's cgroupfs is visible only before pivot_root.
        "write /cg/condo/acme/cgroup.procs 0",
        "unshare mnt=true ipc=true uts=true net=true",
        // Before any mount, so none of the jail's mounts reaches the host.
        "mount --make-rprivate /",
        "bind /img/disk.img /srv/j/acme/root/img/disk.img rw",
        "bind /img/base.img /srv/j/acme/root/img/base.img ro",
        "pivot_root /srv/j/acme/root",
        "hostname acme",
        "rlimit OpenFiles 1024",
        "rlimit FileSize 1073741824",
        // Dropping the bounding set needs CAP_SETPCAP: before the uid change.
        "capbset drop all",
        "setids 900000:900000",
        // setuid leaves the inheritable set; ambient is cleared too.
        "caps clear",
        "no_new_privs",
        "close_fds except [7, 9]",
        "clearenv",
    ];
    assert_eq!(sys.calls(), expected);
}

#[test]
fn without_cgroup_and_net_nothing_of_them_is_made() {
    let sys = host();
    let mut cfg = config(CgroupPolicy::Disabled);
    cfg.namespaces.net = false;
    let prepared = prepare(&cfg, &sys).unwrap();
    assert!(prepared.cgroup_dir.is_none());
    confine(&cfg, &prepared, &sys, &[]).unwrap();
    let calls = sys.calls();
    assert!(calls.iter().all(|c| !c.contains("/cg")), "{calls:#?}");
    assert!(calls.contains(&"unshare mnt=true ipc=true uts=true net=false".to_owned()));
}

#[test]
fn a_host_without_cgroup_v2_is_refused_and_nothing_is_left() {
    let mut sys = host();
    sys.cgroup2 = false;
    let err = prepare(&config(CgroupPolicy::Required(limits())), &sys).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, JailError::NoCgroupV2(_)), "{message}");
    assert!(message.contains("not a cgroup v2 mount"), "{message}");
    assert!(message.contains("--jail-no-cgroup"), "{message}");
    assert!(made_under(&sys, "/srv/j/acme").is_empty());
    assert!(sys.calls().contains(&"rm -r /srv/j/acme".to_owned()));
}

#[test]
fn missing_controllers_are_named() {
    let mut sys = host();
    sys.controllers = "hugetlb".to_owned();
    let err = prepare(&config(CgroupPolicy::Required(limits())), &sys).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("cpu, memory, pids"), "{message}");
    assert!(message.contains("hugetlb"), "{message}");
}

#[test]
fn a_failure_midway_removes_what_was_made() {
    for fail in [
        "mknod",
        "link",
        "copy",
        "touch",
        "write /cg/condo/acme/memory.max",
    ] {
        let mut sys = host();
        sys.fail = Some(fail.to_owned());
        let err = prepare(&config(CgroupPolicy::Required(limits())), &sys).unwrap_err();
        assert!(matches!(err, JailError::Io { .. }), "{fail}: {err}");
        assert!(made_under(&sys, "/srv/j/acme").is_empty(), "{fail}");
        assert!(made_under(&sys, "/cg/condo/acme").is_empty(), "{fail}");
    }
}

#[test]
fn an_existing_jail_is_never_reused_nor_removed() {
    let sys = host()
        .with_file("/srv/j", 0o700)
        .with_file("/srv/j/acme", 0o700);
    let err = prepare(&config(CgroupPolicy::Disabled), &sys).unwrap_err();
    assert!(matches!(err, JailError::AlreadyExists(_)), "{err}");
    assert!(
        sys.calls().iter().all(|c| !c.starts_with("rm")),
        "{:?}",
        sys.calls()
    );
    assert_eq!(made_under(&sys, "/srv/j/acme"), ["/srv/j/acme"]);
}

#[test]
fn files_on_another_filesystem_or_writable_by_others_are_copied() {
    let mut sys = host().with_file("/img/shared", 0o666);
    sys.same_fs = false;
    let mut cfg = config(CgroupPolicy::Disabled);
    cfg.files.truncate(1);
    prepare(&cfg, &sys).unwrap();
    assert!(sys
        .calls()
        .contains(&"copy /img/vmlinux /srv/j/acme/root/img/vmlinux 400".to_owned()));

    let sys = host().with_file("/img/shared", 0o666);
    cfg.files[0].source = "/img/shared".into();
    prepare(&cfg, &sys).unwrap();
    assert!(sys
        .calls()
        .contains(&"copy /img/shared /srv/j/acme/root/img/vmlinux 400".to_owned()));
}

#[test]
fn a_missing_file_is_named_and_nothing_is_left() {
    let sys = MockSys::new().with_file("/srv", 0o755);
    let err = prepare(&config(CgroupPolicy::Disabled), &sys).unwrap_err();
    assert!(err.to_string().contains("/img/vmlinux"), "{err}");
    assert!(made_under(&sys, "/srv/j/acme").is_empty());
}

#[test]
fn a_bad_config_creates_nothing() {
    let sys = host();
    let mut cfg = config(CgroupPolicy::Disabled);
    cfg.uid = 0;
    assert!(prepare(&cfg, &sys).is_err());
    assert!(sys.calls().is_empty());
}

#[test]
fn a_directory_is_bound_read_only_on_a_directory_mount_point() {
    let sys = host().with_file("/run/condo/t", 0o755);
    let mut cfg = config(CgroupPolicy::Disabled);
    cfg.files = vec![ExposedFile {
        source: "/run/condo/t".into(),
        inside: "/vsock".into(),
        mode: ExposeMode::BindDirReadOnly,
    }];
    let prepared = prepare(&cfg, &sys).unwrap();
    let calls = sys.calls();
    assert!(
        calls.contains(&"mkdir /srv/j/acme/root/vsock 755".to_owned()),
        "{calls:#?}"
    );
    assert!(
        !calls.iter().any(|c| c.contains("chown /run/condo")),
        "{calls:#?}"
    );
    assert_eq!(prepared.bind_mounts.len(), 1);
    assert!(prepared.bind_mounts[0].read_only);
    assert_eq!(
        prepared.bind_mounts[0].source,
        std::path::Path::new("/run/condo/t")
    );
    // A missing directory fails the preparation and leaves nothing behind.
    let sys = host();
    assert!(prepare(&cfg, &sys).is_err());
    assert!(made_under(&sys, "/srv/j/acme").is_empty());
}
