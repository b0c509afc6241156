//! Checks that a path banger is about to write as root stays inside the state directory
//! and that no existing component below the state directory is a symlink.
//!
//! A symlink planted inside the state directory (say `vms/<uid> -> /etc`) could
//! otherwise redirect a privileged write anywhere on the host. The state directory
//! itself is trusted (an operator may configure it as a symlink); everything below it is
//! checked component by component with `lstat`. Components that do not exist yet are
//! fine (they will be created by banger, as directories, after the check).
//!
//! This narrows but does not close a race with an attacker who can write into the state
//! directory while banger runs; the state directory is root-owned (0700) and the files
//! banger creates are opened with `O_NOFOLLOW`/`O_EXCL` where it matters.

use std::io;
use std::path::{Component, Path, PathBuf};

/// Why a path was rejected.
#[derive(Debug, thiserror::Error)]
pub enum UnsafePath {
    /// The path is not below the state directory (or is not absolute, or has `..`).
    #[error("{path} is not inside the state directory {root}")]
    Outside {
        /// The rejected path.
        path: PathBuf,
        /// The state directory.
        root: PathBuf,
    },
    /// An existing component is a symlink.
    #[error("{component} is a symlink (refusing to follow it while writing {path})")]
    Symlink {
        /// The offending component.
        component: PathBuf,
        /// The path being checked.
        path: PathBuf,
    },
    /// A component that must be a directory is something else.
    #[error("{component} is not a directory (while checking {path})")]
    NotADirectory {
        /// The offending component.
        component: PathBuf,
        /// The path being checked.
        path: PathBuf,
    },
    /// `lstat` failed for another reason.
    #[error("cannot inspect {component}: {source}")]
    Io {
        /// The component.
        component: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Checks that `path` is `root` or below it, has only normal components after `root`,
/// and that no existing component below `root` (the last one included) is a symlink.
/// Every existing component but the last must be a directory.
pub fn check_below(root: &Path, path: &Path) -> Result<(), UnsafePath> {
    let outside = || UnsafePath::Outside {
        path: path.to_path_buf(),
        root: root.to_path_buf(),
    };
    if !root.is_absolute() || !path.is_absolute() {
        return Err(outside());
    }
    let rest = path.strip_prefix(root).map_err(|_| outside())?;
    let parts: Vec<&std::ffi::OsStr> = rest
        .components()
        .map(|c| match c {
            Component::Normal(part) => Ok(part),
            _ => Err(outside()),
        })
        .collect::<Result<_, _>>()?;
    let mut current = root.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        current.push(part);
        let meta = match std::fs::symlink_metadata(&current) {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(UnsafePath::Io {
                    component: current,
                    source,
                })
            }
        };
        if meta.file_type().is_symlink() {
            return Err(UnsafePath::Symlink {
                component: current,
                path: path.to_path_buf(),
            });
        }
        let is_last = i + 1 == parts.len();
        if !is_last && !meta.is_dir() {
            return Err(UnsafePath::NotADirectory {
                component: current,
                path: path.to_path_buf(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_and_missing_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("vms/vm-a")).unwrap();
        std::fs::write(root.join("vms/vm-a/disk"), b"x").unwrap();
        assert!(check_below(root, root).is_ok());
        assert!(check_below(root, &root.join("vms/vm-a/disk")).is_ok());
        assert!(check_below(root, &root.join("vms/vm-b/disk")).is_ok());
    }

    #[test]
    fn rejects_symlinks_anywhere_below_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.join("vms")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), root.join("vms/vm-a")).unwrap();
        let err = check_below(root, &root.join("vms/vm-a/disk")).unwrap_err();
        assert!(
            matches!(err, UnsafePath::Symlink { ref component, .. } if component.ends_with("vm-a")),
            "{err}"
        );

        std::fs::create_dir_all(root.join("vms/vm-b")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("vms/vm-b/disk")).unwrap();
        assert!(matches!(
            check_below(root, &root.join("vms/vm-b/disk")),
            Err(UnsafePath::Symlink { .. })
        ));
    }

    #[test]
    fn rejects_escapes_and_non_directories() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert!(matches!(
            check_below(root, Path::new("/etc/passwd")),
            Err(UnsafePath::Outside { .. })
        ));
        assert!(matches!(
            check_below(root, &root.join("a/../../etc")),
            Err(UnsafePath::Outside { .. })
        ));
        assert!(matches!(
            check_below(root, Path::new("relative")),
            Err(UnsafePath::Outside { .. })
        ));
        std::fs::write(root.join("file"), b"x").unwrap();
        assert!(matches!(
            check_below(root, &root.join("file/disk")),
            Err(UnsafePath::NotADirectory { .. })
        ));
    }
}
