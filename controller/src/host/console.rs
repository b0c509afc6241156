//! A VM's serial console log, kept within a fixed size.
//!
//! The VMM appends the guest's serial console to `<vm_dir>/console.log` (QEMU's file
//! chardev with `append=on`, Firecracker's stdout opened `O_APPEND`) and keeps writing
//! while the daemon is down. A guest printing in a loop must not fill the state
//! filesystem, so the runtime rotates the log by copy-and-truncate
//! ([`rotate_if_larger`]) once it passes [`CONSOLE_CAP`]: its content moves to
//! `console.log.1` (replacing the previous one) and `console.log` is truncated to zero;
//! the VMM's next append lands at the new end. At most about twice the cap is kept per
//! VM. Bytes the guest writes between the copy and the truncation (microseconds) are
//! lost; readers of the log (`banger logs`, readiness) treat a log shorter than their
//! offset as rotated and start over.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The size past which a console log is rotated (2 MiB).
pub const CONSOLE_CAP: u64 = 2 * 1024 * 1024;

/// The rotated copy of a console log: `console.log.1`.
pub fn rotated_path(log: &Path) -> PathBuf {
    let mut name = log.file_name().unwrap_or_default().to_os_string();
    name.push(".1");
    log.with_file_name(name)
}

/// Rotates `log` when it is larger than `cap`: copies it to [`rotated_path`] (through a
/// temporary file and a rename) and truncates it. Returns whether it rotated. A log
/// that does not exist is not an error. Blocking.
pub fn rotate_if_larger(log: &Path, cap: u64) -> io::Result<bool> {
    let mut file = match std::fs::OpenOptions::new().read(true).write(true).open(log) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if file.metadata()?.len() <= cap {
        return Ok(false);
    }
    let rotated = rotated_path(log);
    let mut tmp_name = rotated.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = rotated.with_file_name(tmp_name);
    {
        let mut copy = std::fs::File::create(&tmp)?;
        file.seek(SeekFrom::Start(0))?;
        io::copy(&mut (&mut file).take(u64::MAX), &mut copy)?;
    }
    std::fs::rename(&tmp, &rotated)?;
    file.set_len(0)?;
    Ok(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_log_past_the_cap_moves_to_dot_one_and_appends_start_over() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        assert!(!rotate_if_larger(&log, 10).unwrap(), "no log yet");
        // An appending writer, as the VMM is.
        let mut vmm = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        vmm.write_all(b"0123456789").unwrap();
        assert!(!rotate_if_larger(&log, 10).unwrap(), "at the cap");
        vmm.write_all(b"abc").unwrap();
        assert!(rotate_if_larger(&log, 10).unwrap());
        assert_eq!(std::fs::read(rotated_path(&log)).unwrap(), b"0123456789abc");
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
        vmm.write_all(b"next").unwrap();
        assert_eq!(
            std::fs::read(&log).unwrap(),
            b"next",
            "appended at the new end"
        );
        assert_eq!(rotated_path(&log), dir.path().join("console.log.1"));
    }
}
