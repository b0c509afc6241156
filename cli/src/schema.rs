//! `banger schema` (placeholder in the cli branch: the specs helper's version replaces
//! this file at merge).

use std::process::ExitCode;

/// Arguments of `banger schema`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  banger schema vm\n  banger schema")]
pub struct SchemaArgs {
    /// image, vm or workspace (default: all).
    pub kind: Option<String>,
}

/// Prints the JSON Schema of one kind or all.
pub fn run(args: &SchemaArgs) -> ExitCode {
    let _ = args;
    eprintln!("error: schema generation is not in this build yet");
    ExitCode::from(2)
}
