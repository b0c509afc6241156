//! May this user read that path? Asked of the kernel by a process that *is* the user.
//!
//! The daemon runs as root, so its own `access(2)` or `open(2)` says nothing about what
//! a client may read (root passes every permission check), and `faccessat` with
//! `AT_EACCESS` in a thread still runs with root's capabilities. [`readable_as`]
//! therefore forks a child that drops to the client's supplementary groups, gid and uid
//! (`setgroups`, `setresgid`, `setresuid`: from root to another uid the kernel also
//! clears every capability), then asks `access(2)` for each path: read permission for a
//! file, read and search permission for a directory, with every directory on the way
//! searched as the client. The kernel's answer (mode bits, ACLs, the path's
//! directories) is the client's. Nothing is opened, so a FIFO or a device node cannot
//! block the check or notice it.
//!
//! The child only makes system calls (no allocation, no locks) between `fork` and
//! `_exit`, as a child of a multi-threaded process must; its answers come back over a
//! pipe, one errno per path. It refuses every path when a credential change fails:
//! it never answers with root's view.
//!
//! This is a check at one moment: a path its owner changes later (a symbolic link
//! pointed elsewhere) is not re-checked here.

use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::peer::Credentials;

/// What the client must be able to do with a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// Read a file.
    ReadFile,
    /// List and enter a directory (read and search permission).
    ReadDir,
}

impl Wanted {
    fn access_mode(self) -> libc::c_int {
        match self {
            Wanted::ReadFile => libc::R_OK,
            Wanted::ReadDir => libc::R_OK | libc::X_OK,
        }
    }
}

/// Why the check itself could not run (distinct from a path being refused).
#[derive(Debug, thiserror::Error)]
pub enum ReadAsError {
    /// A path holds a NUL byte: no process can open it.
    #[error("{path}: a path with a NUL byte")]
    NulInPath {
        /// The path, lossily printed.
        path: String,
    },
    /// The pipe, the fork or the wait failed.
    #[error("checking paths as uid {uid}: {step}: {source}")]
    Io {
        /// The client's uid.
        uid: u32,
        /// Which step.
        step: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The child did not answer for every path (it died or could not change identity).
    #[error("checking paths as uid {uid}: {message}")]
    Child {
        /// The client's uid.
        uid: u32,
        /// What went wrong.
        message: String,
    },
}

/// The kernel's answer for each `(path, wanted)` when asked by a process with
/// `credentials`, in order: `Ok(())`, or the error `access(2)` gave (e.g.
/// `PermissionDenied`, `NotFound`).
///
/// Blocking (fork, pipe, wait): call it on the blocking pool. The caller must be root,
/// or `credentials` its own, for the child to take them on.
pub fn readable_as(
    credentials: &Credentials,
    paths: &[(PathBuf, Wanted)],
) -> Result<Vec<io::Result<()>>, ReadAsError> {
    let uid = credentials.uid;
    let io_err =
        |step: &'static str| move |source: io::Error| ReadAsError::Io { uid, step, source };
    // Everything the child uses is prepared before the fork.
    let c_paths = paths
        .iter()
        .map(|(p, w)| {
            CString::new(p.as_os_str().as_bytes())
                .map(|c| (c, w.access_mode()))
                .map_err(|_| ReadAsError::NulInPath {
                    path: p.display().to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let groups: Vec<libc::gid_t> = credentials.groups.clone();
    let gid: libc::gid_t = credentials.gid;
    let switch = !is_current(credentials);
    let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| io_err("pipe")(io::Error::from(e)))?;

    // SAFETY: the child runs only async-signal-safe system calls on memory prepared
    // above (`child_checks`) and leaves with `_exit`; it never returns into Rust code
    // of this process, so no lock or allocator state copied by the fork is touched.
    let fork = unsafe { nix::unistd::fork() };
    match fork.map_err(|e| io_err("fork")(io::Error::from(e)))? {
        nix::unistd::ForkResult::Child => {
            drop(reader);
            child_checks(&writer, switch.then_some((&groups[..], gid, uid)), &c_paths)
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(writer);
            let mut answer = Vec::new();
            let read = std::fs::File::from(reader).read_to_end(&mut answer);
            let waited = nix::sys::wait::waitpid(child, None);
            read.map_err(io_err("read the answers"))?;
            waited.map_err(|e| io_err("wait")(io::Error::from(e)))?;
            decode(uid, &answer, paths.len())
        }
    }
}

/// The answers as written by the child: one native-endian `i32` errno per path (0: may).
fn decode(uid: u32, answer: &[u8], count: usize) -> Result<Vec<io::Result<()>>, ReadAsError> {
    const WIDTH: usize = std::mem::size_of::<i32>();
    if answer.len() != count * WIDTH {
        return Err(ReadAsError::Child {
            uid,
            message: "could not take on the client's identity (no answer for every path)".into(),
        });
    }
    Ok(answer
        .chunks_exact(WIDTH)
        .map(|chunk| {
            let mut bytes = [0u8; WIDTH];
            bytes.copy_from_slice(chunk);
            match i32::from_ne_bytes(bytes) {
                0 => Ok(()),
                errno => Err(io::Error::from_raw_os_error(errno)),
            }
        })
        .collect())
}

/// Whether `credentials` are this process's own (then no identity change is needed,
/// and none is possible without root).
fn is_current(credentials: &Credentials) -> bool {
    let mut current: Vec<u32> = match nix::unistd::getgroups() {
        Ok(groups) => groups.iter().map(|g| g.as_raw()).collect(),
        Err(_) => return false,
    };
    let mut wanted = credentials.groups.clone();
    current.sort_unstable();
    current.dedup();
    wanted.sort_unstable();
    wanted.dedup();
    nix::unistd::geteuid().as_raw() == credentials.uid
        && nix::unistd::getuid().as_raw() == credentials.uid
        && nix::unistd::getegid().as_raw() == credentials.gid
        && nix::unistd::getgid().as_raw() == credentials.gid
        && current == wanted
}

/// The child's whole life: become the client (`identity`: groups, gid, uid; `None`
/// when it is already), ask, answer, exit. Only system calls.
fn child_checks(
    out: &OwnedFd,
    identity: Option<(&[libc::gid_t], libc::gid_t, libc::uid_t)>,
    paths: &[(CString, libc::c_int)],
) -> ! {
    let fd = out.as_raw_fd();
    // SAFETY: raw system calls on values prepared before the fork: `groups` is a live
    // slice of `groups.len()` gids, each path a NUL-terminated CString, `fd` our pipe's
    // open write end. Identity changes are checked; on any failure the child exits
    // without answering, which the parent reports as an error. `_exit` never returns.
    unsafe {
        if let Some((groups, gid, uid)) = identity {
            let became = libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) == 0
                && libc::syscall(libc::SYS_setresgid, gid, gid, gid) == 0
                && libc::syscall(libc::SYS_setresuid, uid, uid, uid) == 0;
            if !became {
                libc::_exit(1);
            }
        }
        for (path, mode) in paths {
            let errno: i32 = if libc::access(path.as_ptr(), *mode) == 0 {
                0
            } else {
                *libc::__errno_location()
            };
            let bytes = errno.to_ne_bytes();
            let mut written = 0;
            while written < bytes.len() {
                let n = libc::write(fd, bytes[written..].as_ptr().cast(), bytes.len() - written);
                if n <= 0 {
                    libc::_exit(1);
                }
                written += n.unsigned_abs();
            }
        }
        libc::_exit(0)
    }
}

/// A path as a client named it, for messages.
pub fn describe_refusal(path: &Path, wanted: Wanted, error: &io::Error) -> String {
    let what = match wanted {
        Wanted::ReadFile => "read",
        Wanted::ReadDir => "list",
    };
    match error.kind() {
        io::ErrorKind::PermissionDenied => {
            format!("{}: you may not {what} it", path.display())
        }
        io::ErrorKind::NotFound => format!("{}: not found", path.display()),
        _ => format!("{}: {error}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn me() -> Credentials {
        Credentials {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            groups: nix::unistd::getgroups()
                .unwrap()
                .iter()
                .map(|g| g.as_raw())
                .collect(),
        }
    }

    /// As this process's own user (root or not), the child agrees with the mode bits
    /// for an owner: a file read, a missing one not found, a directory listed.
    #[test]
    fn the_kernel_answers_for_each_path_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kernel");
        std::fs::write(&file, b"k").unwrap();
        let answers = readable_as(
            &me(),
            &[
                (file.clone(), Wanted::ReadFile),
                (dir.path().join("missing"), Wanted::ReadFile),
                (dir.path().to_path_buf(), Wanted::ReadDir),
            ],
        )
        .unwrap();
        assert_eq!(answers.len(), 3);
        assert!(answers[0].is_ok(), "{:?}", answers[0]);
        assert_eq!(
            answers[1].as_ref().unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert!(answers[2].is_ok(), "{:?}", answers[2]);
        assert!(readable_as(&me(), &[]).unwrap().is_empty());
    }

    /// Root's view is never the answer: as an unprivileged uid, a root-only file is
    /// refused even though the caller (root) could read it.
    #[test]
    #[ignore = "needs root (takes on another uid)"]
    fn another_uid_gets_its_own_answer_not_roots() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let secret = dir.path().join("secret");
        let public = dir.path().join("public");
        std::fs::write(&secret, b"s").unwrap();
        std::fs::write(&public, b"p").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644)).unwrap();
        let nobody = Credentials {
            uid: 65534,
            gid: 65534,
            groups: vec![],
        };
        let answers = readable_as(
            &nobody,
            &[
                (secret.clone(), Wanted::ReadFile),
                (public.clone(), Wanted::ReadFile),
            ],
        )
        .unwrap();
        assert_eq!(
            answers[0].as_ref().unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
        assert!(answers[1].is_ok(), "{:?}", answers[1]);
        // A group that may read: the file's group is in the supplementary list.
        std::os::unix::fs::chown(&secret, None, Some(4242)).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
        let member = Credentials {
            groups: vec![4242],
            ..nobody
        };
        let answers = readable_as(&member, &[(secret, Wanted::ReadFile)]).unwrap();
        assert!(answers[0].is_ok(), "{:?}", answers[0]);
    }

    #[test]
    fn a_nul_byte_is_refused_before_forking() {
        let bad = PathBuf::from(std::ffi::OsStr::from_bytes(b"/tmp/a\0b"));
        let err = readable_as(&me(), &[(bad, Wanted::ReadFile)]).unwrap_err();
        assert!(matches!(err, ReadAsError::NulInPath { .. }), "{err}");
    }

    #[test]
    fn refusals_name_the_path_and_what_was_wanted() {
        let denied = io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(
            describe_refusal(Path::new("/root/k"), Wanted::ReadFile, &denied),
            "/root/k: you may not read it"
        );
        assert_eq!(
            describe_refusal(Path::new("/srv/repo"), Wanted::ReadDir, &denied),
            "/srv/repo: you may not list it"
        );
        let missing = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(
            describe_refusal(Path::new("/x"), Wanted::ReadFile, &missing),
            "/x: not found"
        );
    }
}
