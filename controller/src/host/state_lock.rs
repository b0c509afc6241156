//! One daemon per state directory: an exclusive `flock` on `<state>/daemon.lock`, held
//! for the daemon's lifetime, with the holder's pid written inside. A second daemon on
//! the same state directory (whatever its socket) fails at start with a message naming
//! the holder, instead of reconciling the same VMs twice.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// The lock file's name inside the state directory.
pub const LOCK_FILE: &str = "daemon.lock";

/// Why the state directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum StateLockError {
    /// Another daemon holds it.
    #[error("state dir {dir} is in use by another banger daemon (pid {holder}); stop it first, or give this one another --state-dir")]
    Held {
        /// The state directory.
        dir: String,
        /// The pid the holder wrote, or `unknown`.
        holder: String,
    },
    /// The lock file could not be opened, locked or written.
    #[error("state dir {dir}: lock {path}: {source}")]
    Io {
        /// The state directory.
        dir: String,
        /// The lock file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The held lock; released when dropped (and by the kernel when the process dies).
#[derive(Debug)]
pub struct StateLock {
    _lock: Flock<File>,
}

/// Takes the state directory's lock without waiting. Blocking (file I/O): call it
/// before serving, or on the blocking pool.
pub fn lock_state_dir(dir: &Path) -> Result<StateLock, StateLockError> {
    let path = dir.join(LOCK_FILE);
    let io = |source: std::io::Error| StateLockError::Io {
        dir: dir.display().to_string(),
        path: path.clone(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(io)?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(StateLockError::Held {
                dir: dir.display().to_string(),
                holder: if holder.is_empty() {
                    "unknown".into()
                } else {
                    holder.to_string()
                },
            });
        }
        Err((_, errno)) => return Err(io(std::io::Error::from(errno))),
    };
    lock.set_len(0).map_err(io)?;
    lock.seek(SeekFrom::Start(0)).map_err(io)?;
    writeln!(lock, "{}", std::process::id()).map_err(io)?;
    lock.flush().map_err(io)?;
    Ok(StateLock { _lock: lock })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_a_released_lock_can_be_taken() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_state_dir(dir.path()).unwrap();
        let err = lock_state_dir(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("in use by another banger daemon"), "{msg}");
        drop(first);
        let _again = lock_state_dir(dir.path()).unwrap();
    }
}
