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
mod output;
mod paths;
mod schema;
mod selector;
mod sources;
mod validate;
mod waiting;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::client::DaemonClient;
use crate::commands::{
    apply, completion, daemon, delete, describe, diff, doctor, events, gc, get, logs, retry, wait,
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
    /// Remove host objects of no known VM (taps, NAT rules, VM dirs, stray VMMs).
    Gc(gc::GcArgs),
    /// Print a shell completion script.
    Completion(completion::CompletionArgs),
    /// Run the controller in the foreground.
    Daemon(daemon::DaemonArgs),
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
        Command::Gc(args) => gc::run(&client, args).await,
        Command::Daemon(args) => daemon::run(args, cli.socket.clone()).await,
        Command::Doctor(args) => doctor::run(&socket_path(cli), args).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<Result<ExitCode, CliError>> =
        tokio::runtime::Builder::new_multi_thread()
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
                ExitCode::from(error_code)
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
        ] {
            assert!(Cli::try_parse_from(&argv).is_err(), "{argv:?} parsed");
        }
    }
}
