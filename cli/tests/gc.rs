//! `banger gc` against a real `banger daemon --simulate`: a known, running VM is never
//! garbage; `--dry-run` and `-o json|yaml` answer with the documented shape.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use banger_controller::gc::GcReport;
use support::{image_and_vm, Daemon};

#[test]
fn gc_lists_nothing_of_known_vms() {
    let daemon = Daemon::start();
    daemon.write_work("dev.yaml", &image_and_vm("dev", "256MiB"));
    daemon
        .banger(&["apply", "-f", "dev.yaml", "--wait", "--timeout", "60s"])
        .expect_code(0);

    let run = daemon.banger(&["gc", "--dry-run"]).expect_code(0);
    assert_eq!(run.stdout, "", "{}", run.stdout);
    assert!(run.stderr.contains("no garbage found"), "{}", run.stderr);

    let run = daemon
        .banger(&["gc", "--dry-run", "-o", "json"])
        .expect_code(0);
    let report: GcReport = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("gc -o json: {e}\n{}", run.stdout));
    assert!(report.items.is_empty() && !report.removed, "{report:?}");
    let raw: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(raw, serde_json::json!({ "items": [], "removed": false }));

    let run = daemon.banger(&["gc", "-o", "yaml"]).expect_code(0);
    assert!(run.stdout.contains("removed: true"), "{}", run.stdout);

    // The VM is still there and running after a real collection.
    let run = daemon
        .banger(&["get", "vm", "dev", "-o", "json"])
        .expect_code(0);
    let dev: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(dev["status"]["phase"], "Running", "{dev}");

    let run = daemon.banger(&["gc", "--help"]).expect_code(0);
    assert!(run.stdout.contains("banger gc --dry-run"), "{}", run.stdout);
}
