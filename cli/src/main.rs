//! `banger`: the command-line interface of banger, a local, declarative controller for
//! microVMs.
//!
//! This file wires subcommands to their modules; each module parses nothing but its
//! own arguments and calls into the library crates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod schema;
mod validate;

/// banger: describe microVMs, images and workspaces in YAML; banger makes the host match.
#[derive(Debug, Parser)]
#[command(
    name = "banger",
    version,
    about,
    after_help = "Examples:
  banger validate -f examples/     # check every spec in examples/
  banger schema vm                 # print the JSON Schema of VM documents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check spec files: syntax, fields, names, references. Touches nothing.
    Validate(validate::ValidateArgs),
    /// Print the JSON Schema of one kind, or of all.
    Schema(schema::SchemaArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Schema(args) => schema::run(args),
    }
}
