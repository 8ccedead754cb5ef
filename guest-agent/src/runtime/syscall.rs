//! The namespace and mount syscalls the container init makes, behind a trait: the real
//! implementation calls the kernel; the recording mock lets the mount plan be unit-tested
//! without root.

use std::cell::RefCell;
use std::collections::HashSet;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Syscalls used to build a container's filesystem and identity.
pub trait Syscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()>;
    fn umount2(&self, target: &Path, flags: libc::c_int) -> io::Result<()>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()>;
    fn chdir(&self, path: &Path) -> io::Result<()>;
    fn chroot(&self, path: &Path) -> io::Result<()>;
    fn mkdir_all(&self, path: &Path) -> io::Result<()>;
    /// Creates an empty regular file (a bind-mount target), parents included.
    fn create_file(&self, path: &Path) -> io::Result<()>;
    fn mknod(&self, path: &Path, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()>;
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()>;
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    fn sethostname(&self, name: &str) -> io::Result<()>;
    /// `Some(true)` for a directory (symlinks followed), `Some(false)` for anything else
    /// (including a dangling symlink), `None` if absent.
    fn kind(&self, path: &Path) -> Option<bool>;
    /// The target of `path` when it is a symlink.
    fn read_link(&self, path: &Path) -> Option<PathBuf>;
    /// ST_* flags of the mount holding `path` (to keep locked flags on remount).
    fn mount_flags(&self, path: &Path) -> io::Result<libc::c_ulong>;
}

fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealSyscall;

impl Syscall for RealSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()> {
        let source = source.map(cstr).transpose()?;
        let target = cstr(target)?;
        let fstype = fstype
            .map(|t| CString::new(t).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput)))
            .transpose()?;
        let data = data
            .map(|d| CString::new(d).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput)))
            .transpose()?;
        let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
        // SAFETY: all pointers are NUL-terminated strings alive for the call, or null.
        check(unsafe {
            libc::mount(
                ptr(&source),
                target.as_ptr(),
                ptr(&fstype),
                flags,
                ptr(&data).cast(),
            )
        })
    }

    fn umount2(&self, target: &Path, flags: libc::c_int) -> io::Result<()> {
        let target = cstr(target)?;
        // SAFETY: target is a valid C string.
        check(unsafe { libc::umount2(target.as_ptr(), flags) })
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        let (new_root, put_old) = (cstr(new_root)?, cstr(put_old)?);
        // SAFETY: both are valid C strings; pivot_root has no libc wrapper.
        let rc =
            unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) };
        check(rc as libc::c_int)
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        std::env::set_current_dir(path)
    }

    fn chroot(&self, path: &Path) -> io::Result<()> {
        std::os::unix::fs::chroot(path)
    }

    fn mkdir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn create_file(&self, path: &Path) -> io::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map(drop)
    }

    fn mknod(&self, path: &Path, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
        let path = cstr(path)?;
        // SAFETY: path is a valid C string.
        check(unsafe { libc::mknod(path.as_ptr(), mode, dev) })
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        // SAFETY: the pointer and length describe `name`'s bytes.
        check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })
    }

    fn kind(&self, path: &Path) -> Option<bool> {
        std::fs::metadata(path)
            .or_else(|_| std::fs::symlink_metadata(path))
            .ok()
            .map(|m| m.is_dir())
    }

    fn read_link(&self, path: &Path) -> Option<PathBuf> {
        std::fs::read_link(path).ok()
    }

    fn mount_flags(&self, path: &Path) -> io::Result<libc::c_ulong> {
        let path = cstr(path)?;
        // SAFETY: statvfs is plain old data; zeroed is a valid value.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: path is a valid C string and st a valid out-pointer.
        check(unsafe { libc::statvfs(path.as_ptr(), &mut st) })?;
        Ok(st.f_flag)
    }
}

/// One recorded call of the mock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Mount {
        source: Option<PathBuf>,
        target: PathBuf,
        fstype: Option<String>,
        flags: libc::c_ulong,
        data: Option<String>,
    },
    Umount(PathBuf),
    PivotRoot(PathBuf, PathBuf),
    Chdir(PathBuf),
    Chroot(PathBuf),
    MoveRoot(PathBuf),
    Mkdir(PathBuf),
    CreateFile(PathBuf),
    Mknod(PathBuf, libc::mode_t, libc::dev_t),
    Chown(PathBuf, u32, u32),
    Symlink(PathBuf, PathBuf),
    Sethostname(String),
}

/// Records calls instead of making them. Paths in `dirs`/`files` "exist" for `kind`.
#[derive(Debug, Default)]
pub struct RecordingSyscall {
    pub calls: RefCell<Vec<Call>>,
    pub dirs: HashSet<PathBuf>,
    pub files: HashSet<PathBuf>,
    /// Mounts onto these targets fail with EPERM (to test error paths).
    pub fail_targets: HashSet<PathBuf>,
    /// pivot_root fails with EINVAL, as on an initramfs root.
    pub pivot_fails: bool,
    /// Symlinks of the fake filesystem: path → target.
    pub links: std::collections::HashMap<PathBuf, PathBuf>,
}

impl RecordingSyscall {
    fn record(&self, call: Call, target: &Path) -> io::Result<()> {
        let is_mount = matches!(call, Call::Mount { .. });
        self.calls.borrow_mut().push(call);
        if is_mount && self.fail_targets.contains(target) {
            Err(io::Error::from_raw_os_error(libc::EPERM))
        } else {
            Ok(())
        }
    }
}

impl Syscall for RecordingSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()> {
        let call = Call::Mount {
            source: source.map(Path::to_path_buf),
            target: target.to_path_buf(),
            fstype: fstype.map(str::to_string),
            flags,
            data: data.map(str::to_string),
        };
        self.record(call, target)
    }
    fn umount2(&self, target: &Path, _flags: libc::c_int) -> io::Result<()> {
        self.record(Call::Umount(target.to_path_buf()), target)
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        self.record(
            Call::PivotRoot(new_root.to_path_buf(), put_old.to_path_buf()),
            new_root,
        )?;
        if self.pivot_fails {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok(())
    }
    fn chdir(&self, path: &Path) -> io::Result<()> {
        self.record(Call::Chdir(path.to_path_buf()), path)
    }
    fn chroot(&self, path: &Path) -> io::Result<()> {
        self.record(Call::Chroot(path.to_path_buf()), path)
    }
    fn mkdir_all(&self, path: &Path) -> io::Result<()> {
        self.record(Call::Mkdir(path.to_path_buf()), path)
    }
    fn create_file(&self, path: &Path) -> io::Result<()> {
        self.record(Call::CreateFile(path.to_path_buf()), path)
    }
    fn mknod(&self, path: &Path, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
        self.record(Call::Mknod(path.to_path_buf(), mode, dev), path)
    }
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        self.record(Call::Chown(path.to_path_buf(), uid, gid), path)
    }
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        self.record(
            Call::Symlink(target.to_path_buf(), link.to_path_buf()),
            link,
        )
    }
    fn sethostname(&self, name: &str) -> io::Result<()> {
        self.calls
            .borrow_mut()
            .push(Call::Sethostname(name.to_string()));
        Ok(())
    }
    fn kind(&self, path: &Path) -> Option<bool> {
        if self.dirs.contains(path) {
            Some(true)
        } else if self.files.contains(path) {
            Some(false)
        } else {
            None
        }
    }
    fn read_link(&self, path: &Path) -> Option<PathBuf> {
        self.links.get(path).cloned()
    }
    fn mount_flags(&self, _path: &Path) -> io::Result<libc::c_ulong> {
        Ok(libc::ST_NOSUID)
    }
}
