//! `banger`: the command-line interface of banger, a local, declarative controller for
//! microVMs.
//!
//! The binary only parses arguments, talks to the daemon's HTTP API on its Unix socket
//! ([`client`]) and prints ([`output`]); `banger daemon` runs the controller itself.
//! Exit status: 0 success, 1 failure (daemon error, not found, timeout), 2 usage error;
//! `diff` exits 1 when there are changes and 2 on error.

mod client;
mod commands;
mod duration;
mod error;
mod guest_ssh;
mod output;
mod paths;
mod progress;
mod quoting;
mod schema;
mod selector;
mod sources;
mod transfer;
mod validate;
mod waiting;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::client::DaemonClient;
use crate::commands::{
    apply, completion, connect, cp, daemon, delete, describe, diff, doctor, events, exec, gc, get,
    image, logs, port_forward, retry, run, ssh, ssh_config, wait, workspace,
};
use crate::error::CliError;

/// banger: declarative microVMs on one host.
#[derive(Debug, Parser)]
#[command(
    name = "banger",
    version,
    about = "banger: a local, declarative controller for microVMs",
    long_about = "banger: a local, declarative controller for microVMs.\n\n\
        Describe Images, VMs and Workspaces as YAML (apiVersion: banger.dev/v1alpha1); \
        `banger daemon` makes the host match them and keeps it matching.",
    propagate_version = true,
    after_help = "\
Examples:
  # Check spec files without a daemon
  banger validate -f examples/

  # Run the daemon (as root: system paths; see `banger daemon --help`)
  sudo banger daemon

  # Apply specs, wait for them, look at them
  banger apply -f examples/ --wait
  banger get vms
  banger describe vm dev

  # A sandbox with this checkout in one command, then a shell in it
  banger run .
  banger run . --rm -- make test

  # Get into a VM (through the daemon)
  banger ssh dev
  banger exec dev -- make test
  banger cp ./notes.txt dev:/root/
  banger port-forward dev 8080

  # Talk to a daemon on another socket
  banger --socket /tmp/banger.sock get vms
  BANGER_SOCKET=/tmp/banger.sock banger events --follow"
)]
struct Cli {
    /// The daemon's API socket (default: /run/banger/banger.sock as root,
    /// $XDG_RUNTIME_DIR/banger.sock otherwise, $XDG_STATE_HOME/banger/banger.sock
    /// without XDG_RUNTIME_DIR).
    #[arg(long, global = true, env = "BANGER_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check spec files (no daemon needed).
    Validate(validate::ValidateArgs),
    /// Print the JSON Schema of one kind or all.
    Schema(schema::SchemaArgs),
    /// Create or update objects from spec files.
    Apply(apply::ApplyArgs),
    /// Show what applying spec files would change (exit 0 none, 1 changes, 2 error).
    Diff(diff::DiffArgs),
    /// List objects, or print them as JSON/YAML.
    Get(get::GetArgs),
    /// Show everything about objects: spec, conditions, handles, steps, events.
    Describe(describe::DescribeArgs),
    /// Delete objects by name or by spec files.
    Delete(delete::DeleteArgs),
    /// Wait for a condition or for deletion.
    Wait(wait::WaitArgs),
    /// Show what the daemon did to objects, and why.
    Events(events::EventsArgs),
    /// Reconcile a failing or stalled object now.
    Retry(retry::RetryArgs),
    /// Print a VM's console log.
    Logs(logs::LogsArgs),
    /// A sandbox in one command: a VM (with a checkout copied in), then a shell or CMD.
    Run(run::RunArgs),
    /// Open a shell or run a command in a VM with ssh (through the daemon).
    Ssh(ssh::SshArgs),
    /// Run a command in a VM: its stdout, stderr and exit status.
    Exec(exec::ExecArgs),
    /// Copy files and directories between this machine and a VM (VM:PATH).
    Cp(cp::CpArgs),
    /// Forward local ports on 127.0.0.1 to ports of a VM.
    PortForward(port_forward::PortForwardArgs),
    /// Print ssh client configuration so that `ssh NAME.banger` works.
    SshConfig(ssh_config::SshConfigArgs),
    /// A Workspace's round trip: copy the checkout in now.
    Workspace(workspace::WorkspaceArgs),
    /// Connect stdin/stdout to a TCP port of a VM (ssh's ProxyCommand).
    Connect(connect::ConnectArgs),
    /// Remove host objects of no known VM (taps, NAT rules, VM dirs, stray VMMs).
    Gc(gc::GcArgs),
    /// Image operations: `refresh` checks a tag for a new digest (and applies it).
    Image(image::ImageArgs),
    /// Print a shell completion script.
    Completion(completion::CompletionArgs),
    /// Run the controller in the foreground.
    Daemon(Box<daemon::DaemonArgs>),
    /// Check whether this host can run banger's VMs.
    Doctor(doctor::DoctorArgs),
}

fn socket_path(cli: &Cli) -> PathBuf {
    cli.socket
        .clone()
        .unwrap_or_else(|| paths::DefaultPaths::current().socket)
}

async fn run(cli: &Cli) -> Result<ExitCode, CliError> {
    let client = DaemonClient::new(socket_path(cli));
    match &cli.command {
        Command::Validate(args) => Ok(validate::run(args)),
        Command::Schema(args) => Ok(schema::run(args)),
        Command::Completion(args) => completion::run(&mut Cli::command(), args),
        Command::Apply(args) => apply::run(&client, args).await,
        Command::Diff(args) => diff::run(&client, args).await,
        Command::Get(args) => get::run(&client, args).await,
        Command::Describe(args) => describe::run(&client, args).await,
        Command::Delete(args) => delete::run(&client, args).await,
        Command::Wait(args) => wait::run(&client, args).await,
        Command::Events(args) => events::run(&client, args).await,
        Command::Retry(args) => retry::run(&client, args).await,
        Command::Logs(args) => logs::run(&client, args).await,
        Command::Run(args) => run::run(&client, args).await,
        Command::Ssh(args) => ssh::run(&client, args).await,
        Command::Exec(args) => exec::run(&client, args).await,
        Command::Cp(args) => cp::run(&client, args).await,
        Command::PortForward(args) => port_forward::run(&client, args).await,
        Command::SshConfig(args) => ssh_config::run(&client, args).await,
        Command::Connect(args) => connect::run(&client, args).await,
        Command::Workspace(args) => workspace::run(&client, args).await,
        Command::Gc(args) => gc::run(&client, args).await,
        Command::Image(args) => image::run(&client, args).await,
        Command::Daemon(args) => daemon::run(args, cli.socket.clone()).await,
        Command::Doctor(args) => doctor::run(&socket_path(cli), args).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon serves many clients and reconciles at once: a thread per core. A
    // client command is one conversation with the daemon: one thread, so a long answer
    // (`get` of 1,000 VMs is 2 MB) is read without a wake-up of another thread per
    // chunk, and no worker threads are started and stopped for it.
    let mut builder = if matches!(cli.command, Command::Daemon(_)) {
        // Before the runtime's threads allocate: the daemon lives long, and each malloc
        // arena keeps its own partly used pages; more arenas than cores buy nothing
        // (banger_controller::heap).
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        banger_controller::heap::limit_arenas(cores);
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let result: anyhow::Result<Result<ExitCode, CliError>> = builder
        .enable_all()
        .build()
        .map_err(|e| anyhow::Error::new(e).context("cannot start the async runtime"))
        .map(|runtime| runtime.block_on(run(&cli)));
    let error_code = if matches!(cli.command, Command::Diff(_)) {
        2
    } else {
        1
    };
    match result {
        Ok(Ok(code)) => code,
        Ok(Err(error)) => {
            error.report();
            if error.is_usage() {
                ExitCode::from(2)
            } else {
                ExitCode::from(error.exit_status().unwrap_or(error_code))
            }
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(error_code)
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_examples() {
        let cli = Cli::command();
        assert!(cli.get_after_help().is_some());
        for sub in cli.get_subcommands() {
            let help = sub
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                help.contains("banger "),
                "`banger {}` has no examples",
                sub.get_name()
            );
        }
    }

    #[test]
    fn parses_kubectl_style_arguments() {
        let cli = Cli::try_parse_from([
            "banger", "get", "vm/dev", "-o", "json", "--socket", "/tmp/s",
        ])
        .expect("parse");
        assert_eq!(cli.socket, Some(PathBuf::from("/tmp/s")));
        match cli.command {
            Command::Get(args) => {
                assert_eq!(args.args, ["vm/dev"]);
                assert_eq!(args.output, Some(output::OutputFormat::Json));
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli = Cli::try_parse_from([
            "banger",
            "apply",
            "-f",
            "a.yaml",
            "-f",
            "dir",
            "-R",
            "--wait",
            "--timeout",
            "90s",
        ])
        .expect("parse");
        match cli.command {
            Command::Apply(args) => {
                assert_eq!(args.files, ["a.yaml", "dir"]);
                assert!(args.recursive && args.wait);
                assert_eq!(args.timeout, std::time::Duration::from_secs(90));
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli = Cli::try_parse_from(["banger", "wait", "vm/dev", "--for=condition=Ready=False"])
            .expect("parse");
        match cli.command {
            Command::Wait(args) => assert_eq!(
                args.wait_for.0,
                waiting::WaitFor::Condition {
                    type_: "Ready".into(),
                    status: "False".into()
                }
            ),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn parses_the_commands_that_get_into_vms() {
        let cli = Cli::try_parse_from([
            "banger", "exec", "-it", "dev", "-w", "/src", "--", "ls", "-l", "--", "x",
        ])
        .expect("parse");
        match cli.command {
            Command::Exec(args) => {
                assert_eq!(args.vm, "dev");
                assert!(args.stdin && args.tty);
                assert_eq!(args.workdir.as_deref(), Some("/src"));
                assert_eq!(args.command, ["ls", "-l", "--", "x"]);
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli = Cli::try_parse_from(["banger", "ssh", "dev.banger", "--", "uname", "-a"])
            .expect("parse");
        match cli.command {
            Command::Ssh(args) => {
                assert_eq!(args.vm, "dev.banger");
                assert_eq!(args.command, ["uname", "-a"]);
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli = Cli::try_parse_from(["banger", "ssh", "dev"]).expect("parse");
        assert!(matches!(cli.command, Command::Ssh(args) if args.command.is_empty()));
        let cli = Cli::try_parse_from(["banger", "port-forward", "dev", "8080", "9000:80", ":22"])
            .expect("parse");
        match cli.command {
            Command::PortForward(args) => assert_eq!(
                args.ports
                    .iter()
                    .map(|f| (f.local, f.remote))
                    .collect::<Vec<_>>(),
                [(8080, 8080), (9000, 80), (0, 22)]
            ),
            other => panic!("parsed as {other:?}"),
        }
        let cli = Cli::try_parse_from(["banger", "connect", "dev", "22"]).expect("parse");
        assert!(matches!(cli.command, Command::Connect(args) if args.port == 22));
    }

    #[test]
    fn rejects_bad_arguments() {
        for argv in [
            vec!["banger", "apply"],
            vec!["banger", "apply", "-f", "x", "--timeout", "soon"],
            vec!["banger", "get", "-o", "table"],
            vec!["banger", "wait", "vm/dev", "--for=Ready"],
            vec!["banger", "delete"],
            vec!["banger", "delete", "vm", "dev", "-f", "x.yaml"],
            vec!["banger", "completion", "tcsh"],
            vec!["banger", "daemon", "--log-format", "xml"],
            vec!["banger", "exec", "dev"],
            vec!["banger", "exec", "dev", "ls"],
            vec!["banger", "ssh"],
            vec!["banger", "connect", "dev"],
            vec!["banger", "connect", "dev", "0"],
            vec!["banger", "connect", "dev", "ssh"],
            vec!["banger", "port-forward", "dev"],
            vec!["banger", "port-forward", "dev", "80:0"],
            vec!["banger", "cp", "a"],
        ] {
            assert!(Cli::try_parse_from(&argv).is_err(), "{argv:?} parsed");
        }
    }
}
