//! Guest readiness (`GuestReady`): is the guest really up, not just its VMM?
//!
//! Two probes, chosen per Image (`spec.readiness`):
//!
//! - [`tcp_ready`]: a TCP connect to the guest's port (default 22, SSH) succeeds within
//!   a timeout;
//! - [`ConsoleWatch`]: a line of the serial console log contains a marker. The console
//!   log is appended across boots, so a watch starts at the offset the log had when the
//!   VM was launched ([`console_len`]) and never matches an earlier boot's marker. It
//!   reads only the new bytes on each poll, at most [`MAX_READ_PER_POLL`] of them, and
//!   keeps its place between polls (the caller keeps the watch), so a marker printed
//!   after any amount of output is found. A log shorter than the watch's offset was
//!   rotated ([`crate::host::console`]): the watch then reads the rotated copy, once,
//!   and the log from its start.
//!
//! A guest that powered off while its VMM lives on is not "not ready" but exited: the
//! driver's probe reports it as [`crate::driver::Liveness::GuestHalted`].

use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The most console bytes one [`ConsoleWatch::poll`] reads.
pub const MAX_READ_PER_POLL: u64 = 4 * 1024 * 1024;

/// Errors of readiness probing, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ReadinessError {
    /// The console log could not be read.
    #[error("console log {path}: {source}")]
    Console {
        /// Log path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
}

/// The current length of a console log (0 if it does not exist yet): record it before a
/// launch and start a [`ConsoleWatch`] there.
pub fn console_len(path: &Path) -> Result<u64, ReadinessError> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(meta.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(ReadinessError::Console {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The console output written at or after `from_offset`: its last [`MAX_READ_PER_POLL`]
/// bytes at most, as text (invalid UTF-8 replaced). Empty when the log does not exist
/// yet or was truncated below the offset. Blocking.
pub fn console_since(path: &Path, from_offset: u64) -> Result<String, ReadinessError> {
    let err = |source| ReadinessError::Console {
        path: path.to_path_buf(),
        source,
    };
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(source) => return Err(err(source)),
    };
    let len = file.metadata().map_err(err)?.len();
    // A log shorter than the offset was rotated since: what is there is newer.
    let from_offset = if from_offset > len { 0 } else { from_offset };
    let start = from_offset.max(len.saturating_sub(MAX_READ_PER_POLL));
    if start >= len {
        return Ok(String::new());
    }
    file.seek(SeekFrom::Start(start)).map_err(err)?;
    let mut bytes = Vec::new();
    file.take(len - start)
        .read_to_end(&mut bytes)
        .map_err(err)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Incremental search for a marker in a growing console log.
#[derive(Debug, Clone)]
pub struct ConsoleWatch {
    path: PathBuf,
    marker: Vec<u8>,
    offset: u64,
    /// The tail of the bytes already read, so a marker split across polls is found.
    carry: Vec<u8>,
    found: bool,
    /// The rotated copy was read (after the log was found shorter than the offset).
    read_rotated: bool,
}

impl ConsoleWatch {
    /// Watches `path` for `marker` in bytes written at or after `from_offset`.
    pub fn new(path: &Path, marker: &str, from_offset: u64) -> ConsoleWatch {
        ConsoleWatch {
            path: path.to_path_buf(),
            marker: marker.as_bytes().to_vec(),
            offset: from_offset,
            carry: Vec::new(),
            found: false,
            read_rotated: false,
        }
    }

    /// Where the watch has read to.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn scan(&mut self, fresh: &[u8]) -> bool {
        let mut window = std::mem::take(&mut self.carry);
        window.extend_from_slice(fresh);
        if window
            .windows(self.marker.len())
            .any(|w| w == self.marker.as_slice())
        {
            self.found = true;
            return true;
        }
        let keep = self.marker.len().saturating_sub(1).min(window.len());
        self.carry = window[window.len() - keep..].to_vec();
        false
    }

    /// Reads what was appended since the last poll; returns whether the marker has been
    /// seen. A log that does not exist yet or was truncated below the offset is "not yet".
    pub fn poll(&mut self) -> Result<bool, ReadinessError> {
        if self.found {
            return Ok(true);
        }
        if self.marker.is_empty() {
            self.found = true;
            return Ok(true);
        }
        let path = self.path.clone();
        let err = |source| ReadinessError::Console {
            path: path.clone(),
            source,
        };
        let mut file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(err(source)),
        };
        let len = file.metadata().map_err(err)?.len();
        if len < self.offset {
            // Rotated since the watch last read: the rotated copy (the log as it was,
            // byte for byte) holds what the watch did not read yet, from its offset on
            // (from the start if the copy is shorter: rotated more than once); then
            // the log starts over.
            let read_to = self.offset;
            self.offset = 0;
            if !self.read_rotated {
                self.read_rotated = true;
                let rotated = crate::host::console::rotated_path(&path);
                if let Ok(bytes) = std::fs::read(&rotated) {
                    let from = usize::try_from(read_to)
                        .ok()
                        .filter(|f| *f <= bytes.len())
                        .unwrap_or(0);
                    if self.scan(&bytes[from..]) {
                        return Ok(true);
                    }
                }
            }
            self.carry.clear();
        }
        if len == self.offset {
            return Ok(false);
        }
        file.seek(SeekFrom::Start(self.offset)).map_err(err)?;
        let mut fresh = Vec::new();
        let read = file
            .take(MAX_READ_PER_POLL)
            .read_to_end(&mut fresh)
            .map_err(err)?;
        self.offset += read as u64;
        Ok(self.scan(&fresh))
    }

    /// [`Self::poll`] on a thread of the blocking pool (it reads the log), for async
    /// code.
    pub async fn poll_async(&mut self) -> Result<bool, ReadinessError> {
        let mut watch = self.clone();
        let path = self.path.clone();
        let (watch, seen) = tokio::task::spawn_blocking(move || {
            let seen = watch.poll();
            (watch, seen)
        })
        .await
        .map_err(|e| ReadinessError::Console {
            path,
            source: std::io::Error::other(e),
        })?;
        *self = watch;
        seen
    }

    /// Polls every `interval` until the marker appears or `timeout` passes.
    pub async fn wait(
        &mut self,
        timeout: Duration,
        interval: Duration,
    ) -> Result<bool, ReadinessError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.poll_async().await? {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(interval.min(deadline - tokio::time::Instant::now())).await;
        }
    }
}

/// Whether a TCP connection to `addr` is accepted within `timeout`. `Err` carries why
/// not (refused, unreachable, timed out), for the condition's message.
pub async fn tcp_ready(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(e)) => Err(format!("tcp {addr}: {e}")),
        Err(_) => Err(format!("tcp {addr}: no answer within {timeout:?}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &Path, text: &str) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn finds_marker_written_in_pieces_after_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        append(&log, "old boot\r\nREADY-MARK\r\n");
        let start = console_len(&log).unwrap();
        let mut watch = ConsoleWatch::new(&log, "READY-MARK", start);
        assert!(
            !watch.poll().unwrap(),
            "the previous boot's marker does not count"
        );
        append(&log, "[    0.1] booting\r\nREA");
        assert!(!watch.poll().unwrap());
        append(&log, "DY-MA");
        assert!(!watch.poll().unwrap());
        append(&log, "RK\r\n");
        assert!(watch.poll().unwrap(), "marker split across three polls");
        assert!(watch.poll().unwrap(), "stays found");
    }

    #[test]
    fn missing_log_is_not_ready_yet() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("absent.log");
        assert_eq!(console_len(&log).unwrap(), 0);
        let mut watch = ConsoleWatch::new(&log, "X", 0);
        assert!(!watch.poll().unwrap());
        append(&log, "..X..");
        assert!(watch.poll().unwrap());
    }

    #[tokio::test]
    async fn waits_with_a_bound() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        append(&log, "nothing here\n");
        let mut watch = ConsoleWatch::new(&log, "NEVER", 0);
        assert!(!watch
            .wait(Duration::from_millis(200), Duration::from_millis(20))
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn tcp_probe() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tcp_ready(addr, Duration::from_secs(2)).await.unwrap();
        drop(listener);
        let err = tcp_ready(addr, Duration::from_secs(2)).await.unwrap_err();
        assert!(err.contains(&addr.to_string()), "{err}");
    }

    #[test]
    fn console_since_reads_only_this_launch() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        assert_eq!(console_since(&log, 0).unwrap(), "", "no log yet");
        append(&log, "old boot\nreboot: Power down\n");
        let start = console_len(&log).unwrap();
        assert_eq!(console_since(&log, start).unwrap(), "");
        append(&log, "new boot\nlogin:\n");
        assert_eq!(console_since(&log, start).unwrap(), "new boot\nlogin:\n");
        assert_eq!(
            console_since(&log, start + 1000).unwrap(),
            "old boot\nreboot: Power down\nnew boot\nlogin:\n",
            "an offset past the end: the log was rotated since, all it holds is newer"
        );
    }

    #[tokio::test]
    async fn poll_async_keeps_the_watch_state() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        let mut watch = ConsoleWatch::new(&log, "READY-MARK", 0);
        append(&log, "boot REA");
        assert!(!watch.poll_async().await.unwrap());
        append(&log, "DY-MARK\n");
        assert!(
            watch.poll_async().await.unwrap(),
            "a marker split across polls"
        );
    }

    /// A kept watch finds a marker printed after more output than one poll reads, and
    /// one printed across a rotation of the log (but not an earlier boot's).
    #[test]
    fn a_kept_watch_finds_late_markers_and_follows_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        let mut vmm = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        vmm.write_all(b"old boot: READY-MARK\n").unwrap();
        let launch = console_len(&log).unwrap();
        let mut watch = ConsoleWatch::new(&log, "READY-MARK", launch);
        let noise = vec![b'x'; usize::try_from(MAX_READ_PER_POLL).unwrap() + 4096];
        vmm.write_all(&noise).unwrap();
        vmm.write_all(b"READY-MARK\n").unwrap();
        assert!(!watch.poll().unwrap(), "first poll: only noise so far");
        assert!(watch.poll().unwrap(), "found on the next poll");

        // Rotation between polls: the unread tail is in console.log.1.
        std::fs::write(&log, b"").unwrap();
        let mut vmm = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        vmm.write_all(b"old boot: READY-MARK\n").unwrap();
        let launch = console_len(&log).unwrap();
        let mut watch = ConsoleWatch::new(&log, "READY-MARK", launch);
        vmm.write_all(b"booting... READY-").unwrap();
        assert!(!watch.poll().unwrap());
        vmm.write_all(b"MARK and more").unwrap();
        assert!(crate::host::console::rotate_if_larger(&log, 10).unwrap());
        assert!(
            watch.poll().unwrap(),
            "the split marker is read from the rotated copy"
        );

        // A watch that starts after a rotation does not take an earlier boot's marker.
        std::fs::write(&log, b"old boot: READY-MARK\nnew boot output\n").unwrap();
        let launch = 21; // just after the old boot's line
        assert!(crate::host::console::rotate_if_larger(&log, 10).unwrap());
        let mut watch = ConsoleWatch::new(&log, "READY-MARK", launch);
        assert!(
            !watch.poll().unwrap(),
            "the old boot's marker is before the launch"
        );
        let mut vmm = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        vmm.write_all(b"READY-MARK").unwrap();
        assert!(watch.poll().unwrap());
    }
}
