//! Who may write the specs directory.
//!
//! Whatever a spec file in the specs directory declares, the daemon runs as root. So
//! the directory, every directory below it and every spec file must be writable only
//! by the directory's owner and root ([`crate::host::path_trust::writable_problem`]:
//! owned by one of them, no write bit for the group or others), and no directory on the
//! way to it may let anyone else replace it ([`crate::host::path_trust::check_way_to`]).
//! A spec file that is a symbolic link is judged by its target, and the way to the
//! target is checked too.
//!
//! What breaks the rule is refused, never read ([`super::dir::scan`]): the daemon does
//! not start on such a directory; found later, a refused directory's objects and a
//! refused file's objects keep their last good spec, with `SpecValid=False` saying why,
//! and nothing below a refused directory is created or deleted until it is fixed.

use std::fs::Metadata;
use std::path::Path;

use crate::host::path_trust::{self, Entry, UntrustedPath};

/// Why a specs-dir entry is refused, as the end of its message.
pub const WHY: &str =
    "spec files and their directories must be writable only by the specs dir's owner and root (the daemon runs what they declare as root)";

/// One line for a refused specs directory: `specs dir D: writable by …; WHY`, or
/// `specs dir D: /on/the/way is owned by …; WHY` when the fault is on the way to it.
pub fn refusal(dir: &Path, e: &UntrustedPath) -> String {
    if e.path == dir {
        format!("specs dir {}: {}; {WHY}", dir.display(), e.problem)
    } else {
        format!(
            "specs dir {}: {} is {}; {WHY}",
            dir.display(),
            e.path.display(),
            e.problem
        )
    }
}

/// The users trusted to write below `dir`: root and the directory's owner.
pub type Trusted = [u32; 2];

/// Checks the specs directory itself and the way to it; returns who may write below
/// it. A directory that does not exist is checked as the daemon's to make (owner:
/// `daemon_uid`). Blocking.
pub fn check_specs_dir(dir: &Path, daemon_uid: u32) -> Result<Trusted, UntrustedPath> {
    let meta = match std::fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let trusted = [0, daemon_uid];
            path_trust::check_way_to(dir, &trusted)?;
            return Ok(trusted);
        }
        Err(e) => {
            return Err(UntrustedPath {
                path: dir.to_path_buf(),
                problem: e.to_string(),
            })
        }
    };
    let entry = Entry::of(&meta);
    let trusted = [0, entry.uid];
    path_trust::check_way_to(dir, &trusted)?;
    if !meta.is_dir() {
        return Err(UntrustedPath {
            path: dir.to_path_buf(),
            problem: "not a directory".into(),
        });
    }
    match path_trust::writable_problem(&entry, &trusted) {
        Some(problem) => Err(UntrustedPath {
            path: dir.to_path_buf(),
            problem,
        }),
        None => Ok(trusted),
    }
}

/// Why a directory found below the specs directory (by `symlink_metadata`: the walk
/// does not follow links) is refused.
pub fn subdir_problem(meta: &Metadata, trusted: &Trusted) -> Option<String> {
    path_trust::writable_problem(&Entry::of(meta), trusted)
}

/// Why a spec file is refused: `meta` is its (followed) metadata; a symbolic link's
/// way to its target is checked too. `None`: it may be read. Blocking.
pub fn file_problem(path: &Path, meta: &Metadata, trusted: &Trusted) -> Option<String> {
    if let Some(problem) = path_trust::writable_problem(&Entry::of(meta), trusted) {
        return Some(problem);
    }
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if is_link {
        if let Err(e) = path_trust::check_way_to(path, trusted) {
            return Some(format!(
                "its target's directory {} is {}",
                e.path.display(),
                e.problem
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn the_specs_dir_must_be_writable_only_by_its_owner_and_root() {
        let me = nix::unistd::geteuid().as_raw();
        let tmp = tempfile::tempdir().unwrap();
        let specs = tmp.path().join("specs");
        assert_eq!(
            check_specs_dir(&specs, me).unwrap(),
            [0, me],
            "missing: ours to make"
        );
        std::fs::create_dir(&specs).unwrap();
        chmod(&specs, 0o755);
        assert_eq!(
            check_specs_dir(&specs, 4242).unwrap(),
            [0, me],
            "trusts its owner"
        );
        chmod(&specs, 0o775);
        let err = check_specs_dir(&specs, me).unwrap_err();
        assert_eq!(err.path, specs);
        assert_eq!(err.problem, "writable by its group (mode 0775)");
        assert_eq!(
            refusal(&specs, &err),
            format!(
                "specs dir {}: writable by its group (mode 0775); {WHY}",
                specs.display()
            )
        );
        let below = specs.join("deeper");
        assert_eq!(
            refusal(&below, &err),
            format!(
                "specs dir {}: {} is writable by its group (mode 0775); {WHY}",
                below.display(),
                specs.display()
            )
        );
        chmod(&specs, 0o1777);
        assert!(check_specs_dir(&specs, me).is_err(), "sticky is no excuse");
        chmod(&specs, 0o755);
        let file = specs.join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(check_specs_dir(&file, me).is_err(), "not a directory");
    }

    #[test]
    fn files_and_their_link_targets_are_judged() {
        let me = nix::unistd::geteuid().as_raw();
        let tmp = tempfile::tempdir().unwrap();
        let trusted = [0, me];
        let good = tmp.path().join("good.yaml");
        std::fs::write(&good, b"x").unwrap();
        chmod(&good, 0o644);
        let meta = |p: &Path| std::fs::metadata(p).unwrap();
        assert_eq!(file_problem(&good, &meta(&good), &trusted), None);
        chmod(&good, 0o666);
        assert_eq!(
            file_problem(&good, &meta(&good), &trusted).as_deref(),
            Some("writable by its group and others (mode 0666)")
        );
        chmod(&good, 0o644);
        // A link to a good file in a directory anyone may write.
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        chmod(&open, 0o777);
        std::fs::write(open.join("t.yaml"), b"x").unwrap();
        chmod(&open.join("t.yaml"), 0o644);
        let link = tmp.path().join("link.yaml");
        std::os::unix::fs::symlink(open.join("t.yaml"), &link).unwrap();
        assert_eq!(
            file_problem(&link, &meta(&link), &trusted),
            Some(format!(
                "its target's directory {} is writable by its group and others (mode 0777)",
                open.display()
            ))
        );
        let subdir = std::fs::symlink_metadata(&open).unwrap();
        assert!(subdir_problem(&subdir, &trusted).is_some());
    }
}
