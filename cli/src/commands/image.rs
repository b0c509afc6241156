//! `banger image refresh NAME [--apply]`: check an Image's tag now and, when asked,
//! move the Image to the digest it names (`POST /v1/images/{name}/refresh`).

use std::process::ExitCode;
use std::time::Duration;

use banger_controller::api::types::RefreshRequest;
use banger_controller::refresh::RefreshOutcome;
use hyper::Method;

use crate::client::{ClientError, DaemonClient};
use crate::error::{print_out, CliError};

/// How long the client waits beyond the daemon's own bound (10 minutes).
const REFRESH_WAIT: Duration = Duration::from_secs(660);

/// Arguments of `banger image`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  # Has the tag of Image `debian` moved?
  banger image refresh debian

  # Move the Image to the digest its tag names now
  banger image refresh debian --apply")]
pub struct ImageArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ImageCommand,
}

/// `banger image` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Check the Image's tag for a new digest now (and apply it with --apply).
    #[command(after_help = "\
An Image that follows a tag (`spec.oci.ref` without @sha256:…) keeps the digest it was
first resolved to. The daemon checks the tag every --image-check-interval (default 1h);
a new digest is shown as the condition UpdateAvailable=True (with the digest), and
nothing changes under running VMs until it is applied: with --apply here, or on its own
with the annotation banger.dev/auto-update: \"true\". VMs made from the old digest then
follow the recreate rule (allow-recreate). A reference pinned by digest never changes.

Prints one line: up to date, update available (old -> new), or update applied.

Examples:
  banger image refresh debian
  banger image refresh debian --apply")]
    Refresh {
        /// The Image's name.
        name: String,
        /// Move the Image to the digest the tag names now.
        #[arg(long)]
        apply: bool,
    },
}

/// Pure: the one line `banger image refresh` prints.
pub fn outcome_line(name: &str, o: &RefreshOutcome) -> String {
    let digest = o.digest.as_deref().unwrap_or("-");
    if o.pinned {
        return format!("image/{name}: pinned by digest ({digest}); nothing to check");
    }
    if let Some(e) = &o.error {
        return format!("image/{name}: check failed: {e}");
    }
    match (&o.latest, o.applied) {
        (_, true) => format!("image/{name}: update applied: now {digest}"),
        (Some(latest), false) if latest != digest => format!(
            "image/{name}: update available: {digest} -> {latest} (apply with `banger image refresh {name} --apply`)"
        ),
        (Some(_), false) => format!("image/{name}: up to date ({digest})"),
        (None, false) => format!("image/{name}: not checked (not resolved yet, or not an OCI tag)"),
    }
}

/// Runs `banger image …`.
pub async fn run(client: &DaemonClient, args: &ImageArgs) -> Result<ExitCode, CliError> {
    match &args.command {
        ImageCommand::Refresh { name, apply } => {
            let path = format!("/v1/images/{name}/refresh");
            let body = serde_json::to_vec(&RefreshRequest { apply: *apply }).map_err(|e| {
                ClientError::Decode {
                    what: format!("POST {path}"),
                    message: e.to_string(),
                }
            })?;
            let response = client
                .checked(Method::POST, &path, Some(body), REFRESH_WAIT)
                .await?;
            let outcome: RefreshOutcome =
                serde_json::from_slice(&response.body).map_err(|e| ClientError::Decode {
                    what: format!("POST {path}"),
                    message: e.to_string(),
                })?;
            print_out(&format!("{}\n", outcome_line(name, &outcome)))?;
            Ok(if outcome.error.is_some() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn one_line_says_what_the_refresh_found() {
        let o = |digest: &str, latest: Option<&str>, applied: bool| RefreshOutcome {
            digest: Some(digest.into()),
            latest: latest.map(str::to_string),
            applied,
            ..RefreshOutcome::default()
        };
        assert_eq!(
            outcome_line("deb", &o("sha256:a", Some("sha256:a"), false)),
            "image/deb: up to date (sha256:a)"
        );
        assert!(outcome_line("deb", &o("sha256:a", Some("sha256:b"), false))
            .contains("update available: sha256:a -> sha256:b"));
        assert_eq!(
            outcome_line("deb", &o("sha256:b", Some("sha256:b"), true)),
            "image/deb: update applied: now sha256:b"
        );
        let failed = RefreshOutcome {
            error: Some("registry down".into()),
            ..RefreshOutcome::default()
        };
        assert!(outcome_line("deb", &failed).contains("check failed: registry down"));
    }
}
