//! End-to-end: how long a stop and a delete wait for a real QEMU guest that ignores the
//! power button (the kit booted with `module_blacklist=button`: no ACPI button driver,
//! so `acpid` never hears it).
//!
//! The daemon's `--stop-grace` is an hour: a stop ends only because the VM's own
//! `stopGracePeriodSeconds` (2) is used, and a delete ends only because it gives no
//! grace at all (the VM's disk is discarded), even with `stopGracePeriodSeconds: 3600`.
//! Each wait is bounded well below an hour.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::time::Duration;

use banger_tests::{condition, wait_for, Daemon, Kit, NetNs};
use serde_json::Value;

/// What the kit's init writes to the console when it powers off.
const POWEROFF_LINE: &str = "banger-init: poweroff";

fn specs(kit: &Kit, state: &str, grace_seconds: u32) -> String {
    format!(
        "apiVersion: banger.dev/v1alpha1\nkind: Image\nmetadata:\n  name: kit\nspec:\n  kernel: {}\n  initrd: {}\n  rootfs: {}\n---\napiVersion: banger.dev/v1alpha1\nkind: VM\nmetadata:\n  name: deaf\nspec:\n  image: kit\n  memory: 256MiB\n  disk: 256MiB\n  state: {state}\n  hypervisor: qemu\n  kernelArgs: module_blacklist=button\n  stopGracePeriodSeconds: {grace_seconds}\n",
        kit.kernel.display(),
        kit.initrd.display(),
        kit.rootfs.display()
    )
}

fn ready(d: &Daemon) -> Value {
    d.cli_ok(&[
        "wait",
        "vm/deaf",
        "--for=condition=Ready",
        "--timeout",
        "180s",
    ]);
    let obj = d.get_json("vm", "deaf").expect("vm exists");
    assert_eq!(obj["status"]["phase"], "Running", "{obj:#}");
    obj
}

/// Whether `pid` is a live process (not a zombie).
fn alive(pid: i64) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        !matches!(state, Some("Z") | Some("X") | None)
    })
}

#[test]
#[ignore = "needs root (network namespaces, taps, nftables), QEMU and the guest kit"]
fn a_stop_waits_the_spec_s_grace_and_a_delete_none() {
    let kit = Kit::require();
    let ns = NetNs::new("grace");
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(&ns, tmp.path(), &["--stop-grace", "1h"]);
    let file = tmp.path().join("deaf.yaml");
    let file_arg = file.to_str().expect("utf-8 path");

    fs::write(&file, specs(&kit, "Running", 2)).expect("write spec");
    d.cli_ok(&["apply", "-f", file_arg]);
    let pid = ready(&d)["status"]["pid"].as_i64().expect("pid");

    // A stop: the power button, 2 s of the spec's grace, then QEMU is stopped.
    fs::write(&file, specs(&kit, "Stopped", 2)).expect("write spec");
    d.cli_ok(&["apply", "-f", file_arg]);
    let stopped = wait_for(Duration::from_secs(120), Duration::from_millis(200), || {
        d.get_json("vm", "deaf")
            .filter(|o| o["status"]["phase"] == "Stopped")
    })
    .expect("the stop ended with the spec's grace, not the daemon's hour");
    assert_eq!(
        condition(&stopped, "Ready").and_then(|c| c["reason"].as_str()),
        Some("Stopped"),
        "{stopped:#}"
    );
    assert!(!alive(pid), "VMM {pid} alive after the stop");
    // The guest really ignored the button: its init never logged a power-off.
    let uid = stopped["metadata"]["uid"].as_str().expect("uid");
    let console_log = d.state_dir.join("vms").join(uid).join("console.log");
    let console = fs::read_to_string(&console_log).expect("console log kept while stopped");
    assert!(
        console.contains("BANGER-GUEST-READY") && !console.contains(POWEROFF_LINE),
        "the guest heard the power button:\n{console}"
    );

    // Running again, then a grace of an hour: a spec change that restarts nothing.
    fs::write(&file, specs(&kit, "Running", 2)).expect("write spec");
    d.cli_ok(&["apply", "-f", file_arg]);
    let pid = ready(&d)["status"]["pid"].as_i64().expect("pid");
    fs::write(&file, specs(&kit, "Running", 3600)).expect("write spec");
    d.cli_ok(&["apply", "-f", file_arg]);
    let obj = ready(&d);
    assert_eq!(
        obj["status"]["pid"].as_i64(),
        Some(pid),
        "grace change restarted the VMM"
    );
    assert_eq!(obj["spec"]["stopGracePeriodSeconds"], 3600, "{obj:#}");

    // A delete gives no grace: it ends long before the hour.
    d.cli_ok(&["delete", "vm", "deaf", "--wait", "--timeout", "120s"]);
    assert!(d.get_json("vm", "deaf").is_none(), "vm listed after delete");
    assert!(!alive(pid), "VMM {pid} alive after the delete");
}
