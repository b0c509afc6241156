//! The API against slow, greedy and malformed clients, on a real socket served by
//! `daemon::run` (simulated runtime): requests are raw bytes, so the test controls
//! exactly what arrives and when. Every error answer must be a JSON `ErrorBody`, no
//! client may hold up another, and the daemon keeps serving.
//!
//! Timeouts are configured short (1 s) so the tests finish quickly; every wait is
//! bounded by [`DEADLINE`], and nothing asserts how fast anything happens.

use std::path::Path;

use axum::http::{Method, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::api::call;
use super::*;
use crate::config::{ApiLimits, DaemonConfig};

/// A daemon on `config` until the returned sender is dropped or fired.
async fn start(
    config: DaemonConfig,
) -> (
    tokio::sync::oneshot::Sender<()>,
    JoinHandle<Result<(), crate::daemon::DaemonError>>,
) {
    let socket = config.socket.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(crate::daemon::run(
        config,
        SimulatedRuntime::new(),
        async move {
            let _ = rx.await;
        },
    ));
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while UnixStream::connect(&socket).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "socket never came up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (tx, daemon)
}

fn config(dir: &Path, api: ApiLimits) -> DaemonConfig {
    let mut c = test_config(dir);
    c.api = api;
    c
}

/// Sends `request` on a fresh connection, then reads until the daemon closes it (or
/// [`DEADLINE`] passes, which fails the test). Returns the status and the JSON body.
async fn raw(socket: &Path, request: &[u8]) -> (u16, Value) {
    let mut stream = UnixStream::connect(socket).await.unwrap();
    // The daemon may answer and close before reading everything (413): ignore EPIPE.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = bounded("answer", stream.read_to_end(&mut answer)).await;
    parse(&answer)
}

fn parse(answer: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head}"));
    let content_type_json = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("content-type: application/json"));
    assert!(content_type_json, "not JSON: {text}");
    let value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, value)
}

fn post(path: &str, content_type: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: banger\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(ct) = content_type {
        request.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

#[track_caller]
fn assert_error(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["code"], code, "{}", answer.1);
    assert!(
        answer.1["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{}",
        answer.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_an_error_body() {
    let dir = tempfile::tempdir().unwrap();
    let (stop, daemon) = start(config(dir.path(), ApiLimits::default())).await;
    let socket = dir.path().join("banger.sock");
    let json = Some("application/json");

    let missing_type = raw(&socket, &post("/v1/apply", None, b"{\"files\": []}")).await;
    assert_error(&missing_type, 415, "unsupported-media-type");
    let syntax = raw(&socket, &post("/v1/apply", json, b"{\"files\": [")).await;
    assert_error(&syntax, 400, "bad-request");
    assert!(
        syntax.1["error"]
            .as_str()
            .unwrap()
            .starts_with("the body is not valid JSON"),
        "{}",
        syntax.1
    );
    let shape = raw(&socket, &post("/v1/delete", json, b"{\"objects\": 7}")).await;
    assert_error(&shape, 400, "bad-request");
    let huge = raw(
        &socket,
        &post(
            "/v1/apply",
            json,
            &vec![b' '; crate::api::server::MAX_BODY_BYTES + 1],
        ),
    )
    .await;
    assert_error(&huge, 413, "too-large");
    // Chunked, so no length is declared: refused when the limit is passed.
    let chunk = vec![b' '; 1024 * 1024];
    let mut chunked = b"POST /v1/apply HTTP/1.1\r\nHost: banger\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..5 {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(&chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_error(&raw(&socket, &chunked).await, 413, "too-large");
    let route = raw(
        &socket,
        b"GET /v1/nothing HTTP/1.1\r\nHost: banger\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_error(&route, 404, "not-found");
    assert_eq!(route.1["error"], "no such route: GET /v1/nothing");
    let method = raw(
        &socket,
        b"DELETE /v1/objects HTTP/1.1\r\nHost: banger\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_error(&method, 405, "method-not-allowed");
    let query = raw(
        &socket,
        b"GET /v1/events?waitSeconds=soon HTTP/1.1\r\nHost: banger\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_error(&query, 400, "bad-request");

    let (st, _, _) = call(&socket, Method::GET, "/v1/healthz", None).await;
    assert_eq!(st, StatusCode::OK, "still serving");
    stop.send(()).unwrap();
    bounded("daemon exit", daemon).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_dropped_and_others_served_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ApiLimits {
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        ..ApiLimits::default()
    };
    let (stop, daemon) = start(config(dir.path(), limits)).await;
    let socket = dir.path().join("banger.sock");

    // Half a request head, then nothing: the daemon closes the connection.
    let mut slow_head = UnixStream::connect(&socket).await.unwrap();
    slow_head
        .write_all(b"POST /v1/apply HTTP/1.1\r\nHost: ban")
        .await
        .unwrap();
    // A connection that sends nothing at all: closed too.
    let mut silent = UnixStream::connect(&socket).await.unwrap();
    // The whole head and half the body: answered 408 with an ErrorBody.
    let mut slow_body = UnixStream::connect(&socket).await.unwrap();
    let whole = post("/v1/apply", Some("application/json"), &[b' '; 1000]);
    slow_body
        .write_all(&whole[..whole.len() - 500])
        .await
        .unwrap();

    // Meanwhile others are served, on a long poll that outlasts the header timeout too.
    let (st, v, _) = call(
        &socket,
        Method::GET,
        "/v1/events?after=0&waitSeconds=2",
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(v.is_array(), "{v}");

    let mut head_answer = Vec::new();
    bounded("slow head dropped", slow_head.read_to_end(&mut head_answer))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&head_answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    let mut silent_answer = Vec::new();
    bounded("silent dropped", silent.read_to_end(&mut silent_answer))
        .await
        .unwrap();
    assert!(silent_answer.is_empty(), "{silent_answer:?}");
    let mut body_answer = Vec::new();
    let _ = bounded(
        "slow body answered",
        slow_body.read_to_end(&mut body_answer),
    )
    .await;
    let answer = parse(&body_answer);
    assert_error(&answer, 408, "timeout");
    assert_eq!(answer.1["error"], "request body not received within 1 s");

    let (st, _, _) = call(&socket, Method::GET, "/v1/healthz", None).await;
    assert_eq!(st, StatusCode::OK);
    stop.send(()).unwrap();
    bounded("daemon exit", daemon).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_bounded_and_slots_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ApiLimits {
        max_connections: 4,
        root_reserve: 1,
        ..ApiLimits::default()
    };
    let (stop, daemon) = start(config(dir.path(), limits)).await;
    let socket = dir.path().join("banger.sock");

    // This test's process is the daemon's user: an admin, who may use every slot.
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut s = UnixStream::connect(&socket).await.unwrap();
        s.write_all(b"GET /v1/healthz HTTP/1.1\r\nHost: banger\r\n\r\n")
            .await
            .unwrap();
        // Read the answer: the connection is kept alive and holds its slot.
        let mut buf = [0u8; 512];
        let n = bounded("kept-alive answer", s.read(&mut buf))
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        idle.push(s);
    }
    // A fifth is closed at once, without an answer.
    let mut fifth = UnixStream::connect(&socket).await.unwrap();
    let _ = fifth
        .write_all(b"GET /v1/healthz HTTP/1.1\r\nHost: banger\r\nConnection: close\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let _ = bounded("fifth closed", fifth.read_to_end(&mut answer)).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));

    // One closes; its slot comes back.
    drop(idle.pop());
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut s = UnixStream::connect(&socket).await.unwrap();
        let _ = s
            .write_all(b"GET /v1/healthz HTTP/1.1\r\nHost: banger\r\nConnection: close\r\n\r\n")
            .await;
        let mut answer = Vec::new();
        let _ = bounded("answer", s.read_to_end(&mut answer)).await;
        if String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the freed slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(idle);
    stop.send(()).unwrap();
    bounded("daemon exit", daemon).await.unwrap().unwrap();
}
