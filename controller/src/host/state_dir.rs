//! The state directory is the daemon's alone: checked, and made so, at every start.
//!
//! Under the state directory are the VMs' root disks and console logs, banger's SSH
//! key (every guest's root trusts it) and the database. [`prepare_state_dir`] runs
//! before anything else touches it:
//! - the state directory itself (the *fence*) must be a directory owned by the daemon's
//!   user (root) with no access for its group or others (mode 0700); it is created so
//!   when missing. Anything else refuses the start with one line naming the path and
//!   the fix: with the fence in place no other user can reach anything below it, so
//!   banger never repairs the fence itself;
//! - every directory on the way to it must not let others replace it
//!   ([`super::path_trust::check_way_to`]);
//! - the top two levels below it (`banger.db`, `ssh/…`, `vms/<uid>`, `images/<uid>`)
//!   must be owned by the daemon's user and must not be symbolic links, or the start
//!   is refused; group or other permission bits there are removed (and logged by the
//!   caller): they give nothing while the fence stands, and the directories banger
//!   makes below are created 0700 anyway ([`TOP_DIRS`], [`DB_FILE`]). The files of
//!   [`GUEST_DIR`] (the default kernel and initrd) keep their read bits: the VMMs run
//!   as another user and open them through a descriptor's path, so only their write
//!   bits for group and others are removed;
//! - deeper entries are not walked: they are a VM's or an Image's files (an Image's
//!   pulled root filesystem keeps the guest's own modes), reachable only through the
//!   0700 directories above them.
//!
//! The API socket, when it lives in the state directory, is skipped: its mode is the
//! socket's own business (`0660 root:banger`).

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::path_trust::{self, user_label, Entry, EntryKind};

/// Directories the daemon creates in the state directory at start, mode 0700: where
/// the VMs' and Images' own directories go.
pub const TOP_DIRS: [&str; 2] = ["vms", "images"];
/// The default guest directory (`<state>/guest`: the default kernel, its initrd and
/// the guest bits). The VMMs run as another user and must read its files, so those
/// keep their read bits (none is a secret); only write bits are removed there.
pub const GUEST_DIR: &str = "guest";
/// The database file, created empty with mode 0600 before SQLite opens it (SQLite
/// gives its `-wal` and `-shm` files the database file's mode).
pub const DB_FILE: &str = "banger.db";

/// Why the state directory may not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// The state directory, or something at its top levels, is not the daemon's alone.
    #[error("{}", not_private(dir, path, problem, fix))]
    NotPrivate {
        /// The state directory.
        dir: PathBuf,
        /// The offending entry.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
        /// The command that fixes it.
        fix: String,
    },
    /// A file-system operation failed.
    #[error("state dir {}: {step} {}: {source}", dir.display(), path.display())]
    Io {
        /// The state directory.
        dir: PathBuf,
        /// What was being done.
        step: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// `state dir D has mode …; fix …`, or `state dir D: D/x is owned by …; fix …`.
fn not_private(dir: &Path, path: &Path, problem: &str, fix: &str) -> String {
    if path == dir {
        format!("state dir {} {problem}; {fix}", dir.display())
    } else {
        format!(
            "state dir {}: {} {problem}; {fix}",
            dir.display(),
            path.display()
        )
    }
}

/// An entry whose group and other permission bits were removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tightened {
    /// The entry.
    pub path: PathBuf,
    /// Its mode before.
    pub from: u32,
    /// Its mode now.
    pub to: u32,
}

/// What to do with an entry of the top two levels below the fence.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Keep,
    Tighten(u32),
    Refuse(String),
}

/// Why the state directory itself is not the daemon's alone (`owner`: the daemon's uid).
fn fence_problem(e: &Entry, owner: u32) -> Option<String> {
    match e.kind {
        EntryKind::Dir => {}
        EntryKind::Symlink => return Some("is a symbolic link, not a directory".into()),
        EntryKind::File | EntryKind::Other => return Some("is not a directory".into()),
    }
    if e.uid != owner {
        return Some(format!(
            "is owned by {}, not by {} (the daemon's user)",
            user_label(e.uid),
            user_label(owner)
        ));
    }
    (e.mode & 0o077 != 0).then(|| {
        format!(
            "has mode {:04o}, which lets its group or others in; it must be 0700 (VM disks and banger's SSH key are below it)",
            e.mode
        )
    })
}

/// The rule for the top two levels below the fence. `readable` (a regular file in
/// [`GUEST_DIR`]) keeps its group and other read bits.
fn below_verdict(e: &Entry, owner: u32, readable: bool) -> Verdict {
    if e.kind == EntryKind::Symlink {
        return Verdict::Refuse(
            "is a symbolic link (the top levels of the state dir hold none)".into(),
        );
    }
    if e.uid != owner {
        return Verdict::Refuse(format!(
            "is owned by {}, not by {} (the daemon's user)",
            user_label(e.uid),
            user_label(owner)
        ));
    }
    let open = if readable && e.kind == EntryKind::File {
        0o033
    } else {
        0o077
    };
    if e.mode & open != 0 {
        return Verdict::Tighten(e.mode & !open);
    }
    Verdict::Keep
}

/// Makes sure `dir` is the daemon's alone, as the module docs say: creates it (0700),
/// its [`TOP_DIRS`] and an empty [`DB_FILE`] when missing, refuses what it must, and
/// returns what it tightened. `owner` is the daemon's effective uid; `socket` is
/// skipped if it is inside. Blocking (file system): call it on the blocking pool.
pub fn prepare_state_dir(
    dir: &Path,
    owner: u32,
    socket: &Path,
) -> Result<Vec<Tightened>, StateDirError> {
    let io = |step: &'static str, path: &Path| {
        let (dir, path) = (dir.to_path_buf(), path.to_path_buf());
        move |source| StateDirError::Io {
            dir,
            step,
            path,
            source,
        }
    };
    let refuse = |path: &Path, problem: String, fix: String| StateDirError::NotPrivate {
        dir: dir.to_path_buf(),
        path: path.to_path_buf(),
        problem,
        fix,
    };
    if let Err(e) = path_trust::check_way_to(dir, &[0, owner]) {
        let fix =
            "a directory on the way to the state dir must let no other user replace what is in it"
                .to_string();
        return Err(refuse(&e.path, format!("is {}", e.problem), fix));
    }
    match std::fs::symlink_metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("create", dir))?,
        Err(e) => return Err(io("inspect", dir)(e)),
    }
    let fence = Entry::of(&std::fs::symlink_metadata(dir).map_err(io("inspect", dir))?);
    if let Some(problem) = fence_problem(&fence, owner) {
        let fix = match fence.kind {
            EntryKind::Dir if fence.uid != owner => format!(
                "fix: chown -R {} {}",
                if owner == 0 {
                    "root:root".to_string()
                } else {
                    owner.to_string()
                },
                dir.display()
            ),
            EntryKind::Dir => format!("fix: chmod 700 {}", dir.display()),
            _ => "give --state-dir a directory".to_string(),
        };
        return Err(refuse(dir, problem, fix));
    }
    for name in TOP_DIRS {
        let path = dir.join(name);
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("create", &path)(e)),
        }
    }
    let db = dir.join(DB_FILE);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&db)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io("create", &db)(e)),
    }

    let mut tightened = Vec::new();
    let guest_dir = dir.join(GUEST_DIR);
    let mut visit = |path: &Path, depth: usize| -> Result<Option<bool>, StateDirError> {
        if path == socket {
            return Ok(None);
        }
        let meta = std::fs::symlink_metadata(path).map_err(io("inspect", path))?;
        let entry = Entry::of(&meta);
        let readable = depth == 2 && path.parent() == Some(guest_dir.as_path());
        match below_verdict(&entry, owner, readable) {
            Verdict::Keep => {}
            Verdict::Tighten(to) => {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(to))
                    .map_err(io("chmod", path))?;
                tightened.push(Tightened {
                    path: path.to_path_buf(),
                    from: entry.mode,
                    to,
                });
            }
            Verdict::Refuse(problem) => {
                let fix = if entry.kind == EntryKind::Symlink {
                    format!("remove it (rm {})", path.display())
                } else {
                    format!(
                        "fix: chown -R {} {}",
                        if owner == 0 {
                            "root:root".to_string()
                        } else {
                            owner.to_string()
                        },
                        dir.display()
                    )
                };
                return Err(refuse(path, problem, fix));
            }
        }
        Ok(Some(entry.kind == EntryKind::Dir && depth < 2))
    };
    for top in read_dir_sorted(dir).map_err(io("list", dir))? {
        if visit(&top, 1)? == Some(true) {
            for below in read_dir_sorted(&top).map_err(io("list", &top))? {
                visit(&below, 2)?;
            }
        }
    }
    Ok(tightened)
}

/// The entries of a directory, sorted (so errors and logs come in a stable order).
fn read_dir_sorted(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()?;
    paths.sort();
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(uid: u32, mode: u32, kind: EntryKind) -> Entry {
        Entry { uid, mode, kind }
    }

    #[test]
    fn the_fence_is_a_0700_directory_of_the_daemons_user() {
        use EntryKind::*;
        assert_eq!(fence_problem(&entry(0, 0o700, Dir), 0), None);
        assert_eq!(
            fence_problem(&entry(0, 0o755, Dir), 0).as_deref(),
            Some("has mode 0755, which lets its group or others in; it must be 0700 (VM disks and banger's SSH key are below it)")
        );
        assert!(fence_problem(&entry(0, 0o710, Dir), 0).is_some());
        assert_eq!(
            fence_problem(&entry(1000, 0o700, Dir), 0).as_deref(),
            Some("is owned by uid 1000, not by root (the daemon's user)")
        );
        assert_eq!(fence_problem(&entry(1000, 0o700, Dir), 1000), None);
        assert!(fence_problem(&entry(0, 0o777, Symlink), 0).is_some());
        assert!(fence_problem(&entry(0, 0o600, File), 0).is_some());
    }

    #[test]
    fn below_the_fence_modes_are_tightened_and_strangers_refused() {
        use EntryKind::*;
        assert_eq!(
            below_verdict(&entry(0, 0o700, Dir), 0, false),
            Verdict::Keep
        );
        assert_eq!(
            below_verdict(&entry(0, 0o600, File), 0, false),
            Verdict::Keep
        );
        // The default kernel and initrd stay readable by the VMM user; not writable.
        assert_eq!(
            below_verdict(&entry(0, 0o644, File), 0, true),
            Verdict::Keep
        );
        assert_eq!(
            below_verdict(&entry(0, 0o666, File), 0, true),
            Verdict::Tighten(0o644)
        );
        assert_eq!(
            below_verdict(&entry(0, 0o755, Dir), 0, true),
            Verdict::Tighten(0o700)
        );
        assert_eq!(
            below_verdict(&entry(0, 0o755, Dir), 0, false),
            Verdict::Tighten(0o700)
        );
        assert_eq!(
            below_verdict(&entry(0, 0o644, File), 0, false),
            Verdict::Tighten(0o600)
        );
        assert_eq!(
            below_verdict(&entry(0, 0o4755, File), 0, false),
            Verdict::Tighten(0o4700)
        );
        assert!(matches!(
            below_verdict(&entry(1000, 0o600, File), 0, false),
            Verdict::Refuse(_)
        ));
        assert!(matches!(
            below_verdict(&entry(0, 0o777, Symlink), 0, false),
            Verdict::Refuse(_)
        ));
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn a_new_state_dir_is_created_private() {
        let me = nix::unistd::geteuid().as_raw();
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("var/lib/banger");
        let tightened = prepare_state_dir(&state, me, &tmp.path().join("s.sock")).unwrap();
        assert_eq!(tightened, vec![]);
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join("vms")), 0o700);
        assert_eq!(mode(&state.join("images")), 0o700);
        assert_eq!(mode(&state.join(DB_FILE)), 0o600);
        // Idempotent.
        assert_eq!(
            prepare_state_dir(&state, me, &tmp.path().join("s.sock")).unwrap(),
            vec![]
        );
    }

    #[test]
    fn an_open_state_dir_is_refused_with_the_fix_and_nothing_below_changes() {
        let me = nix::unistd::geteuid().as_raw();
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = prepare_state_dir(&state, me, Path::new("/nonexistent.sock")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "state dir {0} has mode 0755, which lets its group or others in; it must be 0700 (VM disks and banger's SSH key are below it); fix: chmod 700 {0}",
                state.display()
            )
        );
        assert!(
            !state.join("vms").exists(),
            "nothing created behind an open fence"
        );
    }

    #[test]
    fn a_state_dir_others_could_replace_is_refused() {
        let me = nix::unistd::geteuid().as_raw();
        let tmp = tempfile::tempdir().unwrap();
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let state = open.join("state");
        let err = prepare_state_dir(&state, me, Path::new("/nonexistent.sock")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "state dir {}: {} is writable by its group and others (mode 0777); a directory on the way to the state dir must let no other user replace what is in it",
                state.display(),
                open.display()
            )
        );
        assert!(!state.exists(), "nothing created");
    }

    #[test]
    fn the_top_levels_are_tightened_and_a_symlink_refused() {
        let me = nix::unistd::geteuid().as_raw();
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let socket = state.join("banger.sock");
        prepare_state_dir(&state, me, &socket).unwrap();
        // Left by an older daemon: readable by everyone.
        std::fs::set_permissions(state.join("vms"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::create_dir(state.join("vms/abc")).unwrap();
        std::fs::set_permissions(
            state.join("vms/abc"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(state.join("vms/abc/console.log"), b"x").unwrap();
        std::fs::set_permissions(
            state.join("vms/abc/console.log"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        std::fs::set_permissions(state.join(DB_FILE), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660)).unwrap();
        // The default kernel as scripts/up.sh installs it (0644: the VMMs read it), and
        // an initrd left writable by the group.
        std::fs::create_dir(state.join(GUEST_DIR)).unwrap();
        std::fs::set_permissions(
            state.join(GUEST_DIR),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        for (name, mode) in [("vmlinux", 0o644), ("initrd.img", 0o664)] {
            let path = state.join(GUEST_DIR).join(name);
            std::fs::write(&path, b"x").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }

        let tightened = prepare_state_dir(&state, me, &socket).unwrap();
        let paths: Vec<(PathBuf, u32, u32)> = tightened
            .iter()
            .map(|t| (t.path.clone(), t.from, t.to))
            .collect();
        assert_eq!(
            paths,
            vec![
                (state.join(DB_FILE), 0o644, 0o600),
                (state.join("guest/initrd.img"), 0o664, 0o644),
                (state.join("vms"), 0o755, 0o700),
                (state.join("vms/abc"), 0o755, 0o700),
            ]
        );
        assert_eq!(
            mode(&state.join("vms/abc/console.log")),
            0o644,
            "depth 3 untouched"
        );
        assert_eq!(mode(&socket), 0o660, "the socket is skipped");
        assert_eq!(
            mode(&state.join("guest/vmlinux")),
            0o644,
            "the default kernel stays readable by the VMM user"
        );

        std::os::unix::fs::symlink("/etc", state.join("images/x")).unwrap();
        let err = prepare_state_dir(&state, me, &socket).unwrap_err();
        assert!(
            err.to_string().contains(&format!(
                "{} is a symbolic link (the top levels of the state dir hold none); remove it",
                state.join("images/x").display()
            )),
            "{err}"
        );
    }
}
