//! Firecracker driver: one `firecracker` process per VM, configured over its HTTP API.
//!
//! Launch: spawn `firecracker --api-sock <vm_dir>/firecracker.sock --id banger-<uid>`
//! detached (stdout and stderr appended to the VM's console log: Firecracker writes the
//! guest's serial console to its stdout), wait (bounded) for the API socket, then send
//! the calls of [`boot::boot_sequence`] in order — logger, machine config, boot source,
//! root drive, network interface, `InstanceStart`. A refusal stops the launch, kills
//! the half-configured process and surfaces Firecracker's `fault_message`.
//!
//! Probe: identity (pid + start time + the `banger-<uid>` marker on the command line),
//! then `GET /` (the instance's `state` and `id`), then the console log since this
//! launch: a guest that powered off or panicked while Firecracker stays alive (what
//! Firecracker does on x86 without a reset) is reported as [`Liveness::GuestHalted`].
//!
//! Shutdown: `SendCtrlAltDel` (Firecracker exits when the guest resets), a bounded wait,
//! then SIGTERM and SIGKILL. Succeeds if the process is already gone.
//!
//! Detection ([`detect_version`], [`is_available`]) serves `hypervisor: auto` and
//! `banger doctor`.

pub mod api;
pub mod boot;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use self::api::{ApiCall, ApiClient, ApiError};

/// The binary used when none is configured (looked up on `PATH`).
pub const DEFAULT_BINARY: &str = "firecracker";
/// File name of the API socket inside the VM's directory.
pub const API_SOCKET_FILE: &str = "firecracker.sock";
/// File name of Firecracker's own log inside the VM's directory.
pub const LOG_FILE: &str = "firecracker.log";

/// Kernel messages that mean the guest is gone while the VMM may live on.
pub const HALT_MARKERS: &[&str] = &[
    "reboot: Power down",
    "reboot: System halted",
    "Kernel panic - not syncing",
];

/// Whether console output contains a [`HALT_MARKERS`] line.
pub fn console_shows_halt(console: &str) -> bool {
    HALT_MARKERS.iter().any(|marker| console.contains(marker))
}

/// Sends `calls` in order, stopping at the first refusal.
pub async fn configure_and_start(client: &ApiClient, calls: &[ApiCall]) -> Result<(), ApiError> {
    for call in calls {
        client.send(call).await?;
    }
    Ok(())
}

/// Why Firecracker could not be detected.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// Not found on `PATH`, or the path does not exist / is not executable.
    #[error("{binary}: not found or not executable")]
    NotFound {
        /// Binary as configured.
        binary: PathBuf,
    },
    /// `--version` could not be run or did not finish in time.
    #[error("{binary} --version: {reason}")]
    Run {
        /// Binary as resolved.
        binary: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// `--version` printed something that is not Firecracker's version line.
    #[error("{binary} --version printed {output:?}, not `Firecracker vX.Y.Z`")]
    NotFirecracker {
        /// Binary as resolved.
        binary: PathBuf,
        /// First line of the output.
        output: String,
    },
}

/// Resolves `binary` the way `exec` does: a name without `/` is looked up on `PATH`;
/// the result must be an executable regular file.
pub fn resolve_binary(binary: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |path: &Path| {
        std::fs::metadata(path)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if binary.as_os_str().is_empty() {
        return None;
    }
    if binary.components().count() > 1 || binary.is_absolute() {
        return executable(binary).then(|| binary.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|candidate| executable(candidate))
}

/// Extracts `X.Y.Z` from Firecracker's `--version` output (`Firecracker vX.Y.Z`).
pub fn parse_version(output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next()? != "Firecracker" {
            return None;
        }
        let version = words.next()?.strip_prefix('v')?;
        version
            .chars()
            .next()
            .filter(char::is_ascii_digit)
            .map(|_| version.to_owned())
    })
}

/// Runs `binary --version` (bounded by `timeout`) and returns the version, e.g.
/// `1.9.0`.
pub fn detect_version(binary: &Path, timeout: Duration) -> Result<String, DetectError> {
    let resolved = resolve_binary(binary).ok_or_else(|| DetectError::NotFound {
        binary: binary.to_path_buf(),
    })?;
    let run_error = |reason: String| DetectError::Run {
        binary: resolved.clone(),
        reason,
    };
    let mut child = Command::new(&resolved)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| run_error(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(run_error(format!("no answer within {timeout:?}")));
            }
            Err(e) => return Err(run_error(e.to_string())),
        }
    };
    let mut output = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        // The version line is short; cap what we read from an unexpected binary.
        let _ = stdout.by_ref().take(64 * 1024).read_to_string(&mut output);
    }
    if !status.success() {
        return Err(run_error(format!("exited with {status}")));
    }
    parse_version(&output).ok_or_else(|| DetectError::NotFirecracker {
        binary: resolved.clone(),
        output: output.lines().next().unwrap_or("").to_owned(),
    })
}

/// Whether `binary` is a runnable Firecracker (found and `--version` answers).
pub fn is_available(binary: &Path) -> bool {
    detect_version(binary, Duration::from_secs(5)).is_ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_firecrackers_version_line() {
        assert_eq!(
            parse_version("Firecracker v1.9.0\n").as_deref(),
            Some("1.9.0")
        );
        assert_eq!(
            parse_version("\nFirecracker v1.10.1-dev\n\nmore\n").as_deref(),
            Some("1.10.1-dev")
        );
        assert_eq!(parse_version("QEMU emulator version 7.2.0"), None);
        assert_eq!(parse_version("Firecracker vx"), None);
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn halt_markers_are_recognised() {
        assert!(console_shows_halt("[   3.2] reboot: Power down\n"));
        assert!(console_shows_halt("Kernel panic - not syncing: VFS"));
        assert!(!console_shows_halt("reboot: Restarting system\nlogin:"));
    }

    #[test]
    fn resolve_binary_checks_path_and_executability() {
        assert!(resolve_binary(Path::new("sh")).is_some());
        assert!(resolve_binary(Path::new("/bin/sh")).is_some());
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("not-executable");
        std::fs::write(&plain, b"#!/bin/sh\n").unwrap();
        assert!(resolve_binary(&plain).is_none());
        assert!(resolve_binary(dir.path()).is_none());
        assert!(resolve_binary(Path::new("banger-no-such-binary")).is_none());
        assert!(resolve_binary(Path::new("")).is_none());
    }

    #[test]
    fn detection_rejects_missing_and_foreign_binaries() {
        let missing = detect_version(Path::new("banger-no-such-binary"), Duration::from_secs(5));
        assert!(
            matches!(missing, Err(DetectError::NotFound { .. })),
            "{missing:?}"
        );
        // `true --version` exits 0 and prints nothing: not Firecracker.
        let foreign = detect_version(Path::new("true"), Duration::from_secs(5));
        assert!(
            matches!(foreign, Err(DetectError::NotFirecracker { .. })),
            "{foreign:?}"
        );
        assert!(!is_available(Path::new("banger-no-such-binary")));
    }
}
