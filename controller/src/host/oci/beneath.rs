//! File operations confined below one directory, never following a symlink anywhere in
//! the path: what unpacking an OCI layer (untrusted names, untrusted symlinks) writes
//! with.
//!
//! Every directory is reached with `openat2(2)` and `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS` from the tree's root descriptor, one
//! component at a time (missing directories are made with `mkdirat`). The last
//! component is then created, linked, removed or changed with the `*at` call on that
//! parent descriptor and a single name, with `O_NOFOLLOW`/`AT_SYMLINK_NOFOLLOW` where
//! the call can follow. A symlink in the path is `ELOOP`, reported as such; nothing is
//! ever written outside the tree, whatever a layer's symlinks point at, and no check
//! can be raced by swapping a component between a check and a write.
//!
//! Removing a directory tree goes through `/proc/self/fd/<parent>/<name>`: the kernel
//! resolves the descriptor itself (the directory pinned by it), and the standard
//! library's `remove_dir_all` removes below it with `openat`/`unlinkat` without following
//! symlinks.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};

/// A directory tree written below its root only.
#[derive(Debug)]
pub struct Beneath {
    root: OwnedFd,
}

/// Why a directory of the tree could not be reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A component is a symlink.
    #[error("{0} is a symlink (refusing to write through it)")]
    Symlink(PathBuf),
    /// A component is not a directory.
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// A component does not exist (and was not to be made).
    #[error("{0} does not exist")]
    Missing(PathBuf),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// What is at a name inside a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Nothing.
    Nothing,
    /// A directory.
    Directory,
    /// Anything else (a file, a symlink, a device…).
    Other,
}

fn resolve() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH
        | ResolveFlag::RESOLVE_NO_SYMLINKS
        | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

fn dir_how() -> OpenHow {
    OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(resolve())
}

impl Beneath {
    /// Opens the tree rooted at `root` (which must be a directory, not a symlink).
    pub fn open(root: &Path) -> io::Result<Beneath> {
        let fd = nix::fcntl::open(
            root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )?;
        Ok(Beneath { root: fd })
    }

    /// The directory `rel` (relative, normal components), opened without following a
    /// symlink; with `create`, missing directories are made (mode 0755). The error says
    /// which component is a symlink or not a directory.
    pub fn dir(&self, rel: &Path, create: bool) -> Result<OwnedFd, PathError> {
        let mut current = self
            .root
            .try_clone()
            .map_err(|e| PathError::Other(format!("duplicate the root descriptor: {e}")))?;
        let mut shown = PathBuf::new();
        for component in rel.components() {
            let Component::Normal(part) = component else {
                return Err(PathError::Other(format!(
                    "{} is not a plain relative path",
                    rel.display()
                )));
            };
            shown.push(part);
            let opened = match openat2(&current, part, dir_how()) {
                Err(Errno::ENOENT) if create => {
                    match nix::sys::stat::mkdirat(&current, part, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => {
                            return Err(PathError::Other(format!(
                                "create directory {}: {e}",
                                shown.display()
                            )))
                        }
                    }
                    openat2(&current, part, dir_how())
                }
                other => other,
            };
            current = opened.map_err(|e| match e {
                Errno::ELOOP | Errno::EXDEV => PathError::Symlink(shown.clone()),
                Errno::ENOTDIR => PathError::NotADirectory(shown.clone()),
                Errno::ENOENT => PathError::Missing(shown.clone()),
                other => PathError::Other(format!("open {}: {other}", shown.display())),
            })?;
        }
        Ok(current)
    }

    /// The parent directory of `rel` and its last name (`None` for the root itself).
    pub fn parent<'p>(
        &self,
        rel: &'p Path,
        create: bool,
    ) -> Result<Option<(OwnedFd, &'p OsStr)>, PathError> {
        let Some(name) = rel.file_name() else {
            return Ok(None);
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        Ok(Some((self.dir(parent, create)?, name)))
    }
}

/// What is at `name` in `dir` (never following a symlink).
pub fn found(dir: &impl AsFd, name: &OsStr) -> io::Result<Found> {
    match fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR => {
            Ok(Found::Directory)
        }
        Ok(_) => Ok(Found::Other),
        Err(Errno::ENOENT) => Ok(Found::Nothing),
        Err(e) => Err(e.into()),
    }
}

/// The path the kernel resolves to the directory `dir` itself.
pub fn fd_path(dir: &impl AsFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", dir.as_fd().as_raw_fd()))
}

/// Removes `name` in `dir` (a directory with everything below it), never following a
/// symlink; nothing there is fine.
pub fn remove(dir: &impl AsFd, name: &OsStr) -> io::Result<()> {
    match found(dir, name)? {
        Found::Nothing => Ok(()),
        Found::Directory => fs::remove_dir_all(fd_path(dir).join(name)),
        Found::Other => nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir)
            .map_err(io::Error::from),
    }
}

/// Removes everything inside the directory `dir` (itself kept).
pub fn empty(dir: &impl AsFd) -> io::Result<()> {
    for entry in fs::read_dir(fd_path(dir))? {
        remove(dir, &entry?.file_name())?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn nothing_is_reached_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("a/b")).unwrap();
        symlink(outside.path(), root.join("evil")).unwrap();
        symlink("a", root.join("rel")).unwrap();
        let tree = Beneath::open(&root).unwrap();
        assert!(tree.dir(Path::new("a/b"), false).is_ok());
        let e = tree.dir(Path::new("evil/x"), true).unwrap_err();
        assert_eq!(e, PathError::Symlink("evil".into()));
        let e = tree.dir(Path::new("rel/b"), false).unwrap_err();
        assert_eq!(
            e,
            PathError::Symlink("rel".into()),
            "even one that stays inside"
        );
        let e = tree.dir(Path::new("a/b/c"), false).unwrap_err();
        assert_eq!(e, PathError::Missing("a/b/c".into()));
        assert!(tree.dir(Path::new("../x"), true).is_err());
        // Missing directories are made, below the root only.
        let made = tree.dir(Path::new("new/deeper"), true).unwrap();
        assert!(root.join("new/deeper").is_dir());
        assert_eq!(found(&made, OsStr::new("x")).unwrap(), Found::Nothing);
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        // Removal never follows: the link goes, its target stays.
        fs::write(outside.path().join("precious"), b"p").unwrap();
        let (parent, name) = tree.parent(Path::new("evil"), false).unwrap().unwrap();
        assert_eq!(found(&parent, name).unwrap(), Found::Other);
        remove(&parent, name).unwrap();
        assert!(outside.path().join("precious").exists());
        let (parent, name) = tree.parent(Path::new("a"), false).unwrap().unwrap();
        remove(&parent, name).unwrap();
        assert!(!root.join("a").exists());
        let root_fd = tree.dir(Path::new(""), false).unwrap();
        empty(&root_fd).unwrap();
        assert_eq!(fs::read_dir(&root).unwrap().count(), 0);
    }
}
