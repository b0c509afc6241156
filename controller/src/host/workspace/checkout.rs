//! Reading a user's checkout: which files a Workspace copies, and their content, read
//! without ever following a symbolic link.
//!
//! - [`list_files`]: `git ls-files -z` (and, for `include: untracked`, `git ls-files -z
//!   --others --exclude-standard`), with banger's clean git ([`super::git`]); names are
//!   checked ([`check_name`]): relative, no `..`, UTF-8 without control characters.
//! - [`CheckoutReader`]: opens each listed name below the checkout's root directory one
//!   component at a time with `O_NOFOLLOW` (`openat`), so a directory that was replaced
//!   by a symlink to `/etc` (or anywhere out of the checkout) is never entered: like git
//!   itself, which does not look beyond a symlink, banger treats such a name as absent.
//!   A regular file is opened `O_NOFOLLOW | O_NONBLOCK` and checked with `fstat` on the
//!   open descriptor (a FIFO or device planted under a tracked name is skipped without
//!   blocking); a symlink is read as a link, never followed.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use banger_specs::IncludeMode;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

use super::git;
use super::CopyError;

/// The files to copy, relative to `source`, sorted and without duplicates.
pub fn list_files(source: &Path, include: IncludeMode) -> Result<Vec<String>, CopyError> {
    let list = |args: &[&str]| {
        git::run(source, args).map_err(|e| CopyError::new("list files", e.to_string()))
    };
    let mut raw = list(&["ls-files", "-z"])?;
    if include == IncludeMode::Untracked {
        raw.extend(list(&["ls-files", "-z", "--others", "--exclude-standard"])?);
    }
    let mut files = Vec::new();
    for name in raw.split(|b| *b == 0).filter(|s| !s.is_empty()) {
        files.push(check_name(OsStr::from_bytes(name))?);
    }
    files.sort();
    files.dedup();
    Ok(files)
}

/// A name git listed, checked: relative, plain components (no `..`, no `.`), UTF-8
/// without control characters (names travel one per line to the guest's shell).
pub fn check_name(name: &OsStr) -> Result<String, CopyError> {
    let shown = name.to_string_lossy();
    let bad = |why: &str| CopyError::new("list files", format!("{shown:?}: {why}"));
    let text = name.to_str().ok_or_else(|| bad("the name is not UTF-8"))?;
    if text.is_empty() {
        return Err(bad("empty name"));
    }
    if text.chars().any(char::is_control) {
        return Err(bad("contains a control character"));
    }
    for c in Path::new(text).components() {
        match c {
            Component::Normal(_) => {}
            Component::ParentDir => return Err(bad("contains `..`")),
            _ => return Err(bad("not a plain relative path")),
        }
    }
    Ok(text.trim_end_matches('/').to_string())
}

/// One entry of the checkout, as read.
#[derive(Debug)]
pub enum CheckoutEntry {
    /// A regular file, open for reading, with its size and whether it is executable.
    File {
        /// The open file.
        file: File,
        /// Its size when opened.
        size: u64,
        /// Any execute bit is set.
        executable: bool,
        /// Its modification time (seconds since the epoch; 0 when before it).
        mtime: u64,
    },
    /// A symbolic link: its target (never followed) and modification time.
    Symlink(PathBuf, u64),
}

fn mtime(stat: &FileStat) -> u64 {
    u64::try_from(stat.st_mtime).unwrap_or(0)
}

/// Reads entries below one checkout's root without following symlinks (see the module
/// docs). Names must come from [`check_name`].
#[derive(Debug)]
pub struct CheckoutReader {
    root: OwnedFd,
    path: PathBuf,
    /// The directory last opened (relative name, descriptor): listed names are sorted,
    /// so consecutive files mostly share it.
    last_dir: Option<(String, OwnedFd)>,
}

fn open_dir_at(dir: &OwnedFd, name: &OsStr) -> nix::Result<OwnedFd> {
    nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

fn kind(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT
}

impl CheckoutReader {
    /// Opens the checkout at `root` (the root itself may be reached through a symlink:
    /// it is the path the user named).
    pub fn open(root: &Path) -> Result<CheckoutReader, CopyError> {
        let fd = nix::fcntl::open(
            root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| CopyError::new("read checkout", format!("{}: {e}", root.display())))?;
        Ok(CheckoutReader {
            root: fd,
            path: root.to_path_buf(),
            last_dir: None,
        })
    }

    fn fail(&self, name: &str, e: impl std::fmt::Display) -> CopyError {
        CopyError::new(
            "read checkout",
            format!("{}: {e}", self.path.join(name).display()),
        )
    }

    /// The directory holding `name`, opened component by component without following
    /// symlinks; `None` when a component is missing, not a directory, or a symlink.
    fn parent_of(&mut self, name: &str) -> Result<Option<&OwnedFd>, CopyError> {
        let parent = match name.rfind('/') {
            Some(i) => &name[..i],
            None => return Ok(Some(&self.root)),
        };
        if self.last_dir.as_ref().map(|(p, _)| p.as_str()) != Some(parent) {
            self.last_dir = None;
            let mut dir: Option<OwnedFd> = None;
            for component in parent.split('/') {
                let at = dir.as_ref().unwrap_or(&self.root);
                match open_dir_at(at, OsStr::new(component)) {
                    Ok(fd) => dir = Some(fd),
                    Err(
                        nix::errno::Errno::ENOENT
                        | nix::errno::Errno::ENOTDIR
                        | nix::errno::Errno::ELOOP,
                    ) => return Ok(None),
                    Err(e) => return Err(self.fail(name, e)),
                }
            }
            let Some(dir) = dir else {
                return Ok(Some(&self.root));
            };
            self.last_dir = Some((parent.to_string(), dir));
        }
        Ok(self.last_dir.as_ref().map(|(_, fd)| fd))
    }

    /// The entry `name` (relative to the root), or `None` when it is absent, lies
    /// beyond a symlink, or is neither a regular file nor a symlink (a directory such
    /// as a submodule, a FIFO, a device).
    pub fn entry(&mut self, name: &str) -> Result<Option<CheckoutEntry>, CopyError> {
        let base = OsStr::new(name.rsplit('/').next().unwrap_or(name));
        let Some(dir) = self.parent_of(name)? else {
            return Ok(None);
        };
        let stat = match nix::sys::stat::fstatat(dir, base, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => return Ok(None),
            Err(e) => {
                let e = e.to_string();
                return Err(self.fail(name, e));
            }
        };
        if kind(&stat) == SFlag::S_IFLNK {
            return match nix::fcntl::readlinkat(dir, base) {
                Ok(target) => Ok(Some(CheckoutEntry::Symlink(
                    PathBuf::from(target),
                    mtime(&stat),
                ))),
                Err(nix::errno::Errno::ENOENT | nix::errno::Errno::EINVAL) => Ok(None),
                Err(e) => {
                    let e = e.to_string();
                    Err(self.fail(name, e))
                }
            };
        }
        if kind(&stat) != SFlag::S_IFREG {
            return Ok(None);
        }
        let fd = match nix::fcntl::openat(
            dir,
            base,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            // Replaced by a symlink or removed since the stat: absent.
            Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ELOOP) => return Ok(None),
            Err(e) => {
                let e = e.to_string();
                return Err(self.fail(name, e));
            }
        };
        let stat = nix::sys::stat::fstat(&fd).map_err(|e| self.fail(name, e))?;
        if kind(&stat) != SFlag::S_IFREG {
            return Ok(None);
        }
        Ok(Some(CheckoutEntry::File {
            file: File::from(fd),
            size: u64::try_from(stat.st_size).unwrap_or(0),
            executable: stat.st_mode & 0o111 != 0,
            mtime: mtime(&stat),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        git::run(p, &["init", "-q"]).unwrap();
        std::fs::write(p.join("tracked.txt"), "tracked\n").unwrap();
        std::fs::create_dir(p.join("sub")).unwrap();
        std::fs::write(p.join("sub/deep.txt"), "deep").unwrap();
        std::fs::write(p.join(".gitignore"), "ignored.txt\n").unwrap();
        std::os::unix::fs::symlink("tracked.txt", p.join("link")).unwrap();
        git::run(p, &["add", "."]).unwrap();
        git::run(p, &["commit", "-qm", "x"]).unwrap();
        std::fs::write(p.join("untracked.txt"), "new").unwrap();
        std::fs::write(p.join("ignored.txt"), "secret").unwrap();
        dir
    }

    #[test]
    fn lists_tracked_and_untracked_but_not_ignored() {
        let r = repo();
        let tracked = list_files(r.path(), IncludeMode::Tracked).unwrap();
        assert_eq!(
            tracked,
            [".gitignore", "link", "sub/deep.txt", "tracked.txt"]
        );
        let all = list_files(r.path(), IncludeMode::Untracked).unwrap();
        assert_eq!(
            all,
            [
                ".gitignore",
                "link",
                "sub/deep.txt",
                "tracked.txt",
                "untracked.txt"
            ]
        );
        let err = list_files(&r.path().join("nope"), IncludeMode::Tracked).unwrap_err();
        assert_eq!(err.step, "list files");
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(check_name(OsStr::new("a/b c")).unwrap(), "a/b c");
        assert_eq!(check_name(OsStr::new("sub/")).unwrap(), "sub");
        for bad in ["../x", "/etc/passwd", "a/../b", "a\nb", "", "./a"] {
            assert!(check_name(OsStr::new(bad)).is_err(), "{bad:?}");
        }
        assert!(check_name(OsStr::from_bytes(b"bad\xff")).is_err());
    }

    #[test]
    fn reads_files_and_links_and_never_follows_a_symlinked_directory() {
        let r = repo();
        let p = r.path();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("deep.txt"), "outside the checkout").unwrap();
        let mut reader = CheckoutReader::open(p).unwrap();
        match reader.entry("sub/deep.txt").unwrap() {
            Some(CheckoutEntry::File {
                mut file,
                size,
                executable,
                mtime,
            }) => {
                assert!(mtime > 0);
                let mut text = String::new();
                file.read_to_string(&mut text).unwrap();
                assert_eq!((text.as_str(), size, executable), ("deep", 4, false));
            }
            other => panic!("{other:?}"),
        }
        match reader.entry("link").unwrap() {
            Some(CheckoutEntry::Symlink(t, _)) => assert_eq!(t, PathBuf::from("tracked.txt")),
            other => panic!("{other:?}"),
        }
        assert!(reader.entry("gone.txt").unwrap().is_none());
        assert!(reader.entry("sub").unwrap().is_none(), "a directory");

        // The tracked directory becomes a symlink out of the checkout: git still lists
        // sub/deep.txt, and banger does not read through the link.
        std::fs::remove_dir_all(p.join("sub")).unwrap();
        std::os::unix::fs::symlink(outside.path(), p.join("sub")).unwrap();
        let listed = list_files(p, IncludeMode::Tracked).unwrap();
        assert!(listed.contains(&"sub/deep.txt".to_string()), "{listed:?}");
        let mut reader = CheckoutReader::open(p).unwrap();
        assert!(reader.entry("sub/deep.txt").unwrap().is_none());

        // A FIFO under a tracked name is skipped without blocking.
        std::fs::remove_file(p.join("tracked.txt")).unwrap();
        nix::unistd::mkfifo(&p.join("tracked.txt"), Mode::from_bits_truncate(0o600)).unwrap();
        assert!(reader.entry("tracked.txt").unwrap().is_none());

        // Executable bits are seen.
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(p.join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(p.join("run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
        assert!(matches!(
            reader.entry("run.sh").unwrap(),
            Some(CheckoutEntry::File {
                executable: true,
                ..
            })
        ));
    }
}
