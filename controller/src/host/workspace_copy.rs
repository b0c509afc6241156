//! Copying a git checkout into a guest: a tar stream over SSH.
//!
//! 1. [`list_files`]: `git -C SOURCE ls-files -z` (and, for `include: untracked`,
//!    `git ls-files -z --others --exclude-standard`).
//! 2. [`build_stream`]: the guest path on the first line, then a tar archive (the `tar`
//!    crate) of those files: regular files and symlinks, owned by root; entries that
//!    vanished since the listing are skipped; names with `..`, absolute names and
//!    names with control characters are refused.
//! 3. [`copy_into_guest`]: `ssh … IP` (banger's guest ssh options, the host key
//!    pinned per VM uid) running a FIXED remote command that reads
//!    the target path from the first line of its stdin and untars the rest there, then
//!    a second fixed command, `sync`, flushes the guest. No value is ever interpolated
//!    into a remote command line.

use std::ffi::OsString;
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use banger_specs::IncludeMode;
use tokio::io::AsyncWriteExt;

use crate::host::guest_keys::{SshIdentity, GUEST_USER};
use crate::host::guest_ssh::guest_ssh_options;

/// The remote command of the copy: path from the first line, the tar stream after it
/// (busybox `sh` and `tar` in the guest).
pub const REMOTE_EXTRACT: &str = r#"read -r p && mkdir -p "$p" && exec tar -x -f - -C "$p""#;
/// The remote command that flushes the guest's filesystems.
pub const REMOTE_SYNC: &str = "sync";
/// Largest tar stream built in memory.
pub const MAX_STREAM_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// How long the copy may take.
pub const COPY_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the guest's `sync` may take.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(120);

/// A failed stage of the copy: which step, what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{step}: {message}")]
pub struct CopyError {
    /// `list files`, `build archive`, `ssh copy`, `ssh sync`.
    pub step: &'static str,
    /// What went wrong.
    pub message: String,
}

fn fail(step: &'static str, message: impl std::fmt::Display) -> CopyError {
    CopyError {
        step,
        message: message.to_string(),
    }
}

/// The tar stream and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// First line (the guest path), then the archive.
    pub data: Vec<u8>,
    /// Entries archived.
    pub files: u64,
    /// Content bytes archived.
    pub bytes: u64,
}

fn git(source: &Path, args: &[&str]) -> Result<Vec<u8>, CopyError> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(source)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| fail("list files", format!("git: {e}")))?;
    if !out.status.success() {
        return Err(fail(
            "list files",
            format!(
                "git -C {} {}: {}",
                source.display(),
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(out.stdout)
}

/// The files to copy, relative to `source`, sorted and without duplicates.
pub fn list_files(source: &Path, include: IncludeMode) -> Result<Vec<PathBuf>, CopyError> {
    use std::os::unix::ffi::OsStrExt;
    let mut raw = git(source, &["ls-files", "-z"])?;
    if include == IncludeMode::Untracked {
        raw.extend(git(
            source,
            &["ls-files", "-z", "--others", "--exclude-standard"],
        )?);
    }
    let mut files: Vec<PathBuf> = raw
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| PathBuf::from(std::ffi::OsStr::from_bytes(s)))
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

/// The source's `HEAD` commit, if it has one.
pub fn head_commit(source: &Path) -> Option<String> {
    let out = git(source, &["rev-parse", "--verify", "-q", "HEAD"]).ok()?;
    let s = String::from_utf8_lossy(&out).trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn check_relative(name: &Path) -> Result<(), CopyError> {
    let bad = |why: &str| fail("build archive", format!("{}: {why}", name.display()));
    if name.as_os_str().is_empty() {
        return Err(bad("empty name"));
    }
    for c in name.components() {
        match c {
            Component::Normal(_) => {}
            Component::ParentDir => return Err(bad("contains `..`")),
            _ => return Err(bad("not a plain relative path")),
        }
    }
    if name
        .to_str()
        .is_some_and(|s| s.chars().any(|c| c.is_control()))
    {
        return Err(bad("contains a control character"));
    }
    Ok(())
}

/// Builds the stream: `guest_path` and a newline, then the archive of `files`.
pub fn build_stream(
    source: &Path,
    files: &[PathBuf],
    guest_path: &str,
) -> Result<Stream, CopyError> {
    if !guest_path.starts_with('/') || guest_path.chars().any(|c| c.is_control()) {
        return Err(fail(
            "build archive",
            format!("guest path {guest_path:?} must be absolute, one line"),
        ));
    }
    let mut data = Vec::new();
    data.extend_from_slice(guest_path.as_bytes());
    data.push(b'\n');
    let mut builder = tar::Builder::new(data);
    builder.follow_symlinks(false);
    let (mut count, mut bytes) = (0u64, 0u64);
    for name in files {
        check_relative(name)?;
        let full = source.join(name);
        let meta = match std::fs::symlink_metadata(&full) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(fail("build archive", format!("{}: {e}", full.display()))),
        };
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        header.set_uid(0);
        header.set_gid(0);
        let _ = header.set_username("root");
        let _ = header.set_groupname("root");
        let err = |e: std::io::Error| fail("build archive", format!("{}: {e}", full.display()));
        if meta.file_type().is_symlink() {
            let target = match std::fs::read_link(&full) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(err(e)),
            };
            header.set_size(0);
            builder
                .append_link(&mut header, name, &target)
                .map_err(err)?;
        } else if meta.is_file() {
            let mut file = match std::fs::File::open(&full) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(err(e)),
            };
            // Archive what the open file holds now (the file may have changed size).
            let mut content = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
            file.read_to_end(&mut content).map_err(err)?;
            let len = content.len() as u64;
            header.set_size(len);
            builder
                .append_data(&mut header, name, content.as_slice())
                .map_err(err)?;
            bytes += len;
        } else {
            // Submodule directories and other non-files git lists are skipped.
            continue;
        }
        count += 1;
        if builder.get_ref().len() as u64 > MAX_STREAM_BYTES {
            return Err(fail(
                "build archive",
                format!("archive larger than {MAX_STREAM_BYTES} bytes"),
            ));
        }
    }
    let data = builder.into_inner().map_err(|e| fail("build archive", e))?;
    Ok(Stream {
        data,
        files: count,
        bytes,
    })
}

/// The ssh argv (after `ssh`) that runs the fixed `remote` command as root on the
/// guest at `ip`, whose host key is pinned under `alias` (banger's guest ssh options,
/// [`guest_ssh_options`], shared with the CLI).
pub fn ssh_args(
    identity: &SshIdentity,
    alias: &str,
    ip: Ipv4Addr,
    remote: &str,
) -> Result<Vec<OsString>, CopyError> {
    let mut args = guest_ssh_options(
        &identity.private_key,
        &identity.known_hosts,
        alias,
        GUEST_USER,
    )
    .map_err(|e| fail("ssh options", e))?;
    args.extend(["-o".into(), "ConnectTimeout=5".into()]);
    args.push(ip.to_string().into());
    args.push("--".into());
    args.push(remote.into());
    Ok(args)
}

async fn run_ssh(
    step: &'static str,
    identity: &SshIdentity,
    alias: &str,
    ip: Ipv4Addr,
    remote: &str,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<(), CopyError> {
    let mut child = tokio::process::Command::new("ssh")
        .args(ssh_args(identity, alias, ip, remote)?)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(step, format!("ssh: {e}")))?;
    let feed = child.stdin.take();
    let run = async {
        if let (Some(mut pipe), Some(data)) = (feed, stdin) {
            pipe.write_all(&data)
                .await
                .map_err(|e| fail(step, format!("writing the stream: {e}")))?;
            pipe.shutdown().await.ok();
            drop(pipe);
        }
        child
            .wait_with_output()
            .await
            .map_err(|e| fail(step, format!("ssh: {e}")))
    };
    let out = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| fail(step, format!("timed out after {}s", timeout.as_secs())))??;
    if !out.status.success() {
        return Err(fail(
            step,
            format!(
                "ssh root@{ip}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(())
}

/// Sends `stream` to the guest at `ip` (extracted at the path on its first line), then
/// flushes the guest with `sync`.
pub async fn copy_into_guest(
    identity: &SshIdentity,
    alias: &str,
    ip: Ipv4Addr,
    stream: Vec<u8>,
) -> Result<(), CopyError> {
    run_ssh(
        "ssh copy",
        identity,
        alias,
        ip,
        REMOTE_EXTRACT,
        Some(stream),
        COPY_TIMEOUT,
    )
    .await?;
    run_ssh(
        "ssh sync",
        identity,
        alias,
        ip,
        REMOTE_SYNC,
        None,
        SYNC_TIMEOUT,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn sh(dir: &Path, args: &[&str]) {
        let out = Command::new(args[0])
            .args(&args[1..])
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    }

    fn repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        sh(p, &["git", "init", "-q"]);
        std::fs::write(p.join("tracked.txt"), "tracked\n").unwrap();
        std::fs::create_dir(p.join("sub")).unwrap();
        std::fs::write(p.join("sub/deep.txt"), "deep").unwrap();
        std::fs::write(p.join(".gitignore"), "ignored.txt\n").unwrap();
        std::os::unix::fs::symlink("tracked.txt", p.join("link")).unwrap();
        sh(p, &["git", "add", "."]);
        sh(
            p,
            &[
                "git",
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-qm",
                "x",
            ],
        );
        std::fs::write(p.join("untracked.txt"), "new").unwrap();
        std::fs::write(p.join("ignored.txt"), "secret").unwrap();
        dir
    }

    #[test]
    fn lists_tracked_and_untracked_but_not_ignored() {
        let r = repo();
        let tracked = list_files(r.path(), IncludeMode::Tracked).unwrap();
        let names: Vec<&str> = tracked.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(names, [".gitignore", "link", "sub/deep.txt", "tracked.txt"]);
        let all = list_files(r.path(), IncludeMode::Untracked).unwrap();
        let names: Vec<&str> = all.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                ".gitignore",
                "link",
                "sub/deep.txt",
                "tracked.txt",
                "untracked.txt"
            ]
        );
        assert_eq!(head_commit(r.path()).unwrap().len(), 40);
        let err = list_files(&r.path().join("nope"), IncludeMode::Tracked).unwrap_err();
        assert_eq!(err.step, "list files");
    }

    #[test]
    fn stream_is_path_line_then_tar_with_vanished_files_skipped() {
        let r = repo();
        let mut files = list_files(r.path(), IncludeMode::Untracked).unwrap();
        files.push(PathBuf::from("gone.txt"));
        let s = build_stream(r.path(), &files, "/root/repo").unwrap();
        assert_eq!(s.files, 5);
        assert_eq!(s.bytes, 8 + 4 + 12 + 3, "link has no content");
        let nl = s.data.iter().position(|b| *b == b'\n').unwrap();
        assert_eq!(&s.data[..nl], b"/root/repo");
        let out = tempfile::tempdir().unwrap();
        tar::Archive::new(&s.data[nl + 1..])
            .unpack(out.path())
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(out.path().join("sub/deep.txt")).unwrap(),
            "deep"
        );
        assert_eq!(
            std::fs::read_link(out.path().join("link")).unwrap(),
            PathBuf::from("tracked.txt")
        );
        assert!(out.path().join("untracked.txt").is_file());
        assert!(!out.path().join("ignored.txt").exists());
    }

    #[test]
    fn refuses_escaping_names_and_bad_guest_paths() {
        let r = repo();
        let err = build_stream(r.path(), &[PathBuf::from("../x")], "/root/repo").unwrap_err();
        assert!(err.message.contains(".."), "{err}");
        assert!(build_stream(r.path(), &[PathBuf::from("/etc/passwd")], "/r").is_err());
        assert!(build_stream(r.path(), &[], "/root/a\nb").is_err());
        assert!(build_stream(r.path(), &[], "relative").is_err());
    }

    #[test]
    fn ssh_argv_is_fixed_and_pins_the_host_key_per_vm() {
        let id = SshIdentity::paths(Path::new("/state"));
        let args = ssh_args(
            &id,
            "banger-0123abcd",
            Ipv4Addr::new(172, 30, 0, 5),
            REMOTE_EXTRACT,
        )
        .unwrap();
        let args: Vec<String> = args.into_iter().map(|a| a.into_string().unwrap()).collect();
        assert_eq!(args[0..2], ["-F", "none"]);
        for option in [
            "IdentityFile=\"/state/ssh/id_ed25519\"",
            "UserKnownHostsFile=\"/state/ssh/known_hosts\"",
            "HostKeyAlias=banger-0123abcd",
            "StrictHostKeyChecking=accept-new",
            "HashKnownHosts=no",
            "User=root",
        ] {
            assert!(args.contains(&option.to_string()), "{option}: {args:?}");
        }
        assert_eq!(args[args.len() - 3..], ["172.30.0.5", "--", REMOTE_EXTRACT]);
    }
}
