//! What a tenant's jail is made of, and the checks that refuse a bad one before anything is
//! created on the host.

use std::path::{Component, Path, PathBuf};

use super::JailError;

/// Where jails live unless the operator says otherwise (Firecracker's jailer uses /srv/jailer).
pub const DEFAULT_BASE_DIR: &str = "/srv/condo/jail";
/// The cgroup v2 mount the per-tenant cgroups are made under.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Memory the VMM process needs beyond guest memory: its own heap, stacks, page tables,
/// device buffers. Generous on purpose: the cgroup is a wall against runaways, not a budget.
pub const DEFAULT_VMM_OVERHEAD_MIB: u64 = 64;
/// Length limit of a tenant id (it becomes a directory, a cgroup and a hostname).
pub const MAX_ID_LEN: usize = 64;

/// Namespaces made for the VMM; net only when its networking allows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceSet {
    pub mount: bool,
    pub pid: bool,
    pub ipc: bool,
    pub uts: bool,
    pub net: bool,
}

impl Default for NamespaceSet {
    fn default() -> Self {
        Self {
            mount: true,
            pid: true,
            ipc: true,
            uts: true,
            net: true,
        }
    }
}

/// How a host file is made visible inside the jail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExposeMode {
    /// Hard link when the jail is on the same filesystem, else a copy (kernel, initrd: small and
    /// read-only). A link shares the inode, so a read-only file must not be writable by others.
    LinkOrCopy,
    /// Bind-mounted read-only inside the VMM's mount namespace (large read-only disks).
    BindReadOnly,
    /// Bind-mounted read-write (the tenant's own disks); the source is handed to the tenant uid.
    BindReadWrite,
    /// A directory bind-mounted read-only (the vsock socket's directory, where host listeners
    /// for guest-initiated connections live as `<uds>_<port>`).
    BindDirReadOnly,
}

/// One host file the VMM needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExposedFile {
    /// Path on the host.
    pub source: PathBuf,
    /// Absolute path inside the jail. condo gives the host path itself, so the VMM's
    /// configuration and error messages stay those the operator wrote.
    pub inside: PathBuf,
    pub mode: ExposeMode,
}

/// A device node made inside the jail root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceNode {
    Kvm,
    Tun,
}

impl DeviceNode {
    /// Path inside the jail root, without the leading slash.
    pub fn relative_path(self) -> &'static str {
        match self {
            DeviceNode::Kvm => "dev/kvm",
            DeviceNode::Tun => "dev/net/tun",
        }
    }

    /// Character device numbers (Documentation/admin-guide/devices.txt: misc 10).
    pub fn major_minor(self) -> (u64, u64) {
        match self {
            DeviceNode::Kvm => (10, 232),
            DeviceNode::Tun => (10, 200),
        }
    }
}

/// Per-tenant cgroup v2 limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimits {
    /// cpu.max quota in microseconds per `cpu_period_us` (vCPUs x period: whole CPUs).
    pub cpu_quota_us: u64,
    pub cpu_period_us: u64,
    /// memory.max in bytes: guest memory plus the VMM's overhead.
    pub memory_bytes: u64,
    /// pids.max: the VMM's threads (one per vCPU, the event loop, a few helpers).
    pub pids: u64,
}

impl CgroupLimits {
    /// Limits sized from the tenant's VM: `vcpus` whole CPUs, guest memory plus overhead, and
    /// room for one thread per vCPU plus the VMM's own.
    pub fn for_vm(vcpus: u32, guest_memory_mib: u64, overhead_mib: u64) -> Self {
        let period = 100_000;
        Self {
            cpu_quota_us: u64::from(vcpus.max(1)) * period,
            cpu_period_us: period,
            memory_bytes: guest_memory_mib.saturating_add(overhead_mib) << 20,
            pids: u64::from(vcpus) + 16,
        }
    }
}

/// What to do about the cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupPolicy {
    /// Make the per-tenant cgroup; refuse to start when cgroup v2 controllers are missing.
    Required(CgroupLimits),
    /// The operator asked to run without a cgroup (hosts without cgroup v2 controllers).
    Disabled,
}

/// Resource limits set with setrlimit before the VMM drops its privileges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimits {
    /// RLIMIT_NOFILE: the VMM needs KVM fds, a few per vCPU and device, sockets.
    pub open_files: u64,
    /// RLIMIT_FSIZE in bytes: a guest that makes its VMM write past this dies of SIGXFSZ.
    pub file_size: u64,
}

impl Default for Rlimits {
    fn default() -> Self {
        Self {
            open_files: 1024,
            file_size: 1 << 30,
        }
    }
}

/// Everything that describes one tenant's jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailConfig {
    /// Tenant name: `[a-z0-9-]{1,64}`.
    pub id: String,
    pub uid: u32,
    pub gid: u32,
    /// Jails live in `<base_dir>/<id>/root`.
    pub base_dir: PathBuf,
    pub files: Vec<ExposedFile>,
    pub devices: Vec<DeviceNode>,
    pub cgroup_root: PathBuf,
    pub cgroup: CgroupPolicy,
    pub rlimits: Rlimits,
    pub namespaces: NamespaceSet,
    /// File descriptors the VMM keeps (0, 1, 2 are always kept).
    pub keep_fds: Vec<i32>,
}

impl JailConfig {
    /// A jail for `id` with the defaults: /dev/kvm only, default rlimits, every namespace.
    pub fn new(id: &str, uid: u32, gid: u32, cgroup: CgroupPolicy) -> Self {
        Self {
            id: id.to_owned(),
            uid,
            gid,
            base_dir: PathBuf::from(DEFAULT_BASE_DIR),
            files: Vec::new(),
            devices: vec![DeviceNode::Kvm],
            cgroup_root: PathBuf::from(DEFAULT_CGROUP_ROOT),
            cgroup,
            rlimits: Rlimits::default(),
            namespaces: NamespaceSet::default(),
            keep_fds: Vec::new(),
        }
    }

    /// `<base>/<id>`: everything of this jail, removed as a whole at the end.
    pub fn jail_dir(&self) -> PathBuf {
        self.base_dir.join(&self.id)
    }

    /// `<base>/<id>/root`: becomes `/` of the VMM.
    pub fn root_dir(&self) -> PathBuf {
        self.jail_dir().join("root")
    }

    /// `/sys/fs/cgroup/condo/<id>`.
    pub fn cgroup_dir(&self) -> PathBuf {
        self.cgroup_root.join("condo").join(&self.id)
    }

    /// Refuses a configuration that would be unsafe or that could not be built, naming the
    /// value at fault; nothing has been created yet when this fails.
    pub fn validate(&self) -> Result<(), JailError> {
        validate_id(&self.id)?;
        if self.uid == 0 {
            return Err(JailError::InvalidConfig(format!(
                "uid 0 for tenant {:?}: the VMM must run unprivileged",
                self.id
            )));
        }
        if self.gid == 0 {
            return Err(JailError::InvalidConfig(format!(
                "gid 0 for tenant {:?}: the VMM must run unprivileged",
                self.id
            )));
        }
        if !self.base_dir.is_absolute() {
            return Err(JailError::InvalidConfig(format!(
                "jail base directory {} is not an absolute path",
                self.base_dir.display()
            )));
        }
        if !self.cgroup_root.is_absolute() {
            return Err(JailError::InvalidConfig(format!(
                "cgroup root {} is not an absolute path",
                self.cgroup_root.display()
            )));
        }
        self.validate_files()?;
        self.validate_limits()
    }

    fn validate_files(&self) -> Result<(), JailError> {
        let mut seen: Vec<&Path> = Vec::with_capacity(self.files.len());
        for file in &self.files {
            let inside = file.inside.as_path();
            let mut components = inside.components();
            let rooted = components.next() == Some(Component::RootDir);
            let parts: Vec<Component> = components.collect();
            let plain = parts.iter().all(|c| matches!(c, Component::Normal(_)));
            let first = parts
                .first()
                .map(|c| c.as_os_str().to_string_lossy().into_owned());
            let reserved = matches!(first.as_deref(), Some("dev" | "run"));
            if !rooted || parts.is_empty() || !plain || reserved {
                return Err(JailError::InvalidConfig(format!(
                    "jail path {} (for {}) must be absolute, without . or .., and outside /dev and /run",
                    inside.display(),
                    file.source.display()
                )));
            }
            if let Some(other) = seen
                .iter()
                .find(|s| s.starts_with(inside) || inside.starts_with(s))
            {
                return Err(JailError::InvalidConfig(format!(
                    "jail paths {} and {} collide",
                    other.display(),
                    inside.display()
                )));
            }
            seen.push(inside);
            if !file.source.is_absolute() {
                return Err(JailError::InvalidConfig(format!(
                    "jail file source {} is not an absolute path",
                    file.source.display()
                )));
            }
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), JailError> {
        if self.rlimits.open_files < 16 {
            return Err(JailError::InvalidConfig(format!(
                "open-files limit {} is too small for a VMM (at least 16)",
                self.rlimits.open_files
            )));
        }
        if self.rlimits.file_size == 0 {
            return Err(JailError::InvalidConfig(
                "file-size limit 0 would kill the VMM at its first write".to_owned(),
            ));
        }
        if let CgroupPolicy::Required(limits) = self.cgroup {
            if limits.cpu_quota_us == 0 || limits.cpu_period_us == 0 {
                return Err(JailError::InvalidConfig(format!(
                    "cpu.max {} {} must be positive",
                    limits.cpu_quota_us, limits.cpu_period_us
                )));
            }
            if limits.memory_bytes < (16 << 20) {
                return Err(JailError::InvalidConfig(format!(
                    "memory.max {} bytes is below 16 MiB",
                    limits.memory_bytes
                )));
            }
            if limits.pids < 2 {
                return Err(JailError::InvalidConfig(format!(
                    "pids.max {} leaves no room for a vCPU thread",
                    limits.pids
                )));
            }
        }
        if let Some(fd) = self.keep_fds.iter().find(|fd| **fd < 0) {
            return Err(JailError::InvalidConfig(format!(
                "file descriptor {fd} to keep is negative"
            )));
        }
        Ok(())
    }
}

/// A tenant id is `[a-z0-9-]{1,64}`: it names a directory, a cgroup and a hostname.
pub fn validate_id(id: &str) -> Result<(), JailError> {
    let well_formed = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if well_formed {
        Ok(())
    } else {
        Err(JailError::InvalidConfig(format!(
            "tenant id {id:?} must be 1 to {MAX_ID_LEN} characters of a-z, 0-9 and -"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> JailConfig {
        JailConfig::new("acme-1", 100_000, 100_000, CgroupPolicy::Disabled)
    }

    #[test]
    fn accepts_a_good_config() {
        good().validate().unwrap();
    }

    #[test]
    fn refuses_bad_ids() {
        let long = "a".repeat(65);
        for id in ["", "Acme", "a/b", "..", "a_b", "a b", "é", long.as_str()] {
            let mut cfg = good();
            cfg.id = id.to_owned();
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains("tenant id"), "{id:?}: {err}");
        }
        let mut cfg = good();
        cfg.id = "a".repeat(64);
        cfg.validate().unwrap();
    }

    #[test]
    fn refuses_root_ids() {
        let mut cfg = good();
        cfg.uid = 0;
        assert!(cfg.validate().unwrap_err().to_string().contains("uid 0"));
        let mut cfg = good();
        cfg.gid = 0;
        assert!(cfg.validate().unwrap_err().to_string().contains("gid 0"));
    }

    #[test]
    fn refuses_bad_jail_paths_and_collisions() {
        for inside in ["", "/", "vmlinux", "/a/../b", "/dev/kvm", "/run/x"] {
            let mut cfg = good();
            cfg.files.push(ExposedFile {
                source: PathBuf::from("/boot/vmlinux"),
                inside: PathBuf::from(inside),
                mode: ExposeMode::LinkOrCopy,
            });
            assert!(cfg.validate().is_err(), "{inside:?} accepted");
        }
        let file = |inside: &str| ExposedFile {
            source: PathBuf::from("/boot/vmlinux"),
            inside: PathBuf::from(inside),
            mode: ExposeMode::LinkOrCopy,
        };
        let mut cfg = good();
        cfg.files = vec![file("/boot/vmlinux"), file("/boot/vmlinux")];
        assert!(cfg.validate().unwrap_err().to_string().contains("collide"));
        cfg.files = vec![file("/boot"), file("/boot/vmlinux")];
        assert!(cfg.validate().unwrap_err().to_string().contains("collide"));
        cfg.files = vec![
            file("/boot/vmlinux"),
            file("/boot/initrd"),
            file("/srv/run/x"),
        ];
        cfg.validate().unwrap();
        let mut cfg = good();
        cfg.files.push(ExposedFile {
            source: PathBuf::from("relative/vmlinux"),
            inside: PathBuf::from("/vmlinux"),
            mode: ExposeMode::LinkOrCopy,
        });
        assert!(cfg.validate().unwrap_err().to_string().contains("absolute"));
    }

    #[test]
    fn refuses_bad_limits() {
        let mut cfg = good();
        cfg.rlimits.file_size = 0;
        assert!(cfg.validate().is_err());
        let mut cfg = good();
        cfg.rlimits.open_files = 3;
        assert!(cfg.validate().is_err());
        let mut cfg = good();
        let mut limits = CgroupLimits::for_vm(1, 128, DEFAULT_VMM_OVERHEAD_MIB);
        limits.pids = 1;
        cfg.cgroup = CgroupPolicy::Required(limits);
        assert!(cfg.validate().unwrap_err().to_string().contains("pids.max"));
    }

    #[test]
    fn cgroup_limits_follow_the_vm() {
        let limits = CgroupLimits::for_vm(2, 256, 64);
        assert_eq!(limits.cpu_quota_us, 200_000);
        assert_eq!(limits.cpu_period_us, 100_000);
        assert_eq!(limits.memory_bytes, 320 << 20);
        assert_eq!(limits.pids, 18);
    }

    #[test]
    fn paths_are_under_the_base() {
        let cfg = good();
        assert_eq!(cfg.root_dir(), PathBuf::from("/srv/condo/jail/acme-1/root"));
        assert_eq!(
            cfg.cgroup_dir(),
            PathBuf::from("/sys/fs/cgroup/condo/acme-1")
        );
    }
}
