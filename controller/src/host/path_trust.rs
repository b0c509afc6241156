//! Who could change what a path names: the rules banger applies to the directories it
//! trusts (the state directory and the specs directory) and to the way to them.
//!
//! A path is only as safe as every directory on the way to it: whoever may write a
//! parent may rename the child and put something else in its place. So:
//! - a directory *on the way* ([`ancestor_problem`]) must be owned by a trusted user
//!   (root, or the owner of the path at the end) and not writable by its group or by
//!   others, unless it is sticky (like `/tmp`: others may add entries, but not rename
//!   or remove ours);
//! - a *trusted* directory or a file in it ([`writable_problem`]) must be owned by a
//!   trusted user and not writable by its group or others, sticky or not (in a sticky
//!   directory others could still add files);
//! - a symbolic link is judged by its owner only (its mode means nothing), and the
//!   link's target is checked as well ([`check_way_to`] walks both the path as written
//!   and the path it resolves to).
//!
//! POSIX ACLs need no separate rule: a named user or group with write access shows up
//! in the group permission bits (the ACL mask), which these rules refuse.
//!
//! The rules are pure functions of an [`Entry`] (owner, mode, kind), unit-tested over
//! plain values; [`check_way_to`] applies them to the file system (blocking).

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// What the rules need to know of one file-system entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Owner uid.
    pub uid: u32,
    /// Permission bits, with set-uid, set-gid and sticky (`mode & 0o7777`).
    pub mode: u32,
    /// What it is.
    pub kind: EntryKind,
}

/// The kinds of entry the rules tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link (not followed).
    Symlink,
    /// Anything else (socket, FIFO, device node).
    Other,
}

impl Entry {
    /// The entry described by `symlink_metadata` (or `metadata`, when following).
    pub fn of(meta: &Metadata) -> Entry {
        let ft = meta.file_type();
        let kind = if ft.is_symlink() {
            EntryKind::Symlink
        } else if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_file() {
            EntryKind::File
        } else {
            EntryKind::Other
        };
        Entry {
            uid: meta.uid(),
            mode: meta.mode() & 0o7777,
            kind,
        }
    }
}

/// A path that others than the trusted users could change, and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct UntrustedPath {
    /// The offending entry.
    pub path: PathBuf,
    /// Why, as a phrase (`writable by others (mode 0777)`).
    pub problem: String,
}

/// `root` or `uid N`.
pub fn user_label(uid: u32) -> String {
    if uid == 0 {
        "root".to_string()
    } else {
        format!("uid {uid}")
    }
}

fn trusted_label(trusted: &[u32]) -> String {
    let mut labels: Vec<String> = Vec::new();
    for uid in trusted {
        let label = user_label(*uid);
        if !labels.contains(&label) {
            labels.push(label);
        }
    }
    labels.join(" or ")
}

fn owner_problem(e: &Entry, trusted: &[u32]) -> Option<String> {
    (!trusted.contains(&e.uid)).then(|| {
        format!(
            "owned by {}, not by {}",
            user_label(e.uid),
            trusted_label(trusted)
        )
    })
}

fn write_bits_problem(mode: u32) -> Option<String> {
    let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (false, false) => return None,
        (true, false) => "its group",
        (false, true) => "others",
        (true, true) => "its group and others",
    };
    Some(format!("writable by {who} (mode {:04o})", mode))
}

/// Why a directory on the way to a trusted path lets someone untrusted replace what
/// follows it; `None` when it does not.
pub fn ancestor_problem(e: &Entry, trusted: &[u32]) -> Option<String> {
    if let Some(p) = owner_problem(e, trusted) {
        return Some(p);
    }
    match e.kind {
        EntryKind::Symlink => None,
        EntryKind::Dir if e.mode & 0o1000 != 0 => None,
        EntryKind::Dir => write_bits_problem(e.mode),
        EntryKind::File | EntryKind::Other => Some("not a directory".to_string()),
    }
}

/// Why a trusted directory, or a file in it, could be written by someone untrusted;
/// `None` when it could not.
pub fn writable_problem(e: &Entry, trusted: &[u32]) -> Option<String> {
    if let Some(p) = owner_problem(e, trusted) {
        return Some(p);
    }
    match e.kind {
        EntryKind::Symlink => None,
        _ => write_bits_problem(e.mode),
    }
}

/// Every proper ancestor of `path` (made absolute against the current directory),
/// root first.
fn ancestors_of(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let absolute = std::path::absolute(path)?;
    let mut out = Vec::new();
    let mut acc = PathBuf::new();
    let components: Vec<Component<'_>> = absolute.components().collect();
    for c in components.iter().take(components.len().saturating_sub(1)) {
        acc.push(c);
        out.push(acc.clone());
    }
    Ok(out)
}

/// Checks every directory on the way to `path` with [`ancestor_problem`]: the path as
/// written and, when it goes through symbolic links, the path it resolves to. An
/// ancestor that does not exist yet is skipped (whoever creates it is checked next
/// time). Blocking (file-system reads).
pub fn check_way_to(path: &Path, trusted: &[u32]) -> Result<(), UntrustedPath> {
    let mut ways = Vec::new();
    let io = |e: std::io::Error| UntrustedPath {
        path: path.to_path_buf(),
        problem: e.to_string(),
    };
    ways.extend(ancestors_of(path).map_err(io)?);
    if let Ok(real) = std::fs::canonicalize(path) {
        ways.extend(ancestors_of(&real).map_err(io)?);
    }
    let mut seen = std::collections::HashSet::new();
    ways.retain(|d| seen.insert(d.clone()));
    for dir in ways {
        let meta = match std::fs::symlink_metadata(&dir) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(UntrustedPath {
                    path: dir,
                    problem: e.to_string(),
                })
            }
        };
        if let Some(problem) = ancestor_problem(&Entry::of(&meta), trusted) {
            return Err(UntrustedPath { path: dir, problem });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(uid: u32, mode: u32) -> Entry {
        Entry {
            uid,
            mode,
            kind: EntryKind::Dir,
        }
    }

    fn file(uid: u32, mode: u32) -> Entry {
        Entry {
            uid,
            mode,
            kind: EntryKind::File,
        }
    }

    const ROOT_AND_ALICE: &[u32] = &[0, 1000];

    #[test]
    fn ancestors_may_be_sticky_but_not_writable_by_others() {
        assert_eq!(ancestor_problem(&dir(0, 0o755), ROOT_AND_ALICE), None);
        assert_eq!(ancestor_problem(&dir(1000, 0o700), ROOT_AND_ALICE), None);
        assert_eq!(ancestor_problem(&dir(0, 0o1777), ROOT_AND_ALICE), None);
        assert_eq!(
            ancestor_problem(&dir(0, 0o777), ROOT_AND_ALICE).as_deref(),
            Some("writable by its group and others (mode 0777)")
        );
        assert_eq!(
            ancestor_problem(&dir(0, 0o775), ROOT_AND_ALICE).as_deref(),
            Some("writable by its group (mode 0775)")
        );
        assert_eq!(
            ancestor_problem(&dir(1001, 0o755), ROOT_AND_ALICE).as_deref(),
            Some("owned by uid 1001, not by root or uid 1000")
        );
        // A sticky directory of someone untrusted is still theirs to rename.
        assert!(ancestor_problem(&dir(1001, 0o1777), ROOT_AND_ALICE).is_some());
        assert_eq!(
            ancestor_problem(&file(0, 0o644), ROOT_AND_ALICE).as_deref(),
            Some("not a directory")
        );
        let link = Entry {
            uid: 0,
            mode: 0o777,
            kind: EntryKind::Symlink,
        };
        assert_eq!(ancestor_problem(&link, ROOT_AND_ALICE), None);
        assert!(ancestor_problem(&Entry { uid: 1001, ..link }, ROOT_AND_ALICE).is_some());
    }

    #[test]
    fn trusted_entries_may_not_be_writable_by_others_even_when_sticky() {
        assert_eq!(writable_problem(&dir(0, 0o755), ROOT_AND_ALICE), None);
        assert_eq!(writable_problem(&file(1000, 0o644), ROOT_AND_ALICE), None);
        assert_eq!(writable_problem(&file(1000, 0o600), ROOT_AND_ALICE), None);
        assert_eq!(
            writable_problem(&dir(0, 0o1777), ROOT_AND_ALICE).as_deref(),
            Some("writable by its group and others (mode 1777)")
        );
        assert_eq!(
            writable_problem(&file(1000, 0o646), ROOT_AND_ALICE).as_deref(),
            Some("writable by others (mode 0646)")
        );
        assert_eq!(
            writable_problem(&file(1002, 0o600), &[0, 0]).as_deref(),
            Some("owned by uid 1002, not by root")
        );
    }

    #[test]
    fn the_way_to_a_path_is_checked_as_written_and_as_resolved() {
        use std::os::unix::fs::PermissionsExt;
        let me = nix::unistd::geteuid().as_raw();
        let tmp = tempfile::tempdir().unwrap();
        let trusted = [0, me];
        let good = tmp.path().join("a/b");
        std::fs::create_dir_all(&good).unwrap();
        for d in [tmp.path().join("a"), good.clone()] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        check_way_to(&good.join("specs"), &trusted).unwrap();

        // An open directory on the way, reached through a symlink from a good one.
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::create_dir(open.join("specs")).unwrap();
        std::os::unix::fs::symlink(open.join("specs"), good.join("link")).unwrap();
        let err = check_way_to(&good.join("link"), &trusted).unwrap_err();
        assert_eq!(err.path, open);
        assert_eq!(err.problem, "writable by its group and others (mode 0777)");
        assert_eq!(
            err.to_string(),
            format!(
                "{}: writable by its group and others (mode 0777)",
                open.display()
            )
        );
        // As written, the open directory is on the way too.
        let err = check_way_to(&open.join("specs/x.yaml"), &trusted).unwrap_err();
        assert_eq!(err.path, open);
    }
}
