//! banger's own SSH identity and its injection into a VM's root disk.
//!
//! - [`ensure_identity`]: `<state_dir>/ssh/id_ed25519` (+ `.pub`), generated once with
//!   `ssh-keygen`, and the path of banger's own `known_hosts` (trust on first use).
//! - [`inject_authorized_key`]: adds the public key to `/root/.ssh/authorized_keys` of
//!   an ext4 image **without mounting it**, with `debugfs -w`. Keys already there are
//!   kept (when there is no such file, the keys of the guest kit's seed
//!   `/etc/banger/authorized_keys` are, since the kit installs the seed only when the
//!   file is missing); `/root/.ssh` is made if missing; modes 0700/0600 and owner 0:0 are set; the
//!   result is read back and verified. Every change is one debugfs run (requests fed on
//!   stdin, `-f -`), the checks two more: each run opens the image again, and 16 runs of
//!   one request each were most of a new VM's `prepare-disk`.
//!
//! - Host keys of guests are pinned in banger's `known_hosts` under a per-VM alias,
//!   [`host_key_alias`] (`banger-<uid>`, ssh's `HostKeyAlias`), never under an IP: IPs
//!   are reused by later VMs, uids never are. [`forget_host_key`] drops a VM's pin when
//!   the VM or its root disk is deleted, so a new disk is trusted on first contact
//!   again while a changed key on the same disk is refused by ssh.
//!
//! debugfs parses its requests itself (no shell), but splits them at whitespace and
//! honours quotes: only fixed guest paths and host paths below the state directory are
//! passed, and host paths containing whitespace or quotes are refused.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::host::names::ObjectUid;

/// The guest directory holding root's SSH configuration.
const GUEST_SSH_DIR: &str = "/root/.ssh";
/// The guest file of keys allowed to log in as root.
const GUEST_AUTHORIZED_KEYS: &str = "/root/.ssh/authorized_keys";
/// The guest kit's seed of root's keys: its init installs it as
/// [`GUEST_AUTHORIZED_KEYS`] only when that file is missing, so its keys are merged in.
const GUEST_KIT_SEED: &str = "/etc/banger/authorized_keys";
/// The guest user banger's key logs in as.
pub const GUEST_USER: &str = "root";
/// Prefix of the name a VM's host key is pinned under in banger's `known_hosts`.
pub const HOST_KEY_ALIAS_PREFIX: &str = "banger-";

/// Why the identity or the key injection failed.
#[derive(Debug, thiserror::Error)]
pub enum GuestKeyError {
    /// A host path cannot be passed to debugfs.
    #[error("{path}: path contains whitespace or quotes; debugfs cannot be given it safely")]
    UnsafeDebugfsPath {
        /// The path.
        path: PathBuf,
    },
    /// A tool could not run or failed.
    #[error("{step} {path}: {message}")]
    Tool {
        /// What was being done (`ssh-keygen`, `debugfs read`, …).
        step: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A file operation failed.
    #[error("{step} {path}: {source}")]
    Io {
        /// What was being done.
        step: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// After writing, the disk does not hold the key as expected.
    #[error("{path}: verify {GUEST_AUTHORIZED_KEYS}: {message}")]
    NotVerified {
        /// The disk image.
        path: PathBuf,
        /// What differs.
        message: String,
    },
}

/// banger's SSH identity on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshIdentity {
    /// The private key (`<state_dir>/ssh/id_ed25519`).
    pub private_key: PathBuf,
    /// The public key (`<state_dir>/ssh/id_ed25519.pub`).
    pub public_key: PathBuf,
    /// banger's own known_hosts (`<state_dir>/ssh/known_hosts`).
    pub known_hosts: PathBuf,
}

impl SshIdentity {
    /// The paths of the identity below `state_dir` (nothing is checked or made).
    pub fn paths(state_dir: &Path) -> Self {
        let dir = state_dir.join("ssh");
        SshIdentity {
            private_key: dir.join("id_ed25519"),
            public_key: dir.join("id_ed25519.pub"),
            known_hosts: dir.join("known_hosts"),
        }
    }

    /// The public key's text (one line, trimmed).
    pub fn public_key_line(&self) -> Result<String, GuestKeyError> {
        let text =
            std::fs::read_to_string(&self.public_key).map_err(|source| GuestKeyError::Io {
                step: "read public key",
                path: self.public_key.clone(),
                source,
            })?;
        Ok(text.trim().to_string())
    }
}

/// Serialises [`ensure_identity`] within the daemon: the first VMs of a new state
/// directory prepare their disks at once, and two generations racing (one removing the
/// other's half-written pair as incomplete) would leave a disk with a key that is not
/// banger's any more. (Other daemons cannot use the state directory: `daemon.lock`.)
static IDENTITY_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Generates banger's identity once (`ssh-keygen -t ed25519 -N "" -f …`); an existing
/// key pair is kept. The directory is made with mode 0700. Callers in one process are
/// served one at a time, so they all get the same pair.
pub fn ensure_identity(state_dir: &Path) -> Result<SshIdentity, GuestKeyError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let _one_at_a_time = IDENTITY_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let id = SshIdentity::paths(state_dir);
    let dir = state_dir.join("ssh");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|source| GuestKeyError::Io {
            step: "create directory",
            path: dir.clone(),
            source,
        })?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(|source| {
        GuestKeyError::Io {
            step: "chmod",
            path: dir.clone(),
            source,
        }
    })?;
    if id.private_key.is_file() && id.public_key.is_file() {
        return Ok(id);
    }
    for stale in [&id.private_key, &id.public_key] {
        match std::fs::remove_file(stale) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(GuestKeyError::Io {
                    step: "remove incomplete key",
                    path: stale.clone(),
                    source,
                })
            }
        }
    }
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "banger", "-f"])
        .arg(&id.private_key)
        .output()
        .map_err(|e| GuestKeyError::Tool {
            step: "ssh-keygen",
            path: id.private_key.clone(),
            message: e.to_string(),
        })?;
    if !out.status.success() || !id.public_key.is_file() {
        return Err(GuestKeyError::Tool {
            step: "ssh-keygen",
            path: id.private_key.clone(),
            message: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(id)
}

/// The name a VM's SSH host key is pinned under in banger's `known_hosts` (ssh's
/// `HostKeyAlias`): `banger-<uid>`.
pub fn host_key_alias(uid: &ObjectUid) -> String {
    format!("{HOST_KEY_ALIAS_PREFIX}{uid}")
}

/// Forgets the host key pinned for the VM `uid` in `<state_dir>/ssh/known_hosts`, so
/// the next contact pins the key of a new root disk. Idempotent: a missing file or a
/// VM without a pin changes nothing. Entries naming other hosts next to the alias keep
/// those hosts. The file is rewritten atomically (a temporary file in the same
/// directory, same mode, renamed over it); returns whether anything was removed.
///
/// An `ssh` appending a first-contact pin between the read and the rename loses that
/// pin; the next contact pins it again. Hashed entries (`|1|…`) are not matched:
/// banger's own ssh invocations write plain ones (`HashKnownHosts=no`).
pub fn forget_host_key(state_dir: &Path, uid: &ObjectUid) -> Result<bool, GuestKeyError> {
    let path = SshIdentity::paths(state_dir).known_hosts;
    let io = |step: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| GuestKeyError::Io { step, path, source }
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io("read known_hosts", &path)(e)),
    };
    let Some(kept) = without_host(&text, &host_key_alias(uid)) else {
        return Ok(false);
    };
    let mode = std::fs::metadata(&path)
        .map_err(io("stat known_hosts", &path))?
        .permissions();
    let staged = path.with_file_name(format!(".known_hosts.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&staged)?;
        file.set_permissions(mode)?;
        file.write_all(kept.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&staged, &path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&staged);
        return Err(io("rewrite known_hosts", &path)(e));
    }
    Ok(true)
}

/// `known_hosts` text without `host`: a line naming only it goes, a line naming it
/// among others keeps the others. `None` when no line names it.
fn without_host(text: &str, host: &str) -> Option<String> {
    let bracketed = format!("[{host}]:");
    let is_host = |pattern: &str| {
        pattern == host
            || pattern
                .strip_prefix(&bracketed)
                .is_some_and(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
    };
    let mut changed = false;
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let (marker, rest) = if trimmed.starts_with('@') {
            match trimmed.split_once(char::is_whitespace) {
                Some((marker, rest)) => (Some(marker), rest.trim_start()),
                None => (None, trimmed),
            }
        } else {
            (None, trimmed)
        };
        let Some((hosts, key)) = rest.split_once(char::is_whitespace) else {
            out.push_str(line);
            continue;
        };
        if trimmed.starts_with('#') || !hosts.split(',').any(is_host) {
            out.push_str(line);
            continue;
        }
        changed = true;
        let others: Vec<&str> = hosts.split(',').filter(|p| !is_host(p)).collect();
        if others.is_empty() {
            continue;
        }
        if let Some(marker) = marker {
            out.push_str(marker);
            out.push(' ');
        }
        out.push_str(&others.join(","));
        out.push(' ');
        out.push_str(key);
    }
    changed.then_some(out)
}

/// Refuses host paths debugfs would split or unquote.
fn debugfs_safe(path: &Path) -> Result<&str, GuestKeyError> {
    let unsafe_path = || GuestKeyError::UnsafeDebugfsPath {
        path: path.to_path_buf(),
    };
    let s = path.to_str().ok_or_else(unsafe_path)?;
    if s.is_empty()
        || s.chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\'' || c == '\\' || c.is_control())
    {
        return Err(unsafe_path());
    }
    Ok(s)
}

/// Runs one debugfs request (`-R`) on `image`; returns (stdout, stderr).
fn debugfs(image: &Path, write: bool, request: &str) -> Result<(Vec<u8>, String), GuestKeyError> {
    debugfs_safe(image)?;
    let mut cmd = Command::new("debugfs");
    if write {
        cmd.arg("-w");
    }
    let out = cmd
        .arg("-R")
        .arg(request)
        .arg(image)
        .output()
        .map_err(|e| GuestKeyError::Tool {
            step: "debugfs",
            path: image.to_path_buf(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(GuestKeyError::Tool {
            step: "debugfs",
            path: image.to_path_buf(),
            message: format!(
                "{request}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok((
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Reads `/root/.ssh/authorized_keys` from the image; `None` when it does not exist.
pub fn read_authorized_keys(image: &Path) -> Result<Option<String>, GuestKeyError> {
    read_guest_file(image, GUEST_AUTHORIZED_KEYS)
}

/// Reads a (fixed) guest file from the image; `None` when it does not exist.
fn read_guest_file(image: &Path, guest: &str) -> Result<Option<String>, GuestKeyError> {
    let (stdout, stderr) = debugfs(image, false, &format!("cat {guest}"))?;
    if stderr.contains("not found") {
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(&stdout).into_owned()))
}

/// Runs several debugfs requests in one run (`-f -`, read from stdin; one open of the
/// image instead of one per request); returns (stdout, stderr). debugfs echoes each
/// request to stdout as `debugfs: REQUEST` before its output.
fn debugfs_batch(
    image: &Path,
    write: bool,
    requests: &[String],
) -> Result<(Vec<u8>, String), GuestKeyError> {
    debugfs_safe(image)?;
    let tool = |message: String| GuestKeyError::Tool {
        step: "debugfs",
        path: image.to_path_buf(),
        message,
    };
    if let Some(bad) = requests.iter().find(|r| r.contains(['\n', '\r'])) {
        return Err(tool(format!("request {bad:?} spans lines")));
    }
    let mut cmd = Command::new("debugfs");
    if write {
        cmd.arg("-w");
    }
    let mut child = cmd
        .arg("-f")
        .arg("-")
        .arg(image)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| tool(e.to_string()))?;
    let script: String = requests.iter().map(|r| format!("{r}\n")).collect();
    if let Some(mut stdin) = child.stdin.take() {
        // A debugfs that exits early closes its end; its status says why.
        let _ = stdin.write_all(script.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| tool(e.to_string()))?;
    if !out.status.success() {
        return Err(tool(format!(
            "{}: {}: {}",
            requests.join("; "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok((
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The permission bits and owner (mode, uid, gid) of several guest paths, from one
/// `debugfs stat` run; `None` for a path that does not
/// exist. Each request's output is what follows its `debugfs: stat PATH` echo.
fn stat_all(image: &Path, guests: &[&str]) -> Result<Vec<Option<GuestStat>>, GuestKeyError> {
    let requests: Vec<String> = guests.iter().map(|g| format!("stat {g}")).collect();
    let (stdout, _) = debugfs_batch(image, false, &requests)?;
    let text = String::from_utf8_lossy(&stdout);
    let mut found = Vec::with_capacity(guests.len());
    for (i, request) in requests.iter().enumerate() {
        let echo = format!("debugfs: {request}\n");
        let output = text.find(&echo).map(|at| {
            let rest = &text[at + echo.len()..];
            let end = requests
                .get(i + 1)
                .and_then(|next| rest.find(&format!("debugfs: {next}\n")))
                .unwrap_or(rest.len());
            &rest[..end]
        });
        match output {
            // Nothing printed: debugfs said on stderr that the path does not exist.
            Some(out) if out.trim().is_empty() => found.push(None),
            Some(out) => found.push(Some(parse_stat(image, guests[i], out)?)),
            None => {
                return Err(GuestKeyError::NotVerified {
                    path: image.to_path_buf(),
                    message: format!("debugfs did not run {request:?}"),
                })
            }
        }
    }
    Ok(found)
}

/// A guest path's permission bits, owner and group: (mode, uid, gid).
type GuestStat = (u32, u32, u32);

/// (mode, uid, gid) from the output of `debugfs stat`.
fn parse_stat(image: &Path, guest: &str, text: &str) -> Result<GuestStat, GuestKeyError> {
    let field = |name: &str| -> Option<u32> {
        let rest = &text[text.find(name)? + name.len()..];
        let word = rest.split_whitespace().next()?;
        if name == "Mode:" {
            u32::from_str_radix(word, 8).ok()
        } else {
            word.parse().ok()
        }
    };
    match (field("Mode:"), field("User:"), field("Group:")) {
        (Some(m), Some(u), Some(g)) => Ok((m, u, g)),
        _ => Err(GuestKeyError::NotVerified {
            path: image.to_path_buf(),
            message: format!("cannot parse debugfs stat of {guest}"),
        }),
    }
}

/// Merges `key` into existing authorized_keys text: existing lines kept in order, the
/// key appended unless present, one trailing newline.
pub fn merge_keys(existing: &str, key: &str) -> String {
    let key = key.trim();
    let mut lines: Vec<&str> = existing
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    if !lines.iter().any(|l| l.trim() == key) {
        lines.push(key);
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// Adds `public_key` to `/root/.ssh/authorized_keys` of the ext4 `image`, keeping the
/// keys already there. `scratch_dir` (below the state directory, without whitespace or
/// quotes) holds the merged file while debugfs copies it in. Verified by reading back.
pub fn inject_authorized_key(
    image: &Path,
    public_key: &str,
    scratch_dir: &Path,
) -> Result<(), GuestKeyError> {
    debugfs_safe(image)?;
    let staged = scratch_dir.join(".authorized_keys.staged");
    let staged_str = debugfs_safe(&staged)?.to_string();
    let existing = match read_authorized_keys(image)? {
        Some(keys) => keys,
        None => read_guest_file(image, GUEST_KIT_SEED)?.unwrap_or_default(),
    };
    let merged = merge_keys(&existing, public_key);
    std::fs::write(&staged, &merged).map_err(|source| GuestKeyError::Io {
        step: "write",
        path: staged.clone(),
        source,
    })?;
    // One debugfs run makes every change: `mkdir` of a directory that exists and `rm`
    // of a file that does not only print an error; any other failure (a failed
    // `write` leaves `set_inode_field` no file) makes debugfs exit non-zero, and the
    // read-back below checks the result either way.
    let mut requests = vec![
        "mkdir /root".to_string(),
        format!("mkdir {GUEST_SSH_DIR}"),
        format!("rm {GUEST_AUTHORIZED_KEYS}"),
        format!("write {staged_str} {GUEST_AUTHORIZED_KEYS}"),
    ];
    for (path, mode) in [
        (GUEST_SSH_DIR, "040700"),
        (GUEST_AUTHORIZED_KEYS, "0100600"),
    ] {
        for (field, value) in [("mode", mode), ("uid", "0"), ("gid", "0")] {
            requests.push(format!("set_inode_field {path} {field} {value}"));
        }
    }
    let result = debugfs_batch(image, true, &requests);
    let _ = std::fs::remove_file(&staged);
    result?;
    let back = read_authorized_keys(image)?.unwrap_or_default();
    if back != merged {
        return Err(GuestKeyError::NotVerified {
            path: image.to_path_buf(),
            message: "content differs from what was written".into(),
        });
    }
    let wanted = [(GUEST_SSH_DIR, 0o40700), (GUEST_AUTHORIZED_KEYS, 0o100600)];
    let stats = stat_all(image, &wanted.map(|(path, _)| path))?;
    for ((path, mode), found) in wanted.iter().zip(stats) {
        match found {
            Some((m, 0, 0)) if m & 0o7777 == mode & 0o7777 => {}
            other => {
                return Err(GuestKeyError::NotVerified {
                    path: image.to_path_buf(),
                    message: format!("{path}: mode/owner {other:?}, want {mode:o} 0:0"),
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_first_uses_get_one_identity() {
        let dir = tempfile::tempdir().unwrap();
        let lines: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        ensure_identity(dir.path())
                            .and_then(|id| id.public_key_line())
                            .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let on_disk = SshIdentity::paths(dir.path()).public_key_line().unwrap();
        for line in &lines {
            assert_eq!(line, &on_disk, "a caller got a key that is not banger's");
        }
    }

    fn image_with(dir: &Path, existing: Option<&str>) -> PathBuf {
        let root = dir.join("tree");
        std::fs::create_dir_all(root.join("root")).unwrap();
        if let Some(keys) = existing {
            std::fs::create_dir_all(root.join("root/.ssh")).unwrap();
            std::fs::write(root.join("root/.ssh/authorized_keys"), keys).unwrap();
        }
        let img = dir.join("rootfs.ext4");
        let out = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(&root)
            .arg(&img)
            .arg("8M")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        img
    }

    #[test]
    fn merge_keeps_existing_and_does_not_duplicate() {
        assert_eq!(merge_keys("", "k1"), "k1\n");
        assert_eq!(merge_keys("a\n\nb", "k1"), "a\nb\nk1\n");
        assert_eq!(merge_keys("a\nk1\n", "k1\n"), "a\nk1\n");
    }

    #[test]
    fn generates_identity_once() {
        let dir = tempfile::tempdir().unwrap();
        let id = ensure_identity(dir.path()).unwrap();
        let first = id.public_key_line().unwrap();
        assert!(first.starts_with("ssh-ed25519 "), "{first}");
        let again = ensure_identity(dir.path()).unwrap();
        assert_eq!(again.public_key_line().unwrap(), first);
        assert_eq!(id.known_hosts, dir.path().join("ssh/known_hosts"));
    }

    #[test]
    fn injects_into_an_image_without_ssh_dir() {
        let dir = tempfile::tempdir().unwrap();
        let img = image_with(dir.path(), None);
        assert_eq!(read_authorized_keys(&img).unwrap(), None);
        inject_authorized_key(&img, "ssh-ed25519 AAAAnew banger", dir.path()).unwrap();
        assert_eq!(
            read_authorized_keys(&img).unwrap().as_deref(),
            Some("ssh-ed25519 AAAAnew banger\n")
        );
        assert_eq!(
            stat_all(
                &img,
                &["/nonexistent", GUEST_SSH_DIR, GUEST_AUTHORIZED_KEYS]
            )
            .unwrap(),
            vec![None, Some((0o700, 0, 0)), Some((0o600, 0, 0))]
        );
        assert!(!dir.path().join(".authorized_keys.staged").exists());
        let fsck = Command::new("e2fsck")
            .args(["-fn"])
            .arg(&img)
            .output()
            .unwrap();
        assert!(fsck.status.success(), "{fsck:?}");
    }

    #[test]
    fn keeps_existing_keys_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let img = image_with(dir.path(), Some("ssh-ed25519 AAAAold kit\n"));
        inject_authorized_key(&img, "ssh-ed25519 AAAAnew banger", dir.path()).unwrap();
        inject_authorized_key(&img, "ssh-ed25519 AAAAnew banger", dir.path()).unwrap();
        assert_eq!(
            read_authorized_keys(&img).unwrap().as_deref(),
            Some("ssh-ed25519 AAAAold kit\nssh-ed25519 AAAAnew banger\n")
        );
    }

    #[test]
    fn keeps_the_kit_seed_keys_when_there_is_no_authorized_keys_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        std::fs::create_dir_all(root.join("etc/banger")).unwrap();
        std::fs::write(
            root.join("etc/banger/authorized_keys"),
            "ssh-ed25519 AAAAkit\n",
        )
        .unwrap();
        let img = image_with(dir.path(), None);
        inject_authorized_key(&img, "ssh-ed25519 AAAAnew banger", dir.path()).unwrap();
        assert_eq!(
            read_authorized_keys(&img).unwrap().as_deref(),
            Some("ssh-ed25519 AAAAkit\nssh-ed25519 AAAAnew banger\n")
        );
    }

    fn uid(text: &str) -> ObjectUid {
        ObjectUid::parse(text).unwrap()
    }

    #[test]
    fn host_key_alias_names_the_uid() {
        assert_eq!(host_key_alias(&uid("5f0c12ab")), "banger-5f0c12ab");
    }

    #[test]
    fn without_host_drops_only_that_host() {
        let text = "\
banger-aa ssh-ed25519 AAAA1
banger-aab ssh-ed25519 AAAA2
# banger-aa ssh-ed25519 commented
172.30.0.2,banger-aa ssh-ed25519 AAAA3 comment
[banger-aa]:2222 ssh-ed25519 AAAA4
@revoked banger-aa,other ssh-ed25519 AAAA5
|1|c2FsdA==|aGFzaA== ssh-ed25519 AAAA6
";
        assert_eq!(
            without_host(text, "banger-aa").as_deref(),
            Some(
                "\
banger-aab ssh-ed25519 AAAA2
# banger-aa ssh-ed25519 commented
172.30.0.2 ssh-ed25519 AAAA3 comment
@revoked other ssh-ed25519 AAAA5
|1|c2FsdA==|aGFzaA== ssh-ed25519 AAAA6
"
            )
        );
        assert_eq!(without_host(text, "banger-zz"), None);
        assert_eq!(without_host("", "banger-aa"), None);
        assert_eq!(
            without_host("banger-aa ssh-ed25519 AAAA1", "banger-aa").as_deref(),
            Some("")
        );
    }

    #[test]
    fn forget_host_key_rewrites_known_hosts_and_is_idempotent() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = uid("aa11");
        assert!(!forget_host_key(dir.path(), &a).unwrap(), "no file yet");
        let known = SshIdentity::paths(dir.path()).known_hosts;
        std::fs::create_dir_all(known.parent().unwrap()).unwrap();
        std::fs::write(
            &known,
            "banger-aa11 ssh-ed25519 AAAAold\nbanger-bb22 ssh-ed25519 AAAAother\n",
        )
        .unwrap();
        std::fs::set_permissions(&known, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(forget_host_key(dir.path(), &a).unwrap());
        assert_eq!(
            std::fs::read_to_string(&known).unwrap(),
            "banger-bb22 ssh-ed25519 AAAAother\n"
        );
        assert_eq!(
            std::fs::metadata(&known).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert!(!forget_host_key(dir.path(), &a).unwrap(), "already gone");
        assert_eq!(
            std::fs::read_to_string(&known).unwrap(),
            "banger-bb22 ssh-ed25519 AAAAother\n"
        );
        let leftovers: Vec<_> = std::fs::read_dir(known.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, [std::ffi::OsString::from("known_hosts")]);
    }

    #[test]
    fn refuses_host_paths_debugfs_would_split() {
        let dir = tempfile::tempdir().unwrap();
        let img = image_with(dir.path(), None);
        let bad = dir.path().join("with space");
        std::fs::create_dir_all(&bad).unwrap();
        let err = inject_authorized_key(&img, "k", &bad).unwrap_err();
        assert!(
            matches!(err, GuestKeyError::UnsafeDebugfsPath { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("whitespace or quotes"));
        let quoted = dir.path().join("q\"uote");
        assert!(debugfs_safe(&quoted).is_err());
        assert_eq!(read_authorized_keys(&img).unwrap(), None, "nothing written");
    }
}
