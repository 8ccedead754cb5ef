//! Image names (`name[:tag]`) and the names map kept in the store root.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Error, Result};

/// Tag used when a name has none.
pub const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// Validates `name[:tag]` and returns it with the tag made explicit (`busybox` ->
/// `busybox:latest`). Names are lowercase `[a-z0-9._-]` components separated by `/`;
/// tags are `[A-Za-z0-9_.-]`, at most 128 characters.
pub fn normalize_name(name: &str) -> Result<String> {
    let bad = |reason| Error::InvalidName {
        name: name.to_string(),
        reason,
    };
    let (repo, tag) = match name.rsplit_once(':') {
        Some((repo, tag)) => (repo, tag),
        None => (name, DEFAULT_TAG),
    };
    if repo.is_empty() {
        return Err(bad("empty name"));
    }
    if repo.len() > MAX_NAME_LEN {
        return Err(bad("name longer than 255 characters"));
    }
    let component_ok = |c: &str| {
        c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && c.bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
    };
    if !repo.split('/').all(component_ok) {
        return Err(bad(
            "name components must be lowercase letters, digits, '.', '_' or '-', starting with a letter or digit",
        ));
    }
    if tag.is_empty() || tag.len() > MAX_TAG_LEN {
        return Err(bad("tag must be 1 to 128 characters"));
    }
    let tag_ok = tag
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !tag_ok {
        return Err(bad("tag must be letters, digits, '.', '_' or '-'"));
    }
    Ok(format!("{repo}:{tag}"))
}

/// name:tag -> `sha256:<hex>`, kept as `names.json` in the store root.
pub type NameMap = BTreeMap<String, String>;

/// Reads the names map; a missing file is an empty map.
pub fn load(path: &Path) -> Result<NameMap> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            what: path.display().to_string(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NameMap::new()),
        Err(e) => Err(Error::io("reading", path, e)),
    }
}

/// Writes the names map atomically (temp file + rename).
pub fn save(path: &Path, names: &NameMap) -> Result<()> {
    let json = serde_json::to_vec_pretty(names).map_err(|source| Error::Json {
        what: path.display().to_string(),
        source,
    })?;
    super::store::write_atomic(path, &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_latest_and_keeps_explicit_tags() {
        assert_eq!(normalize_name("busybox").unwrap(), "busybox:latest");
        assert_eq!(
            normalize_name("lib/busy-box.x:1.36_a").unwrap(),
            "lib/busy-box.x:1.36_a"
        );
    }

    #[test]
    fn rejects_bad_names_and_tags() {
        for bad in [
            "", ":x", "Busybox", "a//b", "/a", "a:", "a:-x", "a b", "../x", "a:b/c",
        ] {
            let err = normalize_name(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        assert!(normalize_name(&format!("a:{}", "t".repeat(129))).is_err());
    }
}
