//! Concurrent writers in separate processes: 50 `curl` processes apply and delete the
//! same VM at once through the daemon's socket. Never two VMMs for one VM, never two
//! reconciles of it at once, and the end state is the last accepted write (the sources
//! serialise writes; their events are recorded in that order).

use std::process::Stdio;

use serde_json::json;

use super::api::{call, until_socket_accepts};
use super::*;
use axum::http::Method;

/// A `curl` process posting `body` to `path` on the daemon's socket; its exit status
/// and the HTTP code it printed.
fn curl(socket: &Path, path: &str, body: &serde_json::Value) -> tokio::process::Child {
    tokio::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "60",
        ])
        .arg("--unix-socket")
        .arg(socket)
        .args(["-H", "content-type: application/json", "--data-binary"])
        .arg(body.to_string())
        .arg(format!("http://banger{path}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("curl (Debian package curl)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_applies_and_deletes_from_separate_processes() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let socket = config.socket.clone();
    let sim = SimulatedRuntime::new();
    // Steps take a while, so that a deleted object's events (removed with it) are read
    // by the follower below before they go.
    sim.set_latency(Duration::from_millis(20));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(crate::daemon::run(config, sim.clone(), async move {
        let _ = stop_rx.await;
    }));
    until_socket_accepts(&socket).await;
    let file =
        |content: String| json!({ "path": "/s/a.yaml", "baseDir": "/s", "content": content });
    let image = json!({ "files": [file(IMAGE.to_string())] });
    let mut first = curl(&socket, "/v1/apply", &image);
    assert!(first.wait().await.unwrap().success());

    // Follow a's events as `banger events --follow` does (long polls): the accepted
    // writes, in the order the sources took them.
    let stop_following = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let follower = {
        let socket = socket.clone();
        let stop = stop_following.clone();
        tokio::spawn(async move {
            let mut seen: Vec<(i64, String)> = Vec::new();
            loop {
                let after = seen.last().map_or(0, |e| e.0);
                let uri = format!("/v1/events?kind=vms&name=a&after={after}&waitSeconds=1");
                let (_, body, _) = call(&socket, Method::GET, &uri, None).await;
                let events = body.as_array().cloned().unwrap_or_default();
                if events.is_empty() && stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return seen;
                }
                for e in events {
                    let reason = e["reason"].as_str().unwrap_or_default().to_string();
                    seen.push((e["id"].as_i64().unwrap_or(0), reason));
                }
            }
        })
    };

    // 50 writers at once: 40 applies, each with its own memory size, and 10 deletes.
    let mut writers = Vec::new();
    for i in 0..50u32 {
        let child = if i % 5 == 4 {
            let body = json!({ "objects": [{ "kind": "VM", "name": "a" }] });
            curl(&socket, "/v1/delete", &body)
        } else {
            let memory = format!("{}Mi", 256 + 8 * i);
            let body = json!({ "files": [file(vm_yaml("a", "base", &memory, ""))] });
            curl(&socket, "/v1/apply", &body)
        };
        writers.push(child);
    }
    let mut codes = Vec::new();
    for w in writers {
        let out = bounded("curl", w.wait_with_output()).await.unwrap();
        codes.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    // Accepted (200), or refused because a delete was under way (409); nothing else.
    assert!(codes.iter().all(|c| c == "200" || c == "409"), "{codes:?}");
    assert!(codes.iter().any(|c| c == "200"));

    let db = crate::store::Database::open(&dir.path().join("state/banger.db")).unwrap();
    let settled = |db: &crate::store::Database| match db.get_object(Kind::Vm, "a").unwrap() {
        None => true,
        Some(o) => {
            let want = match &o.resource {
                banger_specs::Resource::Vm(v) => v.spec.memory.0 / (1024 * 1024),
                _ => 0,
            };
            let (status, _) = db.get_status(Kind::Vm, "a").unwrap();
            let launched = db
                .get_handles(&o.uid)
                .unwrap()
                .and_then(|h| h.launched)
                .map(|l| l.memory_mib);
            o.deleting.is_none()
                && status.observed_generation == o.generation
                && status.is_true(READY)
                && launched == Some(want)
        }
    };
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !settled(&db) {
        assert!(tokio::time::Instant::now() < deadline, "never settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The last accepted write, in the order the sources took them.
    stop_following.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = bounded("event follower", follower).await.unwrap();
    let last_write = seen
        .iter()
        .rev()
        .map(|(_, r)| r.as_str())
        .find(|r| matches!(*r, "Created" | "SpecChanged" | "Deleting"));
    let exists = db.get_object(Kind::Vm, "a").unwrap().is_some();
    match last_write {
        Some("Deleting") => assert!(!exists, "deleted last, yet it exists: {seen:?}"),
        Some(_) => assert!(exists, "applied last, yet it is gone: {seen:?}"),
        None => panic!("no accepted write seen: {seen:?}"),
    }
    assert_eq!(sim.duplicate_launches(), 0, "two VMMs for one VM");
    assert_eq!(
        sim.max_concurrency_for("a"),
        1,
        "two reconciles of a at once"
    );
    assert!(sim.running_count() <= 1);

    stop_tx.send(()).unwrap();
    bounded("daemon exit", daemon).await.unwrap().unwrap();
}
