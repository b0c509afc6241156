//! End-to-end fault injection on real QEMU guests: the daemon SIGKILLs itself
//! (`--test-crash-at`, tests only) just before and just after every step that touches
//! the hypervisor — the launch of a create, a stop's shutdown, a start's launch, a
//! restart-class change's shutdown and launch, a delete's shutdown — and a new daemon
//! takes over. After each, the VM converges to its spec, `banger gc --dry-run` finds
//! nothing the store does not account for, every VM has exactly its one VMM and its one
//! lease, no journal row is left open, and a bystander VM that ran all along was never
//! stopped or restarted. (The other steps are covered on the simulated runtime:
//! controller/src/tests/faults.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::time::Duration;

use banger_controller::store::Database;
use banger_tests::{wait_for, Daemon, Kit, NetNs};

const READY_TIMEOUT: &str = "180s";

fn image_yaml(kit: &Kit) -> String {
    format!(
        "apiVersion: banger.dev/v1alpha1\nkind: Image\nmetadata:\n  name: kit\nspec:\n  kernel: {}\n  initrd: {}\n  rootfs: {}\n",
        kit.kernel.display(),
        kit.initrd.display(),
        kit.rootfs.display()
    )
}

fn vm_yaml(name: &str, memory: &str, state: &str) -> String {
    format!(
        "apiVersion: banger.dev/v1alpha1\nkind: VM\nmetadata:\n  name: {name}\nspec:\n  image: kit\n  memory: {memory}\n  disk: 256MiB\n  state: {state}\n  hypervisor: qemu\n"
    )
}

/// What VM `a` should be after a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Running(&'static str),
    Stopped,
    Gone,
}

struct World<'a> {
    ns: &'a NetNs,
    kit: &'a Kit,
    dir: &'a Path,
    keep_pid: i64,
}

impl World<'_> {
    fn apply_a(&self, d: &Daemon, spec: Option<&str>) {
        let file = self.dir.join("a.yaml");
        match spec {
            Some(spec) => {
                fs::write(&file, spec).unwrap();
                d.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
            }
            None => {
                d.cli_ok(&["delete", "vm", "a"]);
            }
        }
    }

    /// Restarts the daemon armed with `crash_at`, runs the action, waits for the crash,
    /// starts an unarmed daemon and checks everything.
    fn phase(&self, d: Daemon, crash_at: &str, spec: Option<&str>, want: Want) -> Daemon {
        let mut d = d;
        assert!(
            d.terminate(),
            "clean stop before arming; log:\n{}",
            d.log_tail(40)
        );
        let base = d.extra_args.clone();
        d.extra_args
            .extend(["--test-crash-at".to_string(), crash_at.to_string()]);
        let mut d = d.spawn(self.ns);
        self.apply_a(&d, spec);
        let mut child = d.child.take().unwrap();
        let died = wait_for(Duration::from_secs(180), Duration::from_millis(200), || {
            child.try_wait().ok().flatten()
        });
        assert!(
            died.is_some(),
            "{crash_at}: the daemon never reached its crash point; log:\n{}",
            d.log_tail(60)
        );
        d.extra_args = base;
        let d = d.spawn(self.ns);
        self.check(&d, crash_at, want);
        d
    }

    fn check(&self, d: &Daemon, what: &str, want: Want) {
        match want {
            Want::Running(memory) => {
                d.cli_ok(&[
                    "wait",
                    "vm/a",
                    "--for=condition=Ready",
                    "--timeout",
                    READY_TIMEOUT,
                ]);
                let a = d.get_json("vm", "a").unwrap();
                assert_eq!(a["status"]["phase"], "Running", "{what}: {a:#}");
                assert_eq!(a["spec"]["memory"], memory_bytes(memory), "{what}");
            }
            Want::Stopped => {
                let stopped =
                    wait_for(Duration::from_secs(120), Duration::from_millis(500), || {
                        let a = d.get_json("vm", "a")?;
                        (a["status"]["phase"] == "Stopped").then_some(())
                    });
                assert!(
                    stopped.is_some(),
                    "{what}: a never Stopped; log:\n{}",
                    d.log_tail(40)
                );
            }
            Want::Gone => {
                let gone = wait_for(Duration::from_secs(120), Duration::from_millis(500), || {
                    (!d.cli(&["get", "vm", "a"]).status.success()).then_some(())
                });
                assert!(
                    gone.is_some(),
                    "{what}: a never went; log:\n{}",
                    d.log_tail(40)
                );
            }
        }
        // The bystander ran all along, on the same VMM.
        let keep = d.get_json("vm", "keep").unwrap();
        assert_eq!(
            keep["status"]["pid"].as_i64(),
            Some(self.keep_pid),
            "{what}: keep restarted"
        );

        // Nothing on the host that the store does not account for.
        let gc: serde_json::Value =
            serde_json::from_str(&d.cli_ok(&["gc", "--dry-run", "-o", "json"])).unwrap();
        assert_eq!(
            gc["items"],
            serde_json::json!([]),
            "{what}: garbage: {gc:#}"
        );

        // One VMM per running VM, one lease per VM, no open journal row.
        let db = Database::open(&d.state_dir.join("banger.db")).unwrap();
        let vms = db.list_objects(Some(banger_specs::Kind::Vm)).unwrap();
        for vm in &vms {
            let running = vm.resource.name() == "keep" || matches!(want, Want::Running(_));
            let vmms = vmm_pids(&d.state_dir, &vm.uid);
            assert_eq!(
                vmms.len(),
                usize::from(running),
                "{what}: VMMs of {}: {vmms:?}",
                vm.resource.name()
            );
        }
        assert_eq!(
            db.lease_count().unwrap(),
            i64::try_from(vms.len()).unwrap(),
            "{what}"
        );
        assert_eq!(db.leased_uids().unwrap().len(), vms.len(), "{what}");
        assert!(db.journal_unfinished().unwrap().is_empty(), "{what}");
        let _ = self.kit;
    }
}

fn memory_bytes(memory: &str) -> u64 {
    let mib: u64 = memory.trim_end_matches("MiB").parse().unwrap();
    mib * 1024 * 1024
}

/// Live processes with the argument `banger-<uid>` and an argument naming `state_dir`.
fn vmm_pids(state_dir: &Path, uid: &str) -> Vec<i32> {
    let marker = OsString::from(format!("banger-{uid}"));
    let state = state_dir.to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<OsString> = cmdline
            .split(|b| *b == 0)
            .map(|a| OsString::from(String::from_utf8_lossy(a).into_owned()))
            .collect();
        let zombie = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if !zombie
            && args.contains(&marker)
            && args.iter().any(|a| a.to_string_lossy().contains(&state))
        {
            pids.push(pid);
        }
    }
    pids
}

#[test]
#[ignore = "needs root (network namespaces, taps, nftables), QEMU and the guest kit"]
fn every_hypervisor_step_survives_a_daemon_kill_on_either_side() {
    let kit = Kit::require();
    let ns = NetNs::new("faults");
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(&ns, tmp.path(), &["--resync", "5s", "--stop-grace", "3s"]);
    let specs = tmp.path().join("apply");
    fs::create_dir_all(&specs).unwrap();
    fs::write(specs.join("image.yaml"), image_yaml(&kit)).unwrap();
    fs::write(
        specs.join("keep.yaml"),
        vm_yaml("keep", "128MiB", "Running"),
    )
    .unwrap();
    d.cli_ok(&["apply", "-f", specs.join("image.yaml").to_str().unwrap()]);
    d.cli_ok(&["apply", "-f", specs.join("keep.yaml").to_str().unwrap()]);
    d.cli_ok(&[
        "wait",
        "vm/keep",
        "--for=condition=Ready",
        "--timeout",
        READY_TIMEOUT,
    ]);
    let keep_pid = d.get_json("vm", "keep").unwrap()["status"]["pid"]
        .as_i64()
        .unwrap();
    let w = World {
        ns: &ns,
        kit: &kit,
        dir: &specs,
        keep_pid,
    };

    let running = vm_yaml("a", "128MiB", "Running");
    let stopped = vm_yaml("a", "128MiB", "Stopped");
    let bigger = vm_yaml("a", "192MiB", "Running");
    let mut d = d;
    for side in ["before", "after"] {
        // create: ensure-vm-dir, ensure-tap, ensure-nat, prepare-disk, launch (5th).
        d = w.phase(
            d,
            &format!("{side}:5"),
            Some(&running),
            Want::Running("128MiB"),
        );
        // stop: shutdown.
        d = w.phase(d, &format!("{side}:1"), Some(&stopped), Want::Stopped);
        // start: launch.
        d = w.phase(
            d,
            &format!("{side}:1"),
            Some(&running),
            Want::Running("128MiB"),
        );
        // restart-class change: shutdown (1st), then launch (2nd).
        d = w.phase(
            d,
            &format!("{side}:1"),
            Some(&bigger),
            Want::Running("192MiB"),
        );
        d = w.phase(
            d,
            &format!("{side}:2"),
            Some(&running),
            Want::Running("128MiB"),
        );
        // delete: shutdown first.
        d = w.phase(d, &format!("{side}:1"), None, Want::Gone);
    }
    d.cli_ok(&["delete", "vm", "keep", "--wait", "--timeout", "120s"]);
}

/// Faults from outside on a real guest: its tap deleted behind banger's back (the VMM's
/// network is gone: it is restarted on a new tap), its disk file removed while it runs
/// (nothing is rebuilt under the running guest: `Ready=False, reason: DiskMissing`,
/// until the user stops it; the next start rebuilds the disk).
#[test]
#[ignore = "needs root (network namespaces, taps, nftables), QEMU and the guest kit"]
fn a_deleted_tap_and_a_removed_disk_are_noticed_and_handled() {
    let kit = Kit::require();
    let ns = NetNs::new("outside");
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(&ns, tmp.path(), &["--resync", "2s", "--stop-grace", "3s"]);
    let specs = tmp.path().join("apply");
    fs::create_dir_all(&specs).unwrap();
    let file = specs.join("t.yaml");
    let write = |state: &str| {
        fs::write(
            &file,
            format!("{}---\n{}", image_yaml(&kit), vm_yaml("t", "128MiB", state)),
        )
        .unwrap();
        d.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    };
    write("Running");
    d.cli_ok(&[
        "wait",
        "vm/t",
        "--for=condition=Ready",
        "--timeout",
        READY_TIMEOUT,
    ]);
    let t = d.get_json("vm", "t").unwrap();
    let pid = t["status"]["pid"].as_i64().unwrap();
    let tap = t["status"]["handles"]["tap"].as_str().unwrap().to_string();

    // The tap goes: restarted on a new one, Ready again.
    let out = ns
        .command("ip")
        .args(["link", "del", &tap])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let restarted = wait_for(Duration::from_secs(180), Duration::from_millis(500), || {
        let t = d.get_json("vm", "t")?;
        let new = t["status"]["pid"].as_i64()?;
        let ready = banger_tests::condition(&t, "Ready")?["status"] == "True";
        (new != pid && ready).then_some(new)
    });
    let pid2 =
        restarted.unwrap_or_else(|| panic!("not restarted on a new tap; log:\n{}", d.log_tail(60)));
    let events = d.cli_ok(&["events", "vm/t"]);
    assert!(events.contains("tap device deleted"), "{events}");
    let links = String::from_utf8_lossy(
        &ns.command("ip")
            .args(["-o", "link"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(links.contains(&tap), "the tap is back: {links}");

    // The disk file goes: reported, nothing rebuilt under the running guest.
    let vm_dir = t["status"]["handles"]["vmDir"]
        .as_str()
        .unwrap()
        .to_string();
    fs::remove_file(Path::new(&vm_dir).join("rootfs.ext4")).unwrap();
    let reported = wait_for(Duration::from_secs(60), Duration::from_millis(500), || {
        let t = d.get_json("vm", "t")?;
        let ready = banger_tests::condition(&t, "Ready")?.clone();
        (ready["reason"] == "DiskMissing").then_some(ready)
    });
    let ready =
        reported.unwrap_or_else(|| panic!("DiskMissing never reported; log:\n{}", d.log_tail(60)));
    assert!(
        ready["message"].as_str().unwrap().contains("/proc/"),
        "{ready}"
    );
    assert_eq!(
        d.get_json("vm", "t").unwrap()["status"]["pid"].as_i64(),
        Some(pid2),
        "still the same VMM"
    );
    assert!(
        !Path::new(&vm_dir).join("rootfs.ext4").exists(),
        "nothing rebuilt under it"
    );

    // The user stops it; the next start rebuilds the disk and boots.
    write("Stopped");
    let stopped = wait_for(Duration::from_secs(120), Duration::from_millis(500), || {
        (d.get_json("vm", "t")?["status"]["phase"] == "Stopped").then_some(())
    });
    assert!(stopped.is_some(), "not stopped; log:\n{}", d.log_tail(60));
    write("Running");
    d.cli_ok(&[
        "wait",
        "vm/t",
        "--for=condition=Ready",
        "--timeout",
        READY_TIMEOUT,
    ]);
    assert!(Path::new(&vm_dir).join("rootfs.ext4").exists());
    d.cli_ok(&["delete", "vm", "t", "--wait", "--timeout", "120s"]);
}

/// A guest printing far more than the cap on its serial console: the log is rotated and
/// stays within about twice `CONSOLE_CAP` (2 MiB), and the guest stays ready.
#[test]
#[ignore = "needs root (network namespaces, taps, nftables), QEMU and the guest kit"]
fn a_chatty_guest_cannot_fill_the_state_filesystem() {
    let kit = Kit::require();
    let ns = NetNs::new("chatty");
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(&ns, tmp.path(), &["--resync", "5s"]);
    let specs = tmp.path().join("apply");
    fs::create_dir_all(&specs).unwrap();
    let file = specs.join("c.yaml");
    fs::write(
        &file,
        format!(
            "{}---\n{}",
            image_yaml(&kit),
            vm_yaml("c", "128MiB", "Running")
        ),
    )
    .unwrap();
    d.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    d.cli_ok(&[
        "wait",
        "vm/c",
        "--for=condition=Ready",
        "--timeout",
        READY_TIMEOUT,
    ]);
    let c = d.get_json("vm", "c").unwrap();
    let log = Path::new(c["status"]["handles"]["consoleLog"].as_str().unwrap()).to_path_buf();
    let rotated = log.with_file_name("console.log.1");

    // 8 MiB on the serial console, from inside the guest.
    let started = std::time::Instant::now();
    d.cli_ok(&[
        "exec",
        "c",
        "--",
        "sh",
        "-c",
        "dd if=/dev/zero bs=1024 count=8192 2>/dev/null | tr '\\000' x > /dev/ttyS0",
    ]);
    println!("8 MiB printed on the console in {:?}", started.elapsed());
    let cap = banger_controller::host::console::CONSOLE_CAP;
    let settled = wait_for(Duration::from_secs(30), Duration::from_millis(500), || {
        let live = fs::metadata(&log).ok()?.len();
        (live <= cap).then_some(live)
    });
    assert!(
        settled.is_some(),
        "console.log never came back under the cap"
    );
    let kept = fs::metadata(&log).unwrap().len() + fs::metadata(&rotated).map_or(0, |m| m.len());
    println!("kept {kept} bytes of console (cap {cap})");
    assert!(rotated.exists(), "the log was rotated");
    assert!(kept <= 3 * cap, "{kept} bytes kept");
    d.cli_ok(&["wait", "vm/c", "--for=condition=Ready", "--timeout", "30s"]);
    d.cli_ok(&["delete", "vm", "c", "--wait", "--timeout", "120s"]);
}
