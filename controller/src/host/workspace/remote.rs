//! Talking to a guest for a Workspace: `ssh` running one of a few FIXED remote scripts,
//! their input and output streamed through pipes.
//!
//! No value is ever pasted into a remote command line: each script is a constant that
//! reads what it needs (the guest path, names) from its stdin, one per line (names
//! with line breaks are refused before they get here). The scripts need only a POSIX
//! shell, `tar` (`-c`, `-x`, `--no-recursion`), `xargs -0 -r`, `tr`, `mkdir`, `rm` and
//! `sync`: busybox has them, as do the usual distributions.
//!
//! [`GuestShell::run`] starts `ssh` with banger's guest options
//! ([`crate::host::guest_ssh`]), feeds its stdin from a blocking thread and drains its
//! stdout on another, all bounded by one timeout; ssh is killed when it runs out, and
//! the threads then see a closed pipe and end.

use std::ffi::OsString;
use std::io::{PipeReader, PipeWriter};
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::CopyError;
use crate::host::guest_keys::{SshIdentity, GUEST_USER};
use crate::host::guest_ssh::guest_ssh_options;

/// Extracts a copy stream ([`super::stream`]): the guest path, the count of names to
/// remove and the names, then the archive. Flushes the guest (`sync`) at the end.
pub const EXTRACT: &str = r#"IFS= read -r p && IFS= read -r n && case "$n" in ''|*[!0-9]*) echo "banger: bad removal count" >&2; exit 2;; esac && mkdir -p "$p" && cd "$p" && i=0 && while [ "$i" -lt "$n" ]; do IFS= read -r f || exit 2; if [ -L "$f" ] || [ -f "$f" ]; then rm -f -- "$f"; fi; i=$((i+1)); done && tar -x -f - && sync"#;

/// Sends back, as a tar stream, the listed paths (one per line after the guest path)
/// that exist, without descending into directories; nothing when the guest path is
/// gone. `xargs` may run `tar` more than once: the archives are concatenated.
pub const PULL_PATHS: &str = r#"IFS= read -r p || exit 2; cd "$p" 2>/dev/null || { cat >/dev/null; exit 0; }; while IFS= read -r f; do if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\n' "$f"; fi; done | tr '\n' '\0' | xargs -0 -r tar -c -f - --no-recursion --"#;

/// How long a copy (or a check of the guest) may take.
pub const COPY_TIMEOUT: Duration = Duration::from_secs(600);
/// How long ssh may take to connect.
const CONNECT_TIMEOUT_SECS: u32 = 5;

/// One guest, reached with banger's identity.
#[derive(Debug, Clone)]
pub struct GuestShell {
    /// banger's key and known_hosts.
    pub identity: SshIdentity,
    /// The VM's host key alias (`banger-<uid>`).
    pub alias: String,
    /// The guest's address.
    pub ip: Ipv4Addr,
}

impl GuestShell {
    /// The ssh argv (after `ssh`) running the fixed `script`.
    pub fn argv(&self, script: &str) -> Result<Vec<OsString>, CopyError> {
        let mut args = guest_ssh_options(
            &self.identity.private_key,
            &self.identity.known_hosts,
            &self.alias,
            GUEST_USER,
        )
        .map_err(|e| CopyError::new("ssh options", e.to_string()))?;
        for option in [
            format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}"),
            "ServerAliveInterval=15".to_string(),
            "ServerAliveCountMax=4".to_string(),
        ] {
            args.push("-o".into());
            args.push(option.into());
        }
        args.push(self.ip.to_string().into());
        args.push("--".into());
        args.push(script.into());
        Ok(args)
    }

    /// Runs `script` in the guest: `feed` writes its stdin and `drain` reads its
    /// stdout, each on a blocking thread, within `timeout`. `step` names the work in
    /// errors. The first error that explains a failure wins: one of `feed` that is not
    /// about writing to ssh (a file that cannot be read), then ssh's own failure (with
    /// its last stderr line), then the others.
    pub async fn run<A, B>(
        &self,
        step: &'static str,
        script: &str,
        feed: impl FnOnce(PipeWriter) -> Result<A, CopyError> + Send + 'static,
        drain: impl FnOnce(PipeReader) -> Result<B, CopyError> + Send + 'static,
        timeout: Duration,
    ) -> Result<(A, B), CopyError>
    where
        A: Send + 'static,
        B: Send + 'static,
    {
        match self
            .run_allowing(step, script, feed, drain, timeout, &[])
            .await?
        {
            Exit::Success(a, b) => Ok((a, b)),
            // Only 0 is allowed here.
            Exit::Code(code) => Err(CopyError::new(step, format!("exit status {code}"))),
        }
    }

    /// Like [`Self::run`], but an exit status in `allowed` is an answer, not an error
    /// ([`Exit::Code`]; what `feed` and `drain` did is then dropped).
    pub async fn run_allowing<A, B>(
        &self,
        step: &'static str,
        script: &str,
        feed: impl FnOnce(PipeWriter) -> Result<A, CopyError> + Send + 'static,
        drain: impl FnOnce(PipeReader) -> Result<B, CopyError> + Send + 'static,
        timeout: Duration,
        allowed: &[i32],
    ) -> Result<Exit<A, B>, CopyError>
    where
        A: Send + 'static,
        B: Send + 'static,
    {
        let fail = |m: String| CopyError::new(step, m);
        let (stdin_r, stdin_w) = std::io::pipe().map_err(|e| fail(format!("pipe: {e}")))?;
        let (stdout_r, stdout_w) = std::io::pipe().map_err(|e| fail(format!("pipe: {e}")))?;
        let mut child = {
            // The command (and with it ssh's ends of the pipes) is dropped right after
            // the spawn, so the threads see end-of-file when ssh exits.
            let mut cmd = tokio::process::Command::new("ssh");
            cmd.args(self.argv(script)?)
                .stdin(Stdio::from(stdin_r))
                .stdout(Stdio::from(stdout_w))
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            cmd.spawn().map_err(|e| fail(format!("ssh: {e}")))?
        };
        let mut stderr = child.stderr.take();
        let fed = tokio::task::spawn_blocking(move || feed(stdin_w));
        let drained = tokio::task::spawn_blocking(move || drain(stdout_r));
        let ip = self.ip;
        let work = async move {
            let mut err_text = Vec::new();
            if let Some(pipe) = stderr.as_mut() {
                // Bounded: ssh's stderr is its messages and the script's.
                let _ = pipe.take(1 << 20).read_to_end(&mut err_text).await;
            }
            let status = child.wait().await;
            let fed = fed.await;
            let drained = drained.await;
            (status, err_text, fed, drained)
        };
        let (status, err_text, fed, drained) = tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| fail(format!("timed out after {}s", timeout.as_secs())))?;
        let status = status.map_err(|e| fail(format!("ssh: {e}")))?;
        if let Some(code) = status.code().filter(|c| allowed.contains(c)) {
            return Ok(Exit::Code(code));
        }
        let fed = joined(fed, step);
        let drained = joined(drained, step);
        if let Err(e) = &fed {
            if e.step != SEND_STEP {
                return Err(e.clone());
            }
        }
        if !status.success() {
            let text = String::from_utf8_lossy(&err_text);
            let last = text
                .lines()
                .map(str::trim)
                .rfind(|l| !l.is_empty())
                .unwrap_or("no message");
            return Err(fail(format!("ssh {ip}: {status}: {last}")));
        }
        Ok(Exit::Success(fed?, drained?))
    }
}

/// How a remote script ended, when it did not fail.
#[derive(Debug)]
pub enum Exit<A, B> {
    /// Status 0: what `feed` and `drain` returned.
    Success(A, B),
    /// One of the allowed statuses.
    Code(i32),
}

/// The result of a blocking thread; a thread that panicked is an error of `step`.
fn joined<T>(
    r: Result<Result<T, CopyError>, tokio::task::JoinError>,
    step: &'static str,
) -> Result<T, CopyError> {
    r.unwrap_or_else(|e| Err(CopyError::new(step, format!("worker thread: {e}"))))
}

/// The step of errors writing into ssh's stdin (a closed pipe when ssh failed first).
pub const SEND_STEP: &str = "send archive";

/// A `drain` that reads and drops what the script prints (bounded by the timeout).
pub fn discard(mut out: PipeReader) -> Result<(), CopyError> {
    std::io::copy(&mut out, &mut std::io::sink())
        .map(|_| ())
        .map_err(|e| CopyError::new("read guest output", e.to_string()))
}

/// A `feed` that writes these lines and closes stdin.
pub fn lines(lines: Vec<String>) -> impl FnOnce(PipeWriter) -> Result<(), CopyError> {
    move |pipe| {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(pipe);
        for line in &lines {
            writeln!(out, "{line}").map_err(|e| CopyError::new(SEND_STEP, e.to_string()))?;
        }
        out.flush()
            .map_err(|e| CopyError::new(SEND_STEP, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    /// Runs a remote script with the local shell (`sh -c`), as the guest's would.
    fn sh(script: &str, dir: &Path, stdin: &[u8]) -> std::process::Output {
        use std::io::Write;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    #[test]
    fn extract_removes_the_listed_files_then_untars() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("ws dir");
        std::fs::create_dir_all(target.join("keep")).unwrap();
        std::fs::write(target.join("-old"), "x").unwrap();
        std::fs::write(target.join("stays"), "x").unwrap();
        let mut archive = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        archive.append_data(&mut h, "new.txt", &b"new"[..]).unwrap();
        let mut input = format!("{}\n2\n-old\nkeep\n", target.display()).into_bytes();
        input.extend(archive.into_inner().unwrap());
        let out = sh(EXTRACT, dir.path(), &input);
        assert!(out.status.success(), "{out:?}");
        assert!(!target.join("-old").exists());
        assert!(target.join("keep").is_dir(), "a directory is never removed");
        assert!(target.join("stays").exists());
        assert_eq!(
            std::fs::read_to_string(target.join("new.txt")).unwrap(),
            "new"
        );
        let bad = sh(
            EXTRACT,
            dir.path(),
            format!("{}\nx\n", target.display()).as_bytes(),
        );
        assert!(!bad.status.success());
    }

    #[test]
    fn pull_paths_sends_back_only_the_listed_paths_that_exist() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(ws.join("sub")).unwrap();
        std::fs::write(ws.join("a b"), "a").unwrap();
        std::fs::write(ws.join("sub/x"), "x").unwrap();
        std::fs::write(ws.join("not asked"), "n").unwrap();
        std::os::unix::fs::symlink("nowhere", ws.join("dangling")).unwrap();
        let input = format!("{}\na b\nmissing\nsub\ndangling\n-n\n", ws.display());
        let out = sh(PULL_PATHS, dir.path(), input.as_bytes());
        assert!(out.status.success(), "{out:?}");
        let mut archive = tar::Archive::new(&out.stdout[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["a b", "sub/", "dangling"]);
        let gone = sh(PULL_PATHS, dir.path(), b"/nonexistent/ws\na\n");
        assert!(gone.status.success(), "{gone:?}");
        assert!(gone.stdout.is_empty());
    }

    /// The same scripts under busybox's shell and applets, as in the guest kit.
    #[test]
    #[ignore = "needs busybox (the guest kit's userland: scripts/deps.sh installs busybox-static)"]
    fn the_scripts_run_under_busybox() {
        let bin = tempfile::tempdir().unwrap();
        for applet in ["tar", "xargs", "tr", "mkdir", "rm", "sync", "cat"] {
            std::os::unix::fs::symlink("/bin/busybox", bin.path().join(applet)).unwrap();
        }
        let run = |script: &str, stdin: &[u8]| {
            use std::io::Write;
            let mut child = Command::new("/bin/busybox")
                .args(["sh", "-c", script])
                .env_clear()
                .env("PATH", bin.path())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(stdin).unwrap();
            child.wait_with_output().unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        let mut archive = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o755);
        archive.append_data(&mut h, "sub/a b", &b"abc"[..]).unwrap();
        let mut input = format!("{}\n0\n", ws.display()).into_bytes();
        input.extend(archive.into_inner().unwrap());
        let out = run(EXTRACT, &input);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(std::fs::read(ws.join("sub/a b")).unwrap(), b"abc");
        let out = run(
            PULL_PATHS,
            format!("{}\nsub/a b\nnope\n", ws.display()).as_bytes(),
        );
        assert!(out.status.success(), "{out:?}");
        let digests = super::super::guest_tree::digest_archive(&out.stdout[..]).unwrap();
        assert_eq!(digests.keys().collect::<Vec<_>>(), ["sub/a b"]);
        assert_eq!(digests["sub/a b"].kind(), "executable file");
    }

    #[test]
    fn argv_ends_with_the_fixed_script() {
        let shell = GuestShell {
            identity: SshIdentity::paths(Path::new("/state")),
            alias: "banger-0123abcd".into(),
            ip: Ipv4Addr::new(172, 30, 0, 5),
        };
        let args: Vec<String> = shell
            .argv(EXTRACT)
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(args[..2], ["-F", "none"]);
        assert!(args.contains(&"HostKeyAlias=banger-0123abcd".to_string()));
        assert!(args.contains(&"ConnectTimeout=5".to_string()));
        assert_eq!(args[args.len() - 3..], ["172.30.0.5", "--", EXTRACT]);
    }
}
