//! Faults from outside the daemon: its database locked by another process, its state
//! directory's filesystem full. Each is noticed (a clear one-line error, a condition),
//! nothing panics, the daemon keeps serving, and it heals once the fault is gone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{image_and_vm, vm_only, Daemon};

/// Waits (bounded) until `vm` is Ready according to `banger wait`.
fn ready(d: &Daemon, vm: &str) {
    d.banger(&[
        "wait",
        &format!("vm/{vm}"),
        "--for=condition=Ready",
        "--timeout",
        "60s",
    ])
    .expect_code(0);
}

fn pid(d: &Daemon, vm: &str) -> i64 {
    let out = d
        .banger(&["get", "vm", vm, "-o", "json"])
        .expect_code(0)
        .stdout;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["status"]["pid"].as_i64().unwrap()
}

#[test]
fn a_database_locked_by_another_process_stalls_writes_then_heals() {
    let d = Daemon::start();
    let a = d.write_work("a.yaml", &image_and_vm("a", "256Mi"));
    d.banger(&["apply", "-f", a.to_str().unwrap()])
        .expect_code(0);
    ready(&d, "a");
    let pid_a = pid(&d, "a");

    // Another process holds an exclusive transaction for a while.
    let db = d.db_path();
    let mut holder = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('BEGIN EXCLUSIVE')\n\
             print('locked', flush=True)\n\
             time.sleep(12)\n\
             c.execute('ROLLBACK')",
        ])
        .arg(&db)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");

    // A write waits its busy timeout, then fails with one clear line.
    let b = d.write_work("b.yaml", &vm_only("b", "256Mi"));
    let started = Instant::now();
    let refused = d.banger(&["apply", "-f", b.to_str().unwrap()]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("locked"), "{}", refused.stderr);
    assert_eq!(
        refused.stderr.trim().lines().count(),
        1,
        "{}",
        refused.stderr
    );
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "it waited for the lock"
    );
    // Reads are served meanwhile (WAL readers are not blocked).
    d.banger(&["get", "vms"]).expect_code(0);

    holder.wait().unwrap();
    // Healed: the write goes through, the first VM was never disturbed.
    d.banger(&["apply", "-f", b.to_str().unwrap()])
        .expect_code(0);
    ready(&d, "b");
    assert_eq!(pid(&d, "a"), pid_a);
    assert!(!d.log().contains("panicked"), "{}", d.log());
}

#[test]
#[ignore = "needs root (mounts a tmpfs)"]
fn a_full_state_filesystem_is_reported_and_heals() {
    let d = Daemon::start_prepared(&[], |state| {
        std::fs::create_dir_all(state).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m,mode=0700", "banger-test-full"])
            .arg(state)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount a tmpfs on {}", state.display());
    });
    let state = d.dir.path().join("state");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(state.clone());
    let a = d.write_work("a.yaml", &image_and_vm("a", "256Mi"));
    d.banger(&["apply", "-f", a.to_str().unwrap()])
        .expect_code(0);
    ready(&d, "a");

    // Fill the filesystem.
    let filler = state.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let mut refused = None;
    for i in 0..20 {
        let name = format!("full-{i}");
        let f = d.write_work(&format!("{name}.yaml"), &vm_only(&name, "256Mi"));
        let run = d.banger(&["apply", "-f", f.to_str().unwrap()]);
        if run.code != 0 {
            refused = Some(run);
            break;
        }
    }
    let refused = refused.expect("a write failed on the full filesystem");
    assert!(
        refused.stderr.contains("full") || refused.stderr.contains("space"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        refused.stderr.trim().lines().count(),
        1,
        "{}",
        refused.stderr
    );
    // The daemon still serves.
    d.banger(&["get", "vms"]).expect_code(0);

    // Space again: writes work and everything converges.
    std::fs::remove_file(&filler).unwrap();
    let c = d.write_work("c.yaml", &vm_only("c", "256Mi"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if d.banger(&["apply", "-f", c.to_str().unwrap()]).code == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "never healed:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    ready(&d, "c");
    ready(&d, "a");
    assert!(!d.log().contains("panicked"), "{}", d.log());
}
