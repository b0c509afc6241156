//! The errors of CLI commands, and how they are printed.

use std::io::Write;

use crate::client::ClientError;
use crate::guest_ssh::AccessError;
use crate::output::PrintError;
use crate::selector::SelectorError;
use crate::sources::SourceError;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Talking to the daemon failed, or it answered with an error.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A `-f` input could not be read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A bad object argument.
    #[error(transparent)]
    Selector(#[from] SelectorError),
    /// Printing failed.
    #[error(transparent)]
    Print(#[from] PrintError),
    /// Writing to stdout failed.
    #[error("writing output: {0}")]
    Output(#[source] std::io::Error),
    /// The daemon could not run.
    #[error("daemon: {0}")]
    Daemon(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A wait ran out of time.
    #[error("{0}")]
    TimedOut(String),
    /// Getting into a VM failed (not ready, ssh failed, host key changed).
    #[error(transparent)]
    Access(#[from] AccessError),
    /// A bad command-line argument that clap cannot check (one line, exit status 2).
    #[error("{0}")]
    Usage(String),
    /// The daemon refused what was asked, for a reason the user must act on (a copy
    /// onto a guest that changed).
    #[error("{0}")]
    Refused(String),
    /// Ctrl-C (exit status 130, as a shell reports SIGINT).
    #[error("interrupted")]
    Interrupted,
}

impl CliError {
    /// Whether the command line itself was wrong (exit status 2, as for clap's errors).
    pub fn is_usage(&self) -> bool {
        matches!(self, CliError::Selector(_) | CliError::Usage(_))
    }

    /// The exit status this error asks for, when it is not the command's usual one:
    /// ssh's own failures exit 255, as ssh does.
    pub fn exit_status(&self) -> Option<u8> {
        match self {
            CliError::Access(
                AccessError::HostKeyChanged { .. } | AccessError::SshFailed { .. },
            ) => Some(crate::guest_ssh::SSH_FAILED),
            CliError::Interrupted => Some(130),
            _ => None,
        }
    }

    /// Prints the error on stderr: spec problems one per line, then the error itself.
    pub fn report(&self) {
        let mut stderr = std::io::stderr().lock();
        if let CliError::Client(ClientError::Api { body, .. }) = self {
            for problem in &body.problems {
                let _ = writeln!(stderr, "{problem}");
            }
        }
        let _ = match self {
            CliError::Client(ClientError::Api { .. }) => writeln!(stderr, "{self}"),
            _ => writeln!(stderr, "error: {self}"),
        };
    }
}

/// Writes text to stdout; a closed pipe (`banger get | head`) is not an error.
pub fn print_out(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    printed(
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush()),
    )
}

/// Writes pretty JSON to stdout as it is made; a closed pipe is not an error.
pub fn print_json(json: &crate::output::PrettyJson) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    printed(json.write_to(&mut stdout).and_then(|()| stdout.flush()))
}

/// The outcome of writing to stdout: a closed pipe (`| head`) ends output quietly.
fn printed(written: std::io::Result<()>) -> Result<(), CliError> {
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::Output(e)),
        _ => Ok(()),
    }
}
