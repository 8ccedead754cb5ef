//! Turns a validated OCI spec into plain data the container init carries out: everything that
//! can fail on bad input fails here, in the parent, before any process or mount exists.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, PosixRlimitType, Process, Spec};

use super::capabilities::{self, CapSets};
use super::mounts::{self, DeviceNode, MountEntry, RootfsPlan};
use super::seccomp::{self, CompiledSeccomp};
use super::RuntimeError;

/// Annotation asking for a writable overlay over a read-only image: the value is the host
/// directory for upper/ and work/ (or "state" for the container's state directory).
pub const OVERLAY_ANNOTATION: &str = "dev.condo.rootfs.overlay";

/// The process to exec, resolved.
#[derive(Clone, Debug, Default)]
pub(crate) struct ProcessPlan {
    pub args: Vec<CString>,
    pub env: Vec<CString>,
    /// PATH from env, to look args[0] up inside the container.
    pub path_var: Option<String>,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: Option<u32>,
    pub caps: Option<CapSets>,
    pub no_new_privs: bool,
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64, u64)>,
    pub terminal: bool,
    /// `consoleSize` of a terminal process: (rows, columns), set on its pty before it runs.
    pub console_size: Option<(u16, u16)>,
    pub oom_score_adj: Option<i32>,
    pub seccomp: Option<CompiledSeccomp>,
}

/// Everything the container init does, as data.
#[derive(Clone, Debug, Default)]
pub(crate) struct ContainerPlan {
    /// CLONE_NEW* flags of namespaces to create.
    pub clone_flags: libc::c_int,
    /// Namespaces to join by path (nstype, path).
    pub join: Vec<(libc::c_int, PathBuf)>,
    pub uid_map: Option<String>,
    pub gid_map: Option<String>,
    pub rootfs: RootfsPlan,
    pub process: ProcessPlan,
}

/// Plans container `id` of `spec` (bundle at `bundle`, state at `state_dir`).
pub(crate) fn container_plan(
    spec: &Spec,
    bundle: &Path,
    state_dir: &Path,
) -> Result<ContainerPlan, RuntimeError> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| RuntimeError::spec("process", "missing"))?;
    let linux = spec.linux().clone().unwrap_or_default();
    let mut plan = ContainerPlan::default();
    let mut seen = 0;
    for (i, ns) in linux.namespaces().iter().flatten().enumerate() {
        let flag = ns.typ() as libc::c_int;
        let field = format!("linux.namespaces[{i}]");
        if seen & flag != 0 {
            return Err(RuntimeError::spec(
                field,
                format!("duplicate namespace {}", ns.typ()),
            ));
        }
        seen |= flag;
        match ns.path() {
            None => plan.clone_flags |= flag,
            Some(path)
                if matches!(ns.typ(), LinuxNamespaceType::Pid | LinuxNamespaceType::User) =>
            {
                return Err(RuntimeError::spec(
                    format!("{field}.path"),
                    format!(
                        "joining an existing {} namespace ({}) is not supported",
                        ns.typ(),
                        path.display()
                    ),
                ))
            }
            Some(path) => {
                if !path.exists() {
                    return Err(RuntimeError::spec(
                        format!("{field}.path"),
                        format!("{} does not exist", path.display()),
                    ));
                }
                plan.join.push((flag, path.clone()));
            }
        }
    }
    let userns = seen & libc::CLONE_NEWUSER != 0;
    if userns {
        plan.uid_map = Some(id_map(
            linux.uid_mappings().as_deref(),
            "linux.uidMappings",
        )?);
        plan.gid_map = Some(id_map(
            linux.gid_mappings().as_deref(),
            "linux.gidMappings",
        )?);
    }
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| RuntimeError::spec("root", "missing"))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    if !rootfs.is_dir() {
        return Err(RuntimeError::spec(
            "root.path",
            format!("{} does not exist or is not a directory", rootfs.display()),
        ));
    }
    let hostname = spec.hostname().clone().filter(|h| !h.is_empty());
    if let Some(name) = &hostname {
        if seen & libc::CLONE_NEWUTS == 0 {
            return Err(RuntimeError::spec(
                "hostname",
                format!("{name:?} needs a uts namespace"),
            ));
        }
        if name.len() > 64 {
            return Err(RuntimeError::spec(
                "hostname",
                format!("{name:?} is longer than 64 bytes"),
            ));
        }
    }
    let overlay = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(OVERLAY_ANNOTATION))
        .map(|v| {
            if v == "state" {
                state_dir.join("overlay")
            } else {
                PathBuf::from(v)
            }
        });
    let root_propagation = match linux.rootfs_propagation() {
        None => libc::MS_SLAVE | libc::MS_REC,
        Some(p) => mounts::propagation_flag(p).ok_or_else(|| {
            RuntimeError::spec(
                "linux.rootfsPropagation",
                format!("unknown propagation {p:?}"),
            )
        })?,
    };
    plan.rootfs = RootfsPlan {
        rootfs: rootfs
            .canonicalize()
            .map_err(|e| RuntimeError::io("resolve root.path", &rootfs, e))?,
        overlay,
        root_propagation,
        mounts: mount_entries(spec, bundle)?,
        devices: devices(&linux)?,
        bind_devices: userns,
        masked_paths: absolute_paths(linux.masked_paths().as_deref(), "linux.maskedPaths")?,
        readonly_paths: absolute_paths(linux.readonly_paths().as_deref(), "linux.readonlyPaths")?,
        readonly_root: root.readonly().unwrap_or(false),
        hostname,
        sysctl: Vec::new(),
    };
    for (key, value) in linux.sysctl().iter().flatten() {
        if key.is_empty() || key.contains("..") || key.contains('/') && key.contains('.') {
            return Err(RuntimeError::spec(
                "linux.sysctl",
                format!("bad key {key:?}"),
            ));
        }
        plan.rootfs.sysctl.push((
            PathBuf::from("/proc/sys").join(key.replace('.', "/")),
            value.clone(),
        ));
    }
    plan.process = process_plan(process, linux.seccomp().as_ref(), "process")?;
    Ok(plan)
}

fn id_map(
    maps: Option<&[oci_spec::runtime::LinuxIdMapping]>,
    field: &str,
) -> Result<String, RuntimeError> {
    let maps = maps
        .filter(|m| !m.is_empty())
        .ok_or_else(|| RuntimeError::spec(field, "a user namespace needs at least one mapping"))?;
    Ok(maps
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect())
}

fn absolute_paths(paths: Option<&[String]>, field: &str) -> Result<Vec<PathBuf>, RuntimeError> {
    let mut out = Vec::new();
    for (i, p) in paths.into_iter().flatten().enumerate() {
        if !p.starts_with('/') || p.split('/').any(|c| c == "..") {
            return Err(RuntimeError::spec(
                format!("{field}[{i}]"),
                format!("{p:?} is not an absolute path"),
            ));
        }
        out.push(PathBuf::from(p));
    }
    Ok(out)
}

fn mount_entries(spec: &Spec, bundle: &Path) -> Result<Vec<MountEntry>, RuntimeError> {
    let mut out = Vec::new();
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let field = format!("mounts[{i}]");
        let dest = m.destination();
        if !dest.is_absolute() {
            return Err(RuntimeError::spec(
                format!("{field}.destination"),
                format!("{} is not absolute", dest.display()),
            ));
        }
        let destination =
            mounts::join_in_root(Path::new("/"), dest, &format!("{field}.destination"))?;
        let (flags, propagation, data, bind_opt) =
            mounts::parse_options(m.options().as_deref().unwrap_or(&[]));
        let bind = bind_opt || m.typ().as_deref() == Some("bind");
        let source = m.source().clone().map(|s| {
            if bind && s.is_relative() {
                bundle.join(s)
            } else {
                s
            }
        });
        if bind {
            match &source {
                Some(s) if s.exists() => {}
                other => {
                    return Err(RuntimeError::spec(
                        format!("{field}.source"),
                        format!(
                            "bind source {:?} does not exist",
                            other.as_ref().map(|p| p.display().to_string())
                        ),
                    ))
                }
            }
        }
        let flags = if bind { flags | libc::MS_BIND } else { flags };
        out.push(MountEntry {
            destination,
            source,
            fstype: m.typ().clone().filter(|t| t != "bind"),
            flags,
            propagation,
            data,
            bind,
        });
    }
    Ok(out)
}

fn devices(linux: &oci_spec::runtime::Linux) -> Result<Vec<DeviceNode>, RuntimeError> {
    let mut out = mounts::default_devices();
    for (i, d) in linux.devices().iter().flatten().enumerate() {
        let field = format!("linux.devices[{i}]");
        let kind = match d.typ() {
            oci_spec::runtime::LinuxDeviceType::C | oci_spec::runtime::LinuxDeviceType::U => {
                libc::S_IFCHR
            }
            oci_spec::runtime::LinuxDeviceType::B => libc::S_IFBLK,
            oci_spec::runtime::LinuxDeviceType::P => libc::S_IFIFO,
            other => {
                return Err(RuntimeError::spec(
                    format!("{field}.type"),
                    format!("unsupported device type {other:?}"),
                ))
            }
        };
        let path = d.path().clone();
        if !path.starts_with("/dev/") {
            return Err(RuntimeError::spec(
                format!("{field}.path"),
                format!("{} is not under /dev", path.display()),
            ));
        }
        let node = DeviceNode {
            path,
            mode: kind | d.file_mode().unwrap_or(0o666),
            major: u32::try_from(d.major())
                .map_err(|_| RuntimeError::spec(format!("{field}.major"), d.major().to_string()))?,
            minor: u32::try_from(d.minor())
                .map_err(|_| RuntimeError::spec(format!("{field}.minor"), d.minor().to_string()))?,
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        };
        out.retain(|n| n.path != node.path);
        out.push(node);
    }
    Ok(out)
}

fn cap_mask(set: &Option<oci_spec::runtime::Capabilities>) -> capabilities::CapMask {
    set.iter()
        .flatten()
        .filter_map(|c| serde_json::to_value(c).ok())
        .filter_map(|v| v.as_str().and_then(capabilities::capability_bit))
        .fold(0, |mask, bit| mask | (1 << bit))
}

fn rlimit_resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    match t {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

fn cstrings(items: &[String], field: &str) -> Result<Vec<CString>, RuntimeError> {
    items
        .iter()
        .enumerate()
        .map(|(i, s)| {
            CString::new(s.as_bytes()).map_err(|_| {
                RuntimeError::spec(format!("{field}[{i}]"), format!("{s:?} holds a NUL byte"))
            })
        })
        .collect()
}

/// Plans a process (the container's, or an exec'd one; `field` is its JSON path).
pub(crate) fn process_plan(
    process: &Process,
    seccomp_profile: Option<&oci_spec::runtime::LinuxSeccomp>,
    field: &str,
) -> Result<ProcessPlan, RuntimeError> {
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return Err(RuntimeError::spec(
            format!("{field}.args"),
            "no command given",
        ));
    }
    let cwd = process.cwd();
    if !cwd.is_absolute() {
        return Err(RuntimeError::spec(
            format!("{field}.cwd"),
            format!("{:?} is not an absolute path", cwd.display().to_string()),
        ));
    }
    let env = process.env().clone().unwrap_or_default();
    for (i, e) in env.iter().enumerate() {
        if !e.contains('=') || e.starts_with('=') {
            return Err(RuntimeError::spec(
                format!("{field}.env[{i}]"),
                format!("{e:?} is not NAME=value"),
            ));
        }
    }
    let caps = process.capabilities().as_ref().map(|c| CapSets {
        bounding: cap_mask(c.bounding()),
        effective: cap_mask(c.effective()),
        permitted: cap_mask(c.permitted()),
        inheritable: cap_mask(c.inheritable()),
        ambient: cap_mask(c.ambient()),
    });
    let mut rlimits = Vec::new();
    for (i, r) in process.rlimits().iter().flatten().enumerate() {
        if r.soft() > r.hard() {
            return Err(RuntimeError::spec(
                format!("{field}.rlimits[{i}]"),
                format!("soft {} above hard {}", r.soft(), r.hard()),
            ));
        }
        rlimits.push((rlimit_resource(r.typ()), r.soft(), r.hard()));
    }
    if let Some(adj) = process.oom_score_adj() {
        if !(-1000..=1000).contains(&adj) {
            return Err(RuntimeError::spec(
                format!("{field}.oomScoreAdj"),
                format!("{adj} is not in -1000..1000"),
            ));
        }
    }
    let seccomp = seccomp_profile.map(seccomp::compile).transpose()?;
    let console_size = match process.console_size() {
        Some(size) => {
            let fits = |n: u64| u16::try_from(n).ok();
            let (Some(rows), Some(cols)) = (fits(size.height()), fits(size.width())) else {
                return Err(RuntimeError::spec(
                    format!("{field}.consoleSize"),
                    format!(
                        "{}x{} is larger than a terminal can be (65535)",
                        size.height(),
                        size.width()
                    ),
                ));
            };
            Some((rows, cols))
        }
        None => None,
    };
    let user = process.user();
    Ok(ProcessPlan {
        args: cstrings(&args, &format!("{field}.args"))?,
        path_var: env
            .iter()
            .find_map(|e| e.strip_prefix("PATH=").map(str::to_string)),
        env: cstrings(&env, &format!("{field}.env"))?,
        cwd: cwd.clone(),
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        umask: user.umask(),
        caps,
        no_new_privs: process.no_new_privileges().unwrap_or(false),
        rlimits,
        terminal: process.terminal().unwrap_or(false),
        console_size,
        oom_score_adj: process.oom_score_adj(),
        seccomp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn spec_with(edit: impl FnOnce(&mut Value)) -> Spec {
        let mut v = serde_json::to_value(
            super::super::defaults::default_spec(&Default::default()).unwrap(),
        )
        .unwrap();
        v["root"]["path"] = std::env::temp_dir().to_string_lossy().into_owned().into();
        edit(&mut v);
        serde_json::from_value(v).unwrap()
    }

    fn error_of(edit: impl FnOnce(&mut Value)) -> String {
        container_plan(&spec_with(edit), Path::new("/b"), Path::new("/s"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn default_spec_plans() {
        let plan = container_plan(&spec_with(|_| {}), Path::new("/b"), Path::new("/s")).unwrap();
        let want = libc::CLONE_NEWPID
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWCGROUP;
        assert_eq!(plan.clone_flags, want);
        assert!(plan.process.no_new_privs);
        assert_eq!(plan.process.caps.unwrap().effective, 0xa804_25fb);
        assert_eq!(plan.rootfs.masked_paths.len(), 11);
        assert_eq!(
            plan.process.rlimits,
            vec![(libc::RLIMIT_NOFILE, 1024, 1024)]
        );
    }

    #[test]
    fn console_size_is_rows_then_columns() {
        let spec = spec_with(|v| {
            v["process"]["terminal"] = true.into();
            v["process"]["consoleSize"] = json!({"height": 33, "width": 101});
        });
        let plan = container_plan(&spec, Path::new("/b"), Path::new("/s")).unwrap();
        assert!(plan.process.terminal);
        assert_eq!(plan.process.console_size, Some((33, 101)));
    }

    #[test]
    fn bad_fields_are_named_with_their_values() {
        type Edit = Box<dyn FnOnce(&mut Value)>;
        let cases: Vec<(Edit, &str, &str)> = vec![
            (
                Box::new(|v| v["process"]["cwd"] = "tmp".into()),
                "process.cwd",
                "tmp",
            ),
            (
                Box::new(|v| v["process"]["args"] = json!([])),
                "process.args",
                "no command",
            ),
            (
                Box::new(|v| v["process"]["consoleSize"] = json!({"height": 70000, "width": 80})),
                "process.consoleSize",
                "70000x80",
            ),
            (
                Box::new(|v| v["process"]["env"] = json!(["NOEQUALS"])),
                "process.env[0]",
                "NOEQUALS",
            ),
            (
                Box::new(|v| {
                    v["process"]["rlimits"] =
                        json!([{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 5}])
                }),
                "process.rlimits[0]",
                "soft 10",
            ),
            (
                Box::new(|v| v["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "pid"}])),
                "linux.namespaces[1]",
                "duplicate",
            ),
            (
                Box::new(|v| {
                    v["linux"]["namespaces"] = json!([{"type": "pid", "path": "/proc/1/ns/pid"}])
                }),
                "linux.namespaces[0].path",
                "/proc/1/ns/pid",
            ),
            (
                Box::new(|v| v["linux"]["namespaces"] = json!([{"type": "mount"}])),
                "hostname",
                "uts namespace",
            ),
            (
                Box::new(|v| {
                    v["linux"]["namespaces"]
                        .as_array_mut()
                        .unwrap()
                        .push(json!({"type": "user"}))
                }),
                "linux.uidMappings",
                "mapping",
            ),
            (
                Box::new(|v| v["mounts"] = json!([{"destination": "proc", "type": "proc"}])),
                "mounts[0].destination",
                "proc",
            ),
            (
                Box::new(|v| v["linux"]["maskedPaths"] = json!(["relative"])),
                "linux.maskedPaths[0]",
                "relative",
            ),
            (
                Box::new(|v| v["linux"]["rootfsPropagation"] = "sideways".into()),
                "linux.rootfsPropagation",
                "sideways",
            ),
            (
                Box::new(|v| v["process"]["oomScoreAdj"] = 5000.into()),
                "process.oomScoreAdj",
                "5000",
            ),
        ];
        for (edit, field, value) in cases {
            let err = error_of(edit);
            assert!(err.contains(field), "{field}: {err}");
            assert!(err.contains(value), "{value}: {err}");
        }
    }
}
