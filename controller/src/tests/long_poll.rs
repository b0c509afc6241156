//! `GET /v1/objects/{kind}/{name}?after=N&waitSeconds=S`: the long-poll `banger wait`
//! uses, on a daemon with the simulated runtime.

use std::path::{Path, PathBuf};

use axum::body::Bytes;
use axum::http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use super::api::until_socket_accepts;
use super::*;

/// A `GET` of `uri`: status, body and the `x-banger-change` counter.
async fn get(socket: &Path, uri: &str) -> (StatusCode, Value, u64) {
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method(Method::GET)
        .uri(format!("http://banger{uri}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = bounded(uri, sender.send_request(req)).await.unwrap();
    let status = resp.status();
    let change = resp
        .headers()
        .get("x-banger-change")
        .expect("every GET of one object carries the change counter")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap(), change)
}

async fn post(socket: &Path, uri: &str, body: Value) -> StatusCode {
    super::api::call(socket, Method::POST, uri, Some(body))
        .await
        .0
}

fn ready(v: &Value) -> bool {
    v["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_with_after_answers_when_the_object_changes() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let socket: PathBuf = config.socket.clone();
    let sim = SimulatedRuntime::new();
    // The guest needs a few looks before it is ready: Booting, then Running.
    sim.set_boot_observations(3);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(crate::daemon::run(config, sim, async move {
        let _ = stop_rx.await;
    }));
    until_socket_accepts(&socket).await;

    // A missing object: 404, with the counter.
    let (st, _, first) = get(&socket, "/v1/objects/vms/a").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(first >= 1);

    let files = format!("{IMAGE}---\n{}", vm_yaml("a", "base", "512Mi", ""));
    let applied = post(
        &socket,
        "/v1/apply",
        json!({ "files": [{ "path": "/x/a.yaml", "baseDir": "/x", "content": files }] }),
    )
    .await;
    assert_eq!(applied, StatusCode::OK);

    // Follow the VM to Ready by long-polls only: each answers after a reconcile (the
    // counter moved), never with the counter the caller already had.
    let (st, mut seen, mut after) = get(&socket, "/v1/objects/vms/a").await;
    assert_eq!(st, StatusCode::OK);
    let mut answers = 0;
    while !ready(&seen) {
        answers += 1;
        assert!(answers < 100, "vm/a never Ready: {seen}");
        let uri = format!("/v1/objects/vms/a?after={after}&waitSeconds=60");
        let (st, v, change) = get(&socket, &uri).await;
        assert_eq!(st, StatusCode::OK);
        assert!(
            change > after,
            "answered with nothing new: {after} -> {change}"
        );
        (seen, after) = (v, change);
    }

    // Nothing changes: the wait ends with the object as it was.
    let uri = format!("/v1/objects/vms/a?after={after}&waitSeconds=1");
    let (st, v, change) = get(&socket, &uri).await;
    assert_eq!((st, &v, change), (StatusCode::OK, &seen, after));

    // A counter the daemon is not at (an older one): the answer comes at once, even
    // with a long wait, since the caller may have missed a change.
    let uri = format!("/v1/objects/vms/a?after={}&waitSeconds=60", after - 1);
    let (st, v, change) = get(&socket, &uri).await;
    assert_eq!((st, &v, change), (StatusCode::OK, &seen, after));

    // Other objects' reconciles wake the long-poll of vm/a but do not end it: it ends
    // when vm/a itself changes.
    let poll_a = {
        let socket = socket.clone();
        let uri = format!("/v1/objects/vms/a?after={after}&waitSeconds=60");
        tokio::spawn(async move { get(&socket, &uri).await })
    };
    let files = vm_yaml("b", "base", "512Mi", "");
    let applied = post(
        &socket,
        "/v1/apply",
        json!({ "files": [{ "path": "/x/b.yaml", "baseDir": "/x", "content": files }] }),
    )
    .await;
    assert_eq!(applied, StatusCode::OK);
    let (_, mut b, mut b_after) = get(&socket, "/v1/objects/vms/b").await;
    let mut answers = 0;
    while !ready(&b) {
        answers += 1;
        assert!(answers < 100, "vm/b never Ready: {b}");
        let uri = format!("/v1/objects/vms/b?after={b_after}&waitSeconds=60");
        (_, b, b_after) = get(&socket, &uri).await;
    }
    assert!(b_after > after, "vm/b's reconciles moved the counter");
    assert!(
        !poll_a.is_finished(),
        "the long-poll of vm/a ended though vm/a did not change"
    );

    // A delete: the long-polls follow it until the object is gone (404).
    let deleted = post(
        &socket,
        "/v1/delete",
        json!({ "objects": [{ "kind": "VM", "name": "a" }] }),
    )
    .await;
    assert_eq!(deleted, StatusCode::OK);
    let (st, v, change) = bounded("the long-poll of vm/a", poll_a).await.unwrap();
    assert!(change > b_after, "it answered after the delete's reconcile");
    if st == StatusCode::OK {
        assert_ne!(v, seen, "it answered with vm/a as it was");
        assert_eq!(v["status"]["phase"], "Deleting");
        (seen, after) = (v, change);
    }
    assert!(st == StatusCode::OK || st == StatusCode::NOT_FOUND, "{st}");
    let mut answers = 0;
    let mut gone = st == StatusCode::NOT_FOUND;
    while !gone {
        answers += 1;
        assert!(answers < 100, "vm/a never gone: {seen}");
        let uri = format!("/v1/objects/vms/a?after={after}&waitSeconds=60");
        let (status, v, change) = get(&socket, &uri).await;
        assert!(
            change > after,
            "answered with nothing new: {after} -> {change}"
        );
        gone = status == StatusCode::NOT_FOUND;
        if gone {
            assert_eq!(v["code"], "not-found");
        } else {
            assert_eq!(status, StatusCode::OK);
            (seen, after) = (v, change);
        }
    }

    stop_tx.send(()).unwrap();
    bounded("daemon exit", daemon).await.unwrap().unwrap();
}
