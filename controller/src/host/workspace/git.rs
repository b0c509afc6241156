//! The host's `git`, run so that nothing a repository says can run a program.
//!
//! banger runs as root on checkouts that belong to users, and a repository's own
//! configuration can name programs that git runs (`core.fsmonitor`, hooks, clean and
//! smudge filters, external diff drivers, textconv). So every git banger runs:
//!
//! - starts from an empty environment: `PATH` (the daemon's), `LC_ALL=C`, `HOME` set to
//!   a directory that does not exist, no system or global configuration
//!   (`GIT_CONFIG_NOSYSTEM=1`, `GIT_CONFIG_GLOBAL=/dev/null`), no terminal prompts and
//!   no optional index writes (`GIT_OPTIONAL_LOCKS=0`: reading a checkout never
//!   rewrites its index);
//! - overrides the repository's configuration on the command line (which wins over
//!   it): `core.fsmonitor=false`, `core.hooksPath=/dev/null`, `core.untrackedCache=false`,
//!   no transport but local paths (`protocol.allow=never`, `protocol.file.allow=always`);
//! - is never asked for a diff with external drivers or textconv (callers pass
//!   `--no-ext-diff --no-textconv`), and never runs `add`/`checkout` in a user's
//!   checkout, only in banger's own temporary repositories, whose configuration is
//!   banger's (filters named by a `.gitattributes` have no driver there, so none runs).
//!
//! Every call is blocking: run them on the blocking pool.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `HOME` of banger's git: a path that does not exist, so no `~/.gitconfig` is read.
const NO_HOME: &str = "/nonexistent/banger-git-home";

/// Configuration given on the command line, over anything a repository says.
const OVERRIDES: &[&str] = &[
    "core.fsmonitor=false",
    "core.hooksPath=/dev/null",
    "core.untrackedCache=false",
    "core.quotePath=false",
    "protocol.allow=never",
    "protocol.file.allow=always",
    "advice.detachedHead=false",
    "init.defaultBranch=main",
    "user.name=banger",
    "user.email=banger@localhost",
];

/// A git command that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("git {args} (in {dir}): {message}")]
pub struct GitError {
    /// The arguments, for the message.
    pub args: String,
    /// Where it ran.
    pub dir: String,
    /// Its exit status and last error line, or why it could not run.
    pub message: String,
}

/// A `git` command in `dir` with banger's clean environment and overrides (see the
/// module docs). Add arguments, then run it with [`run`] (or spawn it yourself).
pub fn command(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    cmd.env("LC_ALL", "C")
        .env("HOME", NO_HOME)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_OPTIONAL_LOCKS", "0")
        .stdin(Stdio::null());
    for option in OVERRIDES {
        cmd.arg("-c").arg(option);
    }
    cmd.arg("-C").arg(dir);
    cmd
}

/// Runs `git ARGS` in `dir` (see [`command`]) and returns its stdout.
pub fn run<S: AsRef<OsStr>>(dir: &Path, args: &[S]) -> Result<Vec<u8>, GitError> {
    let mut cmd = command(dir);
    cmd.args(args);
    output(dir, args, &mut cmd)
}

/// Runs a prepared git command and returns its stdout; a failure names the command.
pub fn output<S: AsRef<OsStr>>(
    dir: &Path,
    args: &[S],
    cmd: &mut Command,
) -> Result<Vec<u8>, GitError> {
    let fail = |message: String| GitError {
        args: args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" "),
        dir: dir.display().to_string(),
        message,
    };
    let out = cmd.output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("no message");
        return Err(fail(format!("{}: {last}", out.status)));
    }
    Ok(out.stdout)
}

/// The first line of `git ARGS` as text, `None` when git fails or prints nothing.
pub fn line<S: AsRef<OsStr>>(dir: &Path, args: &[S]) -> Option<String> {
    let out = run(dir, args).ok()?;
    let text = String::from_utf8(out).ok()?;
    let first = text.lines().next()?.trim();
    (!first.is_empty()).then(|| first.to_string())
}

/// The commit `HEAD` names in the checkout at `dir`, if it has one.
pub fn head_commit(dir: &Path) -> Option<String> {
    line(dir, &["rev-parse", "--verify", "-q", "HEAD^{commit}"])
}

/// The branch `HEAD` is on (`main`), `None` when it is detached.
pub fn head_branch(dir: &Path) -> Option<String> {
    line(dir, &["symbolic-ref", "-q", "--short", "HEAD"])
}

/// The checkout's object format (`sha1` or `sha256`).
pub fn object_format(dir: &Path) -> Result<String, GitError> {
    let out = run(dir, &["rev-parse", "--show-object-format"])?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

/// The id of the empty tree in a repository's object format (what a patch of a
/// checkout without commits is made against).
pub fn empty_tree(dir: &Path) -> Result<String, GitError> {
    let out = run(dir, &["hash-object", "-t", "tree", "/dev/null"])?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

/// The object directory of the repository of the checkout at `dir` (a worktree's is
/// its main repository's), absolute.
pub fn objects_dir(dir: &Path) -> Result<PathBuf, GitError> {
    let out = run(
        dir,
        &["rev-parse", "--path-format=absolute", "--git-common-dir"],
    )?;
    let common = PathBuf::from(String::from_utf8_lossy(&out).trim());
    Ok(common.join("objects"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_with_hostile_config() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        run(p, &["init", "-q"]).unwrap();
        std::fs::write(p.join("a.txt"), "a\n").unwrap();
        run(p, &["add", "a.txt"]).unwrap();
        run(p, &["commit", "-qm", "one"]).unwrap();
        // A repository that would run programs: an fsmonitor and a hook that leave a
        // mark, and an external diff driver.
        let mark = p.join("ran");
        let script = p.join("evil.sh");
        std::fs::write(&script, format!("#!/bin/sh\ntouch {}\n", mark.display())).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        for (key, value) in [
            ("core.fsmonitor", script.to_str().unwrap()),
            ("diff.external", script.to_str().unwrap()),
            ("core.hooksPath", p.to_str().unwrap()),
        ] {
            let status = Command::new("git")
                .arg("-C")
                .arg(p)
                .args(["config", key, value])
                .status()
                .unwrap();
            assert!(status.success());
        }
        dir
    }

    #[test]
    fn repository_programs_never_run() {
        let dir = repo_with_hostile_config();
        let p = dir.path();
        std::fs::write(p.join("a.txt"), "changed\n").unwrap();
        run(p, &["status", "--porcelain"]).unwrap();
        run(p, &["ls-files", "-z", "--others", "--exclude-standard"]).unwrap();
        run(p, &["diff", "--no-ext-diff", "--no-textconv", "HEAD"]).unwrap();
        assert!(head_commit(p).is_some());
        assert!(!p.join("ran").exists(), "a repository program ran");
        // Plain git (the user's own) would run it: the test can tell.
        Command::new("git")
            .arg("-C")
            .arg(p)
            .args(["diff", "HEAD"])
            .output()
            .unwrap();
        assert!(p.join("ran").exists(), "the hostile config is not hostile");
    }

    #[test]
    fn heads_branches_and_formats() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        run(p, &["init", "-q"]).unwrap();
        assert_eq!(head_commit(p), None, "no commit yet");
        assert_eq!(head_branch(p).as_deref(), Some("main"));
        assert_eq!(object_format(p).unwrap(), "sha1");
        assert_eq!(
            empty_tree(p).unwrap(),
            "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
        );
        run(p, &["commit", "-q", "--allow-empty", "-m", "x"]).unwrap();
        let head = head_commit(p).unwrap();
        assert_eq!(head.len(), 40);
        run(p, &["checkout", "-q", "--detach"]).unwrap();
        assert_eq!(head_branch(p), None);
        assert!(objects_dir(p).unwrap().ends_with(".git/objects"));
        let err = run(p, &["rev-parse", "--verify", "nope"]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("git rev-parse --verify nope (in "),
            "{err}"
        );
    }
}
