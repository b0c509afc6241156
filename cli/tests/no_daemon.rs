//! `banger` without a daemon: a one-line error that says how to start it, exit 1.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use support::banger_at;

#[test]
fn every_client_command_says_how_to_start_the_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("absent.sock");
    std::fs::write(
        dir.path().join("vm.yaml"),
        support::vm_only("dev", "512MiB"),
    )
    .expect("write");
    for args in [
        vec!["get", "vms"],
        vec!["get", "vm", "dev", "-o", "json"],
        vec!["describe", "vm/dev"],
        vec!["apply", "-f", "vm.yaml"],
        vec!["delete", "vm", "dev"],
        vec!["wait", "vm/dev", "--for=condition=Ready", "--timeout", "1s"],
        vec!["events"],
        vec!["retry", "vm/dev"],
        vec!["logs", "vm", "dev"],
    ] {
        let run = banger_at(&socket, dir.path(), &args).expect_code(1);
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {}", run.stderr);
        assert!(
            lines[0].starts_with(&format!(
                "error: cannot reach the banger daemon at {}: ",
                socket.display()
            )),
            "{args:?}: {}",
            run.stderr
        );
        assert!(
            lines[0].ends_with("— start it with `banger daemon` (or `sudo banger daemon`)"),
            "{args:?}: {}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }
}

#[test]
fn diff_without_daemon_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("vm.yaml"),
        support::vm_only("dev", "512MiB"),
    )
    .expect("write");
    let run = banger_at(
        &dir.path().join("absent.sock"),
        dir.path(),
        &["diff", "-f", "vm.yaml"],
    )
    .expect_code(2);
    assert!(
        run.stderr.contains("cannot reach the banger daemon"),
        "{}",
        run.stderr
    );
}

#[test]
fn refused_connection_is_reported_the_same_way() {
    // A socket file nobody listens on (bound, then the listener dropped).
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    let run = banger_at(&socket, dir.path(), &["get"]).expect_code(1);
    assert!(
        run.stderr.contains("cannot reach the banger daemon"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("Connection refused"), "{}", run.stderr);
}

#[test]
fn unreadable_input_is_an_error_before_any_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("absent.sock");
    let run = banger_at(&socket, dir.path(), &["apply", "-f", "missing.yaml"]).expect_code(1);
    assert!(
        run.stderr.starts_with("error: missing.yaml: "),
        "{}",
        run.stderr
    );
    std::fs::create_dir(dir.path().join("empty")).expect("mkdir");
    let run = banger_at(&socket, dir.path(), &["diff", "-f", "empty"]).expect_code(2);
    assert!(
        run.stderr.contains("no *.yaml or *.yml files in empty"),
        "{}",
        run.stderr
    );
}

#[test]
fn usage_errors_exit_2_and_help_has_examples() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("absent.sock");
    let run = banger_at(&socket, dir.path(), &["get", "vmz"]).expect_code(2);
    assert!(
        run.stderr.contains("unknown kind \"vmz\""),
        "{}",
        run.stderr
    );
    banger_at(&socket, dir.path(), &["wait", "vm/dev", "--for", "Ready"]).expect_code(2);
    banger_at(&socket, dir.path(), &["apply"]).expect_code(2);
    for command in [
        "apply",
        "diff",
        "get",
        "describe",
        "delete",
        "wait",
        "events",
        "retry",
        "logs",
        "completion",
        "daemon",
        "doctor",
        "validate",
        "schema",
    ] {
        let run = banger_at(&socket, dir.path(), &[command, "--help"]).expect_code(0);
        assert!(
            run.stdout.contains("Examples:"),
            "banger {command} --help:\n{}",
            run.stdout
        );
    }
    let run = banger_at(&socket, dir.path(), &["--version"]).expect_code(0);
    assert!(run.stdout.starts_with("banger "), "{}", run.stdout);
}

#[test]
fn completion_scripts_for_each_shell() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("absent.sock");
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef banger"),
        ("fish", "complete -c banger"),
    ] {
        let run = banger_at(&socket, dir.path(), &["completion", shell]).expect_code(0);
        assert!(
            run.stdout.contains(marker),
            "{shell}: {}",
            &run.stdout[..run.stdout.len().min(300)]
        );
        assert!(
            run.stdout.contains("apply"),
            "{shell} completion lacks subcommands"
        );
    }
}

#[test]
fn doctor_reports_every_check_and_exits_by_verdict() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("absent.sock");
    let state = dir.path().join("state");
    let state_arg = state.display().to_string();
    let run = banger_at(&socket, dir.path(), &["doctor", "--state-dir", &state_arg]);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let names: Vec<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().nth(1).unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        [
            "kvm",
            "firecracker",
            "qemu",
            "tun",
            "vmm-user",
            "cgroups",
            "bridge",
            "nft",
            "mkfs.ext4",
            "e2fsck",
            "resize2fs",
            "kernel",
            "disk",
            "socket"
        ],
        "{}",
        run.stdout
    );
    for line in &lines {
        assert!(
            ["PASS  ", "WARN  ", "FAIL  "]
                .iter()
                .any(|p| line.starts_with(p)),
            "{line}"
        );
    }
    let failed = lines.iter().any(|l| l.starts_with("FAIL"));
    assert_eq!(run.code, i32::from(failed), "{}", run.stdout);
    let daemon_line = lines.last().expect("daemon line");
    assert!(daemon_line.starts_with("WARN  socket"), "{daemon_line}");
    assert!(
        daemon_line.contains(&socket.display().to_string()),
        "{daemon_line}"
    );
    let line_of = |name: &str| lines[names.iter().position(|n| *n == name).expect(name)];
    let kernel_line = line_of("kernel");
    assert!(
        kernel_line.starts_with("WARN  kernel")
            && kernel_line.contains(&format!("{state_arg}/guest/vmlinux")),
        "the default kernel is named, and missing here: {kernel_line}"
    );
    let disk_line = line_of("disk");
    assert!(
        disk_line.ends_with(&format!("free in {state_arg}")),
        "{disk_line}"
    );

    // A named QEMU binary that does not exist is reported as such.
    let run = banger_at(
        &socket,
        dir.path(),
        &["doctor", "--qemu-bin", "/nonexistent/qemu"],
    );
    let qemu_line = run.stdout.lines().nth(2).expect("qemu line").to_string();
    assert!(qemu_line.contains("/nonexistent/qemu"), "{qemu_line}");
    assert!(!qemu_line.starts_with("PASS"), "{qemu_line}");
}
