//! The Workspace round trip and `banger run` against a real `banger daemon --simulate`
//! (simulated guests, real daemon, real SQLite, real socket): `workspace sync`,
//! `workspace export` (the simulated runtime writes a made-up patch), and what of
//! `banger run` needs no real guest (its specs, its refusals).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use banger_controller::api::types::ObjectView;
use support::{image_and_vm, Daemon};

const WAIT: &str = "60s";

fn get_json(daemon: &Daemon, object: &str) -> ObjectView {
    let run = daemon.banger(&["get", object, "-o", "json"]).expect_code(0);
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("get {object} -o json: {e}\n{}", run.stdout))
}

/// An Image, the VM `dev` and the Workspace `src` on it.
fn with_workspace(daemon: &Daemon) {
    let spec = format!(
        "{}---
apiVersion: banger.dev/v1alpha1
kind: Workspace
metadata:
  name: src
spec:
  vm: dev
  source: /home/me/src
",
        image_and_vm("dev", "512MiB")
    );
    daemon.write_work("all.yaml", &spec);
    daemon
        .banger(&["apply", "-f", "all.yaml", "--wait", "--timeout", WAIT])
        .expect_code(0);
}

#[test]
fn workspace_sync_copies_again_and_reports_it() {
    let daemon = Daemon::start();
    with_workspace(&daemon);
    let ws = get_json(&daemon, "workspace/src");
    assert_eq!(
        ws.status.base_commit.as_deref(),
        Some("0123456789abcdef0123456789abcdef01234567")
    );
    assert!(ws.status.copied_at.is_some());
    let table = daemon.banger(&["get", "workspaces"]).expect_code(0).stdout;
    let header = table.lines().next().unwrap();
    assert!(
        header.contains("BASE") && header.contains("COPIED"),
        "{table}"
    );
    assert!(table.contains("0123456789ab"), "{table}");

    let run = daemon
        .banger(&["workspace", "sync", "src", "--timeout", WAIT])
        .expect_code(0);
    assert_eq!(
        run.stdout,
        "workspace/src synced: 3 files (commit 0123456789ab) copied to /root/src\n"
    );
    assert_eq!(
        get_json(&daemon, "workspace/src").status.last_sync_request,
        Some(1)
    );
    let describe = daemon
        .banger(&["describe", "workspace", "src"])
        .expect_code(0);
    assert!(
        describe
            .stdout
            .contains("Base commit:  0123456789abcdef0123456789abcdef01234567"),
        "{}",
        describe.stdout
    );
    assert!(
        describe.stdout.contains("SyncRequested"),
        "{}",
        describe.stdout
    );
    let steps = describe
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("sync-workspace "))
        .count();
    assert_eq!(steps, 2, "{}", describe.stdout);

    let missing = daemon.banger(&["workspace", "sync", "nope"]).expect_code(1);
    assert!(
        missing.stderr.contains("workspace \"nope\" not found"),
        "{}",
        missing.stderr
    );
}

#[test]
fn workspace_export_streams_the_patch_to_stdout_or_a_file() {
    let daemon = Daemon::start();
    with_workspace(&daemon);
    let run = daemon
        .banger(&["workspace", "export", "src"])
        .expect_code(0);
    assert!(
        run.stdout.starts_with(
            "# simulated export of workspace src (vm dev) against 0123456789abcdef0123456789abcdef01234567\n"
        ),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("README.md "), "{}", run.stdout);
    assert_eq!(
        run.stderr.trim(),
        format!(
            "workspace/src: patch of {} bytes against 0123456789ab (made in the guest with git)",
            run.stdout.len()
        )
    );
    let run = daemon
        .banger(&["workspace", "export", "src", "-o", "work.patch"])
        .expect_code(0);
    assert!(run.stdout.is_empty());
    let patch = std::fs::read_to_string(daemon.work_dir.join("work.patch")).unwrap();
    assert!(
        patch.starts_with("# simulated export of workspace src"),
        "{patch}"
    );

    let missing = daemon
        .banger(&["workspace", "export", "nope", "-o", "nope.patch"])
        .expect_code(1);
    assert!(
        missing.stderr.contains("workspace \"nope\" not found"),
        "{}",
        missing.stderr
    );
    assert!(!daemon.work_dir.join("nope.patch").exists());
    assert!(!daemon.work_dir.join("nope.patch.banger-partial").exists());

    // A VM that is not running cannot be read: refused with one line, nothing written.
    daemon.write_work(
        "stopped.yaml",
        &support::vm_only("dev", "512MiB")
            .replace("memory: 512MiB", "memory: 512MiB\n  state: Stopped"),
    );
    daemon
        .banger(&["apply", "-f", "stopped.yaml", "--wait", "--timeout", WAIT])
        .expect_code(0);
    let refused = daemon
        .banger(&["workspace", "export", "src", "-o", "late.patch"])
        .expect_code(1);
    assert!(
        refused
            .stderr
            .contains("workspace/src: vm dev is not running with its guest ready"),
        "{}",
        refused.stderr
    );
    assert!(!daemon.work_dir.join("late.patch").exists());
}

#[test]
fn run_dry_run_prints_specs_that_apply_takes() {
    let daemon = Daemon::start();
    // No Image yet: refused, saying what to do.
    let none = daemon.banger(&["run", "--dry-run"]).expect_code(2);
    assert!(
        none.stderr.contains("the daemon knows no Image"),
        "{}",
        none.stderr
    );

    daemon.write_work("image.yaml", &image_and_vm("other", "512MiB"));
    daemon
        .banger(&["apply", "-f", "image.yaml", "--wait", "--timeout", WAIT])
        .expect_code(0);
    let checkout = daemon.work_dir.join("My Project");
    std::fs::create_dir_all(&checkout).unwrap();
    let run = daemon
        .banger(&[
            "run",
            checkout.to_str().unwrap(),
            "--memory",
            "1GiB",
            "--vcpus",
            "2",
            "--dry-run",
        ])
        .expect_code(0);
    let yaml = run.stdout;
    assert!(yaml.contains("kind: VM\n"), "{yaml}");
    assert!(yaml.contains("kind: Workspace\n"), "{yaml}");
    assert!(yaml.contains("  image: base\n"), "{yaml}");
    assert!(yaml.contains("  memory: 1GiB\n"), "{yaml}");
    assert!(yaml.contains("name: my-project-"), "{yaml}");
    // Nothing was created…
    let vms = daemon
        .banger(&["get", "vms", "-o", "json"])
        .expect_code(0)
        .stdout;
    assert!(!vms.contains("my-project-"), "{vms}");
    // …and `apply` takes the specs as printed.
    daemon.write_work("run.yaml", &yaml);
    daemon
        .banger(&["validate", "-f", "run.yaml"])
        .expect_code(0);
    let applied = daemon
        .banger(&["apply", "-f", "run.yaml", "--wait", "--timeout", WAIT])
        .expect_code(0);
    assert!(
        applied.stdout.contains("vm/my-project-"),
        "{}",
        applied.stdout
    );
    let json = daemon
        .banger(&["run", "--name", "x1", "--dry-run", "-o", "json"])
        .expect_code(0)
        .stdout;
    let docs: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(docs[0]["metadata"]["name"], "x1");
    assert_eq!(docs.as_array().unwrap().len(), 1, "no PATH: no Workspace");
}

#[test]
fn run_refuses_bad_flags_a_taken_name_and_an_ambiguous_image() {
    let daemon = Daemon::start();
    daemon.write_work("dev.yaml", &image_and_vm("dev", "512MiB"));
    daemon
        .banger(&["apply", "-f", "dev.yaml", "--wait", "--timeout", WAIT])
        .expect_code(0);
    let bad = daemon
        .banger(&["run", "--name", "Bad_Name", "--dry-run"])
        .expect_code(2);
    assert!(
        bad.stderr
            .contains("--name: name `Bad_Name` contains `B` (use lower case)"),
        "{}",
        bad.stderr
    );
    let bad = daemon
        .banger(&["run", "--memory", "lots", "--dry-run"])
        .expect_code(2);
    assert!(bad.stderr.contains("--memory"), "{}", bad.stderr);
    let bad = daemon
        .banger(&["run", "--vcpus", "64", "--dry-run"])
        .expect_code(2);
    assert!(bad.stderr.contains("--vcpus"), "{}", bad.stderr);
    let bad = daemon
        .banger(&["run", "/nonexistent/checkout", "--dry-run"])
        .expect_code(2);
    assert!(
        bad.stderr
            .contains("PATH /nonexistent/checkout: not a directory"),
        "{}",
        bad.stderr
    );
    let bad = daemon.banger(&["run", "-o", "yaml"]).expect_code(2);
    assert!(bad.stderr.contains("--dry-run"), "{}", bad.stderr);

    let taken = daemon
        .banger(&["run", "--name", "dev", "--", "true"])
        .expect_code(1);
    assert!(
        taken.stderr.contains(
            "vm/dev already exists: choose another --name, or get in with `banger ssh dev`"
        ),
        "{}",
        taken.stderr
    );
    let two = image_and_vm("unused", "512MiB").replace("name: base", "name: second");
    daemon.write_work("second.yaml", two.split("---").next().unwrap());
    daemon
        .banger(&["apply", "-f", "second.yaml"])
        .expect_code(0);
    let ambiguous = daemon.banger(&["run", "--dry-run"]).expect_code(2);
    assert!(
        ambiguous
            .stderr
            .contains("the daemon knows 2 Images (base, second): choose one with --image"),
        "{}",
        ambiguous.stderr
    );
}
