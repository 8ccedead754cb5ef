//! The part of an OCI image config a container needs: entrypoint, cmd, env, working dir, user;
//! plus the layer diff IDs the import checks layers against.

use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};

use super::{Error, Result};

/// PATH a container gets when its image sets none (Docker's default).
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How the image wants its containers started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// Entrypoint (may be empty).
    pub entrypoint: Vec<String>,
    /// Default arguments, or the command when there is no entrypoint.
    pub cmd: Vec<String>,
    /// `KEY=VALUE` pairs.
    pub env: Vec<String>,
    /// Working directory ("" means `/`).
    pub working_dir: String,
    /// `user[:group]` by name or number ("" means root).
    pub user: String,
}

impl ImageConfig {
    /// The config for a plain root filesystem, which carries none: Docker's default PATH.
    pub fn for_rootfs_dir() -> Self {
        ImageConfig {
            env: vec![DEFAULT_PATH_ENV.to_string()],
            ..ImageConfig::default()
        }
    }
}

/// An OCI (or Docker) image config document, parsed.
#[derive(Debug)]
pub struct ParsedConfig {
    /// What containers need.
    pub config: ImageConfig,
    /// `rootfs.diff_ids`: digests of the uncompressed layers, in order.
    pub diff_ids: Vec<String>,
}

/// Parses an image config JSON document; `what` names it in errors.
pub fn parse_image_config(bytes: &[u8], what: &str) -> Result<ParsedConfig> {
    let parsed: ImageConfiguration =
        serde_json::from_slice(bytes).map_err(|source| Error::Json {
            what: what.to_string(),
            source,
        })?;
    let rootfs = parsed.rootfs();
    if rootfs.typ() != "layers" {
        return Err(Error::BadManifest {
            what: what.to_string(),
            reason: format!("rootfs.type is {:?}, want \"layers\"", rootfs.typ()),
        });
    }
    let diff_ids = rootfs.diff_ids().clone();
    let config = match parsed.config() {
        Some(c) => ImageConfig {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().unwrap_or_default(),
            user: c.user().clone().unwrap_or_default(),
        },
        None => ImageConfig::default(),
    };
    Ok(ParsedConfig { config, diff_ids })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER_CONFIG: &str = r#"{
        "architecture": "amd64", "os": "linux",
        "config": {
            "User": "1000:1000",
            "Env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"],
            "Entrypoint": ["/docker-entrypoint.sh"],
            "Cmd": ["nginx", "-g", "daemon off;"],
            "WorkingDir": "/srv",
            "ExposedPorts": {"80/tcp": {}},
            "Labels": {"maintainer": "x"}
        },
        "rootfs": {"type": "layers", "diff_ids": [
            "sha256:1111111111111111111111111111111111111111111111111111111111111111"
        ]},
        "history": [{"created_by": "x", "empty_layer": true}]
    }"#;

    #[test]
    fn parses_entrypoint_cmd_env_workdir_user_and_diff_ids() {
        let parsed = parse_image_config(DOCKER_CONFIG.as_bytes(), "config").unwrap();
        assert_eq!(
            parsed.config,
            ImageConfig {
                entrypoint: vec!["/docker-entrypoint.sh".into()],
                cmd: vec!["nginx".into(), "-g".into(), "daemon off;".into()],
                env: vec!["PATH=/usr/bin:/bin".into(), "LANG=C.UTF-8".into()],
                working_dir: "/srv".into(),
                user: "1000:1000".into(),
            }
        );
        assert_eq!(parsed.diff_ids.len(), 1);
    }

    #[test]
    fn missing_config_section_gives_empty_config() {
        let json =
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let parsed = parse_image_config(json.as_bytes(), "config").unwrap();
        assert_eq!(parsed.config, ImageConfig::default());
        assert!(parsed.diff_ids.is_empty());
    }

    #[test]
    fn garbage_and_wrong_rootfs_type_are_named() {
        let err = parse_image_config(b"{not json", "blobs/sha256/abc").unwrap_err();
        assert!(err.to_string().contains("blobs/sha256/abc"), "{err}");
        let json =
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"other","diff_ids":[]}}"#;
        let err = parse_image_config(json.as_bytes(), "cfg").unwrap_err();
        assert!(err.to_string().contains("\"other\""), "{err}");
    }
}
