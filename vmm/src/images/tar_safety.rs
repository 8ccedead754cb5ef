//! Confining tar entries to the staging root: entry paths are cleaned (no `..`, no absolute
//! paths) and every parent directory is opened component by component from a directory fd,
//! never following a symlink out of the root. Absolute symlink targets and `..` that climbs
//! above the root are refused: real layers never need them as parents (layer tars record real
//! paths), so an entry that does is an escape attempt.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, mkdirat, Mode, SFlag};

/// Symlinks followed while resolving one path, as in the kernel's limit.
const MAX_SYMLINKS: usize = 40;

/// A tar entry path, cleaned: components without `.`, `..` or empty parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryPath {
    components: Vec<OsString>,
}

impl EntryPath {
    /// Cleans a raw tar path: a leading `./` or `/`-less path is fine; an absolute path or a
    /// `..` component is refused with the reason.
    pub fn parse(raw: &[u8]) -> Result<EntryPath, String> {
        if raw.first() == Some(&b'/') {
            return Err("absolute path".to_string());
        }
        if raw.contains(&0) {
            return Err("NUL byte in path".to_string());
        }
        let mut components = Vec::new();
        for part in raw.split(|&b| b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => return Err("path contains a \"..\" component".to_string()),
                _ => components.push(OsStr::from_bytes(part).to_os_string()),
            }
        }
        Ok(EntryPath { components })
    }

    /// The parent's components and the last name (None for the root).
    pub fn split_last(&self) -> Option<(&[OsString], &OsStr)> {
        self.components
            .split_last()
            .map(|(last, parents)| (parents, last.as_os_str()))
    }

    /// The path relative to the root.
    pub fn to_path(&self) -> std::path::PathBuf {
        self.components.iter().collect()
    }
}

/// Why a parent directory could not be opened inside the root.
#[derive(Debug)]
pub enum WalkError {
    /// A symlink (or `..`) would lead outside the root.
    Escapes {
        /// The symlink (path inside the root) or `..`.
        via: String,
        /// Its target.
        target: String,
    },
    /// A parent component is neither a directory nor a symlink to one.
    NotADirectory(String),
    /// Too many symlinks.
    Loop,
    /// A system call failed.
    Os(&'static str, Errno),
}

impl std::fmt::Display for WalkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalkError::Escapes { via, target } => write!(
                f,
                "parent {via:?} is a symlink to {target:?}, which leads outside the root filesystem"
            ),
            WalkError::NotADirectory(c) => write!(f, "parent {c:?} is not a directory"),
            WalkError::Loop => write!(f, "too many levels of symlinks in its parents"),
            WalkError::Os(op, e) => write!(f, "{op}: {e}"),
        }
    }
}

/// A directory every entry must stay inside.
pub struct Root {
    fd: OwnedFd,
}

fn open_dir_nofollow<Fd: AsFd>(dir: Fd, name: &OsStr) -> nix::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

impl Root {
    /// Opens `path` (which must be a directory) as the root.
    pub fn open(path: &Path) -> std::io::Result<Root> {
        let fd = openat(
            nix::fcntl::AT_FDCWD,
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root { fd })
    }

    /// Opens the directory at `components` (relative to the root) as an O_PATH fd. Missing
    /// directories are created (mode 0755) when `create` is set. Relative symlinks are
    /// followed while they stay inside the root.
    pub fn open_dir(&self, components: &[OsString], create: bool) -> Result<OwnedFd, WalkError> {
        let root = open_dir_nofollow(&self.fd, OsStr::new("."))
            .map_err(|e| WalkError::Os("opening the root", e))?;
        let mut walk = Walk {
            stack: vec![(root, OsString::new())],
            queue: components.iter().cloned().collect(),
            links: 0,
        };
        while let Some(name) = walk.queue.pop_front() {
            if name.is_empty() || name == "." {
                continue;
            }
            if name == ".." {
                // Only reached through a symlink target: EntryPath has no `..`.
                if walk.stack.len() == 1 {
                    let dots = || "..".to_string();
                    return Err(WalkError::Escapes {
                        via: dots(),
                        target: dots(),
                    });
                }
                walk.stack.pop();
                continue;
            }
            walk.step(name, create)?;
        }
        walk.stack
            .pop()
            .map(|(fd, _)| fd)
            .ok_or(WalkError::Os("opening the root", Errno::ENOENT))
    }
}

/// A walk from the root: the directories entered (fd and name), the components left.
struct Walk {
    stack: Vec<(OwnedFd, OsString)>,
    queue: VecDeque<OsString>,
    links: usize,
}

impl Walk {
    /// The path of `name` in the current directory, for messages.
    fn path_of(&self, name: &OsStr) -> String {
        let mut p: std::path::PathBuf = self.stack.iter().map(|(_, n)| n.as_os_str()).collect();
        p.push(name);
        p.display().to_string()
    }

    /// Enters `name` in the current directory: a directory, a symlink (its target's
    /// components are walked next) or, with `create`, a new directory.
    fn step(&mut self, name: OsString, create: bool) -> Result<(), WalkError> {
        let Some((top, _)) = self.stack.last() else {
            return Err(WalkError::Loop);
        };
        let kind = match fstatat(top, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT,
            Err(Errno::ENOENT) if create => {
                match mkdirat(top, name.as_os_str(), Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => SFlag::S_IFDIR,
                    Err(e) => return Err(WalkError::Os("creating a parent", e)),
                }
            }
            Err(e) => return Err(WalkError::Os("looking up a parent", e)),
        };
        match kind {
            SFlag::S_IFDIR => {
                let fd = open_dir_nofollow(top, &name)
                    .map_err(|e| WalkError::Os("opening a parent", e))?;
                self.stack.push((fd, name));
                Ok(())
            }
            SFlag::S_IFLNK => self.follow(&name),
            _ => Err(WalkError::NotADirectory(self.path_of(&name))),
        }
    }

    /// Queues the target of the symlink `name` unless it leads out of the root.
    fn follow(&mut self, name: &OsStr) -> Result<(), WalkError> {
        self.links += 1;
        if self.links > MAX_SYMLINKS {
            return Err(WalkError::Loop);
        }
        let Some((top, _)) = self.stack.last() else {
            return Err(WalkError::Loop);
        };
        let target = readlinkat(top, name).map_err(|e| WalkError::Os("reading a symlink", e))?;
        let bytes = target.as_bytes();
        if bytes.first() == Some(&b'/') || climbs_above(bytes, self.stack.len() - 1) {
            return Err(WalkError::Escapes {
                via: self.path_of(name),
                target: target.to_string_lossy().into_owned(),
            });
        }
        for part in bytes.rsplit(|&b| b == b'/') {
            self.queue
                .push_front(OsStr::from_bytes(part).to_os_string());
        }
        Ok(())
    }
}

/// Whether a relative symlink target, read at `depth` levels below the root, climbs above it
/// at some point (`a/../../x` at depth 1 does).
fn climbs_above(target: &[u8], depth: usize) -> bool {
    let mut level = depth as isize;
    for part in target.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                level -= 1;
                if level < 0 {
                    return true;
                }
            }
            _ => level += 1,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comps(s: &str) -> Vec<OsString> {
        EntryPath::parse(s.as_bytes()).unwrap().components
    }

    #[test]
    fn cleans_dot_prefixes_and_refuses_dotdot_and_absolute() {
        assert_eq!(comps("./a//b/./c/"), vec!["a", "b", "c"]);
        assert!(EntryPath::parse(b"./").unwrap().split_last().is_none());
        assert!(EntryPath::parse(b"/etc/passwd")
            .unwrap_err()
            .contains("absolute"));
        assert!(EntryPath::parse(b"a/../../x").unwrap_err().contains(".."));
        assert!(EntryPath::parse(b"..").is_err());
    }

    #[test]
    fn climbs_above_counts_levels() {
        assert!(!climbs_above(b"../x", 1));
        assert!(climbs_above(b"../../x", 1));
        assert!(climbs_above(b"a/../../x", 0));
        assert!(!climbs_above(b"usr/lib", 0));
    }

    #[test]
    fn follows_inside_symlinks_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let root_path = dir.path().join("root");
        std::fs::create_dir_all(root_path.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib", root_path.join("lib")).unwrap();
        std::os::unix::fs::symlink("../..", root_path.join("usr/up")).unwrap();
        std::os::unix::fs::symlink("/etc", root_path.join("abs")).unwrap();
        std::os::unix::fs::symlink("loop", root_path.join("loop")).unwrap();
        std::fs::write(root_path.join("file"), b"x").unwrap();
        let root = Root::open(&root_path).unwrap();

        let fd = root.open_dir(&comps("lib/new/deeper"), true).unwrap();
        drop(fd);
        assert!(root_path.join("usr/lib/new/deeper").is_dir());

        let err = root.open_dir(&comps("usr/up/x"), true).unwrap_err();
        assert!(
            matches!(err, WalkError::Escapes { ref via, .. } if via == "usr/up"),
            "{err}"
        );
        let err = root.open_dir(&comps("abs"), false).unwrap_err();
        assert!(err.to_string().contains("\"/etc\""), "{err}");
        assert!(matches!(
            root.open_dir(&comps("loop"), false),
            Err(WalkError::Loop)
        ));
        assert!(matches!(
            root.open_dir(&comps("file/x"), true),
            Err(WalkError::NotADirectory(_))
        ));
        assert!(!dir.path().join("x").exists());
    }
}
