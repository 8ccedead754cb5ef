//! Reading and checking a bundle's config.json. Fields whose bad values oci-spec would reject
//! with a bare serde message (unknown namespace type, unknown capability) are checked first on
//! the raw JSON so the error names the field and the value.

use std::path::Path;

use oci_spec::runtime::Spec;
use serde_json::Value;

use super::capabilities::capability_bit;
use super::RuntimeError;

const NAMESPACE_TYPES: &[&str] = &[
    "pid", "network", "net", "mount", "mnt", "ipc", "uts", "user", "cgroup", "time",
];
const CAP_SETS: &[&str] = &[
    "bounding",
    "effective",
    "inheritable",
    "permitted",
    "ambient",
];

/// Reads and parses `bundle/config.json`.
pub fn load_bundle_spec(bundle: &Path) -> Result<Spec, RuntimeError> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|e| RuntimeError::BundleConfig {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let raw: Value = serde_json::from_slice(&text).map_err(|e| RuntimeError::BundleConfig {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    parse_spec(raw).map_err(|e| match e {
        RuntimeError::BundleConfig { reason, .. } => RuntimeError::BundleConfig { path, reason },
        other => other,
    })
}

/// Checks the raw JSON, then parses it as an OCI spec.
pub fn parse_spec(raw: Value) -> Result<Spec, RuntimeError> {
    check_raw(&raw)?;
    serde_json::from_value(raw).map_err(|e| RuntimeError::BundleConfig {
        path: "config.json".into(),
        reason: e.to_string(),
    })
}

/// Raw checks of a `process` object (also used for exec'd processes).
pub fn check_raw_process(process: &Value, prefix: &str) -> Result<(), RuntimeError> {
    let Some(caps) = process.get("capabilities") else {
        return Ok(());
    };
    for set in CAP_SETS {
        let Some(list) = caps.get(*set).and_then(Value::as_array) else {
            continue;
        };
        for (i, name) in list.iter().enumerate() {
            let field = format!("{prefix}.capabilities.{set}[{i}]");
            match name.as_str() {
                Some(n) if capability_bit(n).is_some() && n.starts_with("CAP_") => {}
                _ => {
                    return Err(RuntimeError::spec(
                        field,
                        format!("unknown capability {name}"),
                    ))
                }
            }
        }
    }
    Ok(())
}

fn check_raw(raw: &Value) -> Result<(), RuntimeError> {
    if let Some(process) = raw.get("process") {
        check_raw_process(process, "process")?;
    }
    let namespaces = raw
        .get("linux")
        .and_then(|l| l.get("namespaces"))
        .and_then(Value::as_array);
    for (i, ns) in namespaces.into_iter().flatten().enumerate() {
        let typ = ns.get("type");
        if !typ
            .and_then(Value::as_str)
            .is_some_and(|t| NAMESPACE_TYPES.contains(&t))
        {
            return Err(RuntimeError::spec(
                format!("linux.namespaces[{i}].type"),
                format!(
                    "unknown namespace type {}",
                    typ.map_or("(missing)".to_string(), Value::to_string)
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_namespace_is_named() {
        let err = parse_spec(json!({
            "ociVersion": "1.0.2",
            "linux": {"namespaces": [{"type": "pid"}, {"type": "bogus"}]}
        }))
        .unwrap_err()
        .to_string();
        assert!(err.contains("linux.namespaces[1].type"), "{err}");
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn bad_capability_is_named() {
        let err = parse_spec(json!({
            "ociVersion": "1.0.2",
            "process": {"cwd": "/", "user": {"uid": 0, "gid": 0},
                        "capabilities": {"bounding": ["CAP_CHOWN"], "effective": ["CAP_FLY"]}}
        }))
        .unwrap_err()
        .to_string();
        assert!(err.contains("process.capabilities.effective[0]"), "{err}");
        assert!(err.contains("CAP_FLY"), "{err}");
    }

    #[test]
    fn missing_config_names_the_path() {
        let err = load_bundle_spec(Path::new("/nonexistent-bundle"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent-bundle/config.json"), "{err}");
    }
}
