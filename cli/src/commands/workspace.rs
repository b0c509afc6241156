//! `banger workspace sync NAME [--force]`: push the host checkout's current state into
//! the Workspace's guest now (through the engine, which refuses to overwrite a guest
//! that changed what the last copy wrote unless forced).
//!
//! `banger workspace export NAME [-o FILE]`: the guest's work back out, as a binary
//! patch against the base commit that `git apply` takes.

use std::process::ExitCode;
use std::time::Duration;

use banger_controller::api::types::{ObjectRef, ObjectView};
use banger_specs::Kind;
use tokio::time::Instant;

use crate::client::DaemonClient;
use crate::commands::not_found;
use crate::duration::parse_duration;
use crate::error::{print_out, CliError};
use crate::output::condition;
use crate::waiting::current_state;

/// Arguments of `banger workspace`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
A Workspace's files are copied into its VM's guest once per spec generation and root
disk; from then on the guest's copy is the user's work: a VMM restart or a daemon
restart never copies again, and a later copy onto a guest that changed what the last
copy wrote is refused (Synced=False, reason GuestChanged, naming the paths).

Examples:
  banger workspace sync src            # copy the checkout's current state now
  banger workspace sync src --force    # even over changes made in the guest
  banger workspace export src -o work.patch
  git apply work.patch                 # in a checkout of the base commit")]
pub struct WorkspaceArgs {
    #[command(subcommand)]
    command: WorkspaceCommand,
}

#[derive(Debug, clap::Subcommand)]
enum WorkspaceCommand {
    /// Copy the host checkout's current state into the guest now.
    Sync(SyncArgs),
    /// Get the guest's work back as a patch against the base commit.
    Export(ExportArgs),
}

/// Arguments of `banger workspace export`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Writes a binary patch (`git diff --binary`) of everything in the guest's copy since the
base commit (the host commit the copy brought, `status.baseCommit`): commits made in the
guest, staged and unstaged changes, and new files the guest's .gitignore does not
exclude. `git apply` of it on a clean checkout of the base commit gives the guest's tree.
The guest's index and HEAD are not changed (a temporary index is used), nor is the host
checkout. Without git in the guest, the guest's tree is pulled back through the daemon
and diffed on the host. Nothing is written to FILE unless the export succeeds.

Examples:
  banger workspace export src > work.patch
  banger workspace export src -o work.patch
  git -C ~/src apply --binary work.patch     # with ~/src at the base commit")]
pub struct ExportArgs {
    /// The Workspace.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Write the patch here instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
}

/// Arguments of `banger workspace sync`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Asks the daemon for a copy and waits until its engine acted on it: the files copied
(exit 0), or the copy refused because the guest changed what the last copy wrote
(exit 1, naming the paths; `banger workspace export NAME` saves those changes first,
--force overwrites them). Files the checkout no longer has are removed from the guest
when the last copy wrote them.

Examples:
  banger workspace sync src
  banger workspace sync src --force --timeout 10m")]
pub struct SyncArgs {
    /// The Workspace.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Copy even over changes made in the guest since the last copy.
    #[arg(long)]
    pub force: bool,
    /// How long to wait for the copy (the VM may still be booting).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// How often the daemon is polled while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// What a Workspace says about sync request `request`: `None` while the engine has not
/// acted on it; else `Ok(message)` when copied, `Err(reason: message)` when refused.
pub fn sync_result(view: &ObjectView, request: u64) -> Option<Result<String, String>> {
    if view
        .status
        .last_sync_request
        .is_none_or(|last| last < request)
    {
        return None;
    }
    let synced = condition(view, "Synced")?;
    Some(if synced.status == "True" {
        Ok(synced.message.clone())
    } else {
        Err(format!("{}: {}", synced.reason, synced.message))
    })
}

/// Runs `banger workspace`.
pub async fn run(client: &DaemonClient, args: &WorkspaceArgs) -> Result<ExitCode, CliError> {
    match &args.command {
        WorkspaceCommand::Sync(sync) => run_sync(client, sync).await,
        WorkspaceCommand::Export(export) => run_export(client, export).await,
    }
}

/// One line on stderr about an export.
pub fn export_summary(name: &str, info: &crate::client::ExportInfo) -> String {
    let base = info.base_commit.as_deref().map_or_else(
        || "the empty tree".to_string(),
        |c| c.chars().take(12).collect(),
    );
    let how = match info.method.as_str() {
        "guest-git" => "made in the guest with git",
        "host-diff" => "made on the host from the guest's tree: the guest has no usable git",
        other => other,
    };
    format!(
        "workspace/{name}: patch of {} bytes against {base} ({how})",
        info.bytes
    )
}

async fn run_export(client: &DaemonClient, args: &ExportArgs) -> Result<ExitCode, CliError> {
    let object = ObjectRef {
        kind: Kind::Workspace,
        name: args.name.clone(),
    };
    let missing = |e: CliError| match e {
        CliError::Client(c) if c.is_not_found() => CliError::from(not_found(&object)),
        other => other,
    };
    let info = match &args.output {
        None => {
            let mut stdout = tokio::io::stdout();
            client
                .export_into(&args.name, &mut stdout)
                .await
                .map_err(missing)?
        }
        Some(path) => {
            // Written beside the target, renamed over it only once complete.
            let mut staged = path.as_os_str().to_owned();
            staged.push(".banger-partial");
            let staged = std::path::PathBuf::from(staged);
            let local = |e: std::io::Error| {
                CliError::Output(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", staged.display()),
                ))
            };
            let mut file = tokio::fs::File::create(&staged).await.map_err(local)?;
            match client.export_into(&args.name, &mut file).await {
                Ok(info) => {
                    file.sync_all().await.map_err(local)?;
                    tokio::fs::rename(&staged, path).await.map_err(local)?;
                    info
                }
                Err(e) => {
                    let _ = tokio::fs::remove_file(&staged).await;
                    return Err(missing(e));
                }
            }
        }
    };
    eprintln!("{}", export_summary(&args.name, &info));
    Ok(ExitCode::SUCCESS)
}

async fn run_sync(client: &DaemonClient, args: &SyncArgs) -> Result<ExitCode, CliError> {
    let object = ObjectRef {
        kind: Kind::Workspace,
        name: args.name.clone(),
    };
    let request = match client.request_sync(&args.name, args.force).await {
        Ok(r) => r,
        Err(e) if e.is_not_found() => return Err(not_found(&object).into()),
        Err(e) => return Err(e.into()),
    };
    let deadline = Instant::now() + args.timeout;
    let mut said_waiting = false;
    loop {
        let view = client
            .get(&object)
            .await?
            .ok_or_else(|| not_found(&object))?;
        match sync_result(&view, request.request) {
            Some(Ok(message)) => {
                print_out(&format!("workspace/{} synced: {message}\n", args.name))?;
                return Ok(ExitCode::SUCCESS);
            }
            Some(Err(refusal)) => {
                return Err(CliError::Refused(format!(
                    "workspace/{}: {refusal}",
                    args.name
                )))
            }
            None => {}
        }
        let waiting_for_vm = condition(&view, "Synced").is_some_and(|c| c.reason == "WaitingForVM");
        if waiting_for_vm && !said_waiting {
            eprintln!(
                "workspace/{}: waiting for vm {} to run with its guest ready",
                args.name,
                view.spec["vm"].as_str().unwrap_or("?")
            );
            said_waiting = true;
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(CliError::TimedOut(format!(
                "timed out after {} waiting for workspace/{} to copy (request {}): {}",
                crate::duration::show(args.timeout),
                args.name,
                request.request,
                current_state(Some(&view), &crate::waiting::WaitFor::ready())
            )));
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn view(last: Option<u64>, status: &str, reason: &str, message: &str) -> ObjectView {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "banger.dev/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": "src", "uid": "00", "generation": 1, "creationTimestamp": ""},
            "spec": {"vm": "dev", "source": "/src", "path": "/root/src"},
            "status": {
                "phase": "Ready", "observedGeneration": 1, "lastSyncRequest": last,
                "conditions": [{"type": "Synced", "status": status, "reason": reason,
                                "message": message, "lastTransitionTime": "", "observedGeneration": 1}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn export_summaries_say_how_the_patch_was_made() {
        let info = crate::client::ExportInfo {
            bytes: 120,
            base_commit: Some("0123456789abcdef0123".into()),
            method: "host-diff".into(),
        };
        assert_eq!(
            export_summary("src", &info),
            "workspace/src: patch of 120 bytes against 0123456789ab (made on the host from the guest's tree: the guest has no usable git)"
        );
    }

    #[test]
    fn a_request_is_answered_once_the_engine_acted_on_it() {
        assert_eq!(sync_result(&view(None, "True", "Copied", "old"), 1), None);
        assert_eq!(
            sync_result(&view(Some(1), "True", "Copied", "old"), 2),
            None
        );
        assert_eq!(
            sync_result(&view(Some(2), "True", "Copied", "3 files"), 2),
            Some(Ok("3 files".to_string()))
        );
        assert_eq!(
            sync_result(&view(Some(3), "False", "GuestChanged", "a (modified)"), 3),
            Some(Err("GuestChanged: a (modified)".to_string()))
        );
    }
}
