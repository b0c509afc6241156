//! `banger exec VM [--workdir DIR] [-i] [-t] -- CMD...`: run a command in a VM, its
//! stdout and stderr kept apart, its exit status passed on.

use std::process::ExitCode;

use banger_controller::api::types::ObjectView;
use banger_specs::Kind;

use crate::client::DaemonClient;
use crate::error::CliError;
use crate::guest_ssh::{vm_name, GuestSsh};
use crate::quoting::{sh_join, sh_quote};

/// Arguments of `banger exec`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
CMD runs as given (each word passed as is, no shell syntax: use `sh -c '…'` for that),
as root, over ssh through the daemon. stdout and stderr stay apart; stdin is passed only
with -i; -t asks for a terminal (then stdout and stderr share it). The exit status is
CMD's. A VM that is not running or whose guest is not up yet is refused with one line
(exit 1) before anything runs; ssh's own failures are one line too (exit 255).

The working directory is --workdir, else the path of the Workspace bound to the VM when
there is exactly one, else root's home.

Examples:
  banger exec dev -- uname -a
  banger exec dev --workdir /tmp -- ls -la
  banger exec dev -- sh -c 'make test 2>&1 | tail -5'
  tar -c src | banger exec -i dev -- tar -x -C /root
  banger exec -it dev -- vi /etc/hosts")]
pub struct ExecArgs {
    /// The VM: NAME or NAME.banger.
    #[arg(value_name = "VM")]
    pub vm: String,
    /// Directory to run CMD in (default: the VM's one Workspace path, else root's home).
    #[arg(short = 'w', long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// Pass stdin to CMD.
    #[arg(short = 'i', long = "stdin")]
    pub stdin: bool,
    /// Give CMD a terminal.
    #[arg(short = 't', long = "tty")]
    pub tty: bool,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// The `spec.path` of the one Workspace whose `spec.vm` is `vm`; `None` when there is
/// none or more than one.
pub fn workspace_path(vm: &str, workspaces: &[ObjectView]) -> Option<String> {
    let mut paths = workspaces
        .iter()
        .filter(|w| w.spec["vm"].as_str() == Some(vm))
        .filter_map(|w| w.spec["path"].as_str());
    match (paths.next(), paths.next()) {
        (Some(path), None) => Some(path.to_string()),
        _ => None,
    }
}

/// The remote command line: `cd -- DIR && CMD…`, every word quoted.
pub fn remote_command(workdir: Option<&str>, command: &[String]) -> String {
    match workdir {
        Some(dir) => format!("cd -- {} && {}", sh_quote(dir), sh_join(command)),
        None => sh_join(command),
    }
}

/// ssh's flags for `-i` and `-t`.
pub fn ssh_flags(stdin: bool, tty: bool) -> Vec<&'static str> {
    let mut flags = vec![if tty { "-tt" } else { "-T" }];
    if !stdin {
        flags.push("-n");
    }
    flags
}

/// Runs `banger exec`.
pub async fn run(client: &DaemonClient, args: &ExecArgs) -> Result<ExitCode, CliError> {
    let vm = vm_name(&args.vm);
    let guest = GuestSsh::open(client, vm).await?;
    let workdir = match &args.workdir {
        Some(dir) => Some(dir.clone()),
        None => workspace_path(vm, &client.list(Some(Kind::Workspace)).await?.items),
    };
    let remote = remote_command(workdir.as_deref(), &args.command);
    let code = guest
        .run_attached(&ssh_flags(args.stdin, args.tty), Some(&remote))
        .await?;
    Ok(ExitCode::from(code))
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn workspace(name: &str, vm: &str, path: &str) -> ObjectView {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "banger.dev/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": name, "uid": "00", "generation": 1, "creationTimestamp": ""},
            "spec": {"vm": vm, "source": "/src", "path": path},
            "status": {"phase": "Ready", "observedGeneration": 1}
        }))
        .unwrap()
    }

    #[test]
    fn default_workdir_is_the_one_workspace_of_the_vm() {
        let a = workspace("a", "dev", "/root/a");
        let b = workspace("b", "dev", "/root/b");
        let c = workspace("c", "ci", "/root/c");
        assert_eq!(
            workspace_path("dev", &[a.clone(), c.clone()]).as_deref(),
            Some("/root/a")
        );
        assert_eq!(workspace_path("dev", &[a, b, c.clone()]), None, "two");
        assert_eq!(workspace_path("other", &[c]), None, "none");
    }

    #[test]
    fn remote_command_quotes_every_word() {
        let cmd = vec!["printf".to_string(), "%s\n".to_string(), "a b".to_string()];
        assert_eq!(remote_command(None, &cmd), "printf '%s\n' 'a b'");
        assert_eq!(
            remote_command(Some("/root/my repo"), &cmd),
            "cd -- '/root/my repo' && printf '%s\n' 'a b'"
        );
    }

    #[test]
    fn stdin_only_with_i_and_a_terminal_only_with_t() {
        assert_eq!(ssh_flags(false, false), ["-T", "-n"]);
        assert_eq!(ssh_flags(true, false), ["-T"]);
        assert_eq!(ssh_flags(true, true), ["-tt"]);
        assert_eq!(ssh_flags(false, true), ["-tt", "-n"]);
    }
}
