//! `banger validate` (placeholder in the cli branch: the specs helper's version replaces
//! this file at merge).

use std::process::ExitCode;

/// Arguments of `banger validate`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  banger validate -f examples/\n  banger validate -f vm.yaml -f image.yaml\n  cat vm.yaml | banger validate -f -"
)]
pub struct ValidateArgs {
    /// A spec file, a directory, or - for stdin (repeatable).
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    pub files: Vec<String>,
    /// Read directories recursively.
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

/// Loads the inputs and prints every problem; exit 1 when any is an error.
pub fn run(args: &ValidateArgs) -> ExitCode {
    let set = banger_specs::load::load_inputs(&args.files, args.recursive);
    for problem in &set.problems {
        eprintln!("{problem}");
    }
    if set
        .problems
        .iter()
        .any(|p| p.severity == banger_specs::Severity::Error)
    {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
