//! The boot configuration of one VM (from flags or a JSON file) and its validation.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::config_vsock::{VsockConfig, VsockConfigError};
use crate::devices::legacy::{DEFAULT_CONSOLE_LIMIT, MIN_CONSOLE_LIMIT};

/// Most vCPUs a VM may have (the MP table and topology code assume a small machine).
pub const MAX_VCPUS: u8 = 32;
/// Smallest guest memory: room for the boot structures and a test payload at 1 MiB.
pub const MIN_MEMORY_MIB: u64 = 2;
/// Command line used when none is given: serial console, leave through the i8042 reset.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 pci=off";
const DEFAULT_MEMORY_MIB: u64 = 128;

/// Where the guest's serial console goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Console {
    /// The VMM's stdout; stdin feeds the guest.
    Stdout,
    /// A file, created or truncated.
    File(PathBuf),
}

impl std::str::FromStr for Console {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if s == "stdout" {
            Console::Stdout
        } else {
            Console::File(PathBuf::from(s))
        })
    }
}

impl Serialize for Console {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Console::Stdout => s.serialize_str("stdout"),
            Console::File(path) => path.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Console {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(text.parse().unwrap_or(Console::Stdout))
    }
}

/// A virtio-blk disk: a raw image file (`--disk PATH[,ro]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// The image file.
    pub path: PathBuf,
    /// The guest may only read it (VIRTIO_BLK_F_RO; the file is opened read-only).
    #[serde(default)]
    pub read_only: bool,
}

impl std::str::FromStr for DiskConfig {
    type Err = String;

    /// `PATH`, `PATH,ro` or `PATH,rw`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (path, read_only) = match s.rsplit_once(',') {
            Some((path, "ro")) => (path, true),
            Some((path, "rw")) => (path, false),
            _ => (s, false),
        };
        if path.is_empty() {
            return Err(format!("--disk {s:?}: no path"));
        }
        Ok(Self {
            path: PathBuf::from(path),
            read_only,
        })
    }
}

fn default_cmdline() -> String {
    DEFAULT_CMDLINE.to_string()
}
fn default_vcpus() -> u8 {
    1
}
fn default_memory() -> u64 {
    DEFAULT_MEMORY_MIB
}
fn default_console() -> Console {
    Console::Stdout
}
fn default_console_limit() -> u64 {
    DEFAULT_CONSOLE_LIMIT
}

/// Everything needed to boot a VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// ELF vmlinux (or test payload) or bzImage.
    pub kernel: PathBuf,
    /// Optional initramfs.
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[serde(default = "default_cmdline")]
    pub cmdline: String,
    /// Number of vCPUs, 1..=32.
    #[serde(default = "default_vcpus")]
    pub vcpus: u8,
    /// Guest memory in MiB.
    #[serde(default = "default_memory")]
    pub memory_mib: u64,
    /// Serial console destination.
    #[serde(default = "default_console")]
    pub console: Console,
    /// Most bytes a console file holds: past it, only the latest output is kept (see
    /// [`crate::devices::legacy::BoundedConsoleFile`]). Not applied to stdout.
    #[serde(default = "default_console_limit")]
    pub console_limit: u64,
    /// virtio-blk disks, /dev/vda, /dev/vdb, ... in the guest.
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    /// The virtio-vsock device, if any.
    #[serde(default)]
    pub vsock: Option<VsockConfig>,
    /// virtio-net interfaces, each on a host tap.
    #[serde(default)]
    pub net: Vec<crate::net::NetConfig>,
}

/// A configuration that cannot boot.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A network interface that cannot be made.
    #[error(transparent)]
    Net(crate::net::NetError),
    /// vCPU count out of range.
    #[error("--vcpus {0}: must be between 1 and {MAX_VCPUS}")]
    Vcpus(u64),
    /// Memory too small.
    #[error("--memory {0} MiB: must be at least {MIN_MEMORY_MIB} MiB")]
    MemoryTooSmall(u64),
    /// Memory larger than the host can back.
    #[error("--memory {requested} MiB: more than this host can back ({available} MiB available: MemAvailable + SwapFree in /proc/meminfo)")]
    MemoryTooLarge {
        /// Requested MiB.
        requested: u64,
        /// What the host has.
        available: u64,
    },
    /// /proc/meminfo unreadable or without the fields needed.
    #[error("cannot tell how much memory the host has: {0}")]
    HostMemory(String),
    /// The JSON configuration is unreadable or malformed.
    #[error("configuration file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file the VM needs cannot be read.
    #[error("{what} {path}: {source}")]
    Unreadable {
        /// "kernel" or "initrd".
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// The error from the OS.
        source: std::io::Error,
    },
    /// A file the VM needs is empty or not a regular file.
    #[error("{what} {path}: {reason}")]
    BadFile {
        /// "kernel" or "initrd".
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// The vsock device is misconfigured.
    #[error(transparent)]
    Vsock(#[from] VsockConfigError),
    /// More virtio devices than there are slots.
    #[error(
        "{disks} disks: at most {max} virtio devices fit in a VM ({others} taken by net and vsock)"
    )]
    TooManyDevices {
        /// Disks asked for.
        disks: usize,
        /// Other virtio devices.
        others: usize,
        /// Slots.
        max: usize,
    },
    /// A disk image cannot be used.
    #[error(transparent)]
    Disk(#[from] crate::devices::virtio::block::DiskError),
    /// The console limit is too small to hold the drop notice and a useful tail.
    #[error("--console-limit {0} bytes: must be at least {MIN_CONSOLE_LIMIT} bytes")]
    ConsoleLimit(u64),
    /// The command line contains a NUL byte.
    #[error("--cmdline contains a NUL byte at offset {0}")]
    CmdlineNul(usize),
}

impl VmConfig {
    /// A configuration with defaults for everything but the kernel.
    pub fn with_kernel(kernel: impl Into<PathBuf>) -> Self {
        Self {
            kernel: kernel.into(),
            initrd: None,
            cmdline: default_cmdline(),
            vcpus: default_vcpus(),
            memory_mib: default_memory(),
            console: default_console(),
            console_limit: default_console_limit(),
            disks: Vec::new(),
            vsock: None,
            net: Vec::new(),
        }
    }

    /// Number of virtio devices the configuration asks for (each takes an MMIO slot and a
    /// GSI).
    pub fn virtio_device_count(&self) -> usize {
        self.disks.len() + self.net.len() + usize::from(self.vsock.is_some())
    }

    /// Reads a JSON configuration file.
    pub fn from_json_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.into(),
            reason: e.to_string(),
        })?;
        serde_json::from_str(&text).map_err(|e| ConfigError::File {
            path: path.into(),
            reason: e.to_string(),
        })
    }

    /// Checks everything that can be checked without KVM or the kernel's contents.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(ConfigError::Vcpus(u64::from(self.vcpus)));
        }
        let meminfo = std::fs::read_to_string("/proc/meminfo")
            .map_err(|e| ConfigError::HostMemory(format!("/proc/meminfo: {e}")))?;
        check_memory(self.memory_mib, &meminfo)?;
        if self.console_limit < MIN_CONSOLE_LIMIT {
            return Err(ConfigError::ConsoleLimit(self.console_limit));
        }
        if let Some(at) = self.cmdline.find('\0') {
            return Err(ConfigError::CmdlineNul(at));
        }
        check_file("kernel", &self.kernel)?;
        for net in &self.net {
            net.validate().map_err(ConfigError::Net)?;
        }
        if let Some(initrd) = &self.initrd {
            check_file("initrd", initrd)?;
            check_initrd_contents(initrd)?;
        }
        if let Some(vsock) = &self.vsock {
            vsock.validate()?;
        }
        self.check_disks()
    }

    /// Every disk opens as its mode asks (read-write disks must be writable), and they all
    /// fit in the virtio slots.
    fn check_disks(&self) -> Result<(), ConfigError> {
        let max = crate::arch::x86_64::layout::VIRTIO_MAX_DEVICES;
        let others = self.virtio_device_count() - self.disks.len();
        if self.virtio_device_count() > max {
            return Err(ConfigError::TooManyDevices {
                disks: self.disks.len(),
                others,
                max,
            });
        }
        for disk in &self.disks {
            crate::devices::virtio::block::DiskFile::open(&disk.path, disk.read_only)?;
        }
        Ok(())
    }

    /// Guest memory in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib << 20
    }
}

/// Refuses memory sizes below the minimum or above what the host can back now: guest memory
/// is allocated lazily, so a larger size would boot and then be killed by the OOM killer.
pub fn check_memory(requested_mib: u64, meminfo: &str) -> Result<(), ConfigError> {
    if requested_mib < MIN_MEMORY_MIB {
        return Err(ConfigError::MemoryTooSmall(requested_mib));
    }
    let field = |name: &str| -> Option<u64> {
        meminfo.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    let available_kib = field("MemAvailable")
        .ok_or_else(|| ConfigError::HostMemory("no MemAvailable in /proc/meminfo".into()))?;
    let available = (available_kib + field("SwapFree").unwrap_or(0)) >> 10;
    if requested_mib > available {
        return Err(ConfigError::MemoryTooLarge {
            requested: requested_mib,
            available,
        });
    }
    Ok(())
}

fn check_initrd_contents(path: &Path) -> Result<(), ConfigError> {
    use std::io::Read;
    let mut head = Vec::with_capacity(8);
    std::fs::File::open(path)
        .and_then(|f| f.take(8).read_to_end(&mut head))
        .map_err(|source| ConfigError::Unreadable {
            what: "initrd",
            path: path.into(),
            source,
        })?;
    if !crate::image::looks_like_initramfs(&head) {
        return Err(ConfigError::BadFile {
            what: "initrd",
            path: path.into(),
            reason: "not an initramfs (neither cpio nor a compressed archive Linux can unpack)",
        });
    }
    Ok(())
}

fn check_file(what: &'static str, path: &Path) -> Result<(), ConfigError> {
    let file = std::fs::File::open(path).map_err(|source| ConfigError::Unreadable {
        what,
        path: path.into(),
        source,
    })?;
    let meta = file.metadata().map_err(|source| ConfigError::Unreadable {
        what,
        path: path.into(),
        source,
    })?;
    if !meta.is_file() {
        return Err(ConfigError::BadFile {
            what,
            path: path.into(),
            reason: "not a regular file",
        });
    }
    if meta.len() == 0 {
        return Err(ConfigError::BadFile {
            what,
            path: path.into(),
            reason: "file is empty",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str =
        "MemTotal:       24000000 kB\nMemAvailable:    2097152 kB\nSwapFree:        1048576 kB\n";

    #[test]
    fn memory_limits() {
        assert!(matches!(
            check_memory(0, MEMINFO),
            Err(ConfigError::MemoryTooSmall(0))
        ));
        assert!(check_memory(2, MEMINFO).is_ok());
        assert!(check_memory(3072, MEMINFO).is_ok());
        let err = check_memory(3073, MEMINFO).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::MemoryTooLarge {
                requested: 3073,
                available: 3072
            }
        ));
        assert!(err.to_string().contains("3073 MiB"));
        assert!(matches!(
            check_memory(64, "MemTotal: 1 kB\n"),
            Err(ConfigError::HostMemory(_))
        ));
    }

    #[test]
    fn vcpu_limits() {
        let mut c = VmConfig::with_kernel("/proc/self/exe");
        c.vcpus = 0;
        assert!(matches!(c.validate(), Err(ConfigError::Vcpus(0))));
        c.vcpus = 33;
        let err = c.validate().unwrap_err();
        assert_eq!(err.to_string(), "--vcpus 33: must be between 1 and 32");
    }

    #[test]
    fn console_limit_below_the_minimum_is_refused() {
        let mut c = VmConfig::with_kernel("/proc/self/exe");
        c.console_limit = MIN_CONSOLE_LIMIT - 1;
        let err = c.validate().unwrap_err().to_string();
        assert_eq!(
            err,
            "--console-limit 4095 bytes: must be at least 4096 bytes"
        );
    }

    #[test]
    fn missing_and_empty_files_are_named() {
        let mut c = VmConfig::with_kernel("/nonexistent/vmlinux");
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("kernel /nonexistent/vmlinux:"), "{err}");
        c.kernel = "/proc/self/exe".into();
        c.initrd = Some("/dev/null".into());
        let err = c.validate().unwrap_err().to_string();
        assert_eq!(err, "initrd /dev/null: not a regular file");
    }

    #[test]
    fn json_defaults_and_unknown_fields() {
        let c: VmConfig = serde_json::from_str(r#"{"kernel": "/k", "vcpus": 2}"#).unwrap();
        assert_eq!(
            (c.vcpus, c.memory_mib, c.console.clone()),
            (2, 128, Console::Stdout)
        );
        assert_eq!(c.cmdline, DEFAULT_CMDLINE);
        let c: VmConfig =
            serde_json::from_str(r#"{"kernel": "/k", "console": "/tmp/log"}"#).unwrap();
        assert_eq!(c.console, Console::File("/tmp/log".into()));
        assert_eq!(c.console_limit, DEFAULT_CONSOLE_LIMIT);
        assert!(serde_json::from_str::<VmConfig>(r#"{"kernel": "/k", "cpus": 2}"#).is_err());
    }

    #[test]
    fn disk_flags_parse() {
        let d: DiskConfig = "/a/b.img,ro".parse().unwrap();
        assert_eq!((d.path.to_str(), d.read_only), (Some("/a/b.img"), true));
        let d: DiskConfig = "/a/b.img".parse().unwrap();
        assert!(!d.read_only);
        let d: DiskConfig = "/a/b.img,rw".parse().unwrap();
        assert!(!d.read_only);
        let d: DiskConfig = "/a/x,y.img".parse().unwrap();
        assert_eq!(d.path.to_str(), Some("/a/x,y.img"));
        assert!(",ro".parse::<DiskConfig>().is_err());
        assert!("".parse::<DiskConfig>().is_err());
    }

    #[test]
    fn disks_in_json() {
        let c: VmConfig = serde_json::from_str(
            r#"{"kernel": "/k", "disks": [{"path": "/a.img", "read_only": true}, {"path": "/b.img"}]}"#,
        )
        .unwrap();
        assert_eq!(c.disks.len(), 2);
        assert!(c.disks[0].read_only && !c.disks[1].read_only);
        assert!(
            serde_json::from_str::<VmConfig>(r#"{"kernel": "/k", "disks": [{"file": "/a"}]}"#)
                .is_err()
        );
    }

    #[test]
    fn bad_disks_are_named() {
        let mut c = VmConfig::with_kernel("/proc/self/exe");
        c.disks = vec!["/nonexistent/d.img,ro".parse().unwrap()];
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("disk /nonexistent/d.img: "), "{err}");
        c.disks = vec!["/tmp,ro".parse().unwrap()];
        let err = c.validate().unwrap_err().to_string();
        assert_eq!(err, "disk /tmp: not a regular file (raw image files only)");
        let img = tempfile::NamedTempFile::new().unwrap();
        img.as_file().set_len(1000).unwrap();
        let disk = DiskConfig {
            path: img.path().into(),
            read_only: true,
        };
        c.disks = vec![disk.clone(); 19];
        c.validate().unwrap();
        c.disks.push(disk);
        let err = c.validate().unwrap_err().to_string();
        assert_eq!(
            err,
            "20 disks: at most 19 virtio devices fit in a VM (0 taken by net and vsock)"
        );
    }

    #[test]
    fn nul_in_cmdline_is_refused() {
        let mut c = VmConfig::with_kernel("/proc/self/exe");
        c.cmdline = "a\0b".into();
        assert!(matches!(c.validate(), Err(ConfigError::CmdlineNul(1))));
    }
}
