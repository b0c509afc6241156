//! The harness's errors: each names what it was doing (which command, request, file or
//! wait), so a failed figure says why in one line of the report.

use std::path::PathBuf;
use std::time::Duration;

/// Why a measurement could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A program could not be started.
    #[error("start {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A command ran but failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line, for the reader.
        command: String,
        /// Its exit status.
        status: String,
        /// The end of its stderr.
        stderr: String,
    },
    /// A file or directory operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was done (`read`, `write`, `copy`, …).
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The daemon's API could not be reached or answered badly.
    #[error("API {request}: {message}")]
    Api {
        /// Method and path.
        request: String,
        /// What went wrong (status and error body, or the transport error).
        message: String,
    },
    /// Something did not happen within its bound.
    #[error("{what}: not within {waited:?}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long the harness waited.
        waited: Duration,
    },
    /// The product answered something the harness cannot use.
    #[error("{0}")]
    Unexpected(String),
    /// Ctrl-C or SIGTERM: the run stops and cleans up.
    #[error("interrupted")]
    Interrupted,
}

impl BenchError {
    /// An [`BenchError::Io`] for `path`.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| BenchError::Io {
            action,
            path,
            source,
        }
    }
}

/// The harness's result type.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;
