//! `banger ssh VM [-- CMD...]`: the system `ssh` into a VM through the daemon, with
//! banger's key and known_hosts (see [`crate::guest_ssh`]).

use std::process::ExitCode;

use crate::client::DaemonClient;
use crate::error::CliError;
use crate::guest_ssh::{vm_name, GuestSsh};
use crate::quoting::sh_join;

/// Arguments of `banger ssh`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Runs OpenSSH's ssh as root@VM with banger's key, banger's known_hosts (the VM's host key
is pinned on first contact, under its uid) and `banger connect VM 22` as ProxyCommand.
Without CMD: an interactive shell. With CMD: runs it (each word passed as is, no shell
syntax: use `sh -c '…'` for that) and exits with its status. A VM that is not running
or whose guest is not up yet is refused with one line (exit 1); ssh's own failures are
one line too (exit 255).

Examples:
  banger ssh dev
  banger ssh dev -- uname -a
  banger ssh dev -- sh -c 'cd /root/src && make test'")]
pub struct SshArgs {
    /// The VM: NAME or NAME.banger.
    #[arg(value_name = "VM")]
    pub vm: String,
    /// The command to run instead of a shell (after `--`).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Runs `banger ssh`.
pub async fn run(client: &DaemonClient, args: &SshArgs) -> Result<ExitCode, CliError> {
    let guest = GuestSsh::open(client, vm_name(&args.vm)).await?;
    let remote = (!args.command.is_empty()).then(|| sh_join(&args.command));
    let code = guest.run_attached(&[], remote.as_deref()).await?;
    Ok(ExitCode::from(code))
}
