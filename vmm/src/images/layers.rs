//! Applying layer tars to a staging tree, in order, with OCI whiteouts: `.wh.NAME` deletes
//! NAME from lower layers, `.wh..wh..opq` hides everything lower layers put in its directory.
//! Ownership (when running as root), modes, mtimes, symlinks, hardlinks, FIFOs and device
//! nodes (where permitted) are kept. Every entry is placed through [`Root`], so nothing is
//! written outside the staging root.

use std::collections::HashSet;
use std::ffi::{CString, OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::rc::Rc;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstatat, futimens, makedev, mkdirat, mknodat, utimensat, FchmodatFlags, Mode,
    SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use super::tar_safety::{EntryPath, Root, WalkError};
use super::{Error, Result};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Permission bits plus setuid, setgid and sticky.
const MODE_MASK: u32 = 0o7777;

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// Guesses from the first bytes of a blob (docker-archive layers carry no media type).
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&super::zstd::MAGIC) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// Wraps `reader` with the decompressor.
    pub fn decoder<'a, R: Read + 'a>(self, reader: R) -> Box<dyn Read + 'a> {
        match self {
            Compression::None => Box::new(reader),
            Compression::Gzip => Box::new(NamedErrors {
                inner: flate2::read::MultiGzDecoder::new(reader),
                prefix: "invalid gzip data",
            }),
            Compression::Zstd => Box::new(NamedErrors {
                inner: super::zstd::ZstdReader::new(std::io::BufReader::new(reader)),
                prefix: "invalid zstd data",
            }),
        }
    }
}

/// Prefixes a decoder's errors so they read as what they are.
struct NamedErrors<R> {
    inner: R,
    prefix: &'static str,
}

impl<R: Read> Read for NamedErrors<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner
            .read(buf)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", self.prefix)))
    }
}

/// What applying a layer did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// Entries applied (whiteouts included).
    pub entries: u64,
    /// Device nodes skipped because this process may not create them.
    pub skipped_devices: u64,
}

/// Applies one layer's (uncompressed) tar stream to `root`; `layer` names it in errors.
/// The stream is read up to the tar end marker; the caller drains the rest.
pub fn apply<R: Read>(root: &Root, tar_stream: &mut R, layer: &str) -> Result<LayerStats> {
    let mut applier = Applier {
        root,
        layer,
        privileged: Uid::effective().is_root(),
        this_layer: HashSet::new(),
        last_parent: None,
        dir_meta: Vec::new(),
        stats: LayerStats::default(),
    };
    let mut archive = tar::Archive::new(tar_stream);
    let entries = archive.entries().map_err(|e| applier.corrupt(e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| applier.corrupt(e))?;
        applier.entry(&mut entry)?;
    }
    applier.finish_dirs()?;
    Ok(applier.stats)
}

struct Applier<'a> {
    root: &'a Root,
    layer: &'a str,
    privileged: bool,
    /// Paths this layer wrote: whiteouts only hide what lower layers put there.
    this_layer: HashSet<PathBuf>,
    /// Directory modes and mtimes, set after the layer so read-only dirs still take entries.
    dir_meta: Vec<(EntryPath, u32, u64)>,
    /// The last parent directory opened: tars list a directory's entries together, so this
    /// saves a walk from the root per entry. Dropped whenever something is removed, since a
    /// removal may take a cached directory with it.
    last_parent: Option<(Vec<OsString>, Rc<OwnedFd>)>,
    stats: LayerStats,
}

/// The parts of a tar header an entry needs.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
    /// Extended attributes to set (regular files only).
    xattrs: Vec<(CString, Vec<u8>)>,
}

/// Extended attributes taken from layers: file capabilities and user attributes. Others
/// (trusted.* such as overlayfs' own, security.selinux) describe the build host, not the image.
fn xattr_wanted(name: &str) -> bool {
    name == "security.capability" || name.starts_with("user.")
}

/// What an entry's PAX records override: numeric ids and mtime beyond ustar's range, xattrs.
#[derive(Default)]
struct Pax {
    uid: Option<u32>,
    gid: Option<u32>,
    mtime: Option<u64>,
    xattrs: Vec<(CString, Vec<u8>)>,
}

impl Pax {
    fn apply(self, mut meta: Meta) -> Meta {
        meta.uid = self.uid.unwrap_or(meta.uid);
        meta.gid = self.gid.unwrap_or(meta.gid);
        meta.mtime = self.mtime.unwrap_or(meta.mtime);
        meta.xattrs = self.xattrs;
        meta
    }
}

fn pax_records<R: Read>(entry: &mut tar::Entry<'_, R>) -> std::io::Result<Pax> {
    let mut pax = Pax::default();
    let Some(records) = entry.pax_extensions()? else {
        return Ok(pax);
    };
    for record in records {
        let record = record?;
        let Ok(key) = record.key() else {
            continue;
        };
        let text = record.value().unwrap_or("");
        match key {
            "uid" => pax.uid = text.parse().ok(),
            "gid" => pax.gid = text.parse().ok(),
            // "1700000000.123456789": whole seconds are what the tree keeps.
            "mtime" => pax.mtime = text.split('.').next().and_then(|s| s.parse().ok()),
            _ => {
                let Some(name) = key.strip_prefix("SCHILY.xattr.") else {
                    continue;
                };
                if xattr_wanted(name) {
                    if let Ok(c) = CString::new(name) {
                        pax.xattrs.push((c, record.value_bytes().to_vec()));
                    }
                }
            }
        }
    }
    Ok(pax)
}

/// Sets an extended attribute on an open file; refused or unsupported attributes (an
/// unprivileged import, a filesystem without xattrs) are skipped, as device nodes are.
fn set_xattr(file: &std::fs::File, name: &CString, value: &[u8]) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the fd is open for the call's duration, `name` is NUL-terminated and `value`
    // is a live slice whose length is passed with it; the kernel only reads both.
    let rc = unsafe {
        libc::fsetxattr(
            file.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    match Errno::result(rc) {
        Ok(_) | Err(Errno::EPERM) | Err(Errno::EOPNOTSUPP) => Ok(()),
        Err(e) => Err(e),
    }
}

impl Applier<'_> {
    fn corrupt(&self, e: std::io::Error) -> Error {
        Error::Corrupt {
            layer: self.layer.to_string(),
            reason: format!("reading the tar stream: {e}"),
        }
    }

    fn unsafe_entry(&self, raw: &[u8], reason: String) -> Error {
        Error::UnsafeEntry {
            layer: self.layer.to_string(),
            entry: String::from_utf8_lossy(raw).into_owned(),
            reason,
        }
    }

    fn os(&self, raw: &[u8], op: &'static str, e: Errno) -> Error {
        Error::Apply {
            layer: self.layer.to_string(),
            entry: String::from_utf8_lossy(raw).into_owned(),
            op,
            source: std::io::Error::from(e),
        }
    }

    fn walk_error(&self, raw: &[u8], e: WalkError) -> Error {
        match e {
            WalkError::Os(op, errno) => self.os(raw, op, errno),
            other => self.unsafe_entry(raw, other.to_string()),
        }
    }

    fn parent(&mut self, raw: &[u8], parents: &[OsString]) -> Result<Rc<OwnedFd>> {
        if let Some((cached, fd)) = &self.last_parent {
            if cached.as_slice() == parents {
                return Ok(Rc::clone(fd));
            }
        }
        let fd = Rc::new(
            self.root
                .open_dir(parents, true)
                .map_err(|e| self.walk_error(raw, e))?,
        );
        self.last_parent = Some((parents.to_vec(), Rc::clone(&fd)));
        Ok(fd)
    }

    /// Removes what is at `parent/name` before an entry takes its place.
    fn replace(
        &mut self,
        raw: &[u8],
        parent: &OwnedFd,
        name: &OsStr,
        op: &'static str,
    ) -> Result<()> {
        let removed = remove_any(parent, name).map_err(|e| self.os(raw, op, e))?;
        if removed {
            self.last_parent = None;
        }
        Ok(())
    }

    fn bad_header(&self, raw: &[u8], e: std::io::Error) -> Error {
        Error::Corrupt {
            layer: self.layer.to_string(),
            reason: format!("entry {:?}: bad header: {e}", String::from_utf8_lossy(raw)),
        }
    }

    /// Mode, owner, mtime and xattrs from the header and its PAX records.
    fn meta<R: Read>(&self, raw: &[u8], entry: &mut tar::Entry<'_, R>) -> Result<Meta> {
        let pax = pax_records(entry).map_err(|e| Error::Corrupt {
            layer: self.layer.to_string(),
            reason: format!(
                "entry {:?}: bad PAX header: {e}",
                String::from_utf8_lossy(raw)
            ),
        })?;
        let header = entry.header();
        let bad_header = |e| self.bad_header(raw, e);
        let old = header.as_old();
        let id = |parsed, field: &[u8]| {
            numeric(parsed, field).map(|v| u32::try_from(v).unwrap_or(u32::MAX))
        };
        let meta = Meta {
            mode: header.mode().map_err(bad_header)? & MODE_MASK,
            uid: id(header.uid(), &old.uid).map_err(bad_header)?,
            gid: id(header.gid(), &old.gid).map_err(bad_header)?,
            mtime: numeric(header.mtime(), &old.mtime).map_err(bad_header)?,
            xattrs: Vec::new(),
        };
        Ok(pax.apply(meta))
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let path = EntryPath::parse(&raw).map_err(|reason| self.unsafe_entry(&raw, reason))?;
        let meta = self.meta(&raw, entry)?;
        let header = entry.header();
        let kind = header.entry_type();
        self.stats.entries += 1;
        let Some((parents, name)) = path.split_last() else {
            // The root itself ("./"): keep its mode and time like any directory.
            if kind.is_dir() {
                self.dir_meta.push((path.clone(), meta.mode, meta.mtime));
            }
            return Ok(());
        };
        let parent = self.parent(&raw, parents)?;
        if name.as_bytes() == OPAQUE_MARKER {
            return self.opaque(&raw, &parent, parents);
        }
        if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(&raw, &parent, parents, OsStr::from_bytes(hidden));
        }
        self.this_layer.insert(path.to_path());
        use tar::EntryType as T;
        match kind {
            T::Directory => self.directory(&raw, &parent, name, &path, &meta),
            T::Regular | T::Continuous | T::GNUSparse => {
                self.regular(&raw, &parent, name, entry, &meta)
            }
            T::Symlink => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                self.symlink(&raw, &parent, name, &target, &meta)
            }
            T::Link => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                self.hardlink(&raw, &parent, name, &target)
            }
            T::Fifo => self.node(&raw, &parent, name, kind, 0, &meta),
            T::Char | T::Block => {
                let bad_header = |e| self.bad_header(&raw, e);
                let major = header.device_major().map_err(bad_header)?.unwrap_or(0);
                let minor = header.device_minor().map_err(bad_header)?.unwrap_or(0);
                self.node(
                    &raw,
                    &parent,
                    name,
                    kind,
                    makedev(major.into(), minor.into()),
                    &meta,
                )
            }
            other => Err(self.unsafe_entry(&raw, format!("unsupported tar entry type {other:?}"))),
        }
    }

    fn directory(
        &mut self,
        raw: &[u8],
        parent: &OwnedFd,
        name: &OsStr,
        path: &EntryPath,
        meta: &Meta,
    ) -> Result<()> {
        let is_dir = matches!(kind_at(parent, name), Ok(Some(SFlag::S_IFDIR)));
        if !is_dir {
            self.replace(raw, parent, name, "replacing")?;
            mkdirat(parent, name, Mode::from_bits_truncate(0o700))
                .map_err(|e| self.os(raw, "mkdir", e))?;
        }
        self.chown(raw, parent, name, meta)?;
        self.dir_meta.push((path.clone(), meta.mode, meta.mtime));
        Ok(())
    }

    fn regular<R: Read>(
        &mut self,
        raw: &[u8],
        parent: &OwnedFd,
        name: &OsStr,
        entry: &mut tar::Entry<'_, R>,
        meta: &Meta,
    ) -> Result<()> {
        self.replace(raw, parent, name, "replacing")?;
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(parent, name, flags, Mode::from_bits_truncate(0o600))
            .map_err(|e| self.os(raw, "create", e))?;
        let mut file = std::fs::File::from(fd);
        let expected = entry.size();
        let written = std::io::copy(entry, &mut file).map_err(|e| Error::Corrupt {
            layer: self.layer.to_string(),
            reason: format!(
                "entry {:?}: reading its data: {e}",
                String::from_utf8_lossy(raw)
            ),
        })?;
        if written != expected {
            return Err(Error::Corrupt {
                layer: self.layer.to_string(),
                reason: format!(
                    "truncated tar: entry {:?} has {written} of its {expected} bytes",
                    String::from_utf8_lossy(raw)
                ),
            });
        }
        if self.privileged {
            nix::unistd::fchown(
                &file,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )
            .map_err(|e| self.os(raw, "chown", e))?;
        }
        // After chown, which clears setuid bits and file capabilities.
        fchmod(&file, Mode::from_bits_truncate(meta.mode)).map_err(|e| self.os(raw, "chmod", e))?;
        for (name, value) in &meta.xattrs {
            set_xattr(&file, name, value).map_err(|e| self.os(raw, "set xattr", e))?;
        }
        let t = timespec(meta.mtime);
        futimens(&file, &t, &t).map_err(|e| self.os(raw, "set mtime", e))
    }

    fn symlink(
        &mut self,
        raw: &[u8],
        parent: &OwnedFd,
        name: &OsStr,
        target: &[u8],
        meta: &Meta,
    ) -> Result<()> {
        if target.is_empty() {
            return Err(self.unsafe_entry(raw, "symlink with an empty target".to_string()));
        }
        self.replace(raw, parent, name, "replacing")?;
        symlinkat(OsStr::from_bytes(target), parent, name)
            .map_err(|e| self.os(raw, "symlink", e))?;
        self.chown(raw, parent, name, meta)?;
        let t = timespec(meta.mtime);
        utimensat(parent, name, &t, &t, UtimensatFlags::NoFollowSymlink)
            .map_err(|e| self.os(raw, "set mtime", e))
    }

    fn hardlink(
        &mut self,
        raw: &[u8],
        parent: &OwnedFd,
        name: &OsStr,
        target: &[u8],
    ) -> Result<()> {
        let target_path = EntryPath::parse(target)
            .map_err(|reason| self.unsafe_entry(raw, format!("hardlink target: {reason}")))?;
        let Some((target_parents, target_name)) = target_path.split_last() else {
            return Err(self.unsafe_entry(raw, "hardlink to the root".to_string()));
        };
        let target_parent = self
            .root
            .open_dir(target_parents, false)
            .map_err(|e| self.walk_error(raw, e))?;
        match kind_at(&target_parent, target_name) {
            Ok(Some(kind)) if kind != SFlag::S_IFDIR => {}
            Ok(_) => {
                let reason = format!(
                    "hardlink target {:?} is missing or a directory",
                    String::from_utf8_lossy(target)
                );
                return Err(self.unsafe_entry(raw, reason));
            }
            Err(e) => return Err(self.os(raw, "hardlink target", e)),
        }
        self.replace(raw, parent, name, "replacing")?;
        // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink, never its target.
        linkat(&target_parent, target_name, parent, name, AtFlags::empty())
            .map_err(|e| self.os(raw, "hardlink", e))
    }

    fn node(
        &mut self,
        raw: &[u8],
        parent: &OwnedFd,
        name: &OsStr,
        kind: tar::EntryType,
        dev: libc::dev_t,
        meta: &Meta,
    ) -> Result<()> {
        let sflag = match kind {
            tar::EntryType::Char => SFlag::S_IFCHR,
            tar::EntryType::Block => SFlag::S_IFBLK,
            _ => SFlag::S_IFIFO,
        };
        self.replace(raw, parent, name, "replacing")?;
        match mknodat(parent, name, sflag, Mode::from_bits_truncate(0o600), dev) {
            Ok(()) => {}
            // Unprivileged imports cannot create devices; the runtime provides /dev anyway.
            Err(Errno::EPERM) if sflag != SFlag::S_IFIFO => {
                self.stats.skipped_devices += 1;
                return Ok(());
            }
            Err(e) => return Err(self.os(raw, "mknod", e)),
        }
        self.chown(raw, parent, name, meta)?;
        // The node was just made by us and is not a symlink, so following is safe.
        fchmodat(
            parent,
            name,
            Mode::from_bits_truncate(meta.mode),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| self.os(raw, "chmod", e))
    }

    fn chown(&self, raw: &[u8], parent: &OwnedFd, name: &OsStr, meta: &Meta) -> Result<()> {
        if !self.privileged {
            return Ok(());
        }
        fchownat(
            parent,
            name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.os(raw, "chown", e))
    }

    fn whiteout(
        &mut self,
        raw: &[u8],
        parent: &OwnedFd,
        parents: &[OsString],
        hidden: &OsStr,
    ) -> Result<()> {
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(self.unsafe_entry(raw, "whiteout of an invalid name".to_string()));
        }
        let hidden_path: PathBuf = parents
            .iter()
            .map(OsString::as_os_str)
            .chain([hidden])
            .collect();
        if self.this_layer.contains(&hidden_path) {
            return Ok(());
        }
        self.replace(raw, parent, hidden, "whiteout")
    }

    fn opaque(&mut self, raw: &[u8], parent: &OwnedFd, parents: &[OsString]) -> Result<()> {
        let dir: PathBuf = parents.iter().collect();
        self.last_parent = None;
        prune_lower(parent, &dir, &self.this_layer).map_err(|e| self.os(raw, "opaque whiteout", e))
    }

    /// Sets directory modes and mtimes, deepest first, once the layer's entries are in.
    fn finish_dirs(&mut self) -> Result<()> {
        let dirs = std::mem::take(&mut self.dir_meta);
        for (path, mode, mtime) in dirs.iter().rev() {
            let raw = path.to_path();
            let raw = raw.as_os_str().as_bytes();
            let (dirfd, name): (OwnedFd, &OsStr) = match path.split_last() {
                Some((parents, name)) => (
                    self.root
                        .open_dir(parents, false)
                        .map_err(|e| self.walk_error(raw, e))?,
                    name,
                ),
                None => (
                    self.root
                        .open_dir(&[], false)
                        .map_err(|e| self.walk_error(raw, e))?,
                    OsStr::new("."),
                ),
            };
            // Whiteouts later in the layer may have removed or replaced it.
            if !matches!(kind_at(&dirfd, name), Ok(Some(SFlag::S_IFDIR))) {
                continue;
            }
            fchmodat(
                &dirfd,
                name,
                Mode::from_bits_truncate(*mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| self.os(raw, "chmod", e))?;
            let t = timespec(*mtime);
            utimensat(&dirfd, name, &t, &t, UtimensatFlags::NoFollowSymlink)
                .map_err(|e| self.os(raw, "set mtime", e))?;
        }
        Ok(())
    }
}

/// A numeric header field; an empty one (all NUL or spaces) reads as 0, as Go's
/// archive/tar (and so Docker) reads it.
fn numeric(parsed: std::io::Result<u64>, raw: &[u8]) -> std::io::Result<u64> {
    match parsed {
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        other => other,
    }
}

fn timespec(secs: u64) -> TimeSpec {
    TimeSpec::new(i64::try_from(secs).unwrap_or(i64::MAX), 0)
}

/// The file type at `dir/name` without following a symlink; None when missing.
fn kind_at<Fd: AsFd>(dir: Fd, name: &OsStr) -> nix::Result<Option<SFlag>> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

fn open_dir_for_listing<Fd: AsFd>(dir: Fd, name: &OsStr) -> nix::Result<Dir> {
    let fd = openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    Dir::from_fd(fd)
}

fn child_names(dir: &mut Dir) -> Vec<OsString> {
    dir.iter()
        .filter_map(|e| e.ok())
        .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
        .filter(|n| n != "." && n != "..")
        .collect()
}

/// Removes whatever is at `dir/name` (a whole tree for a directory); missing is fine.
/// Returns whether something was removed.
pub fn remove_any<Fd: AsFd>(dir: Fd, name: &OsStr) -> nix::Result<bool> {
    match kind_at(&dir, name)? {
        None => return Ok(false),
        Some(SFlag::S_IFDIR) => {
            let mut sub = open_dir_for_listing(&dir, name)?;
            for child in child_names(&mut sub) {
                remove_any(&sub, &child)?;
            }
            unlinkat(dir, name, UnlinkatFlags::RemoveDir)?;
        }
        Some(_) => unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?,
    }
    Ok(true)
}

/// Removes from the directory `dir` (at `path` in the root) everything this layer did not
/// write, descending into directories this layer wrote.
fn prune_lower<Fd: AsFd>(
    dir: Fd,
    path: &std::path::Path,
    this_layer: &HashSet<PathBuf>,
) -> nix::Result<()> {
    let mut listing = open_dir_for_listing(&dir, OsStr::new("."))?;
    for child in child_names(&mut listing) {
        let child_path = path.join(&child);
        if !this_layer.contains(&child_path) {
            remove_any(&listing, &child)?;
        } else if kind_at(&listing, &child)? == Some(SFlag::S_IFDIR) {
            let sub = open_dir_for_listing(&listing, &child)?;
            prune_lower(&sub, &child_path, this_layer)?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "layers_tests.rs"]
mod tests;
