//! `banger doctor` checks against the real host, run inside a fresh network namespace
//! (the bridge check only reads, but stays out of the host's namespace anyway).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod netns_support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_controller::doctor::{
    check_socket, format_report, has_failures, probe_binary, run_checks, BinaryProbe, CheckResult,
    CheckStatus, DoctorConfig,
};
use banger_controller::host::net::bridge::ensure_bridge;
use banger_controller::host::net::{BridgeConfig, Netlink};
use netns_support::TestNetns;

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn by_name<'a>(results: &'a [CheckResult], name: &str) -> &'a CheckResult {
    results
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no check named {name}: {results:?}"))
}

#[test]
#[ignore = "needs root (network namespaces) and QEMU"]
fn doctor_on_this_host() {
    let ns = TestNetns::new();
    let dir = tempfile::tempdir().unwrap();
    let fake_fc = script(dir.path(), "firecracker", "echo 'Firecracker v1.7.0'");
    let socket = dir.path().join("banger.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let mut cfg = DoctorConfig::new(dir.path().join("state"), socket.clone());
    cfg.firecracker_bin = fake_fc.clone();

    let results = ns.run({
        let cfg = cfg.clone();
        move || async move { run_checks(&cfg).await }
    });
    let report = format_report(&results);
    println!("{report}");
    let names: Vec<&str> = results.iter().map(|r| r.name.as_str()).collect();
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
            "disk space",
            "socket"
        ]
    );
    // No guest directory in this state directory: the default kernel is missing.
    assert_eq!(
        by_name(&results, "kernel").status,
        CheckStatus::Warn,
        "{report}"
    );

    for line in report.lines() {
        assert!(
            line.starts_with("PASS  ") || line.starts_with("WARN  ") || line.starts_with("FAIL  "),
            "{line}"
        );
    }
    assert_eq!(by_name(&results, "qemu").status, CheckStatus::Pass);
    assert!(by_name(&results, "qemu")
        .detail
        .contains("QEMU emulator version"));
    assert!(by_name(&results, "firecracker")
        .detail
        .contains("Firecracker v1.7.0"));
    for name in [
        "tun",
        "nft",
        "mkfs.ext4",
        "e2fsck",
        "resize2fs",
        "socket",
        "bridge",
    ] {
        assert_eq!(
            by_name(&results, name).status,
            CheckStatus::Pass,
            "{report}"
        );
    }
    // Whether stock guests can use KVM decides kvm and firecracker together.
    let kvm = by_name(&results, "kvm").status;
    assert_eq!(by_name(&results, "firecracker").status, kvm, "{report}");
    assert!(!has_failures(&results), "{report}");

    // The bridge, once made (inside the namespace), is reported healthy.
    let results = ns.run({
        let cfg = cfg.clone();
        move || async move {
            let nl = Netlink::connect().unwrap();
            ensure_bridge(&nl, &BridgeConfig::default()).await.unwrap();
            run_checks(&cfg).await
        }
    });
    assert!(by_name(&results, "bridge")
        .detail
        .contains("is up with 172.30.0.1/24"));

    // Nothing usable: missing hypervisors and tun fail, and the run fails.
    let mut broken = cfg.clone();
    broken.firecracker_bin = dir.path().join("no-such-firecracker");
    broken.qemu_bin = dir.path().join("no-such-qemu");
    broken.tun_device = dir.path().join("no-tun");
    broken.nft_bin = dir.path().join("no-nft");
    let results = ns.run(move || async move { run_checks(&broken).await });
    for name in ["firecracker", "qemu", "tun", "nft"] {
        assert_eq!(by_name(&results, name).status, CheckStatus::Fail, "{name}");
    }
    assert!(has_failures(&results));

    // A socket nobody listens on any more is stale: WARN.
    drop(listener);
    let stale = check_socket(&socket);
    assert_eq!(stale.status, CheckStatus::Warn, "{stale:?}");
    assert_eq!(
        check_socket(&dir.path().join("none.sock")).status,
        CheckStatus::Warn
    );
    std::fs::write(dir.path().join("plain"), b"x").unwrap();
    assert_eq!(
        check_socket(&dir.path().join("plain")).status,
        CheckStatus::Fail
    );
}

#[test]
fn version_probe_is_bounded_and_reports_failures() {
    let dir = tempfile::tempdir().unwrap();
    let hang = script(dir.path(), "hang", "sleep 30");
    match probe_binary(&hang, "--version", Duration::from_millis(300)) {
        BinaryProbe::Broken { reason, .. } => assert!(reason.contains("timed out"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let fails = script(dir.path(), "fails", "echo 'bad flag' >&2; exit 3");
    match probe_binary(&fails, "--version", Duration::from_secs(5)) {
        BinaryProbe::Broken { reason, .. } => {
            assert!(reason.contains("bad flag"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        probe_binary(
            Path::new("banger-no-such-binary"),
            "--version",
            Duration::from_secs(1)
        ),
        BinaryProbe::Missing {
            requested: "banger-no-such-binary".into()
        }
    );
}

/// The guest kit's directory is laid out as a guest directory (`--guest-dir`): doctor
/// names its kernel and release, and the guest bits are complete.
#[test]
#[ignore = "needs the guest kit (scripts/guest-kit.sh)"]
fn the_guest_kit_is_a_guest_directory() {
    let kit = std::env::var_os("BANGER_KIT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/guest-kit"));
    let found = banger_controller::doctor::check_default_kernel(&kit);
    assert_eq!(found.status, CheckStatus::Pass, "{found:?}");
    let release = std::fs::read_to_string(kit.join("kernel.release")).unwrap();
    assert!(found.detail.contains(release.trim()), "{found:?}");
    assert!(found.detail.contains("guest bits "), "{found:?}");
}
