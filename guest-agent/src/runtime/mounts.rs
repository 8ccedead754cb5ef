//! The container's filesystem: rootfs (optionally read-only image + writable overlay), the
//! spec's mounts, the minimal /dev, pivot_root, masked and read-only paths. The plan is data
//! built in the parent ([`RootfsPlan`]); [`setup_rootfs`] carries it out through [`Syscall`].

use std::path::{Component, Path, PathBuf};

use super::syscall::Syscall;
use super::RuntimeError;

/// One mount of the spec, resolved against the rootfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// Destination inside the container (absolute, normalised).
    pub destination: PathBuf,
    pub source: Option<PathBuf>,
    pub fstype: Option<String>,
    pub flags: libc::c_ulong,
    /// Propagation flags applied after the mount (MS_PRIVATE, MS_SLAVE, ... | MS_REC).
    pub propagation: libc::c_ulong,
    pub data: Option<String>,
    pub bind: bool,
}

/// A device node to create in /dev.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceNode {
    pub path: PathBuf,
    /// S_IFCHR / S_IFBLK / S_IFIFO | permission bits.
    pub mode: libc::mode_t,
    pub major: u32,
    pub minor: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Everything the init needs to build the container's filesystem.
#[derive(Clone, Debug, Default)]
pub struct RootfsPlan {
    /// Absolute host path of the image root.
    pub rootfs: PathBuf,
    /// Writable overlay over a read-only image: the directory holding upper/ and work/ (on the
    /// host), or None for the image as it is.
    pub overlay: Option<PathBuf>,
    /// Propagation of the container's "/" (default MS_SLAVE|MS_REC, as runc).
    pub root_propagation: libc::c_ulong,
    pub mounts: Vec<MountEntry>,
    pub devices: Vec<DeviceNode>,
    /// Bind host device nodes instead of mknod (inside a user namespace).
    pub bind_devices: bool,
    pub masked_paths: Vec<PathBuf>,
    pub readonly_paths: Vec<PathBuf>,
    pub readonly_root: bool,
    pub hostname: Option<String>,
    /// (file under /proc/sys, value), written after pivot_root, before /proc/sys turns read-only.
    pub sysctl: Vec<(PathBuf, String)>,
}

/// Docker's minimal device set (also the default device cgroup allow list).
pub fn default_devices() -> Vec<DeviceNode> {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
    .iter()
    .map(|(name, major, minor)| DeviceNode {
        path: PathBuf::from("/dev").join(name),
        mode: libc::S_IFCHR | 0o666,
        major: *major,
        minor: *minor,
        uid: 0,
        gid: 0,
    })
    .collect()
}

/// `dest` (absolute, inside the container) under `root`, refusing ".." that would escape.
pub fn join_in_root(root: &Path, dest: &Path, field: &str) -> Result<PathBuf, RuntimeError> {
    let mut out = root.to_path_buf();
    let mut depth = 0usize;
    for component in dest.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => {
                out.push(part);
                depth += 1;
            }
            Component::ParentDir => {
                if depth == 0 {
                    return Err(RuntimeError::spec(
                        field,
                        format!("{} escapes the root", dest.display()),
                    ));
                }
                out.pop();
                depth -= 1;
            }
            Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

/// `dest` under `root` with symlinks in the image resolved *inside* `root` (an absolute link
/// target restarts at `root`, ".." stops at it), so a hostile image cannot aim a mount or a
/// device node at a host path.
pub fn secure_join(sys: &dyn Syscall, root: &Path, dest: &Path) -> Result<PathBuf, RuntimeError> {
    let mut current = PathBuf::new();
    let mut queue: std::collections::VecDeque<std::ffi::OsString> = dest
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut links = 0;
    while let Some(part) = queue.pop_front() {
        if part == ".." {
            current.pop();
            continue;
        }
        let candidate = current.join(&part);
        match sys.read_link(&root.join(&candidate)) {
            Some(target) => {
                links += 1;
                if links > 40 {
                    return Err(RuntimeError::Setup(format!(
                        "too many symlinks resolving {} in {}",
                        dest.display(),
                        root.display()
                    )));
                }
                if target.is_absolute() {
                    current.clear();
                }
                let mut resolved: std::collections::VecDeque<std::ffi::OsString> = target
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(p) => Some(p.to_os_string()),
                        Component::ParentDir => Some("..".into()),
                        _ => None,
                    })
                    .collect();
                resolved.extend(queue);
                queue = resolved;
            }
            None => current = candidate,
        }
    }
    Ok(root.join(current))
}

/// Mount flags and data of OCI mount `options`: (flags, propagation, data, bind).
pub fn parse_options(options: &[String]) -> (libc::c_ulong, libc::c_ulong, Option<String>, bool) {
    let (mut flags, mut propagation, mut bind) = (0, 0, false);
    let mut data = Vec::new();
    for opt in options {
        let (set, clear): (libc::c_ulong, libc::c_ulong) = match opt.as_str() {
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "dirsync" => (libc::MS_DIRSYNC, 0),
            "remount" => (libc::MS_REMOUNT, 0),
            "mand" => (libc::MS_MANDLOCK, 0),
            "nomand" => (0, libc::MS_MANDLOCK),
            "atime" => (0, libc::MS_NOATIME),
            "noatime" => (libc::MS_NOATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "relatime" => (libc::MS_RELATIME, 0),
            "norelatime" => (0, libc::MS_RELATIME),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "nostrictatime" => (0, libc::MS_STRICTATIME),
            "bind" => {
                bind = true;
                (libc::MS_BIND, 0)
            }
            "rbind" => {
                bind = true;
                (libc::MS_BIND | libc::MS_REC, 0)
            }
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                propagation |= propagation_flag(opt).unwrap_or(0);
                (0, 0)
            }
            other => {
                data.push(other.to_string());
                (0, 0)
            }
        };
        flags = (flags | set) & !clear;
    }
    let data = (!data.is_empty()).then(|| data.join(","));
    (flags, propagation, data, bind)
}

/// MS_* propagation flags of a propagation name ("rslave" → MS_SLAVE|MS_REC).
pub fn propagation_flag(name: &str) -> Option<libc::c_ulong> {
    Some(match name {
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | libc::MS_REC,
        "slave" => libc::MS_SLAVE,
        "rslave" => libc::MS_SLAVE | libc::MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
        _ => return None,
    })
}

fn sys_err(what: &str, path: &Path, e: std::io::Error) -> RuntimeError {
    RuntimeError::Setup(format!("{what} {}: {e}", path.display()))
}

/// Builds the container's filesystem and pivots into it. Runs in the init, inside its new
/// mount namespace; afterwards the cwd is the new "/".
pub fn setup_rootfs(sys: &dyn Syscall, plan: &RootfsPlan) -> Result<(), RuntimeError> {
    let slash = Path::new("/");
    sys.mount(None, slash, None, plan.root_propagation, None)
        .map_err(|e| sys_err("set propagation of", slash, e))?;
    let root = match &plan.overlay {
        Some(dir) => mount_overlay(sys, &plan.rootfs, dir)?,
        None => {
            // pivot_root needs the new root to be a mount point.
            sys.mount(
                Some(&plan.rootfs),
                &plan.rootfs,
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            )
            .map_err(|e| sys_err("bind rootfs", &plan.rootfs, e))?;
            plan.rootfs.clone()
        }
    };
    for entry in &plan.mounts {
        mount_entry(sys, &root, entry)?;
    }
    create_devices(sys, &root, plan)?;
    if let Some(name) = &plan.hostname {
        sys.sethostname(name)
            .map_err(|e| RuntimeError::Setup(format!("sethostname {name:?}: {e}")))?;
    }
    pivot(sys, &root)?;
    for (file, value) in &plan.sysctl {
        std::fs::write(file, value)
            .map_err(|e| sys_err(&format!("write sysctl {value:?} to"), file, e))?;
    }
    for path in &plan.masked_paths {
        mask_path(sys, path)?;
    }
    for path in &plan.readonly_paths {
        readonly_path(sys, path)?;
    }
    if plan.readonly_root {
        remount_readonly(sys, slash, false)?;
    }
    Ok(())
}

fn mount_overlay(sys: &dyn Syscall, image: &Path, dir: &Path) -> Result<PathBuf, RuntimeError> {
    let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
    for d in [&upper, &work, &merged] {
        sys.mkdir_all(d).map_err(|e| sys_err("create", d, e))?;
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        image.display(),
        upper.display(),
        work.display()
    );
    sys.mount(
        Some(Path::new("overlay")),
        &merged,
        Some("overlay"),
        0,
        Some(&data),
    )
    .map_err(|e| sys_err("mount overlay on", &merged, e))?;
    Ok(merged)
}

fn mount_entry(sys: &dyn Syscall, root: &Path, entry: &MountEntry) -> Result<(), RuntimeError> {
    let target = secure_join(sys, root, &entry.destination)?;
    let source_is_file = entry.bind
        && entry
            .source
            .as_deref()
            .and_then(|s| sys.kind(s))
            .is_some_and(|dir| !dir);
    if source_is_file {
        sys.create_file(&target)
    } else {
        sys.mkdir_all(&target)
    }
    .map_err(|e| sys_err("create mount point", &target, e))?;
    let fstype = match entry.fstype.as_deref() {
        // Docker specs say "cgroup"; condo's hosts and guests use the unified hierarchy.
        Some("cgroup") => Some("cgroup2"),
        other => other,
    };
    if entry.bind {
        // A bind mount ignores most flags: bind first, then remount with them.
        sys.mount(
            entry.source.as_deref(),
            &target,
            None,
            entry.flags & (libc::MS_BIND | libc::MS_REC),
            None,
        )
        .map_err(|e| sys_err("bind mount onto", &target, e))?;
        let extra = entry.flags & !(libc::MS_BIND | libc::MS_REC);
        if extra != 0 {
            let locked = sys.mount_flags(&target).map(locked_flags).unwrap_or(0);
            sys.mount(
                None,
                &target,
                None,
                extra | locked | libc::MS_BIND | libc::MS_REMOUNT,
                None,
            )
            .map_err(|e| sys_err("remount", &target, e))?;
        }
    } else {
        sys.mount(
            entry.source.as_deref(),
            &target,
            fstype,
            entry.flags,
            entry.data.as_deref(),
        )
        .map_err(|e| sys_err(&format!("mount {}", fstype.unwrap_or("?")), &target, e))?;
    }
    if entry.propagation != 0 {
        sys.mount(None, &target, None, entry.propagation, None)
            .map_err(|e| sys_err("set propagation of", &target, e))?;
    }
    Ok(())
}

fn create_devices(sys: &dyn Syscall, root: &Path, plan: &RootfsPlan) -> Result<(), RuntimeError> {
    let dev = secure_join(sys, root, Path::new("/dev"))?;
    for node in &plan.devices {
        let target = secure_join(sys, root, &node.path)?;
        if plan.bind_devices {
            sys.create_file(&target)
                .map_err(|e| sys_err("create", &target, e))?;
            sys.mount(Some(&node.path), &target, None, libc::MS_BIND, None)
                .map_err(|e| sys_err("bind device onto", &target, e))?;
        } else {
            let devno = libc::makedev(node.major, node.minor);
            sys.mknod(&target, node.mode, devno)
                .map_err(|e| sys_err("mknod", &target, e))?;
            sys.chown(&target, node.uid, node.gid)
                .map_err(|e| sys_err("chown", &target, e))?;
        }
    }
    if sys.kind(&dev) == Some(true) || !plan.devices.is_empty() {
        for (target, link) in [
            ("/proc/self/fd", "fd"),
            ("/proc/self/fd/0", "stdin"),
            ("/proc/self/fd/1", "stdout"),
            ("/proc/self/fd/2", "stderr"),
            ("pts/ptmx", "ptmx"),
        ] {
            let link = dev.join(link);
            if sys.kind(&link).is_none() {
                sys.symlink(Path::new(target), &link)
                    .map_err(|e| sys_err("symlink", &link, e))?;
            }
        }
    }
    Ok(())
}

/// pivot_root(".", ".") then detach the old root stacked underneath (runc's way: no
/// temporary directory in the image).
fn pivot(sys: &dyn Syscall, root: &Path) -> Result<(), RuntimeError> {
    let dot = Path::new(".");
    sys.chdir(root).map_err(|e| sys_err("chdir", root, e))?;
    match sys.pivot_root(dot, dot) {
        Ok(()) => {}
        // The root is an initramfs (the guest, an emulated host): it cannot be pivoted away.
        // Move the new root over "/" and chroot, as runc's --no-pivot does; the old root stays
        // covered by the moved mount.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            sys.mount(Some(root), Path::new("/"), None, libc::MS_MOVE, None)
                .map_err(|e| sys_err("move the new root over / from", root, e))?;
            sys.chroot(dot)
                .map_err(|e| sys_err("chroot into", root, e))?;
            return sys
                .chdir(Path::new("/"))
                .map_err(|e| sys_err("chdir", Path::new("/"), e));
        }
        Err(e) => return Err(sys_err("pivot_root into", root, e)),
    }
    // Keep the unmount of the old root from propagating to the host.
    sys.mount(None, dot, None, libc::MS_SLAVE | libc::MS_REC, None)
        .map_err(|e| sys_err("make old root slave", root, e))?;
    sys.umount2(dot, libc::MNT_DETACH)
        .map_err(|e| sys_err("detach old root", root, e))?;
    sys.chdir(Path::new("/"))
        .map_err(|e| sys_err("chdir", Path::new("/"), e))
}

fn mask_path(sys: &dyn Syscall, path: &Path) -> Result<(), RuntimeError> {
    let result = match sys.kind(path) {
        None => return Ok(()),
        Some(true) => sys.mount(
            Some(Path::new("tmpfs")),
            path,
            Some("tmpfs"),
            libc::MS_RDONLY,
            Some("size=0k"),
        ),
        Some(false) => sys.mount(
            Some(Path::new("/dev/null")),
            path,
            None,
            libc::MS_BIND,
            None,
        ),
    };
    result.map_err(|e| sys_err("mask", path, e))
}

fn readonly_path(sys: &dyn Syscall, path: &Path) -> Result<(), RuntimeError> {
    if sys.kind(path).is_none() {
        return Ok(());
    }
    sys.mount(Some(path), path, None, libc::MS_BIND | libc::MS_REC, None)
        .map_err(|e| sys_err("bind read-only path", path, e))?;
    remount_readonly(sys, path, true)
}

/// Flags a remount must repeat or the kernel refuses it (locked in a user namespace).
fn locked_flags(st_flags: libc::c_ulong) -> libc::c_ulong {
    let mut flags = 0;
    for (st, ms) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if st_flags & st != 0 {
            flags |= ms;
        }
    }
    flags
}

fn remount_readonly(sys: &dyn Syscall, path: &Path, recursive: bool) -> Result<(), RuntimeError> {
    let locked = sys.mount_flags(path).map(locked_flags).unwrap_or(0);
    let rec = if recursive { libc::MS_REC } else { 0 };
    sys.mount(
        None,
        path,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | rec | locked,
        None,
    )
    .map_err(|e| sys_err("remount read-only", path, e))
}

#[cfg(test)]
mod tests {
    use super::super::syscall::{Call, RecordingSyscall};
    use super::*;

    fn plan() -> RootfsPlan {
        let (flags, propagation, data, bind) =
            parse_options(&["nosuid".into(), "mode=755".into(), "size=65536k".into()]);
        RootfsPlan {
            rootfs: "/b/rootfs".into(),
            root_propagation: libc::MS_SLAVE | libc::MS_REC,
            mounts: vec![
                MountEntry {
                    destination: "/proc".into(),
                    source: Some("proc".into()),
                    fstype: Some("proc".into()),
                    flags: 0,
                    propagation: 0,
                    data: None,
                    bind: false,
                },
                MountEntry {
                    destination: "/dev".into(),
                    source: Some("tmpfs".into()),
                    fstype: Some("tmpfs".into()),
                    flags,
                    propagation,
                    data,
                    bind,
                },
            ],
            devices: default_devices(),
            masked_paths: vec!["/proc/kcore".into(), "/proc/acpi".into(), "/nope".into()],
            readonly_paths: vec!["/proc/sys".into()],
            readonly_root: true,
            hostname: Some("box".into()),
            ..RootfsPlan::default()
        }
    }

    fn mounts_of(calls: &[Call]) -> Vec<(PathBuf, Option<String>, libc::c_ulong)> {
        calls
            .iter()
            .filter_map(|c| match c {
                Call::Mount {
                    target,
                    fstype,
                    flags,
                    ..
                } => Some((target.clone(), fstype.clone(), *flags)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn mount_plan_order_and_flags() {
        let mut sys = RecordingSyscall::default();
        sys.files.insert("/proc/kcore".into());
        sys.dirs.insert("/proc/acpi".into());
        sys.dirs.insert("/proc/sys".into());
        setup_rootfs(&sys, &plan()).unwrap();
        let calls = sys.calls.borrow();
        let mounts = mounts_of(&calls);
        assert_eq!(mounts[0], ("/".into(), None, libc::MS_SLAVE | libc::MS_REC));
        assert_eq!(mounts[1].0, PathBuf::from("/b/rootfs"));
        assert_eq!(mounts[2], ("/b/rootfs/proc".into(), Some("proc".into()), 0));
        assert_eq!(mounts[3].2, libc::MS_NOSUID);
        let pivot = calls
            .iter()
            .position(|c| matches!(c, Call::PivotRoot(..)))
            .unwrap();
        let last_mknod = calls
            .iter()
            .rposition(|c| matches!(c, Call::Mknod(..)))
            .unwrap();
        assert!(last_mknod < pivot, "devices before pivot_root");
        let after: Vec<_> = mounts_of(&calls[pivot..]);
        // old root slave, masked file (bind /dev/null), masked dir (tmpfs), ro path bind+remount, ro root
        assert_eq!(after[1].0, PathBuf::from("/proc/kcore"));
        assert_eq!(after[1].2, libc::MS_BIND);
        assert_eq!(
            after[2],
            ("/proc/acpi".into(), Some("tmpfs".into()), libc::MS_RDONLY)
        );
        assert_eq!(after[4].0, PathBuf::from("/proc/sys"));
        assert_ne!(after[4].2 & libc::MS_RDONLY, 0);
        assert_eq!(after[5].0, PathBuf::from("/"));
        assert_ne!(after[5].2 & libc::MS_RDONLY, 0);
        assert_ne!(after[5].2 & libc::MS_NOSUID, 0, "locked flags kept");
        assert!(calls.contains(&Call::Mknod(
            "/b/rootfs/dev/null".into(),
            libc::S_IFCHR | 0o666,
            libc::makedev(1, 3)
        )));
        assert!(calls.contains(&Call::Sethostname("box".into())));
        assert!(!calls
            .iter()
            .any(|c| matches!(c, Call::Mount { target, .. } if target == Path::new("/nope"))));
    }

    #[test]
    fn user_namespace_binds_devices_and_overlay_stacks() {
        let sys = RecordingSyscall::default();
        let mut p = plan();
        p.bind_devices = true;
        p.overlay = Some("/state/c1/overlay".into());
        setup_rootfs(&sys, &p).unwrap();
        let calls = sys.calls.borrow();
        assert!(!calls.iter().any(|c| matches!(c, Call::Mknod(..))));
        assert!(calls.iter().any(|c| matches!(c, Call::Mount { source: Some(s), target, .. }
            if s == Path::new("/dev/null") && target == Path::new("/state/c1/overlay/merged/dev/null"))));
        assert!(calls.iter().any(
            |c| matches!(c, Call::Mount { fstype: Some(t), data: Some(d), .. }
            if t == "overlay" && d.contains("lowerdir=/b/rootfs"))
        ));
        assert!(calls.contains(&Call::Chdir("/state/c1/overlay/merged".into())));
    }

    #[test]
    fn image_symlinks_cannot_aim_mounts_outside_the_root() {
        let mut sys = RecordingSyscall::default();
        let root = Path::new("/b/rootfs");
        sys.links.insert("/b/rootfs/proc".into(), "/etc".into());
        sys.links
            .insert("/b/rootfs/etc".into(), "../../../host".into());
        sys.links.insert("/b/rootfs/loop".into(), "/loop".into());
        assert_eq!(
            secure_join(&sys, root, Path::new("/proc/sys")).unwrap(),
            PathBuf::from("/b/rootfs/host/sys")
        );
        assert_eq!(
            secure_join(&sys, root, Path::new("/a/../../x")).unwrap(),
            PathBuf::from("/b/rootfs/x")
        );
        let err = secure_join(&sys, root, Path::new("/loop/x")).unwrap_err();
        assert!(err.to_string().contains("too many symlinks"), "{err}");
        setup_rootfs(&sys, &plan()).unwrap();
        let calls = sys.calls.borrow();
        assert!(calls
            .iter()
            .any(|c| matches!(c, Call::Mount { target, fstype: Some(t), .. }
            if t == "proc" && target == Path::new("/b/rootfs/host"))));
    }

    #[test]
    fn initramfs_root_falls_back_to_move_and_chroot() {
        let sys = RecordingSyscall {
            pivot_fails: true,
            ..RecordingSyscall::default()
        };
        setup_rootfs(&sys, &plan()).unwrap();
        let calls = sys.calls.borrow();
        let pivot = calls
            .iter()
            .position(|c| matches!(c, Call::PivotRoot(..)))
            .unwrap();
        assert!(
            matches!(&calls[pivot + 1], Call::Mount { source: Some(s), target, flags, .. }
            if s == Path::new("/b/rootfs") && target == Path::new("/") && *flags == libc::MS_MOVE)
        );
        assert_eq!(calls[pivot + 2], Call::Chroot(".".into()));
        assert_eq!(calls[pivot + 3], Call::Chdir("/".into()));
        assert!(!calls.iter().any(|c| matches!(c, Call::Umount(_))));
    }

    #[test]
    fn failing_mount_is_reported_with_its_target() {
        let mut sys = RecordingSyscall::default();
        sys.fail_targets.insert("/b/rootfs/proc".into());
        let err = setup_rootfs(&sys, &plan()).unwrap_err().to_string();
        assert!(err.contains("/b/rootfs/proc"), "{err}");
        assert!(err.contains("mount proc"), "{err}");
    }

    #[test]
    fn options_and_escapes() {
        let (flags, prop, data, bind) =
            parse_options(&["rbind".into(), "ro".into(), "rslave".into(), "uid=5".into()]);
        assert_eq!(flags, libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY);
        assert_eq!(prop, libc::MS_SLAVE | libc::MS_REC);
        assert_eq!(data.as_deref(), Some("uid=5"));
        assert!(bind);
        assert_eq!(
            join_in_root(Path::new("/r"), Path::new("/a/../b"), "f").unwrap(),
            PathBuf::from("/r/b")
        );
        let err = join_in_root(
            Path::new("/r"),
            Path::new("/../etc"),
            "mounts[3].destination",
        );
        assert!(err
            .unwrap_err()
            .to_string()
            .contains("mounts[3].destination"));
    }
}
