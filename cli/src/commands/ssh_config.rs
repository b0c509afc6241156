//! `banger ssh-config`: `Host` entries so that plain `ssh NAME.banger`, `scp`, `rsync`
//! and editors' remote modes reach banger's VMs through the daemon.
//!
//! One `Host NAME.banger` entry per VM carries what differs per VM: its `HostKeyAlias`
//! (`banger-<uid>`: host keys are pinned per VM uid, and ssh expands no tokens in
//! `HostKeyAlias`, so a wildcard entry cannot name it) and
//! `StrictHostKeyChecking accept-new`. A final `Host *.banger` entry carries the rest
//! (user, key, known_hosts, `ProxyCommand banger connect %h 22`) and
//! `StrictHostKeyChecking yes`: a VM made after the file was written is refused rather
//! than pinned under its name; writing the file again lets it in. ssh takes the first
//! value it finds for each option, so the per-VM lines win.

use std::fmt::Write as _;
use std::process::ExitCode;

use banger_controller::api::types::{ObjectView, SshIdentityView};
use banger_controller::host::guest_keys::host_key_alias;
use banger_controller::host::names::ObjectUid;
use banger_specs::Kind;

use crate::client::DaemonClient;
use crate::error::{print_out, CliError};
use crate::guest_ssh::{proxy_command, self_and_socket, AccessError, DOMAIN_SUFFIX};
use crate::quoting::{config_path, QuoteError};

/// Arguments of `banger ssh-config`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Prints ssh client configuration for every VM the daemon knows: `ssh NAME.banger` then
logs in as root with banger's key, checks the host key against banger's known_hosts
(pinned per VM uid on first contact), and goes through the daemon with
`banger connect %h 22`. Write it again after creating VMs: a VM made later is refused
until then.

Examples:
  banger ssh-config > ~/.ssh/banger.conf
  echo 'Include ~/.ssh/banger.conf' >> ~/.ssh/config   # once; Include must come before any Host
  ssh dev.banger
  scp ./notes.txt dev.banger:/root/
  rsync -a ./src/ dev.banger:/root/src/")]
pub struct SshConfigArgs {}

/// One VM's entry: its name and uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmEntry {
    /// The VM's name.
    pub name: String,
    /// Its uid (for `HostKeyAlias`).
    pub uid: ObjectUid,
}

/// The configuration text for `vms`, reaching the daemon with `proxy_command`.
pub fn render(
    vms: &[VmEntry],
    identity: &SshIdentityView,
    proxy_command: &str,
) -> Result<String, QuoteError> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# banger: ssh access to its VMs through the daemon. Made by `banger ssh-config`;\n\
         # write it again after creating VMs (a VM made later is refused until then)."
    );
    for vm in vms {
        let _ = writeln!(
            out,
            "\nHost {}{DOMAIN_SUFFIX}\n    HostKeyAlias {}\n    StrictHostKeyChecking accept-new",
            vm.name,
            host_key_alias(&vm.uid)
        );
    }
    let _ = writeln!(
        out,
        "\nHost *{DOMAIN_SUFFIX}\n    User {}\n    IdentityFile {}\n    IdentitiesOnly yes\n    \
         UserKnownHostsFile {}\n    StrictHostKeyChecking yes\n    HashKnownHosts no\n    \
         CheckHostIP no\n    ProxyCommand {proxy_command}",
        identity.user,
        config_path(&identity.private_key)?,
        config_path(&identity.known_hosts)?,
    );
    Ok(out)
}

/// The VMs of a listing, skipping those being deleted.
fn entries(vms: &[ObjectView]) -> Result<Vec<VmEntry>, CliError> {
    vms.iter()
        .filter(|vm| vm.metadata.deletion_timestamp.is_none())
        .map(|vm| {
            let uid = ObjectUid::parse(&vm.metadata.uid).map_err(|e| AccessError::Local {
                vm: vm.metadata.name.clone(),
                what: "the daemon's uid for it".to_string(),
                source: std::io::Error::other(e.to_string()),
            })?;
            Ok(VmEntry {
                name: vm.metadata.name.clone(),
                uid,
            })
        })
        .collect()
}

/// Runs `banger ssh-config`.
pub async fn run(client: &DaemonClient, _args: &SshConfigArgs) -> Result<ExitCode, CliError> {
    let vms = entries(&client.list(Some(Kind::Vm)).await?.items)?;
    let identity = client.ssh_identity().await?;
    let (banger, socket) = self_and_socket(client)
        .await
        .map_err(|source| AccessError::Local {
            vm: "*".to_string(),
            what: "locating banger".to_string(),
            source,
        })?;
    let proxy = proxy_command(&banger, &socket, "%h").map_err(AccessError::from)?;
    let text = render(&vms, &identity, &proxy).map_err(AccessError::from)?;
    print_out(&text)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use std::process::Command;

    fn identity() -> SshIdentityView {
        SshIdentityView {
            private_key: "/var/lib/banger/ssh/id_ed25519".into(),
            known_hosts: "/var/lib/banger/ssh/known_hosts".into(),
            user: "root".into(),
        }
    }

    /// What ssh makes of the file for `host` (`ssh -G`, which connects nowhere).
    fn ssh_g(config: &str, host: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        std::fs::write(&file, config).unwrap();
        let out = Command::new("ssh")
            .arg("-G")
            .arg("-F")
            .arg(&file)
            .arg(host)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn ssh_reads_per_vm_aliases_and_shared_options() {
        let vms = [
            VmEntry {
                name: "dev".into(),
                uid: ObjectUid::parse("0a1b").unwrap(),
            },
            VmEntry {
                name: "ci".into(),
                uid: ObjectUid::parse("2c3d").unwrap(),
            },
        ];
        let proxy = "'/opt/my banger/banger' --socket /run/banger/banger.sock connect %h 22";
        let text = render(&vms, &identity(), proxy).unwrap();
        let dev = ssh_g(&text, "dev.banger");
        for line in [
            "user root",
            "hostkeyalias banger-0a1b",
            "stricthostkeychecking accept-new",
            "identityfile /var/lib/banger/ssh/id_ed25519",
            "userknownhostsfile /var/lib/banger/ssh/known_hosts",
            "hashknownhosts no",
            &format!("proxycommand {proxy}"),
        ] {
            assert!(dev.lines().any(|l| l == line), "{line:?} not in:\n{dev}");
        }
        let ci = ssh_g(&text, "ci.banger");
        assert!(ci.lines().any(|l| l == "hostkeyalias banger-2c3d"), "{ci}");
        let unknown = ssh_g(&text, "new.banger");
        assert!(
            unknown.lines().any(|l| l == "stricthostkeychecking true"),
            "a VM not in the file is not pinned by name:\n{unknown}"
        );
        assert!(!unknown.contains("hostkeyalias"), "{unknown}");
    }
}
