//! `banger retry KIND/NAME`: reconcile a failing or stalled object now, resetting its backoff.

use std::process::ExitCode;

use crate::client::DaemonClient;
use crate::commands::not_found;
use crate::error::{print_out, CliError};
use crate::selector::{parse_objects, Shown};

/// Arguments of `banger retry`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
An object whose reconcile keeps failing backs off (about 1s up to 5m) and, after
several failures in a row, is marked Stalled=True. retry skips the wait.

Examples:
  banger retry vm/dev
  banger retry vm dev web")]
pub struct RetryArgs {
    /// KIND/NAME… or KIND NAME….
    #[arg(value_name = "KIND/NAME", required = true)]
    pub args: Vec<String>,
}

/// Runs `banger retry`.
pub async fn run(client: &DaemonClient, args: &RetryArgs) -> Result<ExitCode, CliError> {
    for object in &parse_objects(&args.args)? {
        match client.retry(object).await {
            Ok(()) => print_out(&format!("{} retry requested\n", Shown(object)))?,
            Err(e) if e.is_not_found() => return Err(not_found(object).into()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(ExitCode::SUCCESS)
}
