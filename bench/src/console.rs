//! Watching a guest's serial console log for a line, and when it appeared.
//!
//! The guest kit's init prints `BANGER-GUEST-READY` once its SSH server listens on
//! port 22 (it checks `/proc/net/tcp` every 50 ms). The harness polls the console log
//! file (every 2 ms, reading only new bytes) and takes the moment the marker shows up
//! as "the guest is ready": the same signal for a banger VM and for bare QEMU, and
//! free of the host's ARP timing, which a TCP probe from the host would add.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{BenchError, Result};
use crate::poll;

/// What the guest kit prints when the guest is ready.
pub const READY_MARKER: &str = "BANGER-GUEST-READY";
/// What the guest kit's init prints when it powers off.
pub const POWEROFF_LINE: &str = "banger-init: poweroff";

/// Incremental search for a marker in a growing file.
#[derive(Debug)]
pub struct MarkerWatch {
    path: PathBuf,
    marker: Vec<u8>,
    offset: u64,
    carry: Vec<u8>,
}

impl MarkerWatch {
    /// Watches `path` from byte `from`.
    pub fn new(path: &Path, marker: &str, from: u64) -> MarkerWatch {
        MarkerWatch {
            path: path.to_path_buf(),
            marker: marker.as_bytes().to_vec(),
            offset: from,
            carry: Vec::new(),
        }
    }

    /// Reads what was appended; whether the marker has appeared. A missing file is "not
    /// yet".
    pub fn poll(&mut self) -> Result<bool> {
        let mut f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(BenchError::io("open", &self.path)(e)),
        };
        f.seek(SeekFrom::Start(self.offset))
            .map_err(BenchError::io("seek", &self.path))?;
        let mut new = Vec::new();
        f.read_to_end(&mut new)
            .map_err(BenchError::io("read", &self.path))?;
        self.offset += new.len() as u64;
        let mut hay = std::mem::take(&mut self.carry);
        hay.extend_from_slice(&new);
        if contains(&hay, &self.marker) {
            return Ok(true);
        }
        let keep = self.marker.len().saturating_sub(1).min(hay.len());
        self.carry = hay[hay.len() - keep..].to_vec();
        Ok(false)
    }

    /// Polls (bounded) until the marker appears; returns when it was seen.
    pub fn wait(&mut self, timeout: Duration) -> Result<SystemTime> {
        let what = format!(
            "{:?} in {}",
            String::from_utf8_lossy(&self.marker),
            self.path.display()
        );
        poll::until(&what, timeout, Duration::from_millis(2), || {
            Ok(self.poll()?.then(SystemTime::now))
        })
    }
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn finds_a_marker_split_across_polls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("console.log");
        let mut w = MarkerWatch::new(&path, READY_MARKER, 0);
        assert!(!w.poll().expect("missing file is not yet"));
        let mut f = File::create(&path).expect("create");
        f.write_all(b"boot...\nBANGER-GUEST").expect("write");
        assert!(!w.poll().expect("poll"));
        f.write_all(b"-READY\n").expect("write");
        assert!(w.poll().expect("poll"));
    }

    #[test]
    fn ignores_what_came_before_the_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("console.log");
        std::fs::write(&path, "BANGER-GUEST-READY\n").expect("write");
        let len = std::fs::metadata(&path).expect("meta").len();
        let mut w = MarkerWatch::new(&path, READY_MARKER, len);
        assert!(!w.poll().expect("poll"));
        assert!(w.wait(Duration::from_millis(20)).is_err());
    }
}
