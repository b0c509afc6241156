//! `banger describe KIND NAME`: everything the daemon knows about one object.

use std::fmt::Write as _;
use std::process::ExitCode;

use banger_controller::api::types::DescribeView;
use time::OffsetDateTime;

use crate::client::DaemonClient;
use crate::commands::not_found;
use crate::error::{print_out, CliError};
use crate::output::{age_since, to_yaml, Table};
use crate::selector::parse_objects;

/// Arguments of `banger describe`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Prints the object's metadata and owner, its spec, status conditions, host handles
(process, sockets, tap, disks, lease), the last steps run with their durations, the
steps the planner would run now, and its recent events.

Examples:
  banger describe vm dev
  banger describe vm/dev image/base")]
pub struct DescribeArgs {
    /// KIND NAME… or KIND/NAME….
    #[arg(value_name = "KIND NAME|KIND/NAME", required = true)]
    pub args: Vec<String>,
}

fn indent(text: &str, by: &str) -> String {
    text.lines().map(|l| format!("{by}{l}\n")).collect()
}

fn yaml_block(value: &serde_json::Value) -> String {
    match to_yaml(value) {
        Ok(text) => indent(text.trim_end(), "  "),
        Err(e) => format!("  <{e}>\n"),
    }
}

/// The text of `describe` for one object.
pub fn describe_text(view: &DescribeView, now: OffsetDateTime) -> String {
    let object = &view.object;
    let meta = &object.metadata;
    let status = &object.status;
    let mut out = String::new();
    let mut field = |name: &str, value: &str| {
        let _ = writeln!(out, "{:<14}{value}", format!("{name}:"));
    };
    field("Name", &meta.name);
    field("Kind", object.kind.as_str());
    field("UID", &meta.uid);
    field(
        "Generation",
        &format!(
            "{} (observed {})",
            meta.generation, status.observed_generation
        ),
    );
    field(
        "Created",
        &format!(
            "{} ({} ago)",
            meta.creation_timestamp,
            age_since(&meta.creation_timestamp, now)
        ),
    );
    if let Some(deleted) = &meta.deletion_timestamp {
        field("Deleting", &format!("since {deleted}"));
    }
    field(
        "Owner",
        meta.annotations
            .get("banger.dev/owner")
            .map_or("-", String::as_str),
    );
    let pairs = |map: &std::collections::BTreeMap<String, String>| {
        if map.is_empty() {
            "<none>".to_string()
        } else {
            map.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    field("Labels", &pairs(&meta.labels));
    field("Annotations", &pairs(&meta.annotations));
    field(
        "Phase",
        if status.phase.is_empty() {
            "-"
        } else {
            &status.phase
        },
    );
    if let Some(hypervisor) = &status.hypervisor {
        field("Hypervisor", hypervisor);
    }
    if let Some(pid) = status.pid {
        field("PID", &pid.to_string());
    }
    if let Some(ip) = &status.ip {
        field("IP", ip);
    }
    if let Some(commit) = &status.base_commit {
        field("Base commit", commit);
    }
    if let Some(at) = &status.copied_at {
        field("Copied", &format!("{at} ({} ago)", age_since(at, now)));
    }
    if let Some(request) = status.last_sync_request {
        field(
            "Sync request",
            &format!("{request} (the last one acted on)"),
        );
    }

    if let Some(image) = &status.image {
        field("Digest", &image.digest);
        field(
            "Rootfs",
            &format!(
                "{} ({})",
                image.rootfs.display(),
                crate::output::format_bytes(image.rootfs_bytes)
            ),
        );
        let kernel = image.kernel.display().to_string();
        field(
            "Kernel",
            &if image.default_kernel {
                format!("{kernel} (the daemon's default kernel)")
            } else {
                kernel
            },
        );
        if let Some(guest) = &image.guest {
            field("Guest bits", guest);
        }
        if let Some(latest) = &image.latest_digest {
            let checked = image.checked_at.as_deref().unwrap_or("-");
            field("Tag names", &format!("{latest} (checked {checked})"));
        }
    }
    if !status.pull.is_empty() {
        out.push_str("Pull:\n");
        let mut table = Table::new(["LAYER", "DIGEST", "RECEIVED", "SIZE", "STATE"]);
        let count = status.pull.len();
        for (i, layer) in status.pull.iter().enumerate() {
            table.row([
                format!("{}/{count}", i + 1),
                crate::output::short_digest(&layer.digest),
                crate::output::format_bytes(layer.bytes),
                crate::output::format_bytes(layer.total),
                if layer.done {
                    "done"
                } else if layer.digest.is_empty() {
                    "waiting"
                } else {
                    "pulling"
                }
                .to_string(),
            ]);
        }
        out.push_str(&indent(&table.render(), "  "));
    }

    out.push_str("Spec:\n");
    out.push_str(&yaml_block(&object.spec));

    out.push_str("Conditions:\n");
    if status.conditions.is_empty() {
        out.push_str("  <none>\n");
    } else {
        let mut table = Table::new([
            "TYPE",
            "STATUS",
            "REASON",
            "GENERATION",
            "LAST TRANSITION",
            "MESSAGE",
        ]);
        for c in &status.conditions {
            table.row([
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                c.observed_generation.to_string(),
                format!("{} ago", age_since(&c.last_transition_time, now)),
                c.message.clone(),
            ]);
        }
        out.push_str(&indent(&table.render(), "  "));
    }

    out.push_str("Handles:\n");
    match &status.handles {
        Some(handles) if !handles.is_null() => out.push_str(&yaml_block(handles)),
        _ => out.push_str("  <none>\n"),
    }

    out.push_str("Last steps:\n");
    if view.steps.is_empty() {
        out.push_str("  <none>\n");
    } else {
        let mut table = Table::new(["STEP", "OUTCOME", "STARTED", "DURATION", "ERROR"]);
        for step in &view.steps {
            table.row([
                step.step.clone(),
                step.outcome.clone(),
                format!("{} ago", age_since(&step.started, now)),
                step.duration_ms
                    .map_or_else(|| "-".to_string(), |ms| format!("{ms}ms")),
                step.error.clone().unwrap_or_default(),
            ]);
        }
        out.push_str(&indent(&table.render(), "  "));
    }

    out.push_str("Planned steps:\n");
    if view.plan.is_empty() {
        out.push_str("  <none>\n");
    } else {
        let mut table = Table::new(["STEP", "CLASS", "REASON"]);
        for step in &view.plan {
            table.row([
                step.step.clone(),
                step.change_class.clone(),
                step.reason.clone(),
            ]);
        }
        out.push_str(&indent(&table.render(), "  "));
    }

    out.push_str("Events:\n");
    if view.events.is_empty() {
        out.push_str("  <none>\n");
    } else {
        let mut table = Table::new(["AGE", "TYPE", "REASON", "MESSAGE"]);
        for event in &view.events {
            table.row([
                age_since(&event.time, now),
                event.type_.clone(),
                event.reason.clone(),
                event.message.clone(),
            ]);
        }
        out.push_str(&indent(&table.render(), "  "));
    }
    out
}

/// Runs `banger describe`.
pub async fn run(client: &DaemonClient, args: &DescribeArgs) -> Result<ExitCode, CliError> {
    let objects = parse_objects(&args.args)?;
    let mut texts = Vec::new();
    for object in &objects {
        match client.describe(object).await {
            Ok(view) => texts.push(describe_text(&view, OffsetDateTime::now_utc())),
            Err(e) if e.is_not_found() => return Err(not_found(object).into()),
            Err(e) => return Err(e.into()),
        }
    }
    print_out(&texts.join("\n"))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use banger_controller::api::types::{
        Condition, EventView, ObjectMetaView, ObjectView, PlannedStepView, StatusView,
        StepRecordView,
    };
    use banger_specs::Kind;
    use time::macros::datetime;

    #[test]
    fn describe_lists_every_section() {
        let view = DescribeView {
            object: ObjectView {
                api_version: "banger.dev/v1alpha1".into(),
                kind: Kind::Vm,
                metadata: ObjectMetaView {
                    name: "dev".into(),
                    uid: "0f3a".into(),
                    generation: 2,
                    creation_timestamp: "2026-01-01T00:00:00Z".into(),
                    deletion_timestamp: None,
                    labels: Default::default(),
                    annotations: [("banger.dev/owner".to_string(), "cli".to_string())].into(),
                },
                spec: serde_json::json!({"image": "base", "vcpus": 1}),
                status: StatusView {
                    phase: "Running".into(),
                    observed_generation: 2,
                    conditions: vec![Condition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        reason: "Running".into(),
                        message: "guest is up".into(),
                        last_transition_time: "2026-01-01T00:01:00Z".into(),
                        observed_generation: 2,
                    }],
                    ip: Some("172.30.0.2".into()),
                    pid: Some(4242),
                    hypervisor: Some("simulated".into()),
                    handles: Some(serde_json::json!({"tap": "bg-0f3a"})),
                    ..StatusView::default()
                },
            },
            steps: vec![StepRecordView {
                step: "start-vm".into(),
                started: "2026-01-01T00:00:30Z".into(),
                duration_ms: Some(1250),
                outcome: "done".into(),
                error: None,
            }],
            events: vec![EventView {
                id: 1,
                time: "2026-01-01T00:01:00Z".into(),
                kind: Kind::Vm,
                name: "dev".into(),
                type_: "Normal".into(),
                reason: "Started".into(),
                message: "vm started".into(),
            }],
            plan: vec![PlannedStepView {
                step: "probe".into(),
                change_class: "live".into(),
                reason: "resync".into(),
            }],
        };
        let text = describe_text(&view, datetime!(2026-01-01 00:02:00 UTC));
        for needle in [
            "Name:         dev\n",
            "Owner:        cli\n",
            "Generation:   2 (observed 2)\n",
            "PID:          4242\n",
            "Spec:\n  image: base\n  vcpus: 1\n",
            "Handles:\n  tap: bg-0f3a\n",
            "  Ready   True     Running",
            "  start-vm   done      90s ago   1250ms",
            "Planned steps:\n  STEP    CLASS   REASON\n  probe   live    resync\n",
            "  60s   Normal   Started   vm started\n",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }

    #[test]
    fn describe_shows_what_an_image_resolved_to_and_its_pull() {
        use banger_controller::api::types::{ImageStatusView, LayerProgressView};
        let view = DescribeView {
            object: ObjectView {
                api_version: "banger.dev/v1alpha1".into(),
                kind: Kind::Image,
                metadata: ObjectMetaView {
                    name: "deb".into(),
                    uid: "0f3b".into(),
                    generation: 1,
                    creation_timestamp: "2026-01-01T00:00:00Z".into(),
                    deletion_timestamp: None,
                    labels: Default::default(),
                    annotations: Default::default(),
                },
                spec: serde_json::json!({"oci": {"ref": "r/debian:12"}}),
                status: StatusView {
                    phase: "Ready".into(),
                    image: Some(ImageStatusView {
                        digest: "sha256:abc".into(),
                        rootfs: "/store/rootfs/abc/rootfs.ext4".into(),
                        rootfs_bytes: 256 << 20,
                        kernel: "/guest/vmlinux".into(),
                        default_kernel: true,
                        guest: Some("init: banger, ssh: banger (dropbear), libc: glibc".into()),
                        checked_at: Some("2026-01-01T00:01:00Z".into()),
                        latest_digest: Some("sha256:def".into()),
                    }),
                    pull: vec![
                        LayerProgressView {
                            digest: "sha256:1111".into(),
                            bytes: 1 << 20,
                            total: 1 << 20,
                            done: true,
                        },
                        LayerProgressView {
                            digest: "sha256:2222".into(),
                            bytes: 1 << 20,
                            total: 4 << 20,
                            done: false,
                        },
                    ],
                    ..StatusView::default()
                },
            },
            steps: vec![],
            events: vec![],
            plan: vec![],
        };
        let text = describe_text(&view, datetime!(2026-01-01 00:02:00 UTC));
        for needle in [
            "Digest:       sha256:abc\n",
            "Rootfs:       /store/rootfs/abc/rootfs.ext4 (256Mi)\n",
            "Kernel:       /guest/vmlinux (the daemon's default kernel)\n",
            "Guest bits:   init: banger, ssh: banger (dropbear), libc: glibc\n",
            "Tag names:    sha256:def (checked 2026-01-01T00:01:00Z)\n",
            "  1/2     sha256:1111   1Mi        1Mi    done",
            "  2/2     sha256:2222   1Mi        4Mi    pulling",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }
}
