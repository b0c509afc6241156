//! The CLI against a real `banger daemon --simulate` (simulated VMs, real daemon, real
//! SQLite, real socket): apply/get/describe/diff/delete/wait/events/retry, dry-run,
//! prune, stdin, and the two-source conflict.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use banger_controller::api::types::{ObjectList, ObjectView};
use support::{image_and_vm, vm_only, Daemon};

const WAIT: &str = "60s";

fn get_json(daemon: &Daemon, object: &str) -> ObjectView {
    let run = daemon.banger(&["get", object, "-o", "json"]).expect_code(0);
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("get {object} -o json: {e}\n{}", run.stdout))
}

/// `-o json` as the typed round trip printed it (decode, then pretty-print): `get` now
/// re-indents the daemon's text instead, and must print the same bytes.
fn typed_json<T: serde::de::DeserializeOwned + serde::Serialize>(stdout: &str) -> String {
    let value: T = serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}\n{stdout}"));
    serde_json::to_string_pretty(&value).unwrap() + "\n"
}

/// Rows of a table (after its header), as whitespace-separated cells.
fn rows(stdout: &str) -> Vec<Vec<&str>> {
    stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect()
}

#[test]
fn get_prints_none_one_and_many_in_every_format() {
    let daemon = Daemon::start();

    // None.
    let run = daemon.banger(&["get", "vms"]).expect_code(0);
    assert_eq!(
        (run.stdout.as_str(), run.stderr.as_str()),
        ("", "No objects found.\n")
    );
    let run = daemon.banger(&["get"]).expect_code(0);
    assert_eq!(
        (run.stdout.as_str(), run.stderr.as_str()),
        ("", "No objects found.\n")
    );
    let run = daemon.banger(&["get", "vms", "-o", "json"]).expect_code(0);
    assert_eq!(run.stdout, "{\n  \"items\": []\n}\n");
    let run = daemon.banger(&["get", "vms", "-o", "yaml"]).expect_code(0);
    assert!(run.stdout.starts_with("items:"), "{}", run.stdout);
    assert!(!run.stdout.contains("kind:"), "{}", run.stdout);

    // One.
    daemon.write_work("a.yaml", &image_and_vm("a", "256MiB"));
    daemon
        .banger(&["apply", "-f", "a.yaml", "--wait", "--timeout", WAIT])
        .expect_code(0);
    let run = daemon.banger(&["get", "vms"]).expect_code(0);
    assert_eq!(run.stdout.lines().count(), 2, "{}", run.stdout);
    let row = &rows(&run.stdout)[0];
    assert_eq!(row[..3], ["a", "Running", "True"], "{}", run.stdout);
    assert_eq!(row[4..7], ["1", "256Mi", "base"], "{}", run.stdout);
    let run = daemon
        .banger(&["get", "vm", "a", "-o", "json"])
        .expect_code(0);
    assert_eq!(run.stdout, typed_json::<ObjectView>(&run.stdout));
    assert!(
        run.stdout.starts_with("{\n  \"apiVersion\": "),
        "{}",
        run.stdout
    );

    // Many: three VMs, listed by name.
    daemon.write_work(
        "bc.yaml",
        &format!("{}---\n{}", vm_only("c", "1GiB"), vm_only("b", "512MiB")),
    );
    daemon
        .banger(&["apply", "-f", "bc.yaml", "--wait", "--timeout", WAIT])
        .expect_code(0);
    let run = daemon.banger(&["get", "vms"]).expect_code(0);
    let table = rows(&run.stdout);
    let names: Vec<&str> = table.iter().map(|r| r[0]).collect();
    assert_eq!(names, ["a", "b", "c"], "{}", run.stdout);
    assert_eq!(
        table.iter().map(|r| r[5]).collect::<Vec<_>>(),
        ["256Mi", "512Mi", "1Gi"],
        "{}",
        run.stdout
    );
    let run = daemon.banger(&["get", "vms", "-o", "wide"]).expect_code(0);
    for row in rows(&run.stdout) {
        assert_eq!(row.len(), 11, "{}", run.stdout);
        assert_eq!((row[8], row[10]), ("simulated", "cli"), "{}", run.stdout);
        assert!(row[9].parse::<u32>().is_ok(), "{}", run.stdout);
    }
    let run = daemon.banger(&["get", "vms", "-o", "json"]).expect_code(0);
    assert_eq!(run.stdout, typed_json::<ObjectList>(&run.stdout));
    let list: ObjectList = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(list.items.len(), 3);
    assert!(list.items.iter().all(|o| o.status.handles.is_some()));
    let run = daemon.banger(&["get", "vms", "-o", "yaml"]).expect_code(0);
    assert_eq!(run.stdout.matches("kind: VM").count(), 3, "{}", run.stdout);

    // Named objects: in the order named; a list unless one was named.
    let run = daemon
        .banger(&["get", "vm", "c", "a", "-o", "json"])
        .expect_code(0);
    assert_eq!(run.stdout, typed_json::<ObjectList>(&run.stdout));
    let list: ObjectList = serde_json::from_str(&run.stdout).unwrap();
    let names: Vec<&str> = list
        .items
        .iter()
        .map(|o| o.metadata.name.as_str())
        .collect();
    assert_eq!(names, ["c", "a"]);
    let run = daemon.banger(&["get", "vm", "c", "a"]).expect_code(0);
    let names: Vec<&str> = rows(&run.stdout).iter().map(|r| r[0]).collect();
    assert_eq!(names, ["c", "a"], "{}", run.stdout);
    let run = daemon
        .banger(&["get", "vm", "b", "-o", "yaml"])
        .expect_code(0);
    assert!(
        run.stdout.starts_with("apiVersion: banger.dev/v1alpha1\n"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("name: b\n"), "{}", run.stdout);

    // Several kinds: one table per kind, names as kind/name.
    let run = daemon.banger(&["get"]).expect_code(0);
    let sections: Vec<&str> = run.stdout.split("\n\n").collect();
    assert_eq!(sections.len(), 2, "{}", run.stdout);
    assert!(sections[0].starts_with("NAME "), "{}", run.stdout);
    assert!(sections[0]
        .lines()
        .nth(1)
        .is_some_and(|l| l.starts_with("image/base ")));
    let vms: Vec<&str> = sections[1]
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(vms, ["vm/a", "vm/b", "vm/c"], "{}", run.stdout);
    let run = daemon.banger(&["get", "vm/a", "image/base"]).expect_code(0);
    assert!(
        run.stdout.lines().any(|l| l.starts_with("vm/a ")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.lines().any(|l| l.starts_with("image/base ")),
        "{}",
        run.stdout
    );

    // A missing name: the others print, the command fails naming it.
    let run = daemon.banger(&["get", "vm", "a", "nope"]).expect_code(1);
    assert_eq!(rows(&run.stdout).len(), 1, "{}", run.stdout);
    assert_eq!(run.stderr, "Error from daemon: vm \"nope\" not found\n");
    let run = daemon
        .banger(&["get", "vm", "nope", "-o", "json"])
        .expect_code(1);
    assert_eq!(run.stdout, "");
}

#[test]
fn apply_get_describe_diff_delete() {
    let mut daemon = Daemon::start();
    daemon.write_work("dev.yaml", &image_and_vm("dev", "512MiB"));

    let run = daemon
        .banger(&["apply", "-f", "dev.yaml", "--wait", "--timeout", WAIT])
        .expect_code(0);
    assert!(
        run.stdout.contains("image/base created\n"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("vm/dev created\n"), "{}", run.stdout);
    assert!(
        run.stdout.contains("vm/dev condition met\n"),
        "{}",
        run.stdout
    );

    // JSON: the object as {apiVersion, kind, metadata, spec, status}, Ready for its generation.
    let dev = get_json(&daemon, "vm/dev");
    assert_eq!(dev.api_version, "banger.dev/v1alpha1");
    assert_eq!(dev.kind, banger_specs::Kind::Vm);
    assert_eq!(dev.metadata.name, "dev");
    assert_eq!(dev.spec["memory"], serde_json::json!(512u64 << 20));
    assert_eq!(dev.status.phase, "Running");
    let ready = dev
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition");
    assert_eq!(ready.status, "True");
    assert_eq!(ready.observed_generation, dev.metadata.generation);

    // Lists: {"items": [...]}, in JSON and YAML.
    let run = daemon.banger(&["get", "vms", "-o", "json"]).expect_code(0);
    let list: ObjectList = serde_json::from_str(&run.stdout).expect("list json");
    assert_eq!(
        list.items
            .iter()
            .map(|o| o.metadata.name.as_str())
            .collect::<Vec<_>>(),
        ["dev"]
    );
    let run = daemon
        .banger(&["get", "vm", "dev", "-o", "yaml"])
        .expect_code(0);
    assert!(
        run.stdout.contains("apiVersion: banger.dev/v1alpha1"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("kind: VM"), "{}", run.stdout);

    // Tables.
    let run = daemon.banger(&["get", "vms"]).expect_code(0);
    let mut lines = run.stdout.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "PHASE", "READY", "IP", "VCPUS", "MEMORY", "IMAGE", "AGE"]
    );
    let row: Vec<&str> = lines.next().expect("row").split_whitespace().collect();
    assert_eq!(&row[..3], ["dev", "Running", "True"], "{}", run.stdout);
    assert_eq!(&row[4..7], ["1", "512Mi", "base"], "{}", run.stdout);
    let run = daemon.banger(&["get", "vms", "-o", "wide"]).expect_code(0);
    let header: Vec<&str> = run
        .stdout
        .lines()
        .next()
        .expect("header")
        .split_whitespace()
        .collect();
    assert_eq!(
        header[8..],
        ["HYPERVISOR", "PID", "OWNER"],
        "{}",
        run.stdout
    );
    let row: Vec<&str> = run
        .stdout
        .lines()
        .nth(1)
        .expect("row")
        .split_whitespace()
        .collect();
    assert_eq!(row[8], "simulated", "{}", run.stdout);
    assert!(row[9].parse::<u32>().is_ok(), "{}", run.stdout);
    let run = daemon.banger(&["get"]).expect_code(0);
    assert!(
        run.stdout.lines().any(|l| l.starts_with("image/base ")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.lines().any(|l| l.starts_with("vm/dev ")),
        "{}",
        run.stdout
    );

    // Describe.
    let run = daemon.banger(&["describe", "vm", "dev"]).expect_code(0);
    for section in [
        "Name:         dev",
        "Spec:",
        "Conditions:",
        "Handles:",
        "Last steps:",
        "Planned steps:",
        "Events:",
    ] {
        assert!(
            run.stdout.contains(section),
            "describe lacks {section:?}:\n{}",
            run.stdout
        );
    }
    assert!(run.stdout.contains("  Ready "), "{}", run.stdout);

    // Diff: nothing to change -> 0; a memory change -> 1 with a restart step.
    let run = daemon.banger(&["diff", "-f", "dev.yaml"]).expect_code(0);
    assert!(run.stdout.contains("vm/dev unchanged"), "{}", run.stdout);
    daemon.write_work("dev.yaml", &image_and_vm("dev", "1GiB"));
    let run = daemon.banger(&["diff", "-f", "dev.yaml"]).expect_code(1);
    assert!(run.stdout.contains("vm/dev configured\n"), "{}", run.stdout);
    assert!(run.stdout.contains("spec.memory"), "{}", run.stdout);
    assert!(run.stdout.contains("[restart]"), "{}", run.stdout);

    // Dry run shows the same plan and changes nothing.
    let run = daemon
        .banger(&["apply", "-f", "dev.yaml", "--dry-run"])
        .expect_code(0);
    assert!(
        run.stdout.contains("vm/dev configured (dry run)\n"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("[restart]"), "{}", run.stdout);
    let after = get_json(&daemon, "vm/dev");
    assert_eq!(after.metadata.generation, dev.metadata.generation);
    assert_eq!(after.spec["memory"], serde_json::json!(512u64 << 20));

    // The real apply moves the generation and waits for Ready of the new one.
    let run = daemon
        .banger(&["apply", "-f", "dev.yaml", "--wait", "--timeout", WAIT])
        .expect_code(0);
    assert!(
        run.stdout.contains("image/base unchanged\n"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("vm/dev configured\n"), "{}", run.stdout);
    let after = get_json(&daemon, "vm/dev");
    assert!(after.metadata.generation > dev.metadata.generation);
    assert_eq!(after.spec["memory"], serde_json::json!(1u64 << 30));
    daemon.banger(&["diff", "-f", "dev.yaml"]).expect_code(0);

    // Delete and wait for it; then the object is gone.
    let run = daemon
        .banger(&["delete", "vm", "dev", "--wait", "--timeout", WAIT])
        .expect_code(0);
    assert_eq!(run.stdout, "vm/dev deleted\n");
    let run = daemon.banger(&["get", "vm", "dev"]).expect_code(1);
    assert_eq!(run.stderr, "Error from daemon: vm \"dev\" not found\n");
    let run = daemon.banger(&["describe", "vm/dev"]).expect_code(1);
    assert_eq!(run.stderr, "Error from daemon: vm \"dev\" not found\n");
    let run = daemon.banger(&["delete", "vm", "dev"]).expect_code(1);
    assert!(
        run.stderr.contains("vm \"dev\" not found"),
        "{}",
        run.stderr
    );
    daemon
        .banger(&["delete", "vm", "dev", "--ignore-not-found"])
        .expect_code(0);

    // SIGTERM stops the daemon cleanly.
    assert_eq!(daemon.stop(), Some(0), "daemon log:\n{}", daemon.log());
}

#[test]
fn invalid_specs_are_reported_with_file_and_field() {
    let daemon = Daemon::start();
    let path = daemon.write_work("bad.yaml", &vm_only("dev", "lots"));
    let run = daemon.banger(&["apply", "-f", "bad.yaml"]).expect_code(1);
    let file = path.display().to_string();
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with(&file) && l.contains("spec.memory")),
        "{}",
        run.stderr
    );
    let run = daemon.banger(&["diff", "-f", "bad.yaml"]).expect_code(2);
    assert!(run.stderr.contains("spec.memory"), "{}", run.stderr);
    // Nothing was created.
    daemon.banger(&["get", "vm", "dev"]).expect_code(1);
}

#[test]
fn wait_for_conditions_and_deletion() {
    let daemon = Daemon::start();
    // An absent object never gets Ready: timeout, exit 1, with a message.
    let run = daemon
        .banger(&[
            "wait",
            "vm/ghost",
            "--for=condition=Ready",
            "--timeout",
            "1s",
        ])
        .expect_code(1);
    assert!(
        run.stderr
            .contains("timed out after 1s waiting for condition Ready=True of vm/ghost"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("it does not exist"), "{}", run.stderr);
    // An absent object is already deleted.
    let run = daemon
        .banger(&["wait", "vm/ghost", "--for=delete", "--timeout", "1s"])
        .expect_code(0);
    assert_eq!(run.stdout, "vm/ghost deleted\n");

    daemon.write_work("w.yaml", &image_and_vm("w", "256MiB"));
    daemon.banger(&["apply", "-f", "w.yaml"]).expect_code(0);
    let run = daemon
        .banger(&["wait", "vm/w", "--for=condition=Ready", "--timeout", WAIT])
        .expect_code(0);
    assert_eq!(run.stdout, "vm/w condition met\n");
    daemon
        .banger(&[
            "wait",
            "vm",
            "w",
            "--for=condition=Stalled=False",
            "--timeout",
            WAIT,
        ])
        .expect_code(0);
    // Ready=False does not hold for a ready VM.
    let run = daemon
        .banger(&[
            "wait",
            "vm/w",
            "--for=condition=Ready=False",
            "--timeout",
            "1s",
        ])
        .expect_code(1);
    assert!(run.stderr.contains("Ready=True"), "{}", run.stderr);

    daemon.banger(&["delete", "vm/w"]).expect_code(0);
    daemon
        .banger(&["wait", "vm/w", "--for=delete", "--timeout", WAIT])
        .expect_code(0);
    daemon.banger(&["get", "vm", "w"]).expect_code(1);
}

#[test]
fn events_and_retry() {
    let daemon = Daemon::start();
    daemon.write_work("e.yaml", &image_and_vm("e", "256MiB"));
    daemon
        .banger(&["apply", "-f", "e.yaml", "--wait", "--timeout", WAIT])
        .expect_code(0);

    let run = daemon.banger(&["events", "vm/e"]).expect_code(0);
    let header: Vec<&str> = run
        .stdout
        .lines()
        .next()
        .expect("header")
        .split_whitespace()
        .collect();
    assert_eq!(header, ["AGE", "TYPE", "REASON", "OBJECT", "MESSAGE"]);
    assert!(run.stdout.lines().skip(1).count() >= 1, "{}", run.stdout);
    assert!(
        run.stdout.lines().skip(1).all(|l| l.contains(" vm/e ")),
        "{}",
        run.stdout
    );
    let run = daemon.banger(&["events"]).expect_code(0);
    assert!(run.stdout.contains(" image/base "), "{}", run.stdout);

    let run = daemon.banger(&["retry", "vm/e"]).expect_code(0);
    assert_eq!(run.stdout, "vm/e retry requested\n");
    let run = daemon.banger(&["retry", "vm/ghost"]).expect_code(1);
    assert_eq!(run.stderr, "Error from daemon: vm \"ghost\" not found\n");
}

#[test]
fn stdin_prune_and_delete_by_file() {
    let daemon = Daemon::start();
    daemon.write_work(
        "base.yaml",
        image_and_vm("one", "256MiB")
            .split("---")
            .next()
            .expect("image"),
    );
    std::fs::create_dir(daemon.work_dir.join("vms")).expect("mkdir");
    daemon.write_work("vms/one.yaml", &vm_only("one", "256MiB"));
    daemon.write_work("vms/two.yaml", &vm_only("two", "256MiB"));
    daemon.banger(&["apply", "-f", "base.yaml"]).expect_code(0);
    let run = daemon.banger(&["apply", "-f", "vms"]).expect_code(0);
    assert!(
        run.stdout.contains("vm/one created") && run.stdout.contains("vm/two created"),
        "{}",
        run.stdout
    );

    // Prune: the file of `two` is gone; an apply of the same path set with --prune removes it.
    std::fs::remove_file(daemon.work_dir.join("vms/two.yaml")).expect("rm");
    let run = daemon
        .banger(&["apply", "-f", "vms", "--prune"])
        .expect_code(0);
    assert!(run.stdout.contains("vm/one unchanged\n"), "{}", run.stdout);
    assert!(run.stdout.contains("vm/two pruned\n"), "{}", run.stdout);
    daemon
        .banger(&["wait", "vm/two", "--for=delete", "--timeout", WAIT])
        .expect_code(0);
    // Pruning is scoped to the path set: base.yaml's image is untouched.
    daemon.banger(&["get", "image", "base"]).expect_code(0);

    // Stdin.
    let run = daemon
        .banger_stdin(&["apply", "-f", "-"], &vm_only("three", "256MiB"))
        .expect_code(0);
    assert_eq!(run.stdout, "vm/three created\n");

    // Delete by file.
    let run = daemon
        .banger(&["delete", "-f", "vms/one.yaml", "--wait", "--timeout", WAIT])
        .expect_code(0);
    assert_eq!(run.stdout, "vm/one deleted\n");
    daemon.banger(&["get", "vm", "one"]).expect_code(1);
}

#[test]
fn specs_directory_and_cli_conflict_until_forced() {
    let daemon = Daemon::start();
    std::fs::write(
        daemon.specs_dir.join("owned.yaml"),
        image_and_vm("owned", "256MiB"),
    )
    .expect("write");
    // The directory source picks it up by itself.
    daemon
        .banger(&[
            "wait",
            "vm/owned",
            "--for=condition=Ready",
            "--timeout",
            WAIT,
        ])
        .expect_code(0);

    daemon.write_work("owned.yaml", &vm_only("owned", "512MiB"));
    let run = daemon.banger(&["apply", "-f", "owned.yaml"]).expect_code(1);
    assert!(
        run.stderr.starts_with("Error from daemon: "),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("owned"), "{}", run.stderr);
    assert_eq!(
        get_json(&daemon, "vm/owned").spec["memory"],
        serde_json::json!(256u64 << 20)
    );

    let run = daemon
        .banger(&["apply", "-f", "owned.yaml", "--force"])
        .expect_code(0);
    assert!(run.stdout.contains("vm/owned configured"), "{}", run.stdout);
    assert_eq!(
        get_json(&daemon, "vm/owned").spec["memory"],
        serde_json::json!(512u64 << 20)
    );
}

#[test]
fn follow_events_and_console_logs() {
    let daemon = Daemon::start();
    let mut events = daemon.banger_streaming(&["events", "--follow"]);
    daemon.write_work("f.yaml", &image_and_vm("f", "256MiB"));
    daemon
        .banger(&["apply", "-f", "f.yaml", "--wait", "--timeout", WAIT])
        .expect_code(0);
    // The events of the apply arrive on the running --follow.
    let line = events
        .line_matching(std::time::Duration::from_secs(30), |l| l.contains(" vm/f "))
        .unwrap_or_else(|seen| panic!("no event of vm/f on --follow; saw {seen:?}"));
    assert!(
        line.contains("Normal") || line.contains("Warning"),
        "{line}"
    );
    assert!(events.is_running(), "events --follow ended by itself");

    // The simulated VM writes a console log; `logs` prints it, `--follow` streams it.
    let run = daemon.banger(&["logs", "vm", "f"]).expect_code(0);
    assert!(!run.stdout.is_empty(), "empty console log");
    let first = run.stdout.lines().next().expect("a line").to_string();
    let mut logs = daemon.banger_streaming(&["logs", "vm/f", "--follow"]);
    logs.line_matching(std::time::Duration::from_secs(30), |l| l == first)
        .unwrap_or_else(|seen| panic!("logs --follow did not print {first:?}; saw {seen:?}"));
    assert!(logs.is_running(), "logs --follow ended by itself");

    // A log longer than one answer of the daemon (1 MiB) is printed whole.
    let handles = get_json(&daemon, "vm/f").status.handles.expect("handles");
    let console = handles["consoleLog"]
        .as_str()
        .expect("consoleLog handle")
        .to_string();
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&console)
            .expect("open console log");
        for i in 0..40_000 {
            writeln!(
                file,
                "console line {i:06} padding padding padding padding padding padding"
            )
            .expect("append");
        }
    }
    let expected = std::fs::read(&console).expect("read console log");
    assert!(expected.len() > 2 << 20, "log is {} bytes", expected.len());
    let output = std::process::Command::new(support::BANGER)
        .args(["logs", "vm", "f"])
        .env("BANGER_SOCKET", &daemon.socket)
        .output()
        .expect("run banger logs");
    assert!(output.status.success());
    assert_eq!(output.stdout.len(), expected.len());
    assert!(
        output.stdout == expected,
        "logs output differs from the console log"
    );

    let run = daemon.banger(&["logs", "vm", "ghost"]).expect_code(1);
    assert_eq!(run.stderr, "Error from daemon: vm \"ghost\" not found\n");
    let run = daemon.banger(&["logs", "image", "base"]).expect_code(2);
    assert!(
        run.stderr.contains("logs works on vm objects only"),
        "{}",
        run.stderr
    );
}

#[test]
fn image_change_needs_allow_recreate() {
    let daemon = Daemon::start();
    std::fs::write(daemon.work_dir.join("rootfs2.ext4"), b"other rootfs").expect("write");
    let other_image = "apiVersion: banger.dev/v1alpha1
kind: Image
metadata:
  name: other
spec:
  kernel: ./vmlinux
  rootfs: ./rootfs2.ext4
---
";
    daemon.write_work(
        "r.yaml",
        &format!("{other_image}{}", image_and_vm("r", "256MiB")),
    );
    daemon
        .banger(&["apply", "-f", "r.yaml", "--wait", "--timeout", WAIT])
        .expect_code(0);

    let switched = format!(
        "{other_image}{}",
        image_and_vm("r", "256MiB").replace("image: base", "image: other")
    );
    daemon.write_work("r.yaml", &switched);
    let run = daemon.banger(&["diff", "-f", "r.yaml"]).expect_code(1);
    assert!(run.stdout.contains("[recreate]"), "{}", run.stdout);
    assert!(run.stdout.contains("spec.image"), "{}", run.stdout);
    assert!(
        run.stdout.contains("  ! blocked: RecreateBlocked"),
        "{}",
        run.stdout
    );
    let run = daemon
        .banger(&["diff", "-f", "r.yaml", "--allow-recreate"])
        .expect_code(1);
    assert!(run.stdout.contains("[recreate]"), "{}", run.stdout);
    assert!(!run.stdout.contains("blocked"), "{}", run.stdout);

    // Without --allow-recreate the VM keeps running and says why it is not Ready;
    // apply --wait stops at once instead of waiting out its timeout.
    let run = daemon
        .banger(&["apply", "-f", "r.yaml", "--wait", "--timeout", "5m"])
        .expect_code(1);
    assert!(run.stdout.contains("vm/r configured\n"), "{}", run.stdout);
    assert!(
        run.stderr
            .contains("vm/r cannot become Ready: RecreateBlocked"),
        "{}",
        run.stderr
    );
    let r = get_json(&daemon, "vm/r");
    assert_eq!(r.status.phase, "Running");
    let run = daemon.banger(&["describe", "vm", "r"]).expect_code(0);
    assert!(run.stdout.contains("RecreateBlocked"), "{}", run.stdout);
    // The spec is applied but the host does not match it: diff still reports a change.
    let run = daemon.banger(&["diff", "-f", "r.yaml"]).expect_code(1);
    assert!(run.stdout.contains("vm/r unchanged\n"), "{}", run.stdout);
    assert!(
        run.stdout.contains("  ! blocked: RecreateBlocked"),
        "{}",
        run.stdout
    );

    let run = daemon
        .banger(&[
            "apply",
            "-f",
            "r.yaml",
            "--allow-recreate",
            "--wait",
            "--timeout",
            WAIT,
        ])
        .expect_code(0);
    assert!(run.stdout.contains("vm/r condition met"), "{}", run.stdout);
    daemon.banger(&["diff", "-f", "r.yaml"]).expect_code(0);
}

#[test]
fn events_lists_more_than_one_answer_holds() {
    let daemon = Daemon::start();
    let mut file = image_and_vm("vm-0", "128MiB");
    for i in 1..250 {
        file.push_str("---\n");
        file.push_str(&vm_only(&format!("vm-{i}"), "128MiB"));
    }
    daemon.write_work("many.yaml", &file);
    daemon
        .banger(&["apply", "-f", "many.yaml", "--wait", "--timeout", "120s"])
        .expect_code(0);
    let run = daemon.banger(&["events"]).expect_code(0);
    let rows = run.stdout.lines().count() - 1;
    // Each VM records several events (created, disk prepared, launched, phase changed):
    // more than the 1000 the daemon returns in one answer.
    assert!(rows > 1000, "{rows} events listed");
    for i in [0, 125, 249] {
        assert!(
            run.stdout.contains(&format!(" vm/vm-{i} ")),
            "vm-{i} missing"
        );
    }
}

#[test]
fn stopping_and_starting_a_vm() {
    let daemon = Daemon::start();
    daemon.write_work("s.yaml", &image_and_vm("s", "256MiB"));
    daemon
        .banger(&["apply", "-f", "s.yaml", "--wait", "--timeout", WAIT])
        .expect_code(0);
    let ip = get_json(&daemon, "vm/s").status.ip.expect("an IP");

    daemon.write_work(
        "s.yaml",
        &format!("{}  state: Stopped\n", image_and_vm("s", "256MiB")),
    );
    let run = daemon.banger(&["diff", "-f", "s.yaml"]).expect_code(1);
    assert!(run.stdout.contains("spec.state"), "{}", run.stdout);
    assert!(run.stdout.contains("[live]"), "{}", run.stdout);
    daemon
        .banger(&["apply", "-f", "s.yaml", "--wait", "--timeout", WAIT])
        .expect_code(0);
    let stopped = get_json(&daemon, "vm/s");
    assert_eq!(stopped.status.phase, "Stopped");
    let run = daemon.banger(&["get", "vm", "s"]).expect_code(0);
    assert!(
        run.stdout
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("s ") && l.contains(" Stopped ")),
        "{}",
        run.stdout
    );

    daemon.write_work("s.yaml", &image_and_vm("s", "256MiB"));
    daemon
        .banger(&["apply", "-f", "s.yaml", "--wait", "--timeout", WAIT])
        .expect_code(0);
    let running = get_json(&daemon, "vm/s");
    assert_eq!(running.status.phase, "Running");
    assert_eq!(
        running.status.ip.as_deref(),
        Some(ip.as_str()),
        "the VM keeps its IP"
    );
}

#[test]
fn daemon_logs_json_lines_and_stops_on_sigterm() {
    let mut daemon = Daemon::start_with(&["--log-format", "json", "--max-concurrent", "2"]);
    daemon.write_work("j.yaml", &image_and_vm("j", "256MiB"));
    daemon
        .banger(&["apply", "-f", "j.yaml", "--wait", "--timeout", WAIT])
        .expect_code(0);
    assert_eq!(daemon.stop(), Some(0), "daemon log:\n{}", daemon.log());
    let log = daemon.log();
    assert!(log.lines().count() >= 2, "{log}");
    for line in log.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            value.get("level").is_some() && value.get("timestamp").is_some(),
            "{line}"
        );
    }
    assert!(log.contains("SIGTERM"), "{log}");
}
