//! The tenant's cgroup v2: `<root>/condo/<id>` with cpu.max, memory.max and pids.max.
//! Hosts without a cgroup v2 hierarchy holding those controllers (v1 or hybrid hosts) are
//! refused with a message that says so; running without the cgroup is the operator's call.

use std::path::{Path, PathBuf};

use super::config::CgroupLimits;
use super::sys::JailSys;
use super::JailError;

/// Controllers the jail limits with.
pub const CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

/// Checks that `root` is a cgroup v2 mount offering every controller the jail needs.
pub fn check_host(sys: &dyn JailSys, root: &Path) -> Result<(), JailError> {
    let is_v2 = sys
        .is_cgroup2_mount(root)
        .map_err(|e| JailError::io("inspect cgroup mount", root, e))?;
    if !is_v2 {
        return Err(JailError::NoCgroupV2(format!(
            "{} is not a cgroup v2 mount (a cgroup v1 or hybrid host)",
            root.display()
        )));
    }
    let listed_at = root.join("cgroup.controllers");
    let listed = sys
        .read_file(&listed_at)
        .map_err(|e| JailError::io("read cgroup controllers", &listed_at, e))?;
    let available: Vec<&str> = listed.split_whitespace().collect();
    let missing: Vec<&str> = CONTROLLERS
        .iter()
        .copied()
        .filter(|c| !available.contains(c))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(JailError::NoCgroupV2(format!(
            "the cgroup v2 hierarchy at {} lacks the {} controller(s) (it offers {:?}); \
             they are held by cgroup v1 hierarchies on this host",
            root.display(),
            missing.join(", "),
            listed.trim()
        )))
    }
}

/// Makes `dir` (`<root>/condo/<id>`) with the limits. `made` is set as soon as `dir` exists so
/// a failure after that still removes it.
pub fn create(
    sys: &dyn JailSys,
    root: &Path,
    dir: &Path,
    limits: &CgroupLimits,
    made: &mut Option<PathBuf>,
) -> Result<(), JailError> {
    check_host(sys, root)?;
    let enable: String = CONTROLLERS.iter().map(|c| format!("+{c} ")).collect();
    let enable = enable.trim_end();
    let parent = dir.parent().unwrap_or(root);
    enable_controllers(sys, root, enable)?;
    match sys.create_dir(parent, 0o755) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(JailError::io("create cgroup", parent, e)),
    }
    enable_controllers(sys, parent, enable)?;
    sys.create_dir(dir, 0o755).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            JailError::AlreadyExists(dir.to_path_buf())
        } else {
            JailError::io("create cgroup", dir, e)
        }
    })?;
    *made = Some(dir.to_path_buf());
    let settings = [
        (
            "cpu.max",
            format!("{} {}", limits.cpu_quota_us, limits.cpu_period_us),
        ),
        ("memory.max", limits.memory_bytes.to_string()),
        ("pids.max", limits.pids.to_string()),
    ];
    for (file, value) in settings {
        let path = dir.join(file);
        sys.write_file(&path, &value)
            .map_err(|e| JailError::io("set cgroup limit", &path, e))?;
    }
    // No swap: memory.max would otherwise only move the guest out to disk.
    let swap = dir.join("memory.swap.max");
    if sys.file_mode(&swap).is_ok() {
        sys.write_file(&swap, "0")
            .map_err(|e| JailError::io("set cgroup limit", &swap, e))?;
    }
    Ok(())
}

fn enable_controllers(sys: &dyn JailSys, dir: &Path, enable: &str) -> Result<(), JailError> {
    let path = dir.join("cgroup.subtree_control");
    sys.write_file(&path, enable)
        .map_err(|e| JailError::io("enable cgroup controllers", &path, e))
}

/// Moves the calling process into `dir`.
pub fn join(sys: &dyn JailSys, dir: &Path) -> Result<(), JailError> {
    let procs = dir.join("cgroup.procs");
    // "0" is the writer itself.
    sys.write_file(&procs, "0")
        .map_err(|e| JailError::io("join cgroup", &procs, e))
}

/// Removes the tenant's cgroup once its processes are gone. The kernel may take a moment to
/// take the last exited task out, so EBUSY is retried for a bounded time.
pub fn remove(sys: &dyn JailSys, dir: &Path) -> Result<(), JailError> {
    let mut attempts = 0;
    loop {
        match sys.remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempts < 100 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(JailError::io("remove cgroup", dir, e)),
        }
    }
}
