//! The jail around each tenant's VMM: defense in depth should a guest escape into its VMM.
//!
//! - `config`: what a jail is made of, validated before anything is created;
//! - `uid_alloc`: one uid/gid per tenant, allocated deterministically from a range;
//! - `plan`: the setup in order (host side `prepare`, VMM side `confine`), on `sys::JailSys`;
//! - `cgroup`: the tenant's cgroup v2, refused plainly on hosts without v2 controllers;
//! - `process`: condo -> keeper -> VMM (PID 1 of its pid namespace), exit status propagation;
//! - `seccomp`: per-thread-kind filters compiled at build time from vmm/seccomp/x86_64.json.

pub mod cgroup;
pub mod config;
#[cfg(test)]
mod mock;
pub mod plan;
#[cfg(test)]
mod plan_tests;
pub mod process;
pub mod seccomp;
pub mod sys;
pub mod uid_alloc;

use std::path::{Path, PathBuf};

pub use config::{
    CgroupLimits, CgroupPolicy, DeviceNode, ExposeMode, ExposedFile, JailConfig, NamespaceSet,
    Rlimits,
};
pub use process::{run_jailed, JailExit};
pub use seccomp::{install_filter, ThreadKind};
pub use sys::{JailSys, RealSys};

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("invalid jail configuration: {0}")]
    InvalidConfig(String),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} already exists: another VMM of this tenant runs, or a crashed one left it (remove it)",
        .0.display()
    )]
    AlreadyExists(PathBuf),
    #[error(
        "no usable cgroup v2: {0}; refusing to start the VMM without its cgroup \
         (run with --jail-no-cgroup to go without one, knowingly)"
    )]
    NoCgroupV2(String),
    #[error("the jail must be entered from a single-threaded process (this one has {0} threads)")]
    NotSingleThreaded(String),
    #[error("{0}: {1}")]
    Sys(&'static str, String),
    #[error("uid allocation: {0}")]
    UidAllocation(String),
    #[error("seccomp filter for {kind:?} threads: {message}")]
    Seccomp { kind: ThreadKind, message: String },
}

impl JailError {
    pub fn io(what: &'static str, path: impl AsRef<Path>, source: std::io::Error) -> Self {
        JailError::Io {
            what,
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}
