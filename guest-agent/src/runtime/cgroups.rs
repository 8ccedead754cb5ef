//! cgroup v2: limits (memory, pids, cpu, io), membership, stats and OOM detection.
//!
//! Only the unified hierarchy is supported. On a v1/v2 hybrid host (no v2 controllers) a
//! container that asks for limits is refused with an error naming the controller; one that
//! asks for none runs without a cgroup of its own.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxResources, Spec};

use super::{RuntimeError, Stats};

/// Where the unified hierarchy is mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const CGROUP2_SUPER_MAGIC: libc::c_long = 0x6367_7270;

/// The cgroup to create for a container and what to write into it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupPlan {
    pub path: PathBuf,
    /// Controllers that must be enabled for the writes.
    pub controllers: Vec<&'static str>,
    /// (file, value) in order.
    pub writes: Vec<(String, String)>,
}

/// Whether `root` is a cgroup2 mount.
pub fn is_cgroup2(root: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(root.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain old data; zeroed is valid.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string, st a valid out-pointer.
    unsafe {
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as libc::c_long == CGROUP2_SUPER_MAGIC
    }
}

/// The limits a resources section asks for, as cgroup v2 writes (controller, field, file, value).
pub fn limit_writes(
    res: &LinuxResources,
) -> Result<Vec<(&'static str, &'static str, String, String)>, RuntimeError> {
    let max = |v: i64| {
        if v < 0 {
            "max".to_string()
        } else {
            v.to_string()
        }
    };
    let mut w = Vec::new();
    if let Some(mem) = res.memory() {
        if let Some(limit) = mem.limit() {
            w.push((
                "memory",
                "linux.resources.memory.limit",
                "memory.max".into(),
                max(limit),
            ));
            if let Some(swap) = mem.swap() {
                let swap_only = if swap < 0 || limit < 0 {
                    -1
                } else {
                    swap.saturating_sub(limit)
                };
                if swap >= 0 && limit >= 0 && swap < limit {
                    return Err(RuntimeError::spec(
                        "linux.resources.memory.swap",
                        format!("{swap} is below the memory limit {limit}"),
                    ));
                }
                w.push((
                    "memory",
                    "linux.resources.memory.swap",
                    "memory.swap.max".into(),
                    max(swap_only),
                ));
            }
        }
        if let Some(low) = mem.reservation() {
            w.push((
                "memory",
                "linux.resources.memory.reservation",
                "memory.low".into(),
                max(low),
            ));
        }
    }
    if let Some(pids) = res.pids() {
        let limit = pids.limit();
        w.push((
            "pids",
            "linux.resources.pids.limit",
            "pids.max".into(),
            if limit <= 0 {
                "max".into()
            } else {
                limit.to_string()
            },
        ));
    }
    if let Some(cpu) = res.cpu() {
        if cpu.quota().is_some() || cpu.period().is_some() {
            let quota = cpu
                .quota()
                .filter(|q| *q > 0)
                .map_or("max".to_string(), |q| q.to_string());
            let period = cpu.period().unwrap_or(100_000);
            w.push((
                "cpu",
                "linux.resources.cpu.quota",
                "cpu.max".into(),
                format!("{quota} {period}"),
            ));
        }
        if let Some(shares) = cpu.shares().filter(|s| *s > 0) {
            let weight = 1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142;
            w.push((
                "cpu",
                "linux.resources.cpu.shares",
                "cpu.weight".into(),
                weight.to_string(),
            ));
        }
        if let Some(cpus) = cpu.cpus().as_ref().filter(|c| !c.is_empty()) {
            w.push((
                "cpuset",
                "linux.resources.cpu.cpus",
                "cpuset.cpus".into(),
                cpus.clone(),
            ));
        }
        if let Some(mems) = cpu.mems().as_ref().filter(|m| !m.is_empty()) {
            w.push((
                "cpuset",
                "linux.resources.cpu.mems",
                "cpuset.mems".into(),
                mems.clone(),
            ));
        }
    }
    if let Some(bio) = res.block_io() {
        if let Some(weight) = bio.weight() {
            let weight = 1 + (u64::from(weight).clamp(10, 1000) - 10) * 9999 / 990;
            w.push((
                "io",
                "linux.resources.blockIO.weight",
                "io.weight".into(),
                format!("default {weight}"),
            ));
        }
        let throttles = [
            (bio.throttle_read_bps_device(), "rbps"),
            (bio.throttle_write_bps_device(), "wbps"),
            (bio.throttle_read_iops_device(), "riops"),
            (bio.throttle_write_iops_device(), "wiops"),
        ];
        for (devices, key) in throttles {
            for d in devices.iter().flatten() {
                w.push((
                    "io",
                    "linux.resources.blockIO",
                    "io.max".into(),
                    format!("{}:{} {key}={}", d.major(), d.minor(), d.rate()),
                ));
            }
        }
    }
    for (i, h) in res.hugepage_limits().iter().flatten().enumerate() {
        let size = h.page_size();
        if size.is_empty() || !size.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(RuntimeError::spec(
                format!("linux.resources.hugepageLimits[{i}].pageSize"),
                format!("{size:?} is not a page size like 2MB"),
            ));
        }
        w.push((
            "hugetlb",
            "linux.resources.hugepageLimits",
            format!("hugetlb.{size}.max"),
            max(h.limit()),
        ));
    }
    for (key, value) in res.unified().iter().flatten() {
        let field = "linux.resources.unified";
        let controller = key.split_once('.').map(|(c, _)| c).unwrap_or("");
        let known = [
            "memory", "pids", "cpu", "cpuset", "io", "hugetlb", "rdma", "misc",
        ];
        let Some(controller) = known.iter().find(|c| **c == controller) else {
            return Err(RuntimeError::spec(
                field,
                format!("{key:?} is not a file of a known cgroup v2 controller"),
            ));
        };
        if key.contains('/') || key.contains("..") {
            return Err(RuntimeError::spec(
                field,
                format!("{key:?} is not a cgroup file name"),
            ));
        }
        w.push((controller, field, key.clone(), value.clone()));
    }
    if res.network().is_some() {
        return Err(RuntimeError::spec(
            "linux.resources.network",
            "net_cls/net_prio are cgroup v1 only; not supported",
        ));
    }
    if res.rdma().as_ref().is_some_and(|r| !r.is_empty()) {
        return Err(RuntimeError::spec("linux.resources.rdma", "not supported"));
    }
    Ok(w)
}

/// Plans the container's cgroup. `None` when the host has no cgroup v2 and no limits are asked.
pub fn plan(spec: &Spec, id: &str, root: &Path) -> Result<Option<CgroupPlan>, RuntimeError> {
    let linux = spec.linux().clone().unwrap_or_default();
    let writes = match linux.resources() {
        Some(res) => limit_writes(res)?,
        None => Vec::new(),
    };
    if !is_cgroup2(root) {
        return match writes.first() {
            None => Ok(None),
            Some((controller, field, _, _)) => Err(RuntimeError::Cgroup(format!(
                "{field} needs the cgroup v2 {controller:?} controller, but {} is not a cgroup2 \
                 mount (cgroup v1 or hybrid host): no v2 controllers available",
                root.display()
            ))),
        };
    }
    let available = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    let mut controllers: Vec<&'static str> = Vec::new();
    for (controller, field, _, _) in &writes {
        if !available.split_whitespace().any(|c| c == *controller) {
            return Err(RuntimeError::Cgroup(format!(
                "{field} needs the cgroup v2 {controller:?} controller, which {} does not offer \
                 (cgroup.controllers: {:?})",
                root.display(),
                available.trim()
            )));
        }
        if !controllers.contains(controller) {
            controllers.push(controller);
        }
    }
    let rel = linux
        .cgroups_path()
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("condo/{id}")));
    if rel
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(RuntimeError::spec(
            "linux.cgroupsPath",
            format!("{} contains ..", rel.display()),
        ));
    }
    let rel = rel.strip_prefix("/").unwrap_or(&rel).to_path_buf();
    let absolute = linux
        .cgroups_path()
        .as_ref()
        .is_some_and(|p| p.is_absolute());
    let rel = if absolute || rel.starts_with("condo") {
        rel
    } else {
        Path::new("condo").join(rel)
    };
    Ok(Some(CgroupPlan {
        path: root.join(rel),
        controllers,
        writes: writes
            .into_iter()
            .map(|(_, _, file, value)| (file, value))
            .collect(),
    }))
}

fn write(path: &Path, value: &str) -> Result<(), RuntimeError> {
    std::fs::write(path, value)
        .map_err(|e| RuntimeError::Cgroup(format!("write {value:?} to {}: {e}", path.display())))
}

/// Creates the cgroup (enabling controllers on the way down) and applies the limits. On error
/// the directory is removed again.
pub fn create(plan: &CgroupPlan, root: &Path) -> Result<(), RuntimeError> {
    let rel = plan.path.strip_prefix(root).map_err(|_| {
        RuntimeError::Cgroup(format!(
            "{} is outside {}",
            plan.path.display(),
            root.display()
        ))
    })?;
    let mut dir = root.to_path_buf();
    let enable: String = plan.controllers.iter().map(|c| format!("+{c} ")).collect();
    for part in rel.components() {
        if !enable.is_empty() {
            write(&dir.join("cgroup.subtree_control"), enable.trim_end())?;
        }
        dir.push(part);
        if !dir.exists() {
            std::fs::create_dir(&dir)
                .map_err(|e| RuntimeError::Cgroup(format!("create {}: {e}", dir.display())))?;
        }
    }
    for (file, value) in &plan.writes {
        let path = plan.path.join(file);
        // Without swap accounting there is no memory.swap.max; "no swap" then holds anyway.
        if file == "memory.swap.max" && value == "0" && !path.exists() {
            continue;
        }
        if let Err(e) = write(&path, value) {
            let _ = std::fs::remove_dir(&plan.path);
            return Err(e);
        }
    }
    Ok(())
}

/// Moves `pid` into the cgroup at `path`.
pub fn add_process(path: &Path, pid: i32) -> Result<(), RuntimeError> {
    write(&path.join("cgroup.procs"), &pid.to_string())
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn keyed(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        (parts.next() == Some(key))
            .then(|| parts.next()?.parse().ok())
            .flatten()
    })
}

/// Figures of the cgroup at `path`.
pub fn read_stats(path: &Path) -> Stats {
    Stats {
        memory_current: read_u64(&path.join("memory.current")),
        memory_max: read_u64(&path.join("memory.max")),
        memory_peak: read_u64(&path.join("memory.peak")),
        pids_current: read_u64(&path.join("pids.current")),
        pids_max: read_u64(&path.join("pids.max")),
        cpu_usage_usec: keyed(&path.join("cpu.stat"), "usage_usec"),
        oom_kill: keyed(&path.join("memory.events"), "oom_kill").unwrap_or(0),
        oom: keyed(&path.join("memory.events"), "oom").unwrap_or(0),
    }
}

/// Whether the kernel OOM-killed a process of the cgroup.
pub fn oom_killed(path: &Path) -> bool {
    keyed(&path.join("memory.events"), "oom_kill").unwrap_or(0) > 0
}

/// Kills what is left in the cgroup and removes it, waiting (bounded) for it to empty.
pub fn remove(path: &Path) -> Result<(), RuntimeError> {
    if !path.exists() {
        return Ok(());
    }
    let kill = path.join("cgroup.kill");
    if kill.exists() {
        let _ = std::fs::write(&kill, "1");
    } else if let Ok(procs) = std::fs::read_to_string(path.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill only sends a signal.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    wait_unpopulated(path);
    std::fs::remove_dir(path)
        .map_err(|e| RuntimeError::Cgroup(format!("remove {}: {e}", path.display())))
}

/// Waits up to 5 s for `populated 0` in cgroup.events (the kernel signals changes with POLLPRI).
fn wait_unpopulated(path: &Path) {
    let events = path.join("cgroup.events");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while keyed(&events, "populated").unwrap_or(0) != 0 {
        let Ok(file) = std::fs::File::open(&events) else {
            return;
        };
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&file),
            events: libc::POLLPRI,
            revents: 0,
        };
        // SAFETY: pfd is a valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(100) as libc::c_int) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resources(v: serde_json::Value) -> LinuxResources {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn limits_translate_to_v2_files() {
        let res = resources(json!({
            "memory": {"limit": 67108864, "swap": 67108864},
            "pids": {"limit": 32},
            "cpu": {"quota": 50000, "period": 100000, "shares": 1024},
            "blockIO": {"weight": 500}
        }));
        let w: Vec<_> = limit_writes(&res)
            .unwrap()
            .into_iter()
            .map(|(_, _, f, v)| (f, v))
            .collect();
        let w: Vec<(&str, String)> = w.iter().map(|(f, v)| (f.as_str(), v.clone())).collect();
        assert!(w.contains(&("memory.max", "67108864".into())));
        assert!(w.contains(&("memory.swap.max", "0".into())));
        assert!(w.contains(&("pids.max", "32".into())));
        assert!(w.contains(&("cpu.max", "50000 100000".into())));
        assert!(w.contains(&("cpu.weight", "39".into())));
        assert!(w.contains(&("io.weight", "default 4950".into())));
        let extra = resources(json!({
            "hugepageLimits": [{"pageSize": "2MB", "limit": 1048576}],
            "unified": {"memory.high": "50000000"}
        }));
        let w: Vec<_> = limit_writes(&extra)
            .unwrap()
            .into_iter()
            .map(|(c, _, f, v)| (c, f, v))
            .collect();
        assert!(w.contains(&("hugetlb", "hugetlb.2MB.max".to_string(), "1048576".into())));
        assert!(w.contains(&("memory", "memory.high".to_string(), "50000000".into())));
        let bad = resources(json!({"unified": {"../escape": "1"}}));
        let err = limit_writes(&bad).unwrap_err().to_string();
        assert!(
            err.contains("linux.resources.unified") && err.contains("../escape"),
            "{err}"
        );
    }

    #[test]
    fn hybrid_host_refuses_limits_naming_the_controller() {
        let spec: Spec = serde_json::from_value(json!({
            "ociVersion": "1.0.2",
            "linux": {"resources": {"pids": {"limit": 10}}}
        }))
        .unwrap();
        // /tmp is never a cgroup2 mount: stands for a host without v2 controllers.
        let err = plan(&spec, "c1", Path::new("/tmp"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"pids\""), "{err}");
        assert!(err.contains("linux.resources.pids.limit"), "{err}");
        let no_limits: Spec = serde_json::from_value(json!({"ociVersion": "1.0.2"})).unwrap();
        assert_eq!(plan(&no_limits, "c1", Path::new("/tmp")).unwrap(), None);
    }

    #[test]
    fn swap_below_limit_is_refused() {
        let res = resources(json!({"memory": {"limit": 100, "swap": 50}}));
        let err = limit_writes(&res).unwrap_err().to_string();
        assert!(err.contains("linux.resources.memory.swap"), "{err}");
    }
}
