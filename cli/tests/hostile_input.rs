//! Hostile input against the real binary: spec files that are not regular files and
//! alias bombs for `banger validate`, and malformed, oversized and half-sent requests
//! against a real `banger daemon --simulate`, which must answer with (JSON) errors and
//! keep serving; and a specs directory anyone may write, on which the daemon refuses to
//! start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use support::{banger_at, Daemon};

/// Longest a test waits for the daemon's answer on a raw connection (a hang guard).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// 200 documents of nested aliases: small on disk, huge once expanded per document.
fn alias_bomb() -> String {
    let doc = "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d]\n";
    vec![doc; 200].join("---\n")
}

#[test]
fn validate_refuses_a_fifo_in_one_line_without_blocking() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("vm.yaml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // Named, and found in a directory. No writer ever opens the FIFO.
    for input in [fifo.display().to_string(), tmp.path().display().to_string()] {
        let run = banger_at(
            Path::new("/nonexistent.sock"),
            tmp.path(),
            &["validate", "-f", &input],
        )
        .expect_code(1);
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(
            lines,
            [
                format!(
                    "{}: not a regular file (it is a FIFO); spec files must be regular files",
                    fifo.display()
                )
                .as_str(),
                "1 error in 1 file: nothing is valid until all are fixed",
            ],
            "{}",
            run.stderr
        );
    }
}

#[test]
fn validate_refuses_an_alias_bomb_spread_over_documents() {
    let tmp = tempfile::tempdir().unwrap();
    let bomb = alias_bomb();
    std::fs::write(tmp.path().join("bomb.yaml"), &bomb).unwrap();
    let run = banger_at(
        Path::new("/nonexistent.sock"),
        tmp.path(),
        &["validate", "-f", "bomb.yaml"],
    )
    .expect_code(1);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stderr);
    let limit = 4096 + bomb.len();
    assert!(
        lines[0].starts_with("bomb.yaml:5:")
            && lines[0].contains(&format!(": YAML expands to more than {limit} nodes (all documents and every alias copy counted together")),
        "{}",
        lines[0]
    );
}

/// Sends raw bytes on a fresh connection and returns everything the daemon answers
/// before it closes the connection.
fn exchange(socket: &Path, request: &[u8], half_close: bool) -> String {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).unwrap();
    // The daemon may answer and close before reading everything (413): ignore EPIPE.
    let _ = stream.write_all(request);
    if half_close {
        stream.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("no answer from the daemon: {e}"),
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: banger\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

fn status(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

#[track_caller]
fn assert_still_serving(daemon: &Daemon) {
    let answer = exchange(
        &daemon.socket,
        b"GET /v1/healthz HTTP/1.1\r\nHost: banger\r\nConnection: close\r\n\r\n",
        false,
    );
    assert_eq!(status(&answer), "HTTP/1.1 200 OK", "{answer}");
    daemon.banger(&["get", "vms"]).expect_code(0);
}

#[test]
fn the_daemon_answers_hostile_requests_and_keeps_serving() {
    let daemon = Daemon::start();

    // Malformed JSON: a client error, nothing applied.
    for body in [&b"{\"files\": ["[..], b"\xff\xfe", b"[]", b"{\"files\": 7}"] {
        let answer = exchange(&daemon.socket, &post("/v1/apply", body), false);
        let line = status(&answer);
        assert!(
            line.starts_with("HTTP/1.1 400") || line.starts_with("HTTP/1.1 422"),
            "{body:?}: {answer}"
        );
    }
    assert_still_serving(&daemon);

    // The body limit is 4 MiB: a 3 MiB body (JSON padded with spaces) is read.
    let mut padded = b"{\"files\": []".to_vec();
    padded.resize(3 * 1024 * 1024, b' ');
    padded.push(b'}');
    let answer = exchange(&daemon.socket, &post("/v1/apply", &padded), false);
    assert_eq!(status(&answer), "HTTP/1.1 200 OK", "{answer}");

    // A body over the limit is refused (413, as JSON) without being buffered.
    let huge = vec![b' '; 5 * 1024 * 1024];
    let answer = exchange(&daemon.socket, &post("/v1/apply", &huge), false);
    assert_eq!(
        status(&answer),
        "HTTP/1.1 413 Payload Too Large",
        "{answer}"
    );
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let error: serde_json::Value = serde_json::from_str(body).expect("a JSON ErrorBody");
    assert_eq!(error["code"], "too-large", "{answer}");
    assert_still_serving(&daemon);

    // The alias bomb as an apply: refused as invalid, naming the file.
    let file = serde_json::json!({
        "files": [{"path": "/w/bomb.yaml", "baseDir": "/w", "content": alias_bomb()}]
    });
    let answer = exchange(
        &daemon.socket,
        &post("/v1/apply", file.to_string().as_bytes()),
        false,
    );
    assert_eq!(
        status(&answer),
        "HTTP/1.1 422 Unprocessable Entity",
        "{answer}"
    );
    assert!(answer.contains("/w/bomb.yaml:5:"), "{answer}");
    assert!(answer.contains("YAML expands to more than"), "{answer}");
    assert_still_serving(&daemon);

    // Half-sent requests, then the client closes its side: the daemon drops them.
    for partial in [
        &b"POST /v1/apply HTTP/1.1\r\nHost: banger\r\nContent-Len"[..],
        b"POST /v1/apply HTTP/1.1\r\nHost: banger\r\nContent-Length: 100\r\n\r\n{\"files\"",
    ] {
        let answer = exchange(&daemon.socket, partial, true);
        assert!(
            answer.is_empty() || status(&answer).starts_with("HTTP/1.1 4"),
            "{answer}"
        );
    }
    assert_still_serving(&daemon);

    // A client that sends half a request and then nothing does not hold up others.
    let mut slow = UnixStream::connect(&daemon.socket).unwrap();
    slow.write_all(b"POST /v1/apply HTTP/1.1\r\nHost: banger\r\nContent-Length: 10\r\n\r\n{")
        .unwrap();
    assert_still_serving(&daemon);
    drop(slow);
    assert_still_serving(&daemon);
}

/// A specs directory anyone may write would let anyone make root run VMs: the daemon
/// refuses to start on it, with one line naming it, and creates nothing.
#[test]
fn the_daemon_refuses_a_specs_dir_others_could_write() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let specs = tmp.path().join("specs");
    std::fs::create_dir(&specs).unwrap();
    std::fs::set_permissions(&specs, std::fs::Permissions::from_mode(0o777)).unwrap();
    let state = tmp.path().join("state");
    let socket = tmp.path().join("banger.sock");
    let out = std::process::Command::new(support::BANGER)
        .arg("daemon")
        .arg("--simulate")
        .args(["--socket-group", "root"])
        .arg("--specs-dir")
        .arg(&specs)
        .arg("--state-dir")
        .arg(&state)
        .arg("--socket")
        .arg(&socket)
        .env("BANGER_LOG", "error")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        format!(
            "error: daemon: specs dir {}: writable by its group and others (mode 0777); spec files and their directories must be writable only by the specs dir's owner and root (the daemon runs what they declare as root)",
            specs.display()
        )
    );
    assert!(!state.exists() && !socket.exists(), "nothing made");
}
