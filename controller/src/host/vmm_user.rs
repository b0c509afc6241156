//! The unprivileged user banger's VMMs run as (`banger-vmm` by default).
//!
//! The daemon runs as root; the VMMs it starts must not. [`ensure`] looks the user up
//! and, when it is missing, creates it as a system user with its own group, no home
//! and no login shell (`useradd --system --user-group …`, argv only). The daemon does
//! that once at start, so a fresh host needs no setup step; a name that resolves to
//! root is refused.
//!
//! The user owns nothing in banger's state directory: a VMM receives the files it
//! needs as descriptors the daemon opened for it ([`crate::host::process::spawn_detached`]),
//! except the guest kernel and initrd, which QEMU reopens through `/proc/self/fd` and
//! which must therefore be readable by this user ([`VmmUser::can_read`]).
//!
//! Blocking (user database lookups, `useradd`): call it before the daemon serves or on
//! the blocking pool.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::host::process::Credentials;
use crate::host::which::find_executable;

/// The VMM user's name when none is configured (`banger daemon --vmm-user`).
pub const DEFAULT_VMM_USER: &str = "banger-vmm";

/// `useradd`'s exit status when the name is already taken (another daemon made it
/// meanwhile).
const USERADD_NAME_IN_USE: i32 = 9;
/// `useradd`'s exit status when it cannot lock or update the user database (someone
/// else holds the lock): worth another try.
const USERADD_BUSY: [i32; 2] = [1, 10];
const USERADD_ATTEMPTS: u32 = 5;

/// Why the VMM user could not be found or made.
#[derive(Debug, thiserror::Error)]
pub enum VmmUserError {
    /// The name is not a portable user name.
    #[error("VMM user {name:?}: not a valid user name (lowercase letters, digits, '_' and '-', starting with a letter or '_', at most 32 characters)")]
    InvalidName {
        /// The name.
        name: String,
    },
    /// The name is root's (uid 0).
    #[error("VMM user {name:?} is root: VMMs must run unprivileged")]
    Root {
        /// The name.
        name: String,
    },
    /// The user database could not be read.
    #[error("VMM user {name:?}: lookup failed: {source}")]
    Lookup {
        /// The name.
        name: String,
        /// The OS error.
        #[source]
        source: nix::Error,
    },
    /// `useradd` failed.
    #[error("VMM user {name:?}: cannot create it: {reason}")]
    Create {
        /// The name.
        name: String,
        /// What went wrong.
        reason: String,
    },
}

/// The VMM user as the user database knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmmUser {
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
}

impl VmmUser {
    /// The credentials a VMM spawned as this user gets: its uid and group, plus `groups`
    /// (say, the group of `/dev/kvm`) and nothing else.
    pub fn credentials(&self, groups: Vec<u32>) -> Credentials {
        Credentials {
            uid: self.uid,
            gid: self.gid,
            groups,
        }
    }

    /// Whether this user may read a file of this owner, group and mode (the kernel's
    /// owner, then group, then other rule; this user has no supplementary groups). Pure.
    pub fn can_read(&self, owner: u32, group: u32, mode: u32) -> bool {
        if owner == self.uid {
            mode & 0o400 != 0
        } else if group == self.gid {
            mode & 0o040 != 0
        } else {
            mode & 0o004 != 0
        }
    }

    /// [`Self::can_read`] of the file at `path` (blocking: one `stat`, following
    /// symlinks); `Err` says why not.
    pub fn check_readable(&self, path: &Path) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if self.can_read(meta.uid(), meta.gid(), meta.mode()) {
            Ok(())
        } else {
            Err(format!(
                "{} (owner {}, group {}, mode {:o}) is not readable by the VMM user {}: make it readable by others or by group {}",
                path.display(),
                meta.uid(),
                meta.gid(),
                meta.mode() & 0o7777,
                self.name,
                self.name
            ))
        }
    }
}

/// Checks that `name` is a portable user name: `[a-z_][a-z0-9_-]*`, 1 to 32 characters.
/// Such a name is also safe as one argv element of `useradd`.
pub fn validate_name(name: &str) -> Result<(), VmmUserError> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    let rest_ok =
        bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if first_ok && rest_ok && name.len() <= 32 {
        Ok(())
    } else {
        Err(VmmUserError::InvalidName {
            name: name.to_owned(),
        })
    }
}

/// Looks `name` up in the user database; `None` when there is no such user. Root is
/// refused.
pub fn lookup(name: &str) -> Result<Option<VmmUser>, VmmUserError> {
    validate_name(name)?;
    let user = nix::unistd::User::from_name(name).map_err(|source| VmmUserError::Lookup {
        name: name.to_owned(),
        source,
    })?;
    let Some(user) = user else {
        return Ok(None);
    };
    if user.uid.is_root() {
        return Err(VmmUserError::Root {
            name: name.to_owned(),
        });
    }
    Ok(Some(VmmUser {
        name: name.to_owned(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    }))
}

/// The VMM user `name`, created first when it does not exist (a system user with its
/// own group, no home, no login shell). Idempotent; safe against another daemon
/// creating it at the same time.
pub fn ensure(name: &str) -> Result<VmmUser, VmmUserError> {
    if let Some(user) = lookup(name)? {
        return Ok(user);
    }
    let create_err = |reason: String| VmmUserError::Create {
        name: name.to_owned(),
        reason,
    };
    let useradd = find_executable(Path::new("useradd"))
        .ok_or_else(|| create_err("useradd not found (install the passwd package)".into()))?;
    let mut last = String::new();
    for attempt in 0..USERADD_ATTEMPTS {
        let output = Command::new(&useradd)
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                "--comment",
                "banger VMMs",
                name,
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| create_err(format!("run {}: {e}", useradd.display())))?;
        if output.status.success() || output.status.code() == Some(USERADD_NAME_IN_USE) {
            return lookup(name)?.ok_or_else(|| {
                create_err("useradd succeeded but the user is not in the database".into())
            });
        }
        last = format!(
            "{} exited with {}: {}",
            useradd.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        let busy = output
            .status
            .code()
            .is_some_and(|c| USERADD_BUSY.contains(&c));
        if !busy {
            break;
        }
        if let Some(user) = lookup(name)? {
            return Ok(user);
        }
        std::thread::sleep(Duration::from_millis(100 * u64::from(attempt + 1)));
    }
    Err(create_err(last))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_portable() {
        for ok in ["banger-vmm", "_vmm", "a", "vmm_2"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Banger",
            "-x",
            "1x",
            "a b",
            "a;b",
            "a/b",
            &"a".repeat(33),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn root_is_refused() {
        assert!(matches!(lookup("root"), Err(VmmUserError::Root { .. })));
    }

    #[test]
    fn read_access_follows_owner_group_other() {
        let user = VmmUser {
            name: "banger-vmm".into(),
            uid: 998,
            gid: 997,
        };
        assert!(user.can_read(0, 0, 0o644));
        assert!(!user.can_read(0, 0, 0o640));
        assert!(user.can_read(0, 997, 0o640));
        assert!(user.can_read(998, 0, 0o400));
        // The owner class decides alone, as in the kernel.
        assert!(!user.can_read(998, 0, 0o044));
        assert!(!user.can_read(0, 997, 0o604));
    }

    #[test]
    fn credentials_carry_only_the_given_groups() {
        let user = VmmUser {
            name: "banger-vmm".into(),
            uid: 998,
            gid: 997,
        };
        let creds = user.credentials(vec![104]);
        assert_eq!((creds.uid, creds.gid, creds.groups), (998, 997, vec![104]));
    }
}
