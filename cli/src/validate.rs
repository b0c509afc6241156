//! `banger validate`: check spec files without touching the host or the daemon.

use std::process::ExitCode;

use banger_specs::load::load_inputs;

/// Arguments of `banger validate`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  banger validate -f examples/vm-dev.yaml
  banger validate -f examples/            # every *.yaml / *.yml in the directory
  banger validate -R -f specs/            # and in its subdirectories
  cat vm.yaml | banger validate -f -      # read stdin

Every problem is printed on stderr as one line: `file:line:column: field: message`.
A reference to an Image or VM that is not among the files loaded is a warning: the
daemon may already know it. Exit status: 0 when valid, 1 when any error was found.")]
pub struct ValidateArgs {
    /// Spec file, directory, or `-` for stdin (repeatable).
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    pub filename: Vec<String>,
    /// Search directories recursively.
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

/// Loads and checks every input; prints problems on stderr and a summary on stdout.
pub fn run(args: &ValidateArgs) -> ExitCode {
    let set = load_inputs(&args.filename, args.recursive);
    for problem in &set.problems {
        eprintln!("{problem}");
    }
    let errors = set.problems.iter().filter(|p| p.is_error()).count();
    let warnings = set.problems.len() - errors;
    let files = set.files.len();
    if errors > 0 {
        eprintln!(
            "{} in {} {}: nothing is valid until all are fixed",
            count(errors, "error"),
            files,
            plural(files, "file")
        );
        return ExitCode::from(1);
    }
    let objects = set.objects.len();
    let mut summary = format!(
        "{} {} in {}",
        count(objects, "object"),
        plural_verb(objects),
        count(files, "file")
    );
    if warnings > 0 {
        summary.push_str(&format!(" ({})", count(warnings, "warning")));
    }
    match crate::error::print_out(&format!("{summary}\n")) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("banger validate: {e}");
            ExitCode::from(1)
        }
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}

fn count(n: usize, word: &str) -> String {
    format!("{n} {}", plural(n, word))
}

fn plural_verb(n: usize) -> &'static str {
    if n == 1 {
        "is valid"
    } else {
        "valid"
    }
}
