//! How banger's `ssh` reaches a guest: one set of options for every caller.
//!
//! The daemon (Workspace copies and exports) and the CLI (`banger ssh`, `exec`, `cp`)
//! both run OpenSSH's `ssh` as root with banger's key, and both must trust guests the
//! same way, so [`guest_ssh_options`] builds the options for both:
//!
//! - `-F none`: no user or system configuration is read, so the result does not depend
//!   on the machine's `~/.ssh/config` or `/etc/ssh/ssh_config`;
//! - banger's key only (`IdentityFile`, `IdentitiesOnly yes`), as `User root`;
//! - banger's own `known_hosts` (and no global one), the guest's host key pinned under
//!   the VM's uid (`HostKeyAlias banger-<uid>`, [`host_key_alias`]) rather than its IP,
//!   since IPs are reused and uids are not; `StrictHostKeyChecking accept-new` (the
//!   first contact pins, a changed key is refused), `CheckHostIP no`, and
//!   `HashKnownHosts no` (so [`super::guest_keys::forget_host_key`] can find the pin);
//! - `BatchMode yes` (never a prompt) and `LogLevel ERROR`.
//!
//! Callers add how the guest is reached: the daemon dials the guest's address itself,
//! the CLI goes through the daemon with a `ProxyCommand`.
//!
//! Paths in these options are parsed by ssh's configuration parser, so they go through
//! [`config_path`]: double-quoted, `%` doubled; `"`, `\`, `$` (ssh expands `${VAR}` there,
//! with no escape) and control characters are refused.

use std::ffi::OsString;
use std::path::Path;

pub use super::guest_keys::host_key_alias;

/// Why a value cannot be given to ssh.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} cannot be given to ssh: it contains {what}")]
pub struct QuoteError {
    /// The refused value.
    pub value: String,
    /// The offending character, described.
    pub what: &'static str,
}

/// Refuses a value with a control character (a line break ends an ssh configuration
/// line).
pub fn refuse_control(value: &str) -> Result<(), QuoteError> {
    if value.chars().any(char::is_control) {
        return Err(QuoteError {
            value: value.to_string(),
            what: "a control character (such as a line break)",
        });
    }
    Ok(())
}

/// A path argument of an ssh configuration keyword (see the module docs).
pub fn config_path(path: &Path) -> Result<String, QuoteError> {
    let text = path.to_str().ok_or_else(|| QuoteError {
        value: path.display().to_string(),
        what: "bytes that are not UTF-8",
    })?;
    refuse_control(text)?;
    for (bad, what) in [
        ('"', "a double quote"),
        ('\\', "a backslash"),
        ('$', "a dollar sign"),
    ] {
        if text.contains(bad) {
            return Err(QuoteError {
                value: text.to_string(),
                what,
            });
        }
    }
    Ok(format!("\"{}\"", text.replace('%', "%%")))
}

/// The options (`-F none` and `-o KEY=VALUE` pairs) every banger `ssh` into a guest
/// uses: `private_key` and `known_hosts` are banger's identity, `alias` the VM's
/// [`host_key_alias`], `user` the guest user (see the module docs).
pub fn guest_ssh_options(
    private_key: &Path,
    known_hosts: &Path,
    alias: &str,
    user: &str,
) -> Result<Vec<OsString>, QuoteError> {
    refuse_control(alias)?;
    refuse_control(user)?;
    let mut args: Vec<OsString> = vec!["-F".into(), "none".into()];
    for option in [
        format!("IdentityFile={}", config_path(private_key)?),
        "IdentitiesOnly=yes".to_string(),
        format!("UserKnownHostsFile={}", config_path(known_hosts)?),
        "GlobalKnownHostsFile=none".to_string(),
        format!("HostKeyAlias={alias}"),
        "StrictHostKeyChecking=accept-new".to_string(),
        "HashKnownHosts=no".to_string(),
        "CheckHostIP=no".to_string(),
        "BatchMode=yes".to_string(),
        "LogLevel=ERROR".to_string(),
        format!("User={user}"),
    ] {
        args.push("-o".into());
        args.push(option.into());
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn config_paths_are_quoted_or_refused() {
        assert_eq!(
            config_path(Path::new("/var/lib/banger/ssh/id_ed25519")).unwrap(),
            "\"/var/lib/banger/ssh/id_ed25519\""
        );
        assert_eq!(
            config_path(Path::new("/tmp/a b/100%")).unwrap(),
            "\"/tmp/a b/100%%\""
        );
        for bad in ["/a\"b", "/a\\b", "/a/${HOME}", "/a\nb"] {
            let err = config_path(Path::new(bad)).unwrap_err();
            assert!(err.to_string().contains("cannot be given to ssh"), "{err}");
        }
    }

    /// ssh itself reads the options back as written: `ssh -G` prints the configuration
    /// it would use, with no user or system configuration read.
    #[test]
    fn ssh_reads_the_options_as_meant() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state dir 100%");
        let key = state.join("ssh/id_ed25519");
        let known = state.join("ssh/known_hosts");
        let mut args = guest_ssh_options(&key, &known, "banger-0123abcd", "root").unwrap();
        args.push("172.30.0.9".into());
        let out = Command::new("ssh").arg("-G").args(&args).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let config = String::from_utf8_lossy(&out.stdout).into_owned();
        let has = |line: &str| config.lines().any(|l| l == line);
        for line in [
            "user root".to_string(),
            "hostname 172.30.0.9".to_string(),
            // `-G` prints IdentityFile before its `%` tokens are expanded.
            format!(
                "identityfile {}",
                key.display().to_string().replace('%', "%%")
            ),
            "identitiesonly yes".to_string(),
            format!("userknownhostsfile {}", known.display()),
            "globalknownhostsfile none".to_string(),
            "hostkeyalias banger-0123abcd".to_string(),
            "stricthostkeychecking accept-new".to_string(),
            "hashknownhosts no".to_string(),
            "batchmode yes".to_string(),
        ] {
            assert!(has(&line), "{line:?} missing from:\n{config}");
        }
        assert!(guest_ssh_options(&key, &known, "a\nb", "root").is_err());
        assert!(guest_ssh_options(Path::new("/a\"b"), &known, "a", "root").is_err());
    }
}
