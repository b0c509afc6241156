//! `banger apply -f PATH…`: send spec files to the daemon; print what changed.

use std::process::ExitCode;
use std::time::Duration;

use banger_controller::api::types::{ApplyAction, ApplyItem, ApplyRequest, ObjectRef};
use tokio::time::Instant;

use crate::client::DaemonClient;
use crate::duration::parse_duration;
use crate::error::{print_out, CliError};
use crate::selector::show;
use crate::sources::read_sources_here;
use crate::waiting::{timeout_message, wait_until_or_blocked, WaitFor, WaitOutcome};

/// Arguments of `banger apply`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
With --wait, an Image being pulled shows its progress on stderr: a bar on a terminal,
one line per pulled layer otherwise.

Examples:
  # Apply every *.yaml/*.yml file of a directory (add -R for subdirectories)
  banger apply -f examples/

  # Apply one file and wait until its objects are Ready (at most 2 minutes)
  banger apply -f dev-vm.yaml --wait --timeout 2m

  # Show what would change without changing anything
  banger apply -f dev-vm.yaml --dry-run

  # Apply from stdin
  cat dev-vm.yaml | banger apply -f -

  # Delete objects earlier applies of these paths created but the files no longer declare
  banger apply -f specs/ --prune

  # Take over objects owned by the specs directory; allow rebuilding root disks
  banger apply -f dev-vm.yaml --force --allow-recreate")]
pub struct ApplyArgs {
    /// A spec file, a directory of *.yaml/*.yml files, or - for stdin (repeatable).
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    pub files: Vec<String>,
    /// Read directories recursively.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Print the plan (with change classes) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Wait until every applied object is Ready.
    #[arg(long, conflicts_with = "dry_run")]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Delete objects that earlier applies of the same paths created and these files no
    /// longer declare.
    #[arg(long)]
    pub prune: bool,
    /// Take ownership of objects owned by another source (the specs directory).
    #[arg(long)]
    pub force: bool,
    /// Allow changes that rebuild a VM's root disk (for example a new image).
    #[arg(long)]
    pub allow_recreate: bool,
}

/// The pseudo-step that ends a plan which cannot run now.
const BLOCKED_STEP: &str = "blocked";

fn action_word(action: ApplyAction) -> &'static str {
    match action {
        ApplyAction::Created => "created",
        ApplyAction::Configured => "configured",
        ApplyAction::Unchanged => "unchanged",
        ApplyAction::Pruned => "pruned",
    }
}

/// The lines printed for one item: `vm/dev configured`, then (with `details`) its
/// field changes and planned steps with their change classes.
pub fn item_lines(item: &ApplyItem, suffix: &str, details: bool) -> String {
    let mut out = format!(
        "{} {}{suffix}\n",
        show(item.kind, &item.name),
        action_word(item.action)
    );
    if details {
        for change in &item.changes {
            out.push_str(&format!("  ~ {change}\n"));
        }
        for step in &item.plan {
            if step.step == BLOCKED_STEP {
                out.push_str(&format!("  ! blocked: {}\n", step.reason));
                continue;
            }
            out.push_str(&format!("  [{}] {}", step.change_class, step.step));
            if !step.reason.is_empty() {
                out.push_str(&format!(": {}", step.reason));
            }
            out.push('\n');
        }
    }
    out
}

/// The request for a set of `-f` inputs.
pub fn request_for(
    files: &[String],
    recursive: bool,
    dry_run: bool,
    prune: bool,
    force: bool,
    allow_recreate: bool,
) -> Result<ApplyRequest, CliError> {
    let sources = read_sources_here(files, recursive)?;
    Ok(ApplyRequest {
        files: sources.files,
        dry_run,
        prune,
        force,
        allow_recreate,
        path_set: sources.path_set,
    })
}

/// Runs `banger apply`.
pub async fn run(client: &DaemonClient, args: &ApplyArgs) -> Result<ExitCode, CliError> {
    let request = request_for(
        &args.files,
        args.recursive,
        args.dry_run,
        args.prune,
        args.force,
        args.allow_recreate,
    )?;
    // With --allow-recreate nothing is blocked; otherwise a block set after this point
    // answers --wait at once.
    let blocked_since = (!args.allow_recreate).then(time::OffsetDateTime::now_utc);
    let response = client.apply(&request).await?;
    for warning in &response.warnings {
        eprintln!("{warning}");
    }
    let suffix = if args.dry_run { " (dry run)" } else { "" };
    let mut text = String::new();
    for item in &response.items {
        text.push_str(&item_lines(item, suffix, args.dry_run));
    }
    print_out(&text)?;
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = Instant::now() + args.timeout;
    let mut timeouts = Vec::new();
    let mut progress = crate::progress::PullProgress::default();
    for item in response
        .items
        .iter()
        .filter(|i| i.action != ApplyAction::Pruned)
    {
        let object = ObjectRef {
            kind: item.kind,
            name: item.name.clone(),
        };
        let outcome = wait_until_or_blocked(
            client,
            &object,
            &WaitFor::ready(),
            deadline,
            blocked_since,
            Some(&mut progress),
        )
        .await?;
        progress.finish();
        match outcome {
            WaitOutcome::Met => {
                print_out(&format!("{} condition met\n", show(item.kind, &item.name)))?
            }
            WaitOutcome::TimedOut(state) => {
                timeouts.push(timeout_message(
                    &object,
                    &WaitFor::ready(),
                    args.timeout,
                    &state,
                ));
            }
            WaitOutcome::Blocked(reason) => {
                timeouts.push(format!(
                    "{} cannot become Ready: {reason}",
                    show(item.kind, &item.name)
                ));
            }
        }
    }
    if timeouts.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CliError::TimedOut(timeouts.join("\n")))
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use banger_controller::api::types::PlannedStepView;
    use banger_specs::Kind;

    #[test]
    fn item_lines_show_changes_and_plan() {
        let item = ApplyItem {
            kind: Kind::Vm,
            name: "dev".into(),
            action: ApplyAction::Configured,
            changes: vec!["spec.memory: 536870912 -> 1073741824".into()],
            plan: vec![PlannedStepView {
                step: "restart-vm".into(),
                change_class: "restart".into(),
                reason: "memory changed".into(),
            }],
        };
        assert_eq!(item_lines(&item, "", false), "vm/dev configured\n");
        assert_eq!(
            item_lines(&item, " (dry run)", true),
            "vm/dev configured (dry run)\n  ~ spec.memory: 536870912 -> 1073741824\n  [restart] restart-vm: memory changed\n"
        );
        let blocked = ApplyItem {
            plan: vec![PlannedStepView {
                step: "blocked".into(),
                change_class: "none".into(),
                reason: "RecreateBlocked: image base -> other".into(),
            }],
            ..item
        };
        assert_eq!(
            item_lines(&blocked, "", true),
            "vm/dev configured\n  ~ spec.memory: 536870912 -> 1073741824\n  ! blocked: RecreateBlocked: image base -> other\n"
        );
    }
}
