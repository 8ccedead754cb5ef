//! The system calls the jail makes, behind a trait so the order of the setup can be checked by
//! a recording mock without root (youki's habit); `RealSys` makes them for real.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{chdir, pivot_root, Gid, Uid};

use super::config::NamespaceSet;

/// Resource limits the jail sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rlimit {
    OpenFiles,
    FileSize,
}

pub trait JailSys {
    // Host side, made by condo before the fork.
    fn create_dir(&self, path: &Path, mode: u32) -> io::Result<()>;
    fn create_empty_file(&self, path: &Path, mode: u32) -> io::Result<()>;
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()>;
    fn chmod(&self, path: &Path, mode: u32) -> io::Result<()>;
    fn same_filesystem(&self, a: &Path, b: &Path) -> io::Result<bool>;
    /// Permission bits of a file (a hard link shares them with the host's copy).
    fn file_mode(&self, path: &Path) -> io::Result<u32>;
    fn hard_link(&self, source: &Path, link: &Path) -> io::Result<()>;
    fn copy_file(&self, source: &Path, dest: &Path, mode: u32) -> io::Result<()>;
    fn make_char_device(&self, path: &Path, major: u64, minor: u64, mode: u32) -> io::Result<()>;
    fn remove_tree(&self, path: &Path) -> io::Result<()>;
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    fn read_file(&self, path: &Path) -> io::Result<String>;
    fn write_file(&self, path: &Path, contents: &str) -> io::Result<()>;
    fn is_cgroup2_mount(&self, path: &Path) -> io::Result<bool>;

    // Child side, made by the VMM process on itself after the fork.
    fn unshare(&self, namespaces: NamespaceSet) -> io::Result<()>;
    /// Stops mount events of the jail from reaching the host (and the other way round).
    fn make_mounts_private(&self) -> io::Result<()>;
    fn bind_mount(&self, source: &Path, target: &Path, read_only: bool) -> io::Result<()>;
    /// pivot_root into `new_root` and detach the old root, leaving nothing of the host visible.
    fn pivot_root(&self, new_root: &Path) -> io::Result<()>;
    fn set_hostname(&self, name: &str) -> io::Result<()>;
    fn set_rlimit(&self, which: Rlimit, value: u64) -> io::Result<()>;
    /// Drops every capability from the bounding set (needs CAP_SETPCAP: before set_ids).
    fn drop_bounding_set(&self) -> io::Result<()>;
    /// setgroups([gid]), setresgid, setresuid.
    fn set_ids(&self, uid: u32, gid: u32) -> io::Result<()>;
    /// Clears the effective, permitted, inheritable and ambient sets.
    fn clear_capabilities(&self) -> io::Result<()>;
    fn set_no_new_privs(&self) -> io::Result<()>;
    /// Closes every descriptor from 3 up except those in `keep`.
    fn close_fds_except(&self, keep: &[i32]) -> io::Result<()>;
    fn clear_environment(&self) -> io::Result<()>;
}

/// The real system calls.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealSys;

fn nix_err(err: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(err as i32)
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
}

impl JailSys for RealSys {
    fn create_dir(&self, path: &Path, mode: u32) -> io::Result<()> {
        fs::DirBuilder::new().mode(mode).create(path)?;
        // The umask may have taken bits away.
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    }

    fn create_empty_file(&self, path: &Path, mode: u32) -> io::Result<()> {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map(drop)
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
    }

    fn chmod(&self, path: &Path, mode: u32) -> io::Result<()> {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    }

    fn same_filesystem(&self, a: &Path, b: &Path) -> io::Result<bool> {
        Ok(fs::metadata(a)?.dev() == fs::metadata(b)?.dev())
    }

    fn file_mode(&self, path: &Path) -> io::Result<u32> {
        Ok(fs::metadata(path)?.mode() & 0o7777)
    }

    fn hard_link(&self, source: &Path, link: &Path) -> io::Result<()> {
        fs::hard_link(source, link)
    }

    fn copy_file(&self, source: &Path, dest: &Path, mode: u32) -> io::Result<()> {
        fs::copy(source, dest)?;
        fs::set_permissions(dest, fs::Permissions::from_mode(mode))
    }

    fn make_char_device(&self, path: &Path, major: u64, minor: u64, mode: u32) -> io::Result<()> {
        let c_path = cpath(path)?;
        let dev = libc::makedev(major as u32, minor as u32);
        // SAFETY: c_path is a valid NUL-terminated string that outlives the call.
        let rc = unsafe { libc::mknod(c_path.as_ptr(), libc::S_IFCHR | mode, dev) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    }

    fn remove_tree(&self, path: &Path) -> io::Result<()> {
        // std's remove_dir_all does not follow symlinks out of the tree.
        fs::remove_dir_all(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir(path)
    }

    fn read_file(&self, path: &Path) -> io::Result<String> {
        fs::read_to_string(path)
    }

    fn write_file(&self, path: &Path, contents: &str) -> io::Result<()> {
        // cgroup files: one write, no truncate-and-create dance.
        let mut file = fs::OpenOptions::new().write(true).open(path)?;
        io::Write::write_all(&mut file, contents.as_bytes())
    }

    fn is_cgroup2_mount(&self, path: &Path) -> io::Result<bool> {
        let stat = nix::sys::statfs::statfs(path).map_err(nix_err)?;
        Ok(stat.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
    }

    fn unshare(&self, namespaces: NamespaceSet) -> io::Result<()> {
        let mut flags = CloneFlags::empty();
        for (wanted, flag) in [
            (namespaces.mount, CloneFlags::CLONE_NEWNS),
            (namespaces.ipc, CloneFlags::CLONE_NEWIPC),
            (namespaces.uts, CloneFlags::CLONE_NEWUTS),
            (namespaces.net, CloneFlags::CLONE_NEWNET),
        ] {
            if wanted {
                flags |= flag;
            }
        }
        // The pid namespace is made by the parent before its fork (see process.rs).
        unshare(flags).map_err(nix_err)
    }

    fn make_mounts_private(&self) -> io::Result<()> {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(nix_err)
    }

    fn bind_mount(&self, source: &Path, target: &Path, read_only: bool) -> io::Result<()> {
        let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
        mount(Some(source), target, None::<&str>, bind, None::<&str>).map_err(nix_err)?;
        if read_only {
            // A bind mount ignores MS_RDONLY on creation: remount to make it stick.
            let flags = MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV;
            mount(None::<&str>, target, None::<&str>, flags, None::<&str>).map_err(nix_err)?;
        }
        Ok(())
    }

    fn pivot_root(&self, new_root: &Path) -> io::Result<()> {
        // pivot_root needs a mount point: bind the root onto itself first.
        self.bind_mount(new_root, new_root, false)?;
        chdir(new_root).map_err(nix_err)?;
        // runc's trick: stack the old root under the new one, then detach it.
        match pivot_root(".", ".") {
            Ok(()) => umount2(".", MntFlags::MNT_DETACH).map_err(nix_err)?,
            // The host's root is the initramfs (rootfs), which cannot be pivoted away (an
            // emulated test host, an early-boot system): move the jail onto / and chroot, as
            // switch_root does. The old root stays below, reachable only with CAP_SYS_CHROOT,
            // which the VMM loses a few steps later (and its seccomp filters forbid chroot).
            Err(nix::Error::EINVAL) => {
                mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
                    .map_err(nix_err)?;
                nix::unistd::chroot(".").map_err(nix_err)?;
            }
            Err(e) => return Err(nix_err(e)),
        }
        chdir("/").map_err(nix_err)
    }

    fn set_hostname(&self, name: &str) -> io::Result<()> {
        nix::unistd::sethostname(name).map_err(nix_err)
    }

    fn set_rlimit(&self, which: Rlimit, value: u64) -> io::Result<()> {
        let resource = match which {
            Rlimit::OpenFiles => nix::sys::resource::Resource::RLIMIT_NOFILE,
            Rlimit::FileSize => nix::sys::resource::Resource::RLIMIT_FSIZE,
        };
        nix::sys::resource::setrlimit(resource, value, value).map_err(nix_err)
    }

    fn drop_bounding_set(&self) -> io::Result<()> {
        caps::clear(None, caps::CapSet::Bounding).map_err(|e| io::Error::other(e.to_string()))
    }

    fn set_ids(&self, uid: u32, gid: u32) -> io::Result<()> {
        let gid = Gid::from_raw(gid);
        let uid = Uid::from_raw(uid);
        nix::unistd::setgroups(&[gid]).map_err(nix_err)?;
        nix::unistd::setresgid(gid, gid, gid).map_err(nix_err)?;
        nix::unistd::setresuid(uid, uid, uid).map_err(nix_err)
    }

    fn clear_capabilities(&self) -> io::Result<()> {
        for set in [
            caps::CapSet::Ambient,
            caps::CapSet::Inheritable,
            caps::CapSet::Effective,
            caps::CapSet::Permitted,
        ] {
            caps::clear(None, set).map_err(|e| io::Error::other(format!("{set:?}: {e}")))?;
        }
        Ok(())
    }

    fn set_no_new_privs(&self) -> io::Result<()> {
        // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers and touches no memory.
        let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn close_fds_except(&self, keep: &[i32]) -> io::Result<()> {
        let mut keep: Vec<u32> = keep
            .iter()
            .filter_map(|fd| u32::try_from(*fd).ok())
            .filter(|fd| *fd > 2)
            .collect();
        keep.sort_unstable();
        keep.dedup();
        let mut first = 3u32;
        for fd in keep.iter().copied().chain(std::iter::once(u32::MAX)) {
            if fd > first {
                close_range(first, fd - 1)?;
            }
            first = fd.saturating_add(1);
        }
        Ok(())
    }

    fn clear_environment(&self) -> io::Result<()> {
        // SAFETY: the jailed process is single-threaded here (checked before the fork), so no
        // other thread reads the environment while it is cleared.
        let rc = unsafe { libc::clearenv() };
        if rc != 0 {
            return Err(io::Error::other("clearenv failed"));
        }
        Ok(())
    }
}

fn close_range(first: u32, last: u32) -> io::Result<()> {
    // SAFETY: close_range takes plain integers; closing descriptors the process no longer
    // uses is the point (the jail owns the process at this stage).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
