//! The daemon end to end on the simulated runtime: `daemon::run`, the Unix socket, the
//! HTTP API as the CLI and curl use it.

use std::path::{Path, PathBuf};

use axum::body::Bytes;
use axum::http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use super::*;

pub(super) async fn call(
    socket: &Path,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value, Option<String>) {
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let bytes = body
        .map(|b| serde_json::to_vec(&b).unwrap())
        .unwrap_or_default();
    let req = Request::builder()
        .method(method)
        .uri(format!("http://banger{uri}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .unwrap();
    let resp = bounded(uri, sender.send_request(req)).await.unwrap();
    let status = resp.status();
    let offset = resp
        .headers()
        .get("x-banger-offset")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    (status, value, offset)
}

/// Waits (bounded by [`DEADLINE`]) until the daemon accepts connections on `socket`.
pub(super) async fn until_socket_accepts(socket: &Path) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while tokio::net::UnixStream::connect(socket).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "socket never came up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn file(path: &str, content: &str) -> Value {
    json!({ "path": path, "baseDir": "/specs", "content": content })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_serves_the_documented_api() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.specs_dir = Some(dir.path().join("specs"));
    let socket: PathBuf = config.socket.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(crate::daemon::run(
        config,
        SimulatedRuntime::new(),
        async move {
            let _ = stop_rx.await;
        },
    ));
    until_socket_accepts(&socket).await;
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600,
        "no socket group: the daemon's user only"
    );

    let (st, v, _) = call(&socket, Method::GET, "/v1/healthz", None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(v["version"].is_string());
    assert!(v["resyncs"]["started"].is_u64() && v["resyncs"]["completed"].is_u64());
    assert!(v["reconciles"].is_u64());
    assert!(v["storeTrips"].as_u64().is_some_and(|n| n > 0), "{v}");

    // Invalid: 422 with problems naming file and line; nothing created.
    let bad = vm_yaml("a", "base", "lots", "");
    let (st, v, _) = call(
        &socket,
        Method::POST,
        "/v1/apply",
        Some(json!({ "files": [file("/specs/bad.yaml", &bad)] })),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["code"], "invalid");
    assert_eq!(v["problems"][0]["file"], "/specs/bad.yaml");
    assert!(v["problems"][0]["line"].as_u64().unwrap() > 0);
    let (_, v, _) = call(&socket, Method::GET, "/v1/objects", None).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 0);

    let good = format!("{IMAGE}---\n{}", vm_yaml("a", "base", "512Mi", ""));
    let (st, v, _) = call(
        &socket,
        Method::POST,
        "/v1/apply",
        Some(json!({ "files": [file("/specs/a.yaml", &good)], "pathSet": ["/specs/a.yaml"] })),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["items"][1]["action"], "created");
    assert_eq!(v["items"][1]["plan"][0]["changeClass"], "create");

    // Wait for Ready through the API.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (st, v, _) = call(&socket, Method::GET, "/v1/objects/vms/a", None).await;
        assert_eq!(st, StatusCode::OK);
        let ready = v["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        if ready {
            assert_eq!(v["status"]["phase"], "Running");
            assert_eq!(v["apiVersion"], "banger.dev/v1alpha1");
            assert_eq!(v["kind"], "VM");
            assert_eq!(v["metadata"]["annotations"]["banger.dev/owner"], "cli");
            assert_eq!(v["spec"]["memory"], 512 * 1024 * 1024);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "vm/a never Ready: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (st, v, _) = call(&socket, Method::GET, "/v1/objects?kind=vms", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    let (st, v, _) = call(&socket, Method::GET, "/v1/objects/vms/a/describe", None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["step"] == "launch" && s["outcome"] == "done"),
        "{v}"
    );
    assert!(
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "Launched"),
        "{v}"
    );
    assert_eq!(v["plan"].as_array().unwrap().len(), 0);
    assert!(
        v["object"]["status"]["handles"]["lease"]["ip"].is_string(),
        "{v}"
    );

    // Logs from an offset, with the next offset in a header.
    let (st, v, off) = call(&socket, Method::GET, "/v1/vms/a/logs?offset=0", None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(v.as_str().unwrap().contains("booted"), "{v}");
    let off: u64 = off.unwrap().parse().unwrap();
    assert!(off > 0);
    let (_, v, off2) = call(
        &socket,
        Method::GET,
        &format!("/v1/vms/a/logs?offset={off}&waitSeconds=0"),
        None,
    )
    .await;
    assert_eq!(v, Value::String(String::new()));
    assert_eq!(off2.unwrap().parse::<u64>().unwrap(), off);

    // Events, with `after` for following.
    let (_, v, _) = call(&socket, Method::GET, "/v1/events?kind=vms&name=a", None).await;
    let events = v.as_array().unwrap();
    assert!(events.iter().all(|e| e["name"] == "a"));
    let last = events.last().unwrap()["id"].as_i64().unwrap();
    let (_, v, _) = call(
        &socket,
        Method::GET,
        &format!("/v1/events?after={last}&waitSeconds=0"),
        None,
    )
    .await;
    assert!(v
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["id"].as_i64().unwrap() > last));

    // Errors.
    let (st, v, _) = call(&socket, Method::GET, "/v1/objects/vms/nope", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(v["code"], "not-found");
    let (st, _, _) = call(&socket, Method::GET, "/v1/objects/pods/x", None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // A directory-owned object is a 409 for the CLI.
    std::fs::write(
        dir.path().join("specs/d.yaml"),
        vm_yaml("d", "base", "512Mi", ""),
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while call(&socket, Method::GET, "/v1/objects/vms/d", None)
        .await
        .0
        != StatusCode::OK
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "directory object never appeared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (st, v, _) = call(
        &socket,
        Method::POST,
        "/v1/apply",
        Some(json!({ "files": [file("/x/d.yaml", &vm_yaml("d", "base", "1Gi", ""))] })),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["code"], "conflict");

    let (st, _, _) = call(&socket, Method::POST, "/v1/objects/vms/a/retry", None).await;
    assert_eq!(st, StatusCode::OK);

    // Image refresh: answered after the Image's reconcile; a local image has no tag.
    let (st, v, _) = call(
        &socket,
        Method::POST,
        "/v1/images/base/refresh",
        Some(json!({ "apply": false })),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["applied"], false);
    assert_eq!(v["pinned"], false);
    assert!(v["digest"].as_str().unwrap().starts_with("sha256:"), "{v}");
    let (st, v, _) = call(
        &socket,
        Method::POST,
        "/v1/images/nope/refresh",
        Some(json!({})),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, v, _) = call(
        &socket,
        Method::POST,
        "/v1/delete",
        Some(json!({ "objects": [{ "kind": "VM", "name": "a" }, { "kind": "VM", "name": "zz" }] })),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["deleted"][0]["name"], "a");
    assert_eq!(v["not_found"][0]["name"], "zz");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while call(&socket, Method::GET, "/v1/objects/vms/a", None)
        .await
        .0
        != StatusCode::NOT_FOUND
    {
        assert!(tokio::time::Instant::now() < deadline, "vm/a never deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Shutdown: the daemon returns and removes its socket.
    stop_tx.send(()).unwrap();
    bounded("daemon exit", daemon).await.unwrap().unwrap();
    assert!(!socket.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_stop_leaves_vms_running_and_a_new_daemon_adopts_them() {
    let dir = tempfile::tempdir().unwrap();
    let specs = dir.path().join("specs");
    std::fs::create_dir_all(&specs).unwrap();
    std::fs::write(
        specs.join("all.yaml"),
        format!(
            "{IMAGE}---\n{}---\n{}",
            vm_yaml("a", "base", "512Mi", ""),
            vm_yaml("b", "base", "512Mi", "")
        ),
    )
    .unwrap();
    let mut config = test_config(dir.path());
    config.specs_dir = Some(specs);
    let sim = SimulatedRuntime::new();
    let socket = config.socket.clone();

    let run = |sim: SimulatedRuntime| {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(crate::daemon::run(config.clone(), sim, async move {
            let _ = rx.await;
        }));
        (tx, handle)
    };
    let store = |dir: &Path| crate::store::Database::open(&dir.join("state/banger.db")).unwrap();
    let ready = |s: &crate::store::Database, name: &str| {
        status::is_true(&s.get_status(Kind::Vm, name).unwrap().0.conditions, READY)
    };

    let (stop, daemon) = run(sim.clone());
    until_socket_accepts(&socket).await;
    let s = store(dir.path());
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !(ready(&s, "a") && ready(&s, "b")) {
        assert!(tokio::time::Instant::now() < deadline, "VMs never Ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let uid_a = s.get_object(Kind::Vm, "a").unwrap().unwrap().uid;
    let pid_a = sim.pid_of(&uid_a).unwrap();
    stop.send(()).unwrap();
    bounded("daemon exit", daemon).await.unwrap().unwrap();
    assert!(!socket.exists());
    assert_eq!(sim.running_count(), 2, "a daemon stop leaves VMs running");
    let launches = sim
        .executed()
        .iter()
        .filter(|(_, st)| *st == crate::runtime::VmStep::Launch)
        .count();
    let observed_a = sim.observations(&uid_a);

    // A new daemon on the same state: adopts (no new launch, same pid), converges.
    let (stop, daemon) = run(sim.clone());
    until_socket_accepts(&socket).await;
    // It notices exits (b) and re-probes every object at start (a).
    let before = s.last_event_id().unwrap();
    sim.exit_process(&s.get_object(Kind::Vm, "b").unwrap().unwrap().uid, false);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while s
        .list_events(
            &crate::store::EventFilter {
                kind: Some(Kind::Vm),
                name: Some("b".into()),
            },
            before,
            100,
        )
        .unwrap()
        .iter()
        .all(|e| e.reason != Reason::Restarted)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "new daemon never handled b's exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while sim.observations(&uid_a) == observed_a {
        assert!(
            tokio::time::Instant::now() < deadline,
            "new daemon never looked at a"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready(&s, "a"));
    assert_eq!(sim.pid_of(&uid_a), Some(pid_a), "adopted, not restarted");
    let launches_after = sim
        .executed()
        .iter()
        .filter(|(_, st)| *st == crate::runtime::VmStep::Launch)
        .count();
    assert_eq!(
        launches_after,
        launches + 1,
        "only b's restart launched anything"
    );
    stop.send(()).unwrap();
    bounded("daemon exit", daemon).await.unwrap().unwrap();
}

/// A second daemon on the same state directory (another socket) refuses to start and
/// names the holder; the first keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_state_dir_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let (stop, first) = {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(crate::daemon::run(
            config.clone(),
            SimulatedRuntime::new(),
            async move {
                let _ = rx.await;
            },
        ));
        (tx, handle)
    };
    until_socket_accepts(&config.socket).await;

    let mut second = config.clone();
    second.socket = dir.path().join("second.sock");
    let err = bounded(
        "second daemon",
        crate::daemon::run(second.clone(), SimulatedRuntime::new(), async {}),
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("in use by another banger daemon")
            && msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    assert!(!second.socket.exists(), "the second daemon never served");
    let (status, _, _) = call(&config.socket, Method::GET, "/v1/healthz", None).await;
    assert_eq!(status, StatusCode::OK, "the first one still serves");

    stop.send(()).unwrap();
    bounded("daemon exit", first).await.unwrap().unwrap();
}

/// The daemon does not start on a specs directory others could write, nor on an open
/// state directory: one line naming the path, and nothing made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_refuses_directories_others_could_write() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let specs = dir.path().join("specs");
    std::fs::create_dir(&specs).unwrap();
    std::fs::set_permissions(&specs, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut config = test_config(dir.path());
    config.specs_dir = Some(specs.clone());
    let err = bounded(
        "refusal",
        crate::daemon::run(config.clone(), SimulatedRuntime::new(), async {}),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "specs dir {}: writable by its group and others (mode 0777); {}",
            specs.display(),
            crate::sources::dir_trust::WHY
        )
    );
    assert!(!config.state_dir.exists(), "nothing made");
    assert!(!config.socket.exists());

    std::fs::set_permissions(&specs, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(&config.state_dir).unwrap();
    std::fs::set_permissions(&config.state_dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    let err = bounded(
        "refusal",
        crate::daemon::run(config.clone(), SimulatedRuntime::new(), async {}),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "state dir {} has mode 0750, which lets its group or others in",
            config.state_dir.display()
        )),
        "{err}"
    );
    assert!(!config.socket.exists());
}
