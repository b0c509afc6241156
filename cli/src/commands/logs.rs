//! `banger logs vm NAME [--follow]`: print a VM's serial console log.

use std::io::Write;
use std::process::ExitCode;

use banger_specs::Kind;

use crate::client::DaemonClient;
use crate::commands::not_found;
use crate::error::CliError;
use crate::selector::{kind_word, parse_one, SelectorError};

/// Seconds one long-poll of `--follow` waits for new output.
const FOLLOW_POLL_SECONDS: u64 = 30;

/// Bound on the answers read for one `logs` without `--follow` (1 MiB each).
const MAX_CHUNKS: usize = 64 * 1024;

/// Arguments of `banger logs`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  banger logs vm dev
  banger logs vm/dev --follow")]
pub struct LogsArgs {
    /// vm NAME or vm/NAME.
    #[arg(value_name = "vm NAME|vm/NAME", required = true)]
    pub args: Vec<String>,
    /// Keep printing new output until interrupted.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

fn write_bytes(bytes: &[u8]) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::Output(e)),
        _ => Ok(()),
    }
}

/// Runs `banger logs`.
pub async fn run(client: &DaemonClient, args: &LogsArgs) -> Result<ExitCode, CliError> {
    let object = parse_one(&args.args)?;
    if object.kind != Kind::Vm {
        return Err(SelectorError::WrongKind {
            command: "logs",
            expected: "vm",
            got: kind_word(object.kind).to_string(),
        }
        .into());
    }
    let fetch = |offset, wait| {
        let object = object.clone();
        async move {
            match client.logs(&object.name, offset, wait).await {
                Err(e) if e.is_not_found() => Err(CliError::from(not_found(&object))),
                other => other.map_err(CliError::from),
            }
        }
    };
    // The daemon answers at most 1 MiB at a time: read up to the current end.
    let mut offset = 0;
    for _ in 0..MAX_CHUNKS {
        let (bytes, next) = fetch(offset, None).await?;
        write_bytes(&bytes)?;
        let done = bytes.is_empty() || next <= offset;
        offset = next;
        if done {
            break;
        }
    }
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    // Runs until Ctrl-C or until the VM or the daemon goes away (each poll is bounded).
    loop {
        let (bytes, next) = tokio::select! {
            _ = &mut interrupted => return Ok(ExitCode::SUCCESS),
            chunk = fetch(offset, Some(FOLLOW_POLL_SECONDS)) => chunk?,
        };
        write_bytes(&bytes)?;
        offset = next;
    }
}
