//! The boot configuration of one VM (from flags or a JSON file) and its validation.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
            net: Vec::new(),
        }
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
        assert!(serde_json::from_str::<VmConfig>(r#"{"kernel": "/k", "cpus": 2}"#).is_err());
    }

    #[test]
    fn nul_in_cmdline_is_refused() {
        let mut c = VmConfig::with_kernel("/proc/self/exe");
        c.cmdline = "a\0b".into();
        assert!(matches!(c.validate(), Err(ConfigError::CmdlineNul(1))));
    }
}
