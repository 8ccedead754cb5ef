//! Strict defaults equal to Docker's: capabilities, seccomp profile, masked and read-only
//! paths, no_new_privs, the standard mounts and the minimal device set; and the knobs to
//! tighten or loosen them one at a time (used by `condo-runtime spec` and the agent).

use oci_spec::runtime::{LinuxSeccomp, Spec};
use serde_json::{json, Value};

use super::capabilities;
use super::RuntimeError;

/// Docker's 14 default capabilities (CapEff 0xa80425fb).
pub const DOCKER_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Docker's masked paths: unreadable inside the container.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The default seccomp profile (Docker's, resolved for amd64 and the default capabilities).
pub const DEFAULT_SECCOMP_JSON: &str = include_str!("../../seccomp/default-profile.json");

/// The default seccomp profile as an OCI section.
pub fn default_seccomp() -> Result<LinuxSeccomp, RuntimeError> {
    serde_json::from_str(DEFAULT_SECCOMP_JSON)
        .map_err(|e| RuntimeError::Seccomp(format!("embedded default profile: {e}")))
}

/// How `spec` departs from the strict defaults.
#[derive(Clone, Debug, Default)]
pub struct SpecOptions {
    /// Command to run; default `sh`.
    pub args: Vec<String>,
    pub terminal: bool,
    pub hostname: Option<String>,
    /// Tighten: no capabilities at all.
    pub cap_drop_all: bool,
    /// Tighten: read-only root filesystem.
    pub read_only: bool,
    /// Tighten: a user namespace mapping container root to this host uid/gid (65536 ids).
    pub userns_host_id: Option<u32>,
    /// Loosen: capabilities added to the defaults (names checked).
    pub cap_add: Vec<String>,
    /// Loosen: capabilities removed from the defaults (names checked).
    pub cap_drop: Vec<String>,
    /// Loosen: no seccomp filter.
    pub no_seccomp: bool,
    /// Loosen: no_new_privs off.
    pub no_new_privileges_off: bool,
    /// Loosen: keep /proc and /sys paths unmasked and writable.
    pub unmask_paths: bool,
    /// Loosen: share the host's network namespace.
    pub host_network: bool,
    /// Limits (cgroup v2).
    pub memory_limit: Option<i64>,
    pub pids_limit: Option<i64>,
}

/// Builds a spec with the strict defaults, changed as `opts` asks.
pub fn default_spec(opts: &SpecOptions) -> Result<Spec, RuntimeError> {
    let mut caps = if opts.cap_drop_all {
        0
    } else {
        capabilities::mask_of(DOCKER_CAPABILITIES, "defaults")?
    };
    caps |= capabilities::mask_of(&opts.cap_add, "--cap-add")?;
    caps &= !capabilities::mask_of(&opts.cap_drop, "--cap-drop")?;
    let cap_names = capabilities::names_of(caps);
    let args = if opts.args.is_empty() {
        vec!["sh".to_string()]
    } else {
        opts.args.clone()
    };
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        json!({"type": "cgroup"}),
    ];
    if !opts.host_network {
        namespaces.push(json!({"type": "network"}));
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "maskedPaths": if opts.unmask_paths { vec![] } else { MASKED_PATHS.to_vec() },
        "readonlyPaths": if opts.unmask_paths { vec![] } else { READONLY_PATHS.to_vec() },
        "resources": resources(opts),
    });
    if let Some(host_id) = opts.userns_host_id {
        let map = json!([{"containerID": 0, "hostID": host_id, "size": 65536}]);
        if let Some(ns) = linux["namespaces"].as_array_mut() {
            ns.push(json!({"type": "user"}));
        }
        linux["uidMappings"] = map.clone();
        linux["gidMappings"] = map;
    }
    if !opts.no_seccomp {
        let profile: Value = serde_json::from_str(DEFAULT_SECCOMP_JSON)
            .map_err(|e| RuntimeError::Seccomp(format!("embedded default profile: {e}")))?;
        linux["seccomp"] = profile;
    }
    let spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": opts.terminal,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": cap_names, "effective": cap_names, "permitted": cap_names,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": !opts.no_new_privileges_off,
        },
        "root": {"path": "rootfs", "readonly": opts.read_only},
        "hostname": opts.hostname.clone().unwrap_or_else(|| "condo".to_string()),
        "mounts": standard_mounts(opts.userns_host_id.is_some()),
        "linux": linux,
    });
    serde_json::from_value(spec).map_err(|e| RuntimeError::spec("defaults", e.to_string()))
}

fn resources(opts: &SpecOptions) -> Value {
    let mut res = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if let Some(limit) = opts.memory_limit {
        res["memory"] = json!({"limit": limit, "swap": limit});
    }
    if let Some(limit) = opts.pids_limit {
        res["pids"] = json!({ "limit": limit });
    }
    res
}

/// The standard mounts: /proc, /dev (tmpfs), devpts, shm, mqueue, /sys read-only, cgroup.
pub fn standard_mounts(userns: bool) -> Value {
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    if !userns {
        // devpts' gid=5 only makes sense where gid 5 exists in the container's view.
        if let Some(opts) = mounts[2]["options"].as_array_mut() {
            opts.push(json!("gid=5"));
        }
    }
    Value::Array(mounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_is_strict() {
        let spec = default_spec(&SpecOptions::default()).unwrap();
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.no_new_privileges(), Some(true));
        let caps = process.capabilities().as_ref().unwrap();
        assert_eq!(caps.bounding().as_ref().unwrap().len(), 14);
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(
            linux.masked_paths().as_ref().unwrap().len(),
            MASKED_PATHS.len()
        );
        assert!(linux.seccomp().is_some());
    }

    #[test]
    fn loosen_and_tighten_one_thing_at_a_time() {
        let opts = SpecOptions {
            cap_add: vec!["CAP_SYS_ADMIN".into()],
            no_seccomp: true,
            ..SpecOptions::default()
        };
        let spec = default_spec(&opts).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_none());
        assert_eq!(
            linux.masked_paths().as_ref().unwrap().len(),
            MASKED_PATHS.len()
        );
        let process = spec.process().as_ref().unwrap();
        let bounding = process
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .as_ref()
            .unwrap();
        assert_eq!(bounding.len(), 15);
        let tight = default_spec(&SpecOptions {
            cap_drop_all: true,
            read_only: true,
            userns_host_id: Some(100_000),
            ..SpecOptions::default()
        })
        .unwrap();
        assert_eq!(tight.root().as_ref().unwrap().readonly(), Some(true));
        let process = tight.process().as_ref().unwrap();
        assert!(process
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .as_ref()
            .unwrap()
            .is_empty());
        let err = default_spec(&SpecOptions {
            cap_add: vec!["CAP_NOPE".into()],
            ..SpecOptions::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("CAP_NOPE"));
    }
}
