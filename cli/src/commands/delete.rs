//! `banger delete`: delete objects named on the command line or declared in files.

use std::process::ExitCode;
use std::time::Duration;

use banger_controller::api::types::DeleteRequest;
use tokio::time::Instant;

use crate::client::DaemonClient;
use crate::commands::not_found;
use crate::duration::parse_duration;
use crate::error::{print_out, CliError};
use crate::selector::{parse_objects, Shown};
use crate::sources::read_sources_here;
use crate::waiting::{timeout_message, wait_until, WaitFor, WaitOutcome};

/// Arguments of `banger delete`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Deletion runs the object's cleanup steps (stop the VM, remove its tap, lease, NAT rule
and disk) before the object goes; --wait waits for that to finish. A running VM is
stopped at once, without the grace period a stop gives its guest: its disk is
discarded.

Examples:
  banger delete vm dev
  banger delete vm/dev workspace/src --wait
  banger delete -f dev-vm.yaml --wait --timeout 1m")]
pub struct DeleteArgs {
    /// KIND NAME… or KIND/NAME… (or use -f).
    #[arg(
        value_name = "KIND NAME|KIND/NAME",
        required_unless_present = "files",
        conflicts_with = "files"
    )]
    pub args: Vec<String>,
    /// Delete the objects declared in this file, directory, or - for stdin (repeatable).
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    pub files: Vec<String>,
    /// Read directories recursively.
    #[arg(short = 'R', long, requires = "files")]
    pub recursive: bool,
    /// Wait until the objects are gone.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Succeed for objects that do not exist.
    #[arg(long)]
    pub ignore_not_found: bool,
}

/// Runs `banger delete`.
pub async fn run(client: &DaemonClient, args: &DeleteArgs) -> Result<ExitCode, CliError> {
    let request = if args.files.is_empty() {
        DeleteRequest {
            objects: parse_objects(&args.args)?,
            files: Vec::new(),
        }
    } else {
        DeleteRequest {
            objects: Vec::new(),
            files: read_sources_here(&args.files, args.recursive)?.files,
        }
    };
    let response = client.delete(&request).await?;
    let mut text = String::new();
    for object in &response.deleted {
        text.push_str(&format!("{} deleted\n", Shown(object)));
    }
    print_out(&text)?;
    let mut failure = None;
    if !args.ignore_not_found {
        if let Some((last, others)) = response.not_found.split_last() {
            for object in others {
                eprintln!("{}", not_found(object));
            }
            failure = Some(CliError::from(not_found(last)));
        }
    }
    if args.wait {
        let deadline = Instant::now() + args.timeout;
        let mut timeouts = Vec::new();
        for object in &response.deleted {
            if let WaitOutcome::TimedOut(state) =
                wait_until(client, object, &WaitFor::Delete, deadline).await?
            {
                timeouts.push(timeout_message(
                    object,
                    &WaitFor::Delete,
                    args.timeout,
                    &state,
                ));
            }
        }
        if !timeouts.is_empty() {
            if let Some(failure) = failure {
                failure.report();
            }
            return Err(CliError::TimedOut(timeouts.join("\n")));
        }
    }
    match failure {
        Some(failure) => Err(failure),
        None => Ok(ExitCode::SUCCESS),
    }
}
