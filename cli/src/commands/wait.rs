//! `banger wait KIND/NAME --for=…`: block until a condition holds or the object is gone.

use std::process::ExitCode;
use std::time::Duration;

use tokio::time::Instant;

use crate::client::DaemonClient;
use crate::duration::parse_duration;
use crate::error::{print_out, CliError};
use crate::selector::{parse_objects, Shown};
use crate::waiting::{timeout_message, wait_until, WaitFor, WaitOutcome};

/// Arguments of `banger wait`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
A condition counts only once the daemon computed it for the object's current
generation. Exit status: 0 when met, 1 on timeout or error.

Examples:
  banger wait vm/dev --for=condition=Ready --timeout 2m
  banger wait vm dev web --for=condition=GuestReady
  banger wait vm/dev --for=condition=Stalled=False
  banger wait vm/dev --for=delete --timeout 30s")]
pub struct WaitArgs {
    /// KIND/NAME… or KIND NAME….
    #[arg(value_name = "KIND/NAME", required = true)]
    pub args: Vec<String>,
    /// condition=TYPE (status True), condition=TYPE=STATUS, or delete.
    #[arg(long = "for", value_name = "CONDITION", value_parser = clap::value_parser!(WaitForArg))]
    pub wait_for: WaitForArg,
    /// How long to wait.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `--for`, parsed.
#[derive(Debug, Clone)]
pub struct WaitForArg(pub WaitFor);

impl std::str::FromStr for WaitForArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse().map(WaitForArg)
    }
}

/// Runs `banger wait`.
pub async fn run(client: &DaemonClient, args: &WaitArgs) -> Result<ExitCode, CliError> {
    let objects = parse_objects(&args.args)?;
    let deadline = Instant::now() + args.timeout;
    let wanted = &args.wait_for.0;
    let mut timeouts = Vec::new();
    for object in &objects {
        match wait_until(client, object, wanted, deadline).await? {
            WaitOutcome::Met => {
                let what = if *wanted == WaitFor::Delete {
                    "deleted"
                } else {
                    "condition met"
                };
                print_out(&format!("{} {what}\n", Shown(object)))?;
            }
            WaitOutcome::TimedOut(state) | WaitOutcome::Blocked(state) => {
                timeouts.push(timeout_message(object, wanted, args.timeout, &state))
            }
        }
    }
    if timeouts.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CliError::TimedOut(timeouts.join("\n")))
    }
}
