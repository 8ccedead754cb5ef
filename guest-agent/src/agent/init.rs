//! PID 1 duties: the basic mounts, a pure cgroup v2 hierarchy with its controllers delegated,
//! the hostname, and a clean power-off when there is nothing left to do.

use std::fs;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

use super::log;

/// One mount of the basic set.
struct BasicMount {
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

const fn basic(
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
) -> BasicMount {
    BasicMount {
        target,
        fstype,
        flags,
        data,
    }
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// In mount order: /dev before /dev/pts, /sys before /sys/fs/cgroup.
const BASIC_MOUNTS: &[BasicMount] = &[
    basic("/proc", "proc", NOSUID_NODEV_NOEXEC, None),
    basic("/sys", "sysfs", NOSUID_NODEV_NOEXEC, None),
    basic("/dev", "devtmpfs", MsFlags::MS_NOSUID, Some("mode=0755")),
    basic(
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    ),
    basic("/dev/shm", "tmpfs", NOSUID_NODEV_NOEXEC, Some("mode=1777")),
    basic(
        "/run",
        "tmpfs",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        Some("mode=0755"),
    ),
    basic(
        "/tmp",
        "tmpfs",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        Some("mode=1777"),
    ),
    basic(
        "/sys/fs/cgroup",
        "cgroup2",
        NOSUID_NODEV_NOEXEC,
        Some("nsdelegate"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot create mount point {path}: {source}")]
    MountPoint {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("mount of {fstype} on {target} failed: {errno}")]
    Mount {
        fstype: &'static str,
        target: &'static str,
        errno: Errno,
    },
    #[error("cannot {action} {path}: {source}")]
    Cgroup {
        action: &'static str,
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("re-rooting off the initramfs failed at {step}: {errno}")]
    Reroot { step: &'static str, errno: Errno },
    #[error("sethostname({name:?}) failed: {errno}")]
    Hostname { name: String, errno: Errno },
}

/// Where PID 1 re-roots itself when it starts from an initramfs (see [`leave_initramfs`]).
const REROOT_DIR: &str = "/.condo-root";

/// Re-roots PID 1 onto a bind mount of its initramfs. The initramfs root mount has no parent,
/// and pivot_root(2), which every container's setup uses, refuses to move such a root
/// (EINVAL); a bind mount of it moved over "/" has one. Costs no copy. No-op on a disk root.
pub fn leave_initramfs() -> Result<bool, InitError> {
    use nix::sys::statfs::{statfs, FsType, TMPFS_MAGIC};
    // ramfs (an initramfs without CONFIG_TMPFS); nix names no constant for it.
    const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);
    let reroot = |step: &'static str| move |errno: Errno| InitError::Reroot { step, errno };
    let root_type = statfs("/").map_err(reroot("statfs /"))?.filesystem_type();
    if root_type != RAMFS_MAGIC && root_type != TMPFS_MAGIC {
        return Ok(false);
    }
    match nix::unistd::mkdir(REROOT_DIR, nix::sys::stat::Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(errno) => return Err(reroot("mkdir")(errno)),
    }
    mount(
        Some("/"),
        REROOT_DIR,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(reroot("bind mount of /"))?;
    nix::unistd::chdir(REROOT_DIR).map_err(reroot("chdir"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(reroot("move onto /"))?;
    nix::unistd::chroot(".").map_err(reroot("chroot"))?;
    nix::unistd::chdir("/").map_err(reroot("chdir /"))?;
    Ok(true)
}

/// Mounts the basic file systems. Keeps going past a failure (a guest with a missing /dev/pts
/// is still useful) and returns every failure.
pub fn mount_basics() -> Vec<InitError> {
    let mut errors = Vec::new();
    for entry in BASIC_MOUNTS {
        if let Err(err) = mount_one(entry) {
            errors.push(err);
        }
    }
    if !Path::new("/dev/ptmx").exists() {
        let _ = std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx");
    }
    errors
}

fn mount_one(entry: &BasicMount) -> Result<(), InitError> {
    fs::create_dir_all(entry.target).map_err(|source| InitError::MountPoint {
        path: entry.target,
        source,
    })?;
    match mount(
        Some(entry.fstype),
        entry.target,
        Some(entry.fstype),
        entry.flags,
        entry.data,
    ) {
        // EBUSY: the kernel mounted it already (devtmpfs automount).
        Ok(()) | Err(Errno::EBUSY) => Ok(()),
        Err(errno) => Err(InitError::Mount {
            fstype: entry.fstype,
            target: entry.target,
            errno,
        }),
    }
}

/// Enables every available controller for the children of the root cgroup, so that each
/// container's cgroup can use them.
pub fn delegate_cgroup_controllers() -> Result<String, InitError> {
    const CONTROLLERS: &str = "/sys/fs/cgroup/cgroup.controllers";
    const SUBTREE: &str = "/sys/fs/cgroup/cgroup.subtree_control";
    let available = fs::read_to_string(CONTROLLERS).map_err(|source| InitError::Cgroup {
        action: "read",
        path: CONTROLLERS,
        source,
    })?;
    let enable: Vec<String> = available
        .split_ascii_whitespace()
        .map(|name| format!("+{name}"))
        .collect();
    if !enable.is_empty() {
        fs::write(SUBTREE, enable.join(" ")).map_err(|source| InitError::Cgroup {
            action: "write",
            path: SUBTREE,
            source,
        })?;
    }
    Ok(available.trim().to_owned())
}

/// Keeps the OOM killer away from PID 1: its death would panic the kernel. (Containers do not
/// inherit this: the runtime sets each one's own score.)
pub fn protect_from_oom_killer() -> std::io::Result<()> {
    fs::write("/proc/self/oom_score_adj", "-1000")
}

pub fn set_hostname(name: &str) -> Result<(), InitError> {
    nix::unistd::sethostname(name).map_err(|errno| InitError::Hostname {
        name: name.into(),
        errno,
    })
}

/// Points fds 0-2 at /dev/console when the kernel could not (no /dev/console in the initramfs).
pub fn attach_console() {
    // SAFETY: fcntl(F_GETFD) on a possibly closed fd only reads the descriptor table.
    let stdout_open = unsafe { libc::fcntl(1, libc::F_GETFD) } >= 0;
    if stdout_open {
        return;
    }
    let Ok(console) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    else {
        return;
    };
    for target in 0..=2 {
        // SAFETY: dup2 onto the standard fds, which are closed here; `console` stays open
        // across the calls.
        unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&console), target) };
    }
}

/// Ends the VM: sync and reset (with `reboot=k` the kernel resets through the i8042, which the
/// VMM treats as a clean exit). PID 1 must never simply exit: the kernel would panic.
pub fn power_off() -> ! {
    nix::unistd::sync();
    loop {
        let err = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
        log(format_args!("reboot failed: {err:?}; retrying"));
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
