//! `banger diff -f PATH…`: what applying the files would change, with change classes.
//!
//! Exit status: 0 when nothing would change, 1 when something would, 2 on error
//! (the error exit is set by `main` for this command).

use std::process::ExitCode;

use banger_controller::api::types::{ApplyAction, ApplyItem};

use crate::client::DaemonClient;
use crate::commands::apply::{item_lines, request_for};
use crate::error::{print_out, CliError};

/// Arguments of `banger diff`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Each object is printed with what applying would do (created, configured, unchanged),
its field changes (~ spec.memory: 536870912 -> 1073741824) and the steps the planner
would run, tagged with their change class: live (no restart: state, network.nat,
network.isolated), restart (vcpus, memory, kernelArgs), recreate (root disk rebuilt),
create or delete.

Exit status: 0 no changes, 1 changes, 2 error. No changes means every object is
unchanged and has nothing planned (the host already matches it); a plan that cannot
run now ends with a line `! blocked: REASON` (for example RecreateBlocked).

Examples:
  # Compare a directory with what the daemon has
  banger diff -f examples/

  # Use in a script
  if banger diff -f dev-vm.yaml >/dev/null; then echo up to date; fi")]
pub struct DiffArgs {
    /// A spec file, a directory of *.yaml/*.yml files, or - for stdin (repeatable).
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    pub files: Vec<String>,
    /// Read directories recursively.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Diff as if applying with --force (objects owned by another source).
    #[arg(long)]
    pub force: bool,
    /// Diff as if applying with --allow-recreate (without it, a plan that rebuilds a
    /// root disk ends with `! blocked: RecreateBlocked`).
    #[arg(long)]
    pub allow_recreate: bool,
}

/// Whether applying these items would change anything: an object created, configured
/// or pruned, or one whose plan still has steps (the host does not match it yet).
pub fn has_changes(items: &[ApplyItem]) -> bool {
    items
        .iter()
        .any(|item| item.action != ApplyAction::Unchanged || !item.plan.is_empty())
}

/// Runs `banger diff`.
pub async fn run(client: &DaemonClient, args: &DiffArgs) -> Result<ExitCode, CliError> {
    let request = request_for(
        &args.files,
        args.recursive,
        true,
        false,
        args.force,
        args.allow_recreate,
    )?;
    let response = client.apply(&request).await?;
    for warning in &response.warnings {
        eprintln!("{warning}");
    }
    let mut text = String::new();
    for item in &response.items {
        text.push_str(&item_lines(item, "", true));
    }
    print_out(&text)?;
    Ok(if has_changes(&response.items) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use banger_specs::Kind;

    fn item(action: ApplyAction) -> ApplyItem {
        ApplyItem {
            kind: Kind::Vm,
            name: "dev".into(),
            action,
            changes: vec![],
            plan: vec![],
        }
    }

    #[test]
    fn only_unchanged_items_mean_no_changes() {
        assert!(!has_changes(&[]));
        assert!(!has_changes(&[item(ApplyAction::Unchanged)]));
        assert!(has_changes(&[
            item(ApplyAction::Unchanged),
            item(ApplyAction::Created)
        ]));
        assert!(has_changes(&[item(ApplyAction::Configured)]));
        let mut pending = item(ApplyAction::Unchanged);
        pending
            .plan
            .push(banger_controller::api::types::PlannedStepView {
                step: "launch".into(),
                change_class: "create".into(),
                reason: "new VM".into(),
            });
        assert!(has_changes(&[pending]));
    }
}
