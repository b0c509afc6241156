//! Finding host executables ([`find_executable`]: a path as given, else the first match
//! in `PATH`, then the sbin directories, where e2fsprogs and nft live and which a
//! non-root `PATH` may lack) and asking one for its version, bounded in time
//! ([`probe_binary`]).
//!
//! The probe is blocking (a child process waited for with a deadline): `banger doctor`
//! runs it off the async workers, the daemon only at start, before it serves.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Resolves `bin`: itself when it has a directory part, else the first executable
/// regular file of that name in `PATH`, `/usr/sbin` or `/sbin`.
pub fn find_executable(bin: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if bin.components().count() > 1 || bin.is_absolute() {
        return is_exec(bin).then(|| bin.to_path_buf());
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push(PathBuf::from("/usr/sbin"));
    dirs.push(PathBuf::from("/sbin"));
    dirs.into_iter().map(|d| d.join(bin)).find(|p| is_exec(p))
}

/// What running a binary's `--version` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinaryProbe {
    /// It ran; the first line of its output.
    Found {
        /// Resolved path.
        path: PathBuf,
        /// First non-empty output line.
        version: String,
    },
    /// Not found (in `PATH` or at the given path).
    Missing {
        /// The name or path that was looked for.
        requested: PathBuf,
    },
    /// Found but `--version` failed or timed out.
    Broken {
        /// Resolved path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Resolves `bin` (a path, or a name in `PATH`) and runs it with `arg`, bounded by
/// `timeout`. Blocking.
pub fn probe_binary(bin: &Path, arg: &str, timeout: Duration) -> BinaryProbe {
    let Some(path) = find_executable(bin) else {
        return BinaryProbe::Missing {
            requested: bin.to_path_buf(),
        };
    };
    match run_bounded(&path, &[arg], timeout) {
        Ok(text) => BinaryProbe::Found {
            version: first_line(&text),
            path,
        },
        Err(reason) => BinaryProbe::Broken { path, reason },
    }
}

/// The first non-blank line of `text`, trimmed (`(no output)` when there is none).
pub fn first_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("(no output)")
        .to_string()
}

/// Runs `path args…` with no stdin, waiting at most `timeout`; returns stdout+stderr
/// when it exits successfully. Blocking.
pub fn run_bounded(path: &Path, args: &[&str], timeout: Duration) -> Result<String, String> {
    let (status, out) = run_bounded_output(path, args, timeout)?;
    if status.success() {
        Ok(out)
    } else {
        Err(format!("exited with {status}: {}", first_line(&out)))
    }
}

/// Runs `path args…` with no stdin, waiting at most `timeout` (then killing it);
/// returns its exit status and stdout+stderr. Blocking.
pub fn run_bounded_output(
    path: &Path,
    args: &[&str],
    timeout: Duration,
) -> Result<(ExitStatus, String), String> {
    let mut child = Command::new(path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    // Bounded: ends by exit, error, or the timeout (polled every 20 ms).
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("timed out after {timeout:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(err) => return Err(err.to_string()),
        }
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut out);
    }
    Ok((status, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sbin_tools_and_rejects_missing() {
        assert!(find_executable(Path::new("sh")).is_some());
        assert!(find_executable(Path::new("banger-no-such-tool")).is_none());
        assert!(find_executable(Path::new("/nonexistent/sh")).is_none());
        assert_eq!(
            find_executable(Path::new("/bin/sh")),
            Some(PathBuf::from("/bin/sh"))
        );
    }

    #[test]
    fn first_line_skips_blank_lines() {
        assert_eq!(first_line("\n  QEMU 7.2\nCopyright"), "QEMU 7.2");
        assert_eq!(first_line(""), "(no output)");
    }
}
