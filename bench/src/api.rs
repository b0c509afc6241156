//! A small blocking client of the daemon's documented HTTP API (`docs/api.md`).
//!
//! One request per connection (`Connection: close`), read to the end, then decoded
//! (`Content-Length` or chunked bodies). Blocking on purpose: the harness is a plain
//! threaded program, and a request's latency is part of what some figures measure
//! only through the CLI, never through this client.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::error::{BenchError, Result};

/// Longest the harness waits for one answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The daemon's API at one socket.
#[derive(Debug, Clone)]
pub struct ApiClient {
    socket: PathBuf,
}

/// A decoded HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl ApiClient {
    /// A client of the daemon listening on `socket`.
    pub fn new(socket: &Path) -> ApiClient {
        ApiClient {
            socket: socket.to_path_buf(),
        }
    }

    /// Sends one request; any status is returned (transport errors are errors).
    pub fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Response> {
        let err = |message: String| BenchError::Api {
            request: format!("{method} {path}"),
            message,
        };
        let mut stream = UnixStream::connect(&self.socket)
            .map_err(|e| err(format!("connect {}: {e}", self.socket.display())))?;
        stream
            .set_read_timeout(Some(REQUEST_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(REQUEST_TIMEOUT)))
            .map_err(|e| err(e.to_string()))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: banger\r\nConnection: close\r\nAccept: application/json\r\n"
        );
        if let Some(b) = body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body.unwrap_or_default()))
            .map_err(|e| err(format!("send: {e}")))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .map_err(|e| err(format!("read: {e}")))?;
        parse_response(&raw).map_err(err)
    }

    /// `GET path`, which must answer 200 with JSON.
    pub fn get(&self, path: &str) -> Result<Value> {
        self.json("GET", path, None)
    }

    /// `GET path`: `None` on 404.
    pub fn get_optional(&self, path: &str) -> Result<Option<Value>> {
        let r = self.request("GET", path, None)?;
        if r.status == 404 {
            return Ok(None);
        }
        decode_json("GET", path, &r).map(Some)
    }

    /// A request whose answer must be 200 with JSON.
    pub fn json(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let bytes = body.map(|b| b.to_string().into_bytes());
        let r = self.request(method, path, bytes.as_deref())?;
        decode_json(method, path, &r)
    }

    /// Whether the daemon answers `GET /v1/healthz`.
    pub fn healthy(&self) -> bool {
        self.request("GET", "/v1/healthz", None)
            .is_ok_and(|r| r.status == 200)
    }
}

fn decode_json(method: &str, path: &str, r: &Response) -> Result<Value> {
    let err = |message: String| BenchError::Api {
        request: format!("{method} {path}"),
        message,
    };
    if r.status != 200 {
        return Err(err(format!(
            "status {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        )));
    }
    serde_json::from_slice(&r.body).map_err(|e| err(format!("not JSON: {e}")))
}

/// Splits a whole HTTP/1.1 answer into status and body.
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers in the answer")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad content-length {value:?}"))?,
            );
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        decode_chunked(rest)?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or_else(|| format!("body shorter than content-length {n}"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

/// Decodes a chunked body (chunk extensions and trailers are ignored).
pub fn decode_chunked(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line not terminated")?;
        let line = std::str::from_utf8(&data[..eol]).map_err(|_| "chunk size is not text")?;
        let hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(hex, 16).map_err(|_| format!("bad chunk size {hex:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = data.get(..size).ok_or("chunk shorter than its size")?;
        out.extend_from_slice(chunk);
        data = data
            .get(size..)
            .and_then(|d| d.strip_prefix(b"\r\n"))
            .ok_or("chunk not followed by CRLF")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_content_length_answer() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":1}";
        let r = parse_response(raw).expect("parse");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"{\"a\":1}");
    }

    #[test]
    fn parses_a_chunked_answer() {
        let raw = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
        let r = parse_response(raw).expect("parse");
        assert_eq!(r.status, 404);
        assert_eq!(r.body, b"{\"a\":1}");
    }

    #[test]
    fn rejects_broken_answers() {
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort").is_err());
        assert!(decode_chunked(b"zz\r\n").is_err());
        assert!(decode_chunked(b"5\r\nab").is_err());
    }

    #[test]
    fn talks_to_a_unix_socket_server() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("api.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).expect("read");
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"ok\":true}")
                .expect("write");
            request
        });
        let got = ApiClient::new(&socket).get("/v1/healthz").expect("get");
        assert_eq!(got["ok"], true);
        let request = server.join().expect("server");
        assert!(
            request.starts_with("GET /v1/healthz HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.contains("Connection: close"));
    }
}
