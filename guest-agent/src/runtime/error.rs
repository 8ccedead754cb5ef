//! Errors of the container runtime. Every variant says what failed and with what value.

use std::path::PathBuf;

/// Errors returned by [`super::Runtime`].
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid container id {id:?}: {reason}")]
    InvalidId { id: String, reason: &'static str },
    #[error("container {0:?} already exists")]
    AlreadyExists(String),
    #[error("container {0:?} does not exist")]
    NotFound(String),
    #[error("container {id:?} is {status}; {action} needs it {needed}")]
    WrongState {
        id: String,
        status: String,
        action: &'static str,
        needed: &'static str,
    },
    /// A spec field holds a value the runtime refuses; `field` is its JSON path.
    #[error("invalid spec: {field}: {reason}")]
    InvalidSpec { field: String, reason: String },
    #[error("cannot read bundle config {path}: {reason}")]
    BundleConfig { path: PathBuf, reason: String },
    #[error("cgroup: {0}")]
    Cgroup(String),
    #[error("seccomp: {0}")]
    Seccomp(String),
    /// The container's init (or an exec'd process) failed while setting itself up.
    #[error("container setup failed: {0}")]
    Setup(String),
    /// The container init or an exec'd process failed while setting itself up; its own error
    /// message, as it reported it.
    #[error("{0}")]
    Child(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{call} failed: {source}")]
    Sys {
        call: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("state of container {id:?} is corrupt: {reason}")]
    CorruptState { id: String, reason: String },
}

impl RuntimeError {
    /// The error of the last failed libc call, labelled with that call.
    pub(crate) fn last_os(call: &'static str) -> Self {
        RuntimeError::Sys {
            call,
            source: std::io::Error::last_os_error(),
        }
    }

    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            what,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn spec(field: impl Into<String>, reason: impl Into<String>) -> Self {
        RuntimeError::InvalidSpec {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
