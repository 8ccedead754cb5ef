//! `--vsock cid=N,uds=PATH`: the guest's vsock device and its host Unix socket.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::devices::virtio::vsock::MIN_GUEST_CID;

/// Longest Unix socket path (sun_path holds 108 bytes with the NUL); `_<port>` suffixes of
/// guest-initiated connections need up to 11 more bytes.
pub const MAX_UDS_PATH_LEN: usize = 107;

/// The vsock device of a VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    /// The guest's context id (3 ..= u32::MAX).
    pub guest_cid: u64,
    /// Where the VMM listens for host clients (`CONNECT <port>\n`); guest-initiated
    /// connections to port P go to `<uds_path>_<P>`.
    pub uds_path: PathBuf,
}

/// A `--vsock` value or a vsock configuration that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VsockConfigError {
    /// Not `cid=N,uds=PATH`.
    #[error("--vsock {0:?}: expected cid=N,uds=PATH")]
    Syntax(String),
    /// Reserved or out-of-range CID.
    #[error("vsock cid {0}: must be between {MIN_GUEST_CID} and {max} (0, 1 and 2 are reserved)", max = u32::MAX)]
    Cid(u64),
    /// The socket path does not fit in sun_path.
    #[error("vsock uds {path}: {len} bytes, longer than the {MAX_UDS_PATH_LEN} a Unix socket path can hold", path = path.display())]
    PathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// Something is already at the socket path.
    #[error("vsock uds {path}: already exists (a running VM's socket, or a stale one to remove)", path = path.display())]
    PathExists {
        /// The path.
        path: PathBuf,
    },
    /// The socket's directory is missing.
    #[error("vsock uds {path}: directory {dir} does not exist", path = path.display(), dir = dir.display())]
    NoParent {
        /// The path.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
    },
}

impl std::str::FromStr for VsockConfig {
    type Err = VsockConfigError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || VsockConfigError::Syntax(text.to_string());
        let (mut cid, mut uds) = (None, None);
        // uds last may hold commas: split at most once per known key.
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(value) = rest.strip_prefix("uds=") {
                uds = Some(PathBuf::from(value));
                break;
            }
            let value = rest.strip_prefix("cid=").ok_or_else(syntax)?;
            let (number, after) = value.split_once(',').unwrap_or((value, ""));
            cid = Some(number.parse::<u64>().map_err(|_| syntax())?);
            rest = after;
        }
        let (Some(guest_cid), Some(uds_path)) = (cid, uds) else {
            return Err(syntax());
        };
        if uds_path.as_os_str().is_empty() {
            return Err(syntax());
        }
        Ok(VsockConfig {
            guest_cid,
            uds_path,
        })
    }
}

impl VsockConfig {
    /// Checks the CID and the socket path (free, short enough, in an existing directory).
    pub fn validate(&self) -> Result<(), VsockConfigError> {
        if self.guest_cid < MIN_GUEST_CID || self.guest_cid > u64::from(u32::MAX) {
            return Err(VsockConfigError::Cid(self.guest_cid));
        }
        check_uds_path(&self.uds_path)
    }
}

/// Checks that a socket can be bound at `path`.
pub fn check_uds_path(path: &Path) -> Result<(), VsockConfigError> {
    let len = path.as_os_str().len();
    if len > MAX_UDS_PATH_LEN {
        return Err(VsockConfigError::PathTooLong {
            path: path.to_path_buf(),
            len,
        });
    }
    if path.symlink_metadata().is_ok() {
        return Err(VsockConfigError::PathExists {
            path: path.to_path_buf(),
        });
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(VsockConfigError::NoParent {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_parses_in_either_order() {
        let want = VsockConfig {
            guest_cid: 3,
            uds_path: "/run/v.sock".into(),
        };
        assert_eq!("cid=3,uds=/run/v.sock".parse(), Ok(want.clone()));
        assert_eq!(
            "uds=/run/v.sock".parse::<VsockConfig>().unwrap_err(),
            VsockConfigError::Syntax("uds=/run/v.sock".into())
        );
        let comma: VsockConfig = "cid=9,uds=/tmp/a,b".parse().unwrap();
        assert_eq!(comma.uds_path, PathBuf::from("/tmp/a,b"));
        for bad in [
            "",
            "cid=3",
            "cid=x,uds=/a",
            "cid=3,uds=",
            "port=3,uds=/a",
            "cid=-1,uds=/a",
        ] {
            assert!(
                matches!(bad.parse::<VsockConfig>(), Err(VsockConfigError::Syntax(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn validation_names_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let ok = VsockConfig {
            guest_cid: 3,
            uds_path: dir.path().join("v.sock"),
        };
        assert_eq!(ok.validate(), Ok(()));
        for cid in [0, 1, 2, u64::from(u32::MAX) + 1] {
            let bad = VsockConfig {
                guest_cid: cid,
                ..ok.clone()
            };
            assert_eq!(bad.validate(), Err(VsockConfigError::Cid(cid)));
        }
        let long = VsockConfig {
            uds_path: dir.path().join("x".repeat(120)),
            ..ok.clone()
        };
        assert!(matches!(
            long.validate(),
            Err(VsockConfigError::PathTooLong { .. })
        ));
        std::fs::write(&ok.uds_path, b"").unwrap();
        let err = ok.validate().unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        let orphan = VsockConfig {
            uds_path: dir.path().join("missing/v.sock"),
            ..ok.clone()
        };
        assert!(matches!(
            orphan.validate(),
            Err(VsockConfigError::NoParent { .. })
        ));
    }
}
