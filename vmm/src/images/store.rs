//! The store on disk. Imports build everything in a private directory under `tmp/` and
//! rename it into place under the lock; readers (list, resolve) take no lock because every
//! change they can see is a rename. A failed import removes its temporary directory, so the
//! store is left as it was.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::config::ImageConfig;
use super::digest::{is_sha256_hex, HEX_LEN};
use super::fsimage;
use super::import::{self, rootfs_dir, Plan};
use super::names::{self, normalize_name, NameMap};
use super::{Error, ImageRecord, Progress, Result, Stage};

const NAMES_FILE: &str = "names.json";
const LOCK_FILE: &str = "lock";
const TMP_DIR: &str = "tmp";
const RECORD_FILE: &str = "record.json";
const CONFIG_FILE: &str = "config.json";
/// Shortest digest prefix accepted as a reference.
pub const MIN_PREFIX: usize = 12;

/// What `record.json` holds (names live in `names.json`, the path follows from the root).
#[derive(Debug, Serialize, Deserialize)]
struct StoredRecord {
    digest: String,
    fs_type: String,
    fs_file: String,
    size: u64,
    created: u64,
    config: ImageConfig,
}

/// What [`Store::remove`] removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    /// The image the reference resolved to.
    pub digest: String,
    /// Names dropped.
    pub names: Vec<String>,
    /// Whether the image itself was deleted (no name was left, or a digest was given).
    pub image_removed: bool,
}

/// An image store rooted at a directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A temporary directory under the store's `tmp/`, removed on drop unless kept.
struct TempDir {
    path: PathBuf,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` through a temporary file and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    fs::write(&tmp, bytes).map_err(|e| Error::io("writing", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("renaming into place", path, e)
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn pid_alive(pid: &str) -> bool {
    Path::new("/proc").join(pid).exists()
}

/// A minimal OCI image config for a root filesystem directory, stored as its config.json.
fn rootfs_config_json(config: &ImageConfig) -> Vec<u8> {
    let doc = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Env": config.env },
        "rootfs": { "type": "layers", "diff_ids": [] },
    });
    doc.to_string().into_bytes()
}

impl Store {
    /// Opens (creating if needed) the store at `root`, and clears what crashed imports left
    /// in `tmp/`.
    pub fn open(root: &Path) -> Result<Store> {
        let tmp = root.join(TMP_DIR);
        fs::create_dir_all(&tmp).map_err(|e| Error::io("creating the image store", &tmp, e))?;
        let lock = root.join(LOCK_FILE);
        File::options()
            .create(true)
            .append(true)
            .open(&lock)
            .map_err(|e| Error::io("creating", &lock, e))?;
        let store = Store {
            root: root.to_path_buf(),
        };
        store.clear_stale_temps()?;
        Ok(store)
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self) -> Result<Flock<File>> {
        let path = self.root.join(LOCK_FILE);
        let file = File::options()
            .append(true)
            .open(&path)
            .map_err(|e| Error::io("opening", &path, e))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| Error::io("locking", &path, errno.into()))
    }

    fn clear_stale_temps(&self) -> Result<()> {
        let tmp = self.root.join(TMP_DIR);
        let entries = fs::read_dir(&tmp).map_err(|e| Error::io("listing", &tmp, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').nth(1).unwrap_or("");
            if !pid.is_empty() && !pid_alive(pid) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        Ok(())
    }

    fn temp_dir(&self, kind: &str) -> Result<TempDir> {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            self.root
                .join(TMP_DIR)
                .join(format!("{kind}-{}-{}-{n}", std::process::id(), now()));
        fs::create_dir(&path).map_err(|e| Error::io("creating", &path, e))?;
        Ok(TempDir { path })
    }

    fn image_dir(&self, hex: &str) -> PathBuf {
        self.root.join(hex)
    }

    fn names(&self) -> Result<NameMap> {
        names::load(&self.root.join(NAMES_FILE))
    }

    fn load_record(&self, hex: &str, names: &NameMap) -> Result<ImageRecord> {
        let dir = self.image_dir(hex);
        let path = dir.join(RECORD_FILE);
        let bytes = fs::read(&path).map_err(|e| Error::io("reading", &path, e))?;
        let stored: StoredRecord =
            serde_json::from_slice(&bytes).map_err(|source| Error::Json {
                what: path.display().to_string(),
                source,
            })?;
        let names = names
            .iter()
            .filter(|(_, d)| **d == stored.digest)
            .map(|(n, _)| n.clone())
            .collect();
        Ok(ImageRecord {
            fs_path: dir.join(&stored.fs_file),
            digest: stored.digest,
            names,
            fs_type: stored.fs_type,
            size: stored.size,
            created: stored.created,
            config: stored.config,
        })
    }

    /// Hex digests of the stored images.
    fn hexes(&self) -> Result<Vec<String>> {
        let entries = fs::read_dir(&self.root).map_err(|e| Error::io("listing", &self.root, e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("listing", &self.root, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_sha256_hex(&name) && entry.path().join(RECORD_FILE).is_file() {
                out.push(name);
            }
        }
        Ok(out)
    }

    /// All images, newest first.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        let names = self.names()?;
        let mut records = Vec::new();
        for hex in self.hexes()? {
            match self.load_record(&hex, &names) {
                Ok(record) => records.push(record),
                // Removed since the directory was listed.
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        records.sort_by(|a, b| b.created.cmp(&a.created).then(a.digest.cmp(&b.digest)));
        Ok(records)
    }

    /// Finds an image by `name[:tag]`, full digest (`sha256:<hex>` or `<hex>`) or a unique
    /// digest prefix of at least 12 hex digits.
    pub fn resolve(&self, reference: &str) -> Result<ImageRecord> {
        let names = self.names()?;
        let hex = self.resolve_hex(reference, &names)?;
        self.load_record(&hex, &names)
    }

    fn resolve_hex(&self, reference: &str, names: &NameMap) -> Result<String> {
        let not_found = || Error::NotFound {
            reference: reference.to_string(),
        };
        if let Some(digest) = normalize_name(reference).ok().and_then(|n| names.get(&n)) {
            return Ok(digest.strip_prefix("sha256:").unwrap_or(digest).to_string());
        }
        let prefix = reference.strip_prefix("sha256:").unwrap_or(reference);
        let is_hex = prefix
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !is_hex || prefix.len() < MIN_PREFIX || prefix.len() > HEX_LEN {
            return Err(not_found());
        }
        let matches: Vec<String> = self
            .hexes()?
            .into_iter()
            .filter(|h| h.starts_with(prefix))
            .collect();
        match matches.as_slice() {
            [] => Err(not_found()),
            [one] => Ok(one.clone()),
            many => Err(Error::Ambiguous {
                reference: reference.to_string(),
                candidates: many.iter().map(|h| format!("sha256:{h}")).collect(),
            }),
        }
    }

    /// Imports the OCI layout, docker-archive or root filesystem directory at `src`, naming
    /// it `name` (or the name the archive carries). An image already stored only gains the
    /// name. `progress` hears about long stages.
    pub fn import(
        &self,
        src: &Path,
        name: Option<&str>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<ImageRecord> {
        let name = name.map(normalize_name).transpose()?;
        let work = self.temp_dir("import")?;
        let planned = import::plan(src, &work.path.join("archive.tar"))?;
        let image = work.path.join("image");
        let (digest, name) = match planned {
            Plan::Layered(layered) => {
                let name = name.or_else(|| layered.default_name.clone());
                if self.has(&layered.digest) {
                    return self.add_name(&layered.digest, name.as_deref());
                }
                let staging = work.path.join("rootfs");
                fs::create_dir(&staging).map_err(|e| Error::io("creating", &staging, e))?;
                layered.apply(&staging, progress)?;
                fs::create_dir(&image).map_err(|e| Error::io("creating", &image, e))?;
                self.build(
                    &staging,
                    &image,
                    &layered.config,
                    &layered.config_json,
                    &layered.digest,
                    progress,
                )?;
                // The staging tree is no longer needed; free its space before the rename.
                let _ = fs::remove_dir_all(&staging);
                (layered.digest.clone(), name)
            }
            Plan::RootfsDir(dir) => {
                let digest = rootfs_dir::digest(&dir, progress)?;
                if self.has(&digest) {
                    return self.add_name(&digest, name.as_deref());
                }
                fs::create_dir(&image).map_err(|e| Error::io("creating", &image, e))?;
                let config = ImageConfig::for_rootfs_dir();
                let config_json = rootfs_config_json(&config);
                self.build(&dir, &image, &config, &config_json, &digest, progress)?;
                (digest, name)
            }
        };
        self.commit(&image, &digest, name.as_deref())
    }

    fn has(&self, digest: &str) -> bool {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.image_dir(hex).join(RECORD_FILE).is_file()
    }

    /// Builds the filesystem image of `tree` and the record files into `image`.
    fn build(
        &self,
        tree: &Path,
        image: &Path,
        config: &ImageConfig,
        config_json: &[u8],
        digest: &str,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<()> {
        let (fs_type, tool) = fsimage::choose()?;
        progress(Progress {
            stage: Stage::Filesystem,
            done: 0,
            total: 1,
        });
        let fs_file = fs_type.file_name();
        let fs_path = image.join(fs_file);
        let size = fsimage::build(fs_type, &tool, tree, &fs_path)?;
        fs::set_permissions(&fs_path, fs::Permissions::from_mode(0o444))
            .map_err(|e| Error::io("making read-only", &fs_path, e))?;
        progress(Progress {
            stage: Stage::Filesystem,
            done: 1,
            total: 1,
        });
        let config_path = image.join(CONFIG_FILE);
        fs::write(&config_path, config_json).map_err(|e| Error::io("writing", &config_path, e))?;
        let record = StoredRecord {
            digest: digest.to_string(),
            fs_type: fs_type.to_string(),
            fs_file: fs_file.to_string(),
            size,
            created: now(),
            config: config.clone(),
        };
        let record_path = image.join(RECORD_FILE);
        let json = serde_json::to_vec_pretty(&record).map_err(|source| Error::Json {
            what: record_path.display().to_string(),
            source,
        })?;
        fs::write(&record_path, json).map_err(|e| Error::io("writing", &record_path, e))?;
        Ok(())
    }

    /// Moves a built image into place (unless a concurrent import got there first) and
    /// names it.
    fn commit(&self, image: &Path, digest: &str, name: Option<&str>) -> Result<ImageRecord> {
        let _lock = self.lock()?;
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let target = self.image_dir(hex);
        if !target.join(RECORD_FILE).is_file() {
            fs::rename(image, &target)
                .map_err(|e| Error::io("moving into the store", &target, e))?;
        }
        self.name_locked(digest, name)?;
        self.load_record(hex, &self.names()?)
    }

    fn add_name(&self, digest: &str, name: Option<&str>) -> Result<ImageRecord> {
        let _lock = self.lock()?;
        self.name_locked(digest, name)?;
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.load_record(hex, &self.names()?)
    }

    /// Points `name` at `digest` (moving it from another image, as a tag does).
    fn name_locked(&self, digest: &str, name: Option<&str>) -> Result<()> {
        let Some(name) = name else {
            return Ok(());
        };
        let mut names = self.names()?;
        if names.get(name).map(String::as_str) == Some(digest) {
            return Ok(());
        }
        names.insert(name.to_string(), digest.to_string());
        names::save(&self.root.join(NAMES_FILE), &names)
    }

    /// Removes a name (and the image when it was its last name) or, given a digest, the image
    /// with all its names.
    pub fn remove(&self, reference: &str) -> Result<Removed> {
        self.remove_unless_used(reference, &|_| None)
    }

    /// Like [`Store::remove`], but refuses (changing nothing) to delete an image for which
    /// `user_of(digest)` names a user, e.g. a tenant that has it attached.
    pub fn remove_unless_used(
        &self,
        reference: &str,
        user_of: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Removed> {
        let _lock = self.lock()?;
        let mut names = self.names()?;
        let hex = self.resolve_hex(reference, &names)?;
        let digest = format!("sha256:{hex}");
        let by_name = normalize_name(reference)
            .ok()
            .filter(|n| names.get(n) == Some(&digest));
        let dropped: Vec<String> = match &by_name {
            Some(n) => vec![n.clone()],
            None => names
                .iter()
                .filter(|(_, d)| **d == digest)
                .map(|(n, _)| n.clone())
                .collect(),
        };
        for n in &dropped {
            names.remove(n);
        }
        let image_removed = !names.values().any(|d| *d == digest);
        if image_removed {
            if let Some(user) = user_of(&digest) {
                return Err(Error::InUse {
                    reference: reference.to_string(),
                    digest,
                    user,
                });
            }
        }
        names::save(&self.root.join(NAMES_FILE), &names)?;
        if image_removed {
            // Rename first so readers never see a half-deleted image.
            let trash = self.temp_dir("remove")?;
            let target = trash.path.join(&hex);
            let dir = self.image_dir(&hex);
            fs::rename(&dir, &target).map_err(|e| Error::io("removing", &dir, e))?;
        }
        Ok(Removed {
            digest,
            names: dropped,
            image_removed,
        })
    }
}
