//! The jail's setup in order: `prepare` builds the tenant's root and cgroup on the host (as
//! root, before the fork); `confine` is what the VMM process does to itself after the fork;
//! `Prepared::cleanup` removes what `prepare` made. Every system call goes through `JailSys`.

use std::path::{Path, PathBuf};

use super::cgroup;
use super::config::{CgroupPolicy, ExposeMode, JailConfig};
use super::sys::{JailSys, Rlimit};
use super::JailError;

/// A bind mount the VMM makes inside its own mount namespace, before pivot_root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// What `prepare` made on the host; `cleanup` takes it away again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub jail_dir: PathBuf,
    pub root: PathBuf,
    pub cgroup_dir: Option<PathBuf>,
    pub bind_mounts: Vec<BindMount>,
}

impl Prepared {
    /// Removes the jail directory and the cgroup. Both are tried; the first failure is returned.
    pub fn cleanup(&self, sys: &dyn JailSys) -> Result<(), JailError> {
        let tree = sys
            .remove_tree(&self.jail_dir)
            .map_err(|e| JailError::io("remove jail directory", &self.jail_dir, e));
        let cgroup = match &self.cgroup_dir {
            Some(dir) => cgroup::remove(sys, dir),
            None => Ok(()),
        };
        tree.and(cgroup)
    }
}

fn step<T>(what: &'static str, path: &Path, result: std::io::Result<T>) -> Result<T, JailError> {
    result.map_err(|e| JailError::io(what, path, e))
}

/// Builds `<base>/<id>/root` with only what the VMM needs, and the tenant's cgroup. On failure
/// everything made so far is removed again.
pub fn prepare(cfg: &JailConfig, sys: &dyn JailSys) -> Result<Prepared, JailError> {
    cfg.validate()?;
    let jail_dir = cfg.jail_dir();
    ensure_base_dir(cfg, sys)?;
    // create_dir fails when the directory exists: a live jail of the same tenant, or the
    // leftover of a crash the operator should look at, is never reused.
    sys.create_dir(&jail_dir, 0o700).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            JailError::AlreadyExists(jail_dir.clone())
        } else {
            JailError::io("create jail directory", &jail_dir, e)
        }
    })?;
    let mut prepared = Prepared {
        jail_dir,
        root: cfg.root_dir(),
        cgroup_dir: None,
        bind_mounts: Vec::new(),
    };
    match build(cfg, sys, &mut prepared) {
        Ok(()) => Ok(prepared),
        Err(err) => {
            // Best effort: the first error is the one worth reporting.
            let _ = prepared.cleanup(sys);
            Err(err)
        }
    }
}

fn ensure_base_dir(cfg: &JailConfig, sys: &dyn JailSys) -> Result<(), JailError> {
    let mut missing = Vec::new();
    let mut dir = cfg.base_dir.as_path();
    while sys.file_mode(dir).is_err() {
        missing.push(dir.to_path_buf());
        match dir.parent() {
            Some(parent) => dir = parent,
            None => break,
        }
    }
    for dir in missing.iter().rev() {
        match sys.create_dir(dir, 0o700) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(JailError::io("create jail base directory", dir, e)),
        }
    }
    Ok(())
}

fn build(cfg: &JailConfig, sys: &dyn JailSys, prepared: &mut Prepared) -> Result<(), JailError> {
    let root = prepared.root.clone();
    // Root-owned and read-only for the tenant: the VMM can read what it was given, and write
    // only in /run (its sockets).
    step("create jail root", &root, sys.create_dir(&root, 0o755))?;
    let run = root.join("run");
    step(
        "create jail run directory",
        &run,
        sys.create_dir(&run, 0o700),
    )?;
    step(
        "hand run directory to tenant",
        &run,
        sys.chown(&run, cfg.uid, cfg.gid),
    )?;
    make_devices(cfg, sys, &root)?;
    for file in &cfg.files {
        let target = root.join(file.inside.strip_prefix("/").unwrap_or(&file.inside));
        make_parents(sys, &root, &target)?;
        match file.mode {
            ExposeMode::LinkOrCopy => link_or_copy(cfg, sys, &file.source, &target)?,
            ExposeMode::BindDirReadOnly => {
                step(
                    "read jail directory",
                    &file.source,
                    sys.file_mode(&file.source),
                )?;
                if sys.file_mode(&target).is_err() {
                    let placeholder = sys.create_dir(&target, 0o755);
                    step("create bind mount point", &target, placeholder)?;
                }
                prepared.bind_mounts.push(BindMount {
                    source: file.source.clone(),
                    target,
                    read_only: true,
                });
            }
            ExposeMode::BindReadOnly | ExposeMode::BindReadWrite => {
                let read_only = file.mode == ExposeMode::BindReadOnly;
                step("read jail file", &file.source, sys.file_mode(&file.source))?;
                if !read_only {
                    // The tenant's own disk: the VMM writes it as the tenant uid, and nobody
                    // else may read it (another tenant's uid included).
                    let owned = sys.chown(&file.source, cfg.uid, cfg.gid);
                    step("hand disk to tenant", &file.source, owned)?;
                    let private = sys.chmod(&file.source, 0o600);
                    step("make disk private", &file.source, private)?;
                }
                let placeholder = sys.create_empty_file(&target, 0o600);
                step("create bind mount point", &target, placeholder)?;
                prepared.bind_mounts.push(BindMount {
                    source: file.source.clone(),
                    target,
                    read_only,
                });
            }
        }
    }
    if let CgroupPolicy::Required(limits) = cfg.cgroup {
        let dir = cfg.cgroup_dir();
        cgroup::create(
            sys,
            &cfg.cgroup_root,
            &dir,
            &limits,
            &mut prepared.cgroup_dir,
        )?;
    }
    Ok(())
}

fn make_devices(cfg: &JailConfig, sys: &dyn JailSys, root: &Path) -> Result<(), JailError> {
    for device in &cfg.devices {
        let path = root.join(device.relative_path());
        make_parents(sys, root, &path)?;
        let (major, minor) = device.major_minor();
        let node = sys.make_char_device(&path, major, minor, 0o600);
        step("create device node", &path, node)?;
        step(
            "hand device to tenant",
            &path,
            sys.chown(&path, cfg.uid, cfg.gid),
        )?;
    }
    Ok(())
}

/// Makes the missing directories between `root` and `path` (root-owned, traversable).
fn make_parents(sys: &dyn JailSys, root: &Path, path: &Path) -> Result<(), JailError> {
    let mut parents = Vec::new();
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d == root || !d.starts_with(root) {
            break;
        }
        parents.push(d.to_path_buf());
        dir = d.parent();
    }
    for dir in parents.iter().rev() {
        if sys.file_mode(dir).is_err() {
            step("create jail directory", dir, sys.create_dir(dir, 0o755))?;
        }
    }
    Ok(())
}

fn link_or_copy(
    cfg: &JailConfig,
    sys: &dyn JailSys,
    source: &Path,
    target: &Path,
) -> Result<(), JailError> {
    let mode = step("read jail file", source, sys.file_mode(source))?;
    let same_fs = step(
        "stat jail file",
        source,
        sys.same_filesystem(source, &cfg.base_dir),
    )?;
    // A link shares the inode: only safe when nobody but the owner may write it, and only
    // useful when the tenant may read it without owning it.
    let link_is_safe = mode & 0o022 == 0 && mode & 0o004 != 0;
    if same_fs && link_is_safe {
        return step("hard-link jail file", target, sys.hard_link(source, target));
    }
    step(
        "copy jail file",
        target,
        sys.copy_file(source, target, 0o400),
    )?;
    step(
        "hand copy to tenant",
        target,
        sys.chown(target, cfg.uid, cfg.gid),
    )
}

/// What the VMM process does to itself, in this order, right after the fork: join the cgroup
/// (while the host's cgroupfs is still visible), new namespaces, its bind mounts, pivot_root,
/// hostname, rlimits, drop the bounding set (needs CAP_SETPCAP), switch uid/gid, clear the
/// remaining capability sets, no_new_privs, close inherited fds, clear the environment.
/// `extra_keep` are descriptors of the jail's own plumbing, kept besides `cfg.keep_fds`.
pub fn confine(
    cfg: &JailConfig,
    prepared: &Prepared,
    sys: &dyn JailSys,
    extra_keep: &[i32],
) -> Result<(), JailError> {
    if let Some(dir) = &prepared.cgroup_dir {
        cgroup::join(sys, dir)?;
    }
    let root = &prepared.root;
    let unshared = sys.unshare(cfg.namespaces);
    step("unshare namespaces", root, unshared)?;
    step("make mounts private", root, sys.make_mounts_private())?;
    for bind in &prepared.bind_mounts {
        let mounted = sys.bind_mount(&bind.source, &bind.target, bind.read_only);
        step("bind-mount jail file", &bind.source, mounted)?;
    }
    step("pivot_root", root, sys.pivot_root(root))?;
    if cfg.namespaces.uts {
        step("set hostname", root, sys.set_hostname(&cfg.id))?;
    }
    let nofile = sys.set_rlimit(Rlimit::OpenFiles, cfg.rlimits.open_files);
    step("set RLIMIT_NOFILE", root, nofile)?;
    let fsize = sys.set_rlimit(Rlimit::FileSize, cfg.rlimits.file_size);
    step("set RLIMIT_FSIZE", root, fsize)?;
    step("drop bounding set", root, sys.drop_bounding_set())?;
    step("switch uid/gid", root, sys.set_ids(cfg.uid, cfg.gid))?;
    step("clear capabilities", root, sys.clear_capabilities())?;
    step("set no_new_privs", root, sys.set_no_new_privs())?;
    let keep: Vec<i32> = cfg.keep_fds.iter().chain(extra_keep).copied().collect();
    step("close file descriptors", root, sys.close_fds_except(&keep))?;
    step("clear environment", root, sys.clear_environment())
}
