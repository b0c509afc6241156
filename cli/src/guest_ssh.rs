//! Getting into a VM with the system `ssh`, through the daemon.
//!
//! `banger ssh`, `exec` and `cp` run OpenSSH's `ssh` with banger's identity and
//! `known_hosts` (paths from `GET /v1/ssh-identity`, never guessed), the VM's host key
//! pinned under its uid (`HostKeyAlias banger-<uid>`: IPs are reused, uids are not),
//! `StrictHostKeyChecking accept-new` (the first contact pins, a changed key is refused),
//! and `banger connect VM 22` as the `ProxyCommand`, so the guest is reached through the
//! daemon from any network namespace. No user or system ssh configuration is read
//! (`-F none`), so the result does not depend on the machine's `~/.ssh/config`.
//!
//! ssh's own messages go to a log file (`-E`), not to the terminal: the remote
//! command's stderr is the only stderr the user sees. When ssh itself fails (exit 255
//! with something in the log) the log becomes one line ([`AccessError::HostKeyChanged`]
//! or [`AccessError::SshFailed`]); a remote command that exits 255 on its own leaves
//! the log empty and its status is passed on.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use banger_controller::api::types::{ObjectView, SshIdentityView};
use banger_controller::host::guest_keys::host_key_alias;
use banger_controller::host::names::ObjectUid;
use banger_specs::Kind;

use crate::client::DaemonClient;
use crate::error::CliError;
use banger_controller::host::guest_ssh::guest_ssh_options;

use crate::quoting::{proxy_word, QuoteError};

/// The pseudo-domain of VMs for `ssh NAME.banger` (see `banger ssh-config`).
pub const DOMAIN_SUFFIX: &str = ".banger";
/// The guest port of SSH.
pub const SSH_PORT: u16 = 22;
/// ssh's exit status when ssh itself (not the remote command) failed.
pub const SSH_FAILED: u8 = 255;

/// Why banger could not get into a VM.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The daemon does not know the VM.
    #[error("vm {vm:?} not found")]
    NotFound {
        /// The VM.
        vm: String,
    },
    /// The VM exists but cannot take logins now.
    #[error("vm {vm} is not ready: {why}")]
    NotReady {
        /// The VM.
        vm: String,
        /// Why, and what to do.
        why: String,
    },
    /// The daemon's key cannot be read by this user.
    #[error("cannot read banger's SSH key {}: {source} ({hint})", path.display())]
    KeyUnreadable {
        /// The key file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// A path or name cannot be written into ssh's options.
    #[error(transparent)]
    Quote(#[from] QuoteError),
    /// The guest presented another host key than the one pinned for this VM.
    #[error(
        "vm {vm}: the guest's SSH host key is not the one banger pinned for this VM ({alias} in {}); refusing to connect. If the guest's host key was replaced on purpose, forget the old one with: ssh-keygen -R {alias} -f {}",
        known_hosts.display(),
        known_hosts.display()
    )]
    HostKeyChanged {
        /// The VM.
        vm: String,
        /// Its `HostKeyAlias`.
        alias: String,
        /// banger's known_hosts.
        known_hosts: PathBuf,
    },
    /// ssh itself failed.
    #[error("vm {vm}: ssh failed: {message}")]
    SshFailed {
        /// The VM.
        vm: String,
        /// ssh's last message.
        message: String,
    },
    /// A command in the guest failed.
    #[error("vm {vm}: {what}: {message}")]
    Remote {
        /// The VM.
        vm: String,
        /// What was being done.
        what: String,
        /// Its last error line and exit status.
        message: String,
    },
    /// A local program or file operation failed.
    #[error("vm {vm}: {what}: {source}")]
    Local {
        /// The VM.
        vm: String,
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

/// The VM name in `NAME` or `NAME.banger` (as `ssh NAME.banger` passes it to `%h`).
pub fn vm_name(arg: &str) -> &str {
    arg.strip_suffix(DOMAIN_SUFFIX)
        .filter(|name| !name.is_empty())
        .unwrap_or(arg)
}

/// Why a VM cannot take logins now (`None` when it can): being deleted, not Running,
/// no address, or its guest not up (`GuestReady` not `True`).
pub fn not_ready_reason(vm: &ObjectView) -> Option<String> {
    let name = &vm.metadata.name;
    if vm.metadata.deletion_timestamp.is_some() {
        return Some("it is being deleted".to_string());
    }
    if vm.status.phase != "Running" {
        return Some(format!(
            "it is not running (phase {}); start it with `state: Running` in its spec",
            vm.status.phase
        ));
    }
    if vm.status.ip.is_none() {
        return Some("it has no address yet".to_string());
    }
    let guest = vm
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "GuestReady");
    match guest {
        Some(c) if c.status == "True" => None,
        Some(c) => Some(format!(
            "its guest is not up yet (GuestReady={}, {}); wait with `banger wait vm/{name} --for=condition=GuestReady`",
            c.status, c.reason
        )),
        None => Some(format!(
            "its guest is not up yet; wait with `banger wait vm/{name} --for=condition=GuestReady`"
        )),
    }
}

/// Looks the VM up and refuses, with one line, unless it can take logins now.
pub async fn ready_vm(client: &DaemonClient, vm: &str) -> Result<ObjectView, CliError> {
    let object = banger_controller::api::types::ObjectRef {
        kind: Kind::Vm,
        name: vm.to_string(),
    };
    let view = client
        .get(&object)
        .await?
        .ok_or_else(|| AccessError::NotFound { vm: vm.to_string() })?;
    if let Some(why) = not_ready_reason(&view) {
        return Err(AccessError::NotReady {
            vm: vm.to_string(),
            why,
        }
        .into());
    }
    Ok(view)
}

/// Everything needed to run `ssh` into one VM.
#[derive(Debug, Clone)]
pub struct GuestSsh {
    /// The VM's name.
    pub vm: String,
    /// Where banger's key and known_hosts are.
    pub identity: SshIdentityView,
    /// `banger-<uid>`: the name its host key is pinned under.
    pub alias: String,
    /// `banger --socket S connect VM 22`, quoted for ssh.
    pub proxy_command: String,
}

/// The `ProxyCommand` that reaches `target` (a VM name, or ssh's `%h`) through the
/// daemon at `socket`.
pub fn proxy_command(banger: &Path, socket: &Path, target: &str) -> Result<String, QuoteError> {
    let word = |p: &Path| proxy_word(&p.to_string_lossy());
    let target = if target == "%h" {
        target.to_string()
    } else {
        proxy_word(target)?
    };
    Ok(format!(
        "{} --socket {} connect {target} {SSH_PORT}",
        word(banger)?,
        word(socket)?
    ))
}

/// Runs blocking file system work on tokio's blocking pool.
pub async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
}

/// This `banger` binary and the absolute socket path, as the `ProxyCommand` names them.
pub async fn self_and_socket(client: &DaemonClient) -> Result<(PathBuf, PathBuf), std::io::Error> {
    let socket = client.socket().to_path_buf();
    off_runtime(move || Ok((std::env::current_exe()?, std::path::absolute(socket)?))).await
}

impl GuestSsh {
    /// Checks that the VM can take logins now and gathers what ssh needs.
    pub async fn open(client: &DaemonClient, vm: &str) -> Result<GuestSsh, CliError> {
        let view = ready_vm(client, vm).await?;
        let identity = client.ssh_identity().await?;
        let key = identity.private_key.clone();
        let readable = off_runtime(move || std::fs::File::open(&key).map(drop)).await;
        if let Err(source) = readable {
            let hint = if source.kind() == std::io::ErrorKind::PermissionDenied {
                "it belongs to the daemon's user: run banger as that user, e.g. with sudo"
            } else {
                "the daemon makes it when it first creates a VM's disk"
            };
            return Err(AccessError::KeyUnreadable {
                path: identity.private_key,
                source,
                hint,
            }
            .into());
        }
        let local = |what: &str| {
            let vm = vm.to_string();
            let what = what.to_string();
            move |source| AccessError::Local { vm, what, source }
        };
        let uid = ObjectUid::parse(&view.metadata.uid)
            .map_err(|e| local("the daemon's uid for it")(std::io::Error::other(e.to_string())))?;
        let (banger, socket) = self_and_socket(client)
            .await
            .map_err(local("locating banger"))?;
        Ok(GuestSsh {
            vm: vm.to_string(),
            alias: host_key_alias(&uid),
            proxy_command: proxy_command(&banger, &socket, vm).map_err(AccessError::from)?,
            identity,
        })
    }

    /// ssh's options for this VM (everything before the destination): banger's
    /// guest options ([`guest_ssh_options`], shared with the daemon) and the
    /// `ProxyCommand` through the daemon.
    pub fn options(&self) -> Result<Vec<OsString>, QuoteError> {
        let mut args = guest_ssh_options(
            &self.identity.private_key,
            &self.identity.known_hosts,
            &self.alias,
            &self.identity.user,
        )?;
        args.push("-o".into());
        args.push(format!("ProxyCommand={}", self.proxy_command).into());
        Ok(args)
    }

    /// The full ssh argv (after `ssh`): options, `-E LOG`, `flags`, the destination and
    /// the remote command line, if any.
    pub fn argv(
        &self,
        log: &Path,
        flags: &[&str],
        remote: Option<&str>,
    ) -> Result<Vec<OsString>, QuoteError> {
        let mut args = self.options()?;
        args.push("-E".into());
        args.push(log.as_os_str().to_owned());
        args.extend(flags.iter().map(OsString::from));
        args.push(format!("{}{DOMAIN_SUFFIX}", self.vm).into());
        if let Some(remote) = remote {
            args.push("--".into());
            args.push(remote.into());
        }
        Ok(args)
    }

    /// What an ssh exit status means: the remote command's status, or (255 with a
    /// message in ssh's log) ssh's own failure as one line.
    pub fn outcome(&self, status: ExitStatus, log: &str) -> Result<u8, AccessError> {
        let code = exit_code(status);
        if code != SSH_FAILED || log.trim().is_empty() {
            return Ok(code);
        }
        if log.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || log.contains("Host key verification failed")
        {
            return Err(AccessError::HostKeyChanged {
                vm: self.vm.clone(),
                alias: self.alias.clone(),
                known_hosts: self.identity.known_hosts.clone(),
            });
        }
        let message = log
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("exit status 255")
            .to_string();
        Err(AccessError::SshFailed {
            vm: self.vm.clone(),
            message,
        })
    }
}

impl GuestSsh {
    /// Starts ssh with the given stdio; the log file must live until [`Self::finish`].
    pub async fn spawn(
        &self,
        flags: &[&str],
        remote: &str,
        stdin: std::process::Stdio,
        stdout: std::process::Stdio,
    ) -> Result<(tokio::process::Child, tempfile::NamedTempFile), AccessError> {
        let log = log_file(&self.vm).await?;
        let argv = self.argv(log.path(), flags, Some(remote))?;
        let child = tokio::process::Command::new("ssh")
            .args(&argv)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| AccessError::Local {
                vm: self.vm.clone(),
                what: "running ssh".to_string(),
                source,
            })?;
        Ok((child, log))
    }

    /// The end of a [`Self::spawn`]ed ssh: `Ok` when the remote command succeeded;
    /// ssh's own failure, or the remote command's failure (`what` failed, its last
    /// stderr line, its status) as one line.
    pub async fn finish(
        &self,
        what: &str,
        status: ExitStatus,
        log: &Path,
        stderr: &[u8],
    ) -> Result<(), AccessError> {
        let code = self.outcome(status, &read_log(log).await)?;
        if code == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(stderr);
        let last = text
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("no message");
        Err(AccessError::Remote {
            vm: self.vm.clone(),
            what: what.to_string(),
            message: format!("{last} (exit status {code})"),
        })
    }

    /// Runs ssh with this terminal's stdin (unless `flags` has `-n`), stdout and
    /// stderr, and returns the remote command's exit status. banger ignores Ctrl-C
    /// meanwhile: ssh gets it (it shares the terminal) and its status tells.
    pub async fn run_attached(&self, flags: &[&str], remote: Option<&str>) -> Result<u8, CliError> {
        let log = log_file(&self.vm).await?;
        let argv = self
            .argv(log.path(), flags, remote)
            .map_err(AccessError::from)?;
        let local = |what: &str| {
            let vm = self.vm.clone();
            let what = what.to_string();
            move |source| AccessError::Local { vm, what, source }
        };
        let _interrupts = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(local("handling Ctrl-C"))?;
        let status = tokio::process::Command::new("ssh")
            .args(&argv)
            .kill_on_drop(true)
            .status()
            .await
            .map_err(local("running ssh"))?;
        Ok(self.outcome(status, &read_log(log.path()).await)?)
    }
}

/// A process's exit status as a shell reports it: the code, or 128 + the signal.
pub fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(signal)) => u8::try_from((128 + signal) & 0xff).unwrap_or(1),
        (None, None) => 1,
    }
}

/// A temporary file for ssh's `-E` log, removed when dropped.
pub async fn log_file(vm: &str) -> Result<tempfile::NamedTempFile, AccessError> {
    off_runtime(|| {
        tempfile::Builder::new()
            .prefix("banger-ssh-")
            .suffix(".log")
            .tempfile()
    })
    .await
    .map_err(|source| AccessError::Local {
        vm: vm.to_string(),
        what: "creating ssh's log file".to_string(),
        source,
    })
}

/// Reads ssh's log (empty when it cannot be read).
pub async fn read_log(path: &Path) -> String {
    tokio::fs::read(path)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use banger_controller::api::types::{Condition, ObjectMetaView, StatusView};
    use std::os::unix::process::ExitStatusExt;

    fn vm(phase: &str, ip: Option<&str>, guest_ready: Option<&str>) -> ObjectView {
        ObjectView {
            api_version: "banger.dev/v1alpha1".into(),
            kind: Kind::Vm,
            metadata: ObjectMetaView {
                name: "dev".into(),
                uid: "0123abcd".into(),
                generation: 1,
                creation_timestamp: String::new(),
                deletion_timestamp: None,
                labels: Default::default(),
                annotations: Default::default(),
            },
            spec: serde_json::Value::Null,
            status: StatusView {
                phase: phase.into(),
                ip: ip.map(str::to_string),
                conditions: guest_ready
                    .map(|s| Condition {
                        type_: "GuestReady".into(),
                        status: s.into(),
                        reason: "Booting".into(),
                        message: String::new(),
                        last_transition_time: String::new(),
                        observed_generation: 1,
                    })
                    .into_iter()
                    .collect(),
                ..StatusView::default()
            },
        }
    }

    fn guest() -> GuestSsh {
        GuestSsh {
            vm: "dev".into(),
            identity: SshIdentityView {
                private_key: "/state/ssh/id_ed25519".into(),
                known_hosts: "/state/ssh/known_hosts".into(),
                user: "root".into(),
            },
            alias: "banger-0123abcd".into(),
            proxy_command: "/bin/banger --socket /s.sock connect dev 22".into(),
        }
    }

    #[test]
    fn names_may_carry_the_banger_domain() {
        assert_eq!(vm_name("dev"), "dev");
        assert_eq!(vm_name("dev.banger"), "dev");
        assert_eq!(vm_name(".banger"), ".banger");
    }

    #[test]
    fn only_running_vms_with_a_guest_up_take_logins() {
        assert_eq!(
            not_ready_reason(&vm("Running", Some("172.30.0.2"), Some("True"))),
            None
        );
        let stopped = not_ready_reason(&vm("Stopped", None, None)).unwrap();
        assert!(
            stopped.starts_with("it is not running (phase Stopped)"),
            "{stopped}"
        );
        let booting = not_ready_reason(&vm("Running", Some("172.30.0.2"), Some("False"))).unwrap();
        assert!(
            booting.starts_with("its guest is not up yet (GuestReady=False, Booting)"),
            "{booting}"
        );
        assert!(booting.contains("banger wait vm/dev --for=condition=GuestReady"));
        assert_eq!(
            not_ready_reason(&vm("Running", None, Some("True"))).as_deref(),
            Some("it has no address yet")
        );
        let mut deleting = vm("Running", Some("172.30.0.2"), Some("True"));
        deleting.metadata.deletion_timestamp = Some("now".into());
        assert_eq!(
            not_ready_reason(&deleting).as_deref(),
            Some("it is being deleted")
        );
    }

    #[test]
    fn proxy_commands_quote_paths_and_keep_percent_h() {
        assert_eq!(
            proxy_command(
                Path::new("/usr/bin/banger"),
                Path::new("/run/banger/banger.sock"),
                "dev"
            )
            .unwrap(),
            "/usr/bin/banger --socket /run/banger/banger.sock connect dev 22"
        );
        assert_eq!(
            proxy_command(
                Path::new("/opt/my banger/banger"),
                Path::new("/tmp/100%.sock"),
                "%h"
            )
            .unwrap(),
            "'/opt/my banger/banger' --socket '/tmp/100%%.sock' connect %h 22"
        );
        assert!(proxy_command(Path::new("/a\nb"), Path::new("/s"), "dev").is_err());
    }

    #[test]
    fn argv_pins_the_host_key_per_uid_and_runs_no_user_config() {
        let args: Vec<String> = guest()
            .argv(Path::new("/tmp/log"), &["-T", "-n"], Some("'exit' '7'"))
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(args[..2], ["-F", "none"]);
        for option in [
            "IdentityFile=\"/state/ssh/id_ed25519\"",
            "UserKnownHostsFile=\"/state/ssh/known_hosts\"",
            "HostKeyAlias=banger-0123abcd",
            "StrictHostKeyChecking=accept-new",
            "HashKnownHosts=no",
            "User=root",
            "ProxyCommand=/bin/banger --socket /s.sock connect dev 22",
        ] {
            let at = args
                .iter()
                .position(|a| a == option)
                .unwrap_or_else(|| panic!("{option} missing from {args:?}"));
            assert_eq!(args[at - 1], "-o");
        }
        assert_eq!(
            args[args.len() - 7..],
            [
                "-E",
                "/tmp/log",
                "-T",
                "-n",
                "dev.banger",
                "--",
                "'exit' '7'"
            ]
        );
    }

    #[test]
    fn exit_statuses_pass_through_and_ssh_failures_become_one_line() {
        let g = guest();
        let status = |code: i32| ExitStatus::from_raw(code << 8);
        assert_eq!(g.outcome(status(0), "").unwrap(), 0);
        assert_eq!(g.outcome(status(7), "").unwrap(), 7);
        assert_eq!(
            g.outcome(status(255), "").unwrap(),
            255,
            "the command's own 255"
        );
        assert_eq!(g.outcome(ExitStatus::from_raw(2), "").unwrap(), 130);
        let changed = g
            .outcome(
                status(255),
                "@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n…\nHost key verification failed.\n",
            )
            .unwrap_err();
        assert_eq!(
            changed.to_string(),
            "vm dev: the guest's SSH host key is not the one banger pinned for this VM \
             (banger-0123abcd in /state/ssh/known_hosts); refusing to connect. If the guest's \
             host key was replaced on purpose, forget the old one with: \
             ssh-keygen -R banger-0123abcd -f /state/ssh/known_hosts"
        );
        let other = g
            .outcome(
                status(255),
                "kex_exchange_identification: Connection closed by remote host\n\n",
            )
            .unwrap_err();
        assert_eq!(
            other.to_string(),
            "vm dev: ssh failed: kex_exchange_identification: Connection closed by remote host"
        );
    }
}
