//! A recording `JailSys`: every call is logged as a line of text, so tests check the jail's
//! plan (what is made, in which order) without root; chosen calls can be made to fail.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use super::config::NamespaceSet;
use super::sys::{JailSys, Rlimit};

pub struct MockSys {
    pub calls: RefCell<Vec<String>>,
    /// Paths that exist, with their permission bits.
    pub files: RefCell<HashMap<PathBuf, u32>>,
    pub same_fs: bool,
    pub cgroup2: bool,
    pub controllers: String,
    /// A call whose log line starts with this fails with EIO.
    pub fail: Option<String>,
    pub removed: RefCell<HashSet<PathBuf>>,
}

impl MockSys {
    pub fn new() -> Self {
        Self {
            calls: RefCell::new(Vec::new()),
            files: RefCell::new(HashMap::new()),
            same_fs: true,
            cgroup2: true,
            controllers: "cpuset cpu io memory hugetlb pids rdma misc".to_owned(),
            fail: None,
            removed: RefCell::new(HashSet::new()),
        }
    }

    pub fn with_file(self, path: &str, mode: u32) -> Self {
        self.files.borrow_mut().insert(PathBuf::from(path), mode);
        self
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }

    fn record(&self, line: String) -> io::Result<()> {
        let fails = self
            .fail
            .as_ref()
            .is_some_and(|f| line.starts_with(f.as_str()));
        self.calls.borrow_mut().push(line);
        if fails {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }

    fn create(&self, path: &Path, mode: u32, line: String) -> io::Result<()> {
        if self.files.borrow().contains_key(path) {
            self.calls.borrow_mut().push(line);
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        self.record(line)?;
        self.files.borrow_mut().insert(path.to_path_buf(), mode);
        Ok(())
    }
}

impl JailSys for MockSys {
    fn create_dir(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.create(path, mode, format!("mkdir {} {mode:o}", path.display()))
    }
    fn create_empty_file(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.create(path, mode, format!("touch {} {mode:o}", path.display()))
    }
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        self.record(format!("chown {} {uid}:{gid}", path.display()))
    }
    fn chmod(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.record(format!("chmod {} {mode:o}", path.display()))
    }
    fn same_filesystem(&self, _a: &Path, _b: &Path) -> io::Result<bool> {
        Ok(self.same_fs)
    }
    fn file_mode(&self, path: &Path) -> io::Result<u32> {
        self.files
            .borrow()
            .get(path)
            .copied()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }
    fn hard_link(&self, source: &Path, link: &Path) -> io::Result<()> {
        let mode = self.file_mode(source)?;
        self.create(
            link,
            mode,
            format!("link {} {}", source.display(), link.display()),
        )
    }
    fn copy_file(&self, source: &Path, dest: &Path, mode: u32) -> io::Result<()> {
        self.file_mode(source)?;
        let line = format!("copy {} {} {mode:o}", source.display(), dest.display());
        self.create(dest, mode, line)
    }
    fn make_char_device(&self, path: &Path, major: u64, minor: u64, mode: u32) -> io::Result<()> {
        let line = format!("mknod {} c {major}:{minor} {mode:o}", path.display());
        self.create(path, mode, line)
    }
    fn remove_tree(&self, path: &Path) -> io::Result<()> {
        self.record(format!("rm -r {}", path.display()))?;
        self.files.borrow_mut().retain(|p, _| !p.starts_with(path));
        self.removed.borrow_mut().insert(path.to_path_buf());
        Ok(())
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.record(format!("rmdir {}", path.display()))?;
        self.files.borrow_mut().remove(path);
        self.removed.borrow_mut().insert(path.to_path_buf());
        Ok(())
    }
    fn read_file(&self, path: &Path) -> io::Result<String> {
        self.record(format!("read {}", path.display()))?;
        Ok(self.controllers.clone())
    }
    fn write_file(&self, path: &Path, contents: &str) -> io::Result<()> {
        self.record(format!("write {} {contents}", path.display()))
    }
    fn is_cgroup2_mount(&self, _path: &Path) -> io::Result<bool> {
        Ok(self.cgroup2)
    }
    fn unshare(&self, ns: NamespaceSet) -> io::Result<()> {
        let NamespaceSet {
            mount,
            pid: _,
            ipc,
            uts,
            net,
        } = ns;
        self.record(format!("unshare mnt={mount} ipc={ipc} uts={uts} net={net}"))
    }
    fn make_mounts_private(&self) -> io::Result<()> {
        self.record("mount --make-rprivate /".to_owned())
    }
    fn bind_mount(&self, source: &Path, target: &Path, read_only: bool) -> io::Result<()> {
        let ro = if read_only { "ro" } else { "rw" };
        self.record(format!(
            "bind {} {} {ro}",
            source.display(),
            target.display()
        ))
    }
    fn pivot_root(&self, new_root: &Path) -> io::Result<()> {
        self.record(format!("pivot_root {}", new_root.display()))
    }
    fn set_hostname(&self, name: &str) -> io::Result<()> {
        self.record(format!("hostname {name}"))
    }
    fn set_rlimit(&self, which: Rlimit, value: u64) -> io::Result<()> {
        self.record(format!("rlimit {which:?} {value}"))
    }
    fn drop_bounding_set(&self) -> io::Result<()> {
        self.record("capbset drop all".to_owned())
    }
    fn set_ids(&self, uid: u32, gid: u32) -> io::Result<()> {
        self.record(format!("setids {uid}:{gid}"))
    }
    fn clear_capabilities(&self) -> io::Result<()> {
        self.record("caps clear".to_owned())
    }
    fn set_no_new_privs(&self) -> io::Result<()> {
        self.record("no_new_privs".to_owned())
    }
    fn close_fds_except(&self, keep: &[i32]) -> io::Result<()> {
        self.record(format!("close_fds except {keep:?}"))
    }
    fn clear_environment(&self) -> io::Result<()> {
        self.record("clearenv".to_owned())
    }
}
