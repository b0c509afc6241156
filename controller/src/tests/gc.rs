//! Garbage collection on the simulated runtime: planted host objects of unknown uids
//! are removed at daemon start and through `POST /v1/gc`; known VMs' objects (also of
//! a VM being deleted) are never touched.

use std::path::{Path, PathBuf};

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use super::api::call;
use super::*;
use crate::runtime::VmStep;

const PLANTED_AT_START: &str = "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a";
const PLANTED_LATER: &str = "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b";

struct Daemon {
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<Result<(), crate::daemon::DaemonError>>,
}

async fn start_daemon(config: crate::config::DaemonConfig, sim: SimulatedRuntime) -> Daemon {
    let socket = config.socket.clone();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(crate::daemon::run(config, sim, async move {
        let _ = stop_rx.await;
    }));
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while tokio::net::UnixStream::connect(&socket).await.is_err() {
        assert!(!task.is_finished(), "daemon exited before serving");
        assert!(
            tokio::time::Instant::now() < deadline,
            "socket never came up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Daemon { stop, task }
}

impl Daemon {
    async fn stop(self) {
        let _ = self.stop.send(());
        bounded("daemon stop", self.task).await.unwrap().unwrap();
    }
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn vm_uid(socket: &Path, name: &str) -> String {
    let (st, v, _) = call(
        socket,
        Method::GET,
        &format!("/v1/objects/vms/{name}"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["metadata"]["uid"].as_str().unwrap().to_string()
}

fn kinds_of(report: &Value, uid: &str) -> Vec<String> {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["uid"] == uid)
        .map(|i| i["kind"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_garbage_is_collected_at_start_and_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    let specs_dir = dir.path().join("specs");
    std::fs::create_dir_all(&specs_dir).unwrap();
    config.specs_dir = Some(specs_dir.clone());
    let socket: PathBuf = config.socket.clone();
    let state_dir = config.state_dir.clone();
    let sim = SimulatedRuntime::new();

    // Two known VMs, running.
    let daemon = start_daemon(config.clone(), sim.clone()).await;
    let specs = format!(
        "{IMAGE}---\n{}---\n{}",
        vm_yaml("keep", "base", "256Mi", ""),
        vm_yaml("going", "base", "256Mi", "")
    );
    let (st, v, _) = call(
        &socket,
        Method::POST,
        "/v1/apply",
        Some(json!({ "files": [{ "path": "/specs/a.yaml", "baseDir": "/specs", "content": specs }] })),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let keep = vm_uid(&socket, "keep").await;
    let going = vm_uid(&socket, "going").await;
    until("both VMs running", || {
        sim.pid_of(&keep).is_some() && sim.pid_of(&going).is_some()
    })
    .await;
    let keep_pid = sim.pid_of(&keep);

    // An orphaned VM: declared in the specs directory, then forgotten with its host
    // objects left running (`banger.dev/on-remove: Orphan`).
    let orphan_file = specs_dir.join("orph.yaml");
    std::fs::write(
        &orphan_file,
        vm_yaml("orph", "base", "256Mi", "").replace(
            "metadata:\n  name: orph\n",
            "metadata:\n  name: orph\n  annotations:\n    banger.dev/on-remove: Orphan\n",
        ),
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let orphan = loop {
        let (st, v, _) = call(&socket, Method::GET, "/v1/objects/vms/orph", None).await;
        if st == StatusCode::OK {
            break v["metadata"]["uid"].as_str().unwrap().to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "vm/orph never appeared"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    until("orphan-to-be running", || sim.pid_of(&orphan).is_some()).await;
    std::fs::remove_file(&orphan_file).unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (st, _, _) = call(&socket, Method::GET, "/v1/objects/vms/orph", None).await;
        if st == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "vm/orph never forgotten"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let orphan_pid = sim.pid_of(&orphan);
    assert!(orphan_pid.is_some(), "orphaning stopped the VM");
    daemon.stop().await;

    // Garbage appears while no daemon runs; the next daemon removes it before work.
    let planted_dir = state_dir.join("vms").join(PLANTED_AT_START);
    sim.plant_garbage(PLANTED_AT_START, Some(planted_dir.clone()));
    assert!(sim.has_anything(PLANTED_AT_START) && planted_dir.is_dir());
    let daemon = start_daemon(config.clone(), sim.clone()).await;
    // The socket is bound before the start-up collection runs: a connect that
    // succeeds does not mean the collection is over.
    until("garbage collected at start", || {
        !sim.has_anything(PLANTED_AT_START) && !planted_dir.exists()
    })
    .await;
    assert_eq!(sim.pid_of(&keep), keep_pid, "known VM's VMM touched");
    assert!(state_dir.join("vms").join(&keep).is_dir());
    assert_eq!(
        sim.pid_of(&orphan),
        orphan_pid,
        "an orphaned VM was collected at start"
    );

    // A VM being deleted is still known: its cleanup is stuck, gc leaves it alone.
    sim.fail_step("going", VmStep::RemoveNat, 1000);
    let (st, v, _) = call(
        &socket,
        Method::POST,
        "/v1/delete",
        Some(json!({ "objects": [{ "kind": "VM", "name": "going" }] })),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    until("going's VMM stopped by its deletion", || {
        sim.pid_of(&going).is_none()
    })
    .await;
    assert!(
        sim.has_anything(&going),
        "deletion is stuck before RemoveNat"
    );

    // Dry run lists, changes nothing.
    let planted_dir = state_dir.join("vms").join(PLANTED_LATER);
    sim.plant_garbage(PLANTED_LATER, Some(planted_dir.clone()));
    let (st, report, _) = call(&socket, Method::POST, "/v1/gc?dryRun=true", None).await;
    assert_eq!(st, StatusCode::OK, "{report}");
    assert_eq!(report["removed"], false);
    assert_eq!(
        kinds_of(&report, PLANTED_LATER),
        ["process", "nat-rule", "tap", "vm-dir"]
    );
    assert_eq!(report["items"].as_array().unwrap().len(), 4, "{report}");
    assert!(kinds_of(&report, &keep).is_empty() && kinds_of(&report, &going).is_empty());
    assert!(kinds_of(&report, &orphan).is_empty(), "{report}");
    assert!(report.get("releasedLeases").is_none(), "{report}");
    assert!(sim.has_anything(PLANTED_LATER) && planted_dir.is_dir());

    // The real run removes exactly those.
    let (st, report, _) = call(&socket, Method::POST, "/v1/gc?dryRun=false", None).await;
    assert_eq!(st, StatusCode::OK, "{report}");
    assert_eq!(report["removed"], true);
    assert_eq!(report["items"].as_array().unwrap().len(), 4, "{report}");
    assert!(report.get("failed").is_none(), "{report}");
    assert!(!sim.has_anything(PLANTED_LATER));
    assert!(!planted_dir.exists());
    assert_eq!(sim.pid_of(&keep), keep_pid, "known VM's VMM touched");
    assert!(sim.has_anything(&going), "a VM being deleted was collected");
    assert_eq!(
        sim.pid_of(&orphan),
        orphan_pid,
        "an orphaned VM was collected"
    );

    // Nothing left by default: an empty report.
    let (st, report, _) = call(&socket, Method::POST, "/v1/gc", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(report["items"], json!([]));

    // Orphans only on request: their host objects, then their lease.
    let (st, report, _) = call(
        &socket,
        Method::POST,
        "/v1/gc?dryRun=true&includeOrphans=true",
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{report}");
    assert_eq!(
        kinds_of(&report, &orphan),
        ["process", "nat-rule", "tap", "vm-dir"],
        "{report}"
    );
    assert_eq!(report["releasedLeases"], json!([orphan.clone()]));
    assert!(sim.pid_of(&orphan).is_some());
    let (st, report, _) = call(&socket, Method::POST, "/v1/gc?includeOrphans=true", None).await;
    assert_eq!(st, StatusCode::OK, "{report}");
    assert_eq!(report["removed"], true);
    assert_eq!(report["releasedLeases"], json!([orphan.clone()]));
    assert!(!sim.has_anything(&orphan));
    assert!(!state_dir.join("vms").join(&orphan).exists());
    assert_eq!(sim.pid_of(&keep), keep_pid, "known VM's VMM touched");
    let (_, report, _) = call(&socket, Method::POST, "/v1/gc?includeOrphans=true", None).await;
    assert_eq!(report["items"], json!([]), "{report}");
    assert!(
        report.get("releasedLeases").is_none(),
        "lease not released: {report}"
    );
    daemon.stop().await;
}
