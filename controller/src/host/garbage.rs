//! Finding this daemon's VMM processes by their command line, and removing the VMM
//! processes and VM directories of this daemon that no known VM owns (network garbage:
//! [`crate::host::net::vm::list_net_garbage`]). The same rule finds a known VM's VMM
//! when its handles do not name it (a launch interrupted before it was recorded):
//! [`find_vmms_of`], used by the VM's shutdown.
//!
//! # Which processes are ours
//! A VMM carries its VM's uid marker ([`process::uid_marker`], `banger-<uid>`) as one
//! whole argument (QEMU `-name`, Firecracker `--id`), and its command line names files
//! in its VM directory, below the daemon's state directory. A process counts as a stray
//! VMM of *this* daemon only when both hold: an argument is exactly `banger-<uid>` with
//! a valid uid unknown to the store, **and** an argument mentions the state directory
//! as a path (followed by `/`, `,` or the end of the argument). Several daemons may
//! share a machine, each with its own state directory; their VMMs never match. A path
//! that merely contains `banger-…` (say `/tmp/banger-ab/state`) is not a marker,
//! because the marker must be the whole argument.
//!
//! # Which directories are ours
//! Entries of `<state_dir>/vms` that are real directories (not symlinks) named like a
//! uid ([`ObjectUid`]) that is not known.
//!
//! The stores' own collection (the image store, the prepared disks) shares
//! [`changed_within`] and [`read_dir_or_empty`] from here.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::host::names::ObjectUid;
use crate::host::process::{self, ProcessError, ProcessIdentity};
use crate::host::safe_path;

/// Whether `path` changed less than `grace` ago. An age that cannot be read counts as
/// recent: garbage collection keeps what it cannot date. Blocking.
pub fn changed_within(path: &Path, grace: Duration) -> bool {
    std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_none_or(|age| age < grace)
}

/// The entries of `dir`; none when it does not exist. Blocking.
pub fn read_dir_or_empty(dir: &Path) -> io::Result<Vec<std::fs::DirEntry>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// How long a stray VMM gets after SIGTERM, then after SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);
const KILL_GRACE: Duration = Duration::from_secs(5);
/// Longest command line shown in a garbage item's detail.
const CMDLINE_SHOWN: usize = 200;

/// Why a stray object could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum GarbageError {
    /// Reading or signalling the process failed.
    #[error("pid {pid}: {source}")]
    Process {
        /// The pid.
        pid: i32,
        /// What failed.
        #[source]
        source: ProcessError,
    },
    /// The name is not a pid, or not a uid-named directory.
    #[error("{name:?} is not {expected}")]
    BadName {
        /// The rejected name.
        name: String,
        /// What it should have been.
        expected: &'static str,
    },
    /// The directory path failed the state-directory check.
    #[error(transparent)]
    UnsafePath(#[from] safe_path::UnsafePath),
    /// Removing the directory failed.
    #[error("remove {path}: {source}")]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A process carrying banger's marker for an unknown uid and this daemon's state dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrayVmm {
    /// The process.
    pub identity: ProcessIdentity,
    /// The uid of its marker.
    pub uid: ObjectUid,
    /// Its command line, arguments joined by spaces (shortened for display).
    pub cmdline: String,
}

/// A VM directory below `<state_dir>/vms` of no known VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrayVmDir {
    /// The uid the directory is named after.
    pub uid: ObjectUid,
    /// Its full path.
    pub path: PathBuf,
}

/// Pure: the uid of the first argument that is exactly `banger-<uid>` (a valid uid).
pub fn marker_uid(args: &[OsString]) -> Option<ObjectUid> {
    let prefix = process::uid_marker("");
    args.iter().find_map(|arg| {
        arg.to_str()
            .and_then(|a| a.strip_prefix(prefix.as_str()))
            .and_then(|uid| ObjectUid::parse(uid).ok())
    })
}

/// Pure: whether an argument mentions `dir` as a path: its bytes at the start of the
/// argument or after `=`, `,` or `:`, and followed by `/`, `,` or the end of the
/// argument (so `/s/state` matches `file=/s/state/vms/a/root` but not `/s/state2/x`
/// nor `/t/s/state/x`).
pub fn mentions_dir(args: &[OsString], dir: &Path) -> bool {
    let needle = dir.as_os_str().as_bytes();
    let needle = match needle.strip_suffix(b"/") {
        Some(n) if !n.is_empty() => n,
        _ => needle,
    };
    if needle.is_empty() {
        return false;
    }
    args.iter().any(|arg| {
        let hay = arg.as_bytes();
        (0..hay.len())
            .filter(|&i| hay[i..].starts_with(needle))
            .filter(|&i| i == 0 || matches!(hay[i - 1], b'=' | b',' | b':'))
            .any(|i| matches!(hay.get(i + needle.len()), None | Some(b'/') | Some(b',')))
    })
}

/// Pure: the uid a process's command line makes it a stray VMM of this daemon for, if
/// any (see the module docs).
pub fn stray_vmm_uid(
    args: &[OsString],
    state_dir: &Path,
    known: &BTreeSet<String>,
) -> Option<ObjectUid> {
    let uid = marker_uid(args)?;
    (!known.contains(uid.as_str()) && mentions_dir(args, state_dir)).then_some(uid)
}

fn shown_cmdline(args: &[OsString]) -> String {
    let joined = args
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    match joined.char_indices().nth(CMDLINE_SHOWN) {
        Some((cut, _)) => format!("{}…", &joined[..cut]),
        None => joined,
    }
}

/// Live processes (this one excluded, zombies excluded) that are stray VMMs of the
/// daemon with `state_dir`, by pid. A relative `state_dir` finds none: a relative path
/// on a command line cannot tell one daemon's directory from another's.
pub fn find_stray_vmms(state_dir: &Path, known: &BTreeSet<String>) -> Vec<StrayVmm> {
    find_vmms(state_dir, |uid| !known.contains(uid.as_str()))
}

/// Live VMMs of the daemon with `state_dir` (an argument exactly `banger-<uid>` and an
/// argument naming the state directory) whose uid `select` accepts, by pid.
fn find_vmms(state_dir: &Path, select: impl Fn(&ObjectUid) -> bool) -> Vec<StrayVmm> {
    if !state_dir.is_absolute() {
        tracing::warn!(state_dir = %state_dir.display(), "the state directory is relative; VMMs cannot be told apart by it and are not looked for");
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let own = std::process::id();
    let mut found: Vec<StrayVmm> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|pid| u32::try_from(*pid).ok() != Some(own))
        .filter_map(|pid| {
            let args = process::read_cmdline(pid).ok().flatten()?;
            let uid = marker_uid(&args)?;
            if !select(&uid) || !mentions_dir(&args, state_dir) {
                return None;
            }
            let stat = process::read_stat(pid).ok().flatten()?;
            if stat.is_exited() {
                return None;
            }
            Some(StrayVmm {
                identity: ProcessIdentity {
                    pid,
                    start_time: stat.start_time,
                },
                uid,
                cmdline: shown_cmdline(&args),
            })
        })
        .collect();
    found.sort_by_key(|s| s.identity.pid);
    found
}

/// The live VMMs of VM `uid` of the daemon with `state_dir` (the gc rule above, for one
/// known uid), scanned on the blocking pool. A process whose arguments merely contain
/// `banger-<uid>` (an admin's `tail -F …/banger-<uid>/…`) is not one.
pub async fn find_vmms_of(state_dir: &Path, uid: &ObjectUid) -> Vec<ProcessIdentity> {
    let (state_dir, uid) = (state_dir.to_path_buf(), uid.clone());
    tokio::task::spawn_blocking(move || {
        find_vmms(&state_dir, |u| *u == uid)
            .into_iter()
            .map(|v| v.identity)
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// Stops the stray VMM with this pid, after checking again that it carries the marker
/// of `uid` and mentions `state_dir` (a pid that no longer does is left alone: `Ok`).
/// SIGTERM, then SIGKILL, each bounded; signals go through a pidfd.
pub async fn stop_stray_vmm(pid: &str, uid: &str, state_dir: &Path) -> Result<(), GarbageError> {
    let pid: i32 = pid.parse().map_err(|_| GarbageError::BadName {
        name: pid.to_string(),
        expected: "a pid",
    })?;
    let err = |source| GarbageError::Process { pid, source };
    if !state_dir.is_absolute() {
        return Ok(());
    }
    let Some(args) = process::read_cmdline(pid).map_err(err)? else {
        return Ok(());
    };
    let still_stray =
        marker_uid(&args).is_some_and(|u| u.as_str() == uid) && mentions_dir(&args, state_dir);
    if !still_stray {
        return Ok(());
    }
    let Some(identity) = ProcessIdentity::of_pid(pid).map_err(err)? else {
        return Ok(());
    };
    process::terminate(&identity, &process::uid_marker(uid), TERM_GRACE, KILL_GRACE)
        .await
        .map_err(err)?;
    Ok(())
}

/// Real directories in `<state_dir>/vms` named like a uid that is not known, by name.
/// A missing `vms` directory has none.
pub fn find_stray_vm_dirs(
    state_dir: &Path,
    known: &BTreeSet<String>,
) -> std::io::Result<Vec<StrayVmDir>> {
    let vms = state_dir.join("vms");
    let entries = match std::fs::read_dir(&vms) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(uid) = entry
            .file_name()
            .to_str()
            .and_then(|n| ObjectUid::parse(n).ok())
        else {
            continue;
        };
        if known.contains(uid.as_str()) || !entry.file_type()?.is_dir() {
            continue;
        }
        found.push(StrayVmDir {
            path: entry.path(),
            uid,
        });
    }
    found.sort_by(|a, b| a.uid.cmp(&b.uid));
    Ok(found)
}

/// Removes `<state_dir>/vms/<name>` (a uid-named directory) and everything in it;
/// already gone is `Ok`. Symlinks below the state directory are refused.
pub fn remove_stray_vm_dir(state_dir: &Path, name: &str) -> Result<(), GarbageError> {
    let uid = ObjectUid::parse(name).map_err(|_| GarbageError::BadName {
        name: name.to_string(),
        expected: "a uid-named VM directory",
    })?;
    let path = state_dir.join("vms").join(uid.as_str());
    safe_path::check_below(state_dir, &path)?;
    match std::fs::remove_dir_all(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(GarbageError::Remove { path, source }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn known(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_marker_must_be_a_whole_argument_with_a_valid_uid() {
        assert_eq!(
            marker_uid(&args(&["qemu", "-name", "banger-abc123"])).map(|u| u.to_string()),
            Some("abc123".into())
        );
        assert_eq!(marker_uid(&args(&["qemu", "/tmp/banger-abc/state"])), None);
        assert_eq!(marker_uid(&args(&["qemu", "banger-XYZ"])), None);
        assert_eq!(marker_uid(&args(&["qemu", "banger-"])), None);
        assert_eq!(marker_uid(&args(&["banger", "daemon"])), None);
    }

    #[test]
    fn the_state_dir_must_be_mentioned_as_a_path() {
        let dir = Path::new("/s/state");
        assert!(mentions_dir(
            &args(&["-pidfile", "/s/state/vms/a/qemu.pid"]),
            dir
        ));
        assert!(mentions_dir(
            &args(&["file=/s/state/vms/a/root,format=raw"]),
            dir
        ));
        assert!(mentions_dir(&args(&["sh", "/s/state"]), dir));
        assert!(mentions_dir(
            &args(&["sh", "/s/state"]),
            Path::new("/s/state/")
        ));
        assert!(!mentions_dir(&args(&["sh", "/s/state2/vms/a"]), dir));
        assert!(!mentions_dir(&args(&["sh", "/other/vms/a"]), dir));
        assert!(!mentions_dir(&args(&["sh", "/t/s/state/vms/a"]), dir));
        assert!(mentions_dir(&args(&["path=/s/state/vms/a/qmp.sock"]), dir));
        assert!(mentions_dir(
            &args(&["a,path=/s/state/vms/a/qmp.sock"]),
            dir
        ));
        assert!(!mentions_dir(&args(&["sh", "/s/state"]), Path::new("")));
    }

    #[test]
    fn a_stray_vmm_has_an_unknown_marker_and_this_state_dir() {
        let dir = Path::new("/s/state");
        let vmm = args(&[
            "qemu",
            "-name",
            "banger-abc",
            "-pidfile",
            "/s/state/vms/abc/p",
        ]);
        assert_eq!(
            stray_vmm_uid(&vmm, dir, &known(&[])).map(|u| u.to_string()),
            Some("abc".into())
        );
        assert_eq!(stray_vmm_uid(&vmm, dir, &known(&["abc"])), None);
        assert_eq!(
            stray_vmm_uid(&vmm, Path::new("/t/state"), &known(&[])),
            None
        );
        let unmarked = args(&["qemu", "-pidfile", "/s/state/vms/abc/p"]);
        assert_eq!(stray_vmm_uid(&unmarked, dir, &known(&[])), None);
    }

    #[test]
    fn stray_vm_dirs_are_unknown_uid_named_real_directories() {
        let state = tempfile::tempdir().unwrap();
        let vms = state.path().join("vms");
        assert!(find_stray_vm_dirs(state.path(), &known(&[]))
            .unwrap()
            .is_empty());
        for d in ["aaaa", "bbbb", "not-a-uid!", "Images"] {
            std::fs::create_dir_all(vms.join(d)).unwrap();
        }
        std::fs::write(vms.join("cccc"), b"file").unwrap();
        std::os::unix::fs::symlink("/etc", vms.join("dddd")).unwrap();
        let found = find_stray_vm_dirs(state.path(), &known(&["aaaa"])).unwrap();
        assert_eq!(
            found,
            vec![StrayVmDir {
                uid: ObjectUid::parse("bbbb").unwrap(),
                path: vms.join("bbbb"),
            }]
        );
        std::fs::write(vms.join("bbbb/root.ext4"), b"x").unwrap();
        remove_stray_vm_dir(state.path(), "bbbb").unwrap();
        assert!(!vms.join("bbbb").exists());
        remove_stray_vm_dir(state.path(), "bbbb").unwrap();
        assert!(remove_stray_vm_dir(state.path(), "../x").is_err());
        assert!(remove_stray_vm_dir(state.path(), "dddd").is_err());
        assert!(vms.join("dddd").symlink_metadata().is_ok(), "symlink kept");
        assert!(vms.join("aaaa").is_dir());
    }

    /// A VM's shutdown finds its VMM by gc's rule: the marker as a whole argument and
    /// this daemon's state directory. An admin's `tail -F` of a file named after the VM,
    /// or another daemon's VMM of the same uid, is never one.
    #[tokio::test]
    async fn find_vmms_of_matches_only_this_daemons_vmm_of_the_uid() {
        let state = tempfile::tempdir().unwrap();
        let uid = ObjectUid::parse(&format!("f1d{:x}", std::process::id())).unwrap();
        let marker = process::uid_marker(uid.as_str());
        let own_file = format!("{}/vms/{uid}/qemu.pid", state.path().display());
        // `sh -c SCRIPT NAME ARG`: NAME and ARG stay on the command line while sh waits
        // on its stdin (a pipe we hold) with a builtin, never forking.
        let spawn = |name: &str, arg: &str| {
            std::process::Command::new("sh")
                .args(["-c", "read line", name, arg])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let mut vmm = spawn(&marker, &own_file);
        let mut tail = spawn("tail", &format!("/var/log/{marker}.log"));
        let mut tail_in_state = spawn("tail", &format!("{own_file}.{marker}"));
        let mut other_daemon = spawn(&marker, "/elsewhere/state/vms/x/qemu.pid");
        let vmm_pid = i32::try_from(vmm.id()).unwrap();
        // Right after fork a child still shows the test's command line: poll (bounded).
        let mut found = Vec::new();
        for _ in 0..500 {
            found = find_vmms_of(state.path(), &uid).await;
            if found.iter().any(|p| p.pid == vmm_pid) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        for child in [&mut vmm, &mut tail, &mut tail_in_state, &mut other_daemon] {
            let _ = child.kill();
            let _ = child.wait();
        }
        let pids: Vec<i32> = found.iter().map(|p| p.pid).collect();
        assert_eq!(pids, vec![vmm_pid], "{found:?}");
    }
}
