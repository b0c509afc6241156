//! `banger completion SHELL`: print a shell completion script.

use std::process::ExitCode;

use clap_complete::Shell;

use crate::error::{print_out, CliError};

/// Arguments of `banger completion`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  # bash: load now, or install for every session
  source <(banger completion bash)
  banger completion bash > /etc/bash_completion.d/banger

  # zsh
  banger completion zsh > \"${fpath[1]}/_banger\"

  # fish
  banger completion fish > ~/.config/fish/completions/banger.fish")]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_parser = ["bash", "zsh", "fish"])]
    pub shell: String,
}

/// Runs `banger completion` for the CLI described by `command`.
pub fn run(command: &mut clap::Command, args: &CompletionArgs) -> Result<ExitCode, CliError> {
    let shell = match args.shell.as_str() {
        "zsh" => Shell::Zsh,
        "fish" => Shell::Fish,
        _ => Shell::Bash,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, command, "banger", &mut script);
    print_out(&String::from_utf8_lossy(&script))?;
    Ok(ExitCode::SUCCESS)
}
