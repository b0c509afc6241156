//! Durability: the daemon killed with SIGKILL in the middle of a burst of writes (100
//! concurrent `banger apply` processes) leaves a consistent store, starts again cleanly,
//! and keeps every write it had accepted (each apply that exited 0). What the store's
//! settings promise on a power cut is documented in docs/engine.md ("Durability").

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use banger_controller::store::Database;
use support::{Daemon, BANGER};

fn vm(name: &str) -> String {
    format!(
        "apiVersion: banger.dev/v1alpha1\nkind: VM\nmetadata:\n  name: {name}\nspec:\n  image: base\n  memory: 256Mi\n"
    )
}

const IMAGE: &str = "apiVersion: banger.dev/v1alpha1\nkind: Image\nmetadata:\n  name: base\nspec:\n  kernel: vmlinux\n  rootfs: rootfs.ext4\n";

#[test]
fn a_kill_during_a_burst_of_writes_keeps_the_store_consistent() {
    let mut d = Daemon::start();
    let image = d.write_work("image.yaml", IMAGE);
    d.banger(&["apply", "-f", image.to_str().unwrap()])
        .expect_code(0);

    let writers: Vec<(String, Child)> = (0..100)
        .map(|i| {
            let name = format!("vm-{i:03}");
            let file = d.write_work(&format!("{name}.yaml"), &vm(&name));
            let child = std::process::Command::new(BANGER)
                .args(["apply", "-f"])
                .arg(file)
                .env("BANGER_SOCKET", &d.socket)
                .current_dir(&d.work_dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            (name, child)
        })
        .collect();
    // Kill the daemon once some writes were accepted and others are still coming.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut done: Vec<(String, bool)> = Vec::new();
    let mut pending = writers;
    while done.len() < 20 && Instant::now() < deadline {
        let mut still = Vec::new();
        for (name, mut child) in pending {
            match child.try_wait().unwrap() {
                Some(status) => done.push((name, status.success())),
                None => still.push((name, child)),
            }
        }
        pending = still;
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!pending.is_empty(), "the burst ended before the kill");
    d.kill9();
    for (name, mut child) in pending {
        let status = child.wait().unwrap();
        done.push((name, status.success()));
    }
    let accepted: Vec<&String> = done.iter().filter(|(_, ok)| *ok).map(|(n, _)| n).collect();
    assert!(accepted.len() >= 20, "{done:?}");

    // The store is consistent, the daemon starts cleanly, no accepted write is lost.
    {
        let db = Database::open(&d.db_path()).unwrap();
        assert_eq!(db.integrity_check().unwrap(), "ok");
    }
    d.respawn();
    let listed = d
        .banger(&["get", "vms", "-o", "json"])
        .expect_code(0)
        .stdout;
    let list: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    for name in &accepted {
        assert!(
            names.contains(&name.as_str()),
            "accepted {name} was lost: {names:?}"
        );
    }
    // And everything it knows converges.
    let mut wait = vec!["wait", "vm"];
    wait.extend(names.iter().copied());
    wait.extend(["--for=condition=Ready", "--timeout", "120s"]);
    d.banger(&wait).expect_code(0);
}
