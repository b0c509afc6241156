//! `banger gc [--dry-run]`: remove host objects that carry banger's naming but belong
//! to no object the daemon knows (`POST /v1/gc`).

use std::process::ExitCode;
use std::time::Duration;

use banger_controller::gc::GcReport;
use banger_controller::host::prepared_disk::PRUNED_KIND;
use hyper::Method;

use crate::client::{ClientError, DaemonClient};
use crate::error::{print_out, CliError};
use crate::output::{to_json, to_yaml};

/// How long a collection may take beyond the client's margin: stopping stray VMMs
/// waits a bounded grace period each.
const GC_WAIT: Duration = Duration::from_secs(90);

/// `-o` of `banger gc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GcOutput {
    /// `{"items": [...], "removed": bool}` as JSON.
    Json,
    /// The same as YAML.
    Yaml,
}

/// Arguments of `banger gc`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Garbage is what carries banger's naming on this host but belongs to no VM the daemon
knows: tap devices (bgt…), NAT rules in `table ip banger` and guest filter rules in
`table bridge banger` naming an unknown uid,
directories in <state>/vms, VM cgroups (banger-<uid>) below this daemon's parent
cgroup, and VMM processes carrying the marker banger-<uid> and this daemon's state
directory. In the image store (<state>/images/store), root filesystems no Image uses
(built more than 10 minutes ago) and the layer blobs only they listed; in
<state>/disk-bases, the prepared disks of Images that no longer exist and leftover
temporary files (also older than 10 minutes). The daemon also collects garbage once
when it starts.
Objects of known VMs (also of VMs being deleted) and other daemons' VMMs are never
touched. Nor are orphaned VMs (forgotten with `banger.dev/on-remove: Orphan`; they keep
their IP lease and keep running), unless --include-orphans asks for them too: then
their host objects are removed and their lease is released.

Each item is printed on one line: KIND/NAME and what happened to it. Exit status 0,
or 1 when an item could not be removed.

Examples:
  # What would be removed
  banger gc --dry-run

  # Remove it
  banger gc

  # Orphaned VMs too (stopped, removed, their IP leases released)
  banger gc --include-orphans --dry-run

  # The same as JSON ({\"items\": [...], \"removed\": true})
  banger gc -o json")]
pub struct GcArgs {
    /// List the garbage without removing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Also collect orphaned VMs (their host objects and their IP lease).
    #[arg(long)]
    pub include_orphans: bool,
    /// Output format: json or yaml (default: one line per item).
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT")]
    pub output: Option<GcOutput>,
}

/// Pure: the one-line-per-item text of a report.
pub fn render_lines(report: &GcReport) -> String {
    let mut out = String::new();
    for item in &report.items {
        let failure = report.failed.iter().find(|f| f.item == item.to_string());
        let outcome = match (report.removed, failure) {
            (false, _) => "would remove".to_string(),
            (true, None) => "removed".to_string(),
            (true, Some(f)) => format!("not removed: {}", f.error),
        };
        let detail = match (&item.uid, item.detail.is_empty()) {
            (Some(uid), _) => format!(" (uid {uid})"),
            (None, false) => format!(" ({})", item.detail),
            (None, true) => String::new(),
        };
        out.push_str(&format!("{item} {outcome}{detail}\n"));
    }
    let verb = if report.removed {
        "released"
    } else {
        "would release"
    };
    for uid in &report.released_leases {
        out.push_str(&format!("lease/{uid} {verb} (orphaned VM)\n"));
    }
    let verb = if report.removed {
        "removed"
    } else {
        "would remove"
    };
    for item in &report.images {
        let what = if item.kind == PRUNED_KIND {
            item.kind.clone()
        } else {
            format!("image-store/{}", item.kind)
        };
        out.push_str(&format!(
            "{what} {} {verb} ({} bytes, used by no Image)\n",
            item.path.display(),
            item.bytes
        ));
    }
    out
}

/// Runs `banger gc`.
pub async fn run(client: &DaemonClient, args: &GcArgs) -> Result<ExitCode, CliError> {
    let path = format!(
        "/v1/gc?dryRun={}&includeOrphans={}",
        args.dry_run, args.include_orphans
    );
    let response = client.checked(Method::POST, &path, None, GC_WAIT).await?;
    let report: GcReport =
        serde_json::from_slice(&response.body).map_err(|e| ClientError::Decode {
            what: format!("POST {path}"),
            message: e.to_string(),
        })?;
    match args.output {
        Some(GcOutput::Json) => print_out(&to_json(&report)?)?,
        Some(GcOutput::Yaml) => print_out(&to_yaml(&report)?)?,
        None if report.items.is_empty()
            && report.released_leases.is_empty()
            && report.images.is_empty() =>
        {
            eprintln!("no garbage found")
        }
        None => print_out(&render_lines(&report))?,
    }
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use banger_controller::gc::GcFailure;
    use banger_controller::runtime::{Garbage, GarbageKind};

    fn items() -> Vec<Garbage> {
        vec![
            Garbage {
                kind: GarbageKind::Process,
                name: "4242".into(),
                uid: Some("dead".into()),
                detail: "qemu-system-x86_64 -name banger-dead".into(),
            },
            Garbage {
                kind: GarbageKind::Tap,
                name: "bgt0123456789ab".into(),
                uid: None,
                detail: "tap".into(),
            },
        ]
    }

    #[test]
    fn one_line_per_item_says_what_happened() {
        let dry = GcReport {
            items: items(),
            removed: false,
            failed: vec![],
            released_leases: vec!["dead".into()],
            images: vec![
                banger_controller::host::oci::store::StoreItem {
                    kind: "blob".into(),
                    path: "/s/images/store/blobs/sha256/ab".into(),
                    bytes: 10,
                },
                banger_controller::host::oci::store::StoreItem {
                    kind: PRUNED_KIND.into(),
                    path: "/s/disk-bases/k.base.ext4".into(),
                    bytes: 20,
                },
            ],
        };
        assert_eq!(
            render_lines(&dry),
            "process/4242 would remove (uid dead)\ntap/bgt0123456789ab would remove (tap)\n\
             lease/dead would release (orphaned VM)\n\
             image-store/blob /s/images/store/blobs/sha256/ab would remove (10 bytes, used by no Image)\n\
             prepared-disk /s/disk-bases/k.base.ext4 would remove (20 bytes, used by no Image)\n"
        );
        let done = GcReport {
            items: items(),
            removed: true,
            failed: vec![GcFailure {
                item: "tap/bgt0123456789ab".into(),
                error: "busy".into(),
            }],
            released_leases: vec![],
            images: vec![],
        };
        assert_eq!(
            render_lines(&done),
            "process/4242 removed (uid dead)\ntap/bgt0123456789ab not removed: busy (tap)\n"
        );
    }
}
