//! The daemon's HTTP/1.1 + JSON API, spoken over its Unix socket.
//!
//! One connection per request (the daemon is local; requests are few). Every request is
//! bounded in time. A daemon that is not running is reported as one line that says how
//! to start it; an error response is decoded from its [`ErrorBody`].

use std::path::PathBuf;
use std::time::Duration;

use banger_controller::api::connect::UPGRADE_PROTOCOL;
use banger_controller::api::types::{
    ApplyRequest, ApplyResponse, DeleteRequest, DeleteResponse, DescribeView, ErrorBody, EventView,
    ObjectList, ObjectRef, ObjectView, SshIdentityView, SyncRequestView,
};
use banger_specs::Kind;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::CliError;

/// The response header carrying the next log offset.
pub const OFFSET_HEADER: &str = "x-banger-offset";
/// The response header carrying the daemon's change counter (`GET` of one object).
pub const CHANGE_HEADER: &str = "x-banger-change";

/// Largest answer whose buffer is allocated up front from its `Content-Length`
/// (larger ones grow as they arrive).
const MAX_PRESIZED_BODY: u64 = 64 << 20;

/// How long any request may take beyond the long-poll time it asks for.
const REQUEST_MARGIN: Duration = Duration::from_secs(30);

/// A byte stream to a guest port through the daemon (`GET /v1/vms/{name}/connect`).
pub type GuestStream = TokioIo<Upgraded>;

/// Why a request to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket is absent or nobody listens on it.
    #[error(
        "cannot reach the banger daemon at {}: {source} — start it with `banger daemon` (or `sudo banger daemon`)",
        socket.display()
    )]
    Unreachable {
        /// The socket path.
        socket: PathBuf,
        /// What connect said.
        source: std::io::Error,
    },
    /// The socket's permissions keep this user out.
    #[error(
        "permission denied on the banger daemon's socket {}: add yourself to the {} group (sudo usermod -aG {} $USER, then log in again), or run as root",
        socket.display(),
        group.as_deref().unwrap_or("socket's"),
        group.as_deref().unwrap_or("GROUP")
    )]
    NotAllowed {
        /// The socket path.
        socket: PathBuf,
        /// The socket's group, when it could be named.
        group: Option<String>,
    },
    /// The daemon closed the connection without answering.
    #[error("the banger daemon at {} closed the connection without answering: it does so for users who are neither root nor in the socket's group (add yourself to that group), and while it serves too many connections (try again)", socket.display())]
    ClosedWithoutAnswer {
        /// The socket path.
        socket: PathBuf,
    },
    /// The HTTP exchange broke.
    #[error("talking to the banger daemon at {}: {source}", socket.display())]
    Http {
        /// The socket path.
        socket: PathBuf,
        /// The transport error.
        source: hyper::Error,
    },
    /// The request took longer than its bound.
    #[error("the banger daemon at {} did not answer {what} within {}", socket.display(), humantime::format_duration(*limit))]
    TimedOut {
        /// The socket path.
        socket: PathBuf,
        /// The request.
        what: String,
        /// The bound.
        limit: Duration,
    },
    /// The daemon answered with an error.
    #[error("Error from daemon: {}", body.error)]
    Api {
        /// HTTP status.
        status: u16,
        /// The decoded error body.
        body: ErrorBody,
    },
    /// The daemon's answer is not what the API defines.
    #[error("unexpected answer from the banger daemon to {what}: {message}")]
    Decode {
        /// The request.
        what: String,
        /// What was wrong.
        message: String,
    },
}

impl ClientError {
    /// Whether the daemon said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Api { status: 404, .. })
    }
}

/// A raw response: status, next-offset header and body bytes.
#[derive(Debug)]
pub struct RawResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// The `x-banger-offset` header, when present and numeric.
    pub offset: Option<u64>,
    /// The `x-banger-change` header, when present and numeric.
    pub change: Option<u64>,
    /// The body.
    pub body: Bytes,
}

/// A client of one daemon socket.
#[derive(Debug, Clone)]
pub struct DaemonClient {
    socket: PathBuf,
}

/// Percent-encodes a path segment or query value (names are DNS labels, but be exact).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The API path of one object: `/v1/objects/vms/dev`.
pub fn object_path(kind: Kind, name: &str) -> String {
    format!("/v1/objects/{}/{}", kind.plural(), encode(name))
}

/// The API path of a list: `/v1/objects` or `/v1/objects?kind=vms`.
fn list_path(kind: Option<Kind>) -> String {
    match kind {
        Some(kind) => format!("/v1/objects?kind={}", kind.plural()),
        None => "/v1/objects".to_string(),
    }
}

/// A `GET` answer decoded into its wire type.
fn decode<T: DeserializeOwned>(path: &str, body: &[u8]) -> Result<T, ClientError> {
    decode_answer(format!("GET {path}"), body)
}

/// An answer to `what` decoded into its wire type.
fn decode_answer<T: DeserializeOwned>(what: String, body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::Decode {
        what,
        message: e.to_string(),
    })
}

/// Query of `GET /v1/events`.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only this kind.
    pub kind: Option<Kind>,
    /// Only this name (with `kind`).
    pub name: Option<String>,
    /// Only events with an id above this.
    pub after: Option<i64>,
    /// Long-poll: wait up to this many seconds for a new event.
    pub wait_seconds: Option<u64>,
}

impl EventQuery {
    /// The request path with its query string.
    pub fn path(&self) -> String {
        let mut params = Vec::new();
        if let Some(kind) = self.kind {
            params.push(format!("kind={}", kind.plural()));
        }
        if let Some(name) = &self.name {
            params.push(format!("name={}", encode(name)));
        }
        if let Some(after) = self.after {
            params.push(format!("after={after}"));
        }
        if let Some(wait) = self.wait_seconds {
            params.push(format!("waitSeconds={wait}"));
        }
        if params.is_empty() {
            "/v1/events".to_string()
        } else {
            format!("/v1/events?{}", params.join("&"))
        }
    }
}

impl DaemonClient {
    /// A client for the daemon listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> DaemonClient {
        DaemonClient {
            socket: socket.into(),
        }
    }

    /// The daemon's socket, as given.
    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// Connects to the socket; a permission error names the socket's group.
    async fn open(&self) -> Result<tokio::net::UnixStream, ClientError> {
        match tokio::net::UnixStream::connect(&self.socket).await {
            Ok(stream) => Ok(stream),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                let socket = self.socket.clone();
                let group = tokio::task::spawn_blocking(move || socket_group_name(&socket))
                    .await
                    .ok()
                    .flatten();
                Err(ClientError::NotAllowed {
                    socket: self.socket.clone(),
                    group,
                })
            }
            Err(source) => Err(ClientError::Unreachable {
                socket: self.socket.clone(),
                source,
            }),
        }
    }

    /// A transport error of an exchange: a connection closed before any answer is
    /// [`ClientError::ClosedWithoutAnswer`].
    fn http_error(&self, source: hyper::Error) -> ClientError {
        let closed_io = std::error::Error::source(&source)
            .and_then(|e| e.downcast_ref::<std::io::Error>())
            .is_some_and(|e| {
                matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                )
            });
        if source.is_incomplete_message() || source.is_canceled() || closed_io {
            return ClientError::ClosedWithoutAnswer {
                socket: self.socket.clone(),
            };
        }
        ClientError::Http {
            socket: self.socket.clone(),
            source,
        }
    }

    /// Sends one request and reads the whole response, within `REQUEST_MARGIN + wait`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        wait: Duration,
    ) -> Result<RawResponse, ClientError> {
        let limit = REQUEST_MARGIN + wait;
        match tokio::time::timeout(limit, self.exchange(method.clone(), path, body)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::TimedOut {
                socket: self.socket.clone(),
                what: format!("{method} {path}"),
                limit,
            }),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<RawResponse, ClientError> {
        let http = |source| self.http_error(source);
        let stream = self.open().await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(http)?;
        let driver = tokio::spawn(connection);
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(path)
            .header("host", "banger");
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Decode {
                what: format!("{method} {path}"),
                message: e.to_string(),
            })?;
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status();
        let number = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let (offset, change) = (number(OFFSET_HEADER), number(CHANGE_HEADER));
        // One buffer sized from Content-Length (a list of 1,000 VMs is ~2 MB), filled
        // frame by frame: no regrowth, and no second copy joining kept frames.
        let expected = number(hyper::header::CONTENT_LENGTH.as_str())
            .unwrap_or(0)
            .min(MAX_PRESIZED_BODY);
        let mut buffer = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
        let mut incoming = response.into_body();
        while let Some(frame) = incoming.frame().await {
            if let Ok(data) = frame.map_err(http)?.into_data() {
                buffer.extend_from_slice(&data);
            }
        }
        let body = Bytes::from(buffer);
        driver.abort();
        Ok(RawResponse {
            status,
            offset,
            change,
            body,
        })
    }

    /// Sends a request and decodes a JSON answer; non-2xx answers become [`ClientError::Api`].
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        wait: Duration,
    ) -> Result<T, ClientError> {
        let what = format!("{method} {path}");
        let response = self.checked(method, path, body, wait).await?;
        decode_answer(what, &response.body)
    }

    /// Sends a request; a non-2xx answer becomes [`ClientError::Api`].
    pub async fn checked(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        wait: Duration,
    ) -> Result<RawResponse, ClientError> {
        let response = self.send(method, path, body, wait).await?;
        if response.status.is_success() {
            return Ok(response);
        }
        Err(api_error(response.status, &response.body))
    }

    fn json<B: Serialize>(what: &str, body: &B) -> Result<Vec<u8>, ClientError> {
        serde_json::to_vec(body).map_err(|e| ClientError::Decode {
            what: what.to_string(),
            message: e.to_string(),
        })
    }

    /// `POST /v1/apply`.
    pub async fn apply(&self, request: &ApplyRequest) -> Result<ApplyResponse, ClientError> {
        let body = Self::json("POST /v1/apply", request)?;
        self.call(Method::POST, "/v1/apply", Some(body), Duration::ZERO)
            .await
    }

    /// `POST /v1/delete`.
    pub async fn delete(&self, request: &DeleteRequest) -> Result<DeleteResponse, ClientError> {
        let body = Self::json("POST /v1/delete", request)?;
        self.call(Method::POST, "/v1/delete", Some(body), Duration::ZERO)
            .await
    }

    /// `GET /v1/objects[?kind=…]`.
    pub async fn list(&self, kind: Option<Kind>) -> Result<ObjectList, ClientError> {
        let body = self.list_json(kind).await?;
        decode(&list_path(kind), &body)
    }

    /// `GET /v1/objects[?kind=…]` as the daemon wrote it (`{"items": […]}`), for
    /// callers that print or pick from it without the typed views.
    pub async fn list_json(&self, kind: Option<Kind>) -> Result<Bytes, ClientError> {
        let path = list_path(kind);
        Ok(self
            .checked(Method::GET, &path, None, Duration::ZERO)
            .await?
            .body)
    }

    /// `GET /v1/objects/{kind}/{name}`; `Ok(None)` when the object does not exist.
    pub async fn get(&self, object: &ObjectRef) -> Result<Option<ObjectView>, ClientError> {
        match self.get_json(object).await? {
            Some(body) => decode(&object_path(object.kind, &object.name), &body).map(Some),
            None => Ok(None),
        }
    }

    /// `GET /v1/objects/{kind}/{name}` as the daemon wrote it; `Ok(None)` when the
    /// object does not exist.
    pub async fn get_json(&self, object: &ObjectRef) -> Result<Option<Bytes>, ClientError> {
        let path = object_path(object.kind, &object.name);
        match self.checked(Method::GET, &path, None, Duration::ZERO).await {
            Ok(response) => Ok(Some(response.body)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /v1/objects/{kind}/{name}?after=N&waitSeconds=S`: the object (`None` when it
    /// does not exist) and the daemon's change counter it was read at. With `after` (a
    /// counter an earlier call returned), the daemon answers once the object changed,
    /// or after `wait` (whole seconds, rounded up).
    pub async fn get_changed(
        &self,
        object: &ObjectRef,
        after: Option<u64>,
        wait: Duration,
    ) -> Result<(Option<ObjectView>, Option<u64>), ClientError> {
        let mut path = object_path(object.kind, &object.name);
        let mut wait_seconds = 0;
        if let Some(after) = after {
            wait_seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            path.push_str(&format!("?after={after}&waitSeconds={wait_seconds}"));
        }
        let wait = Duration::from_secs(wait_seconds);
        let response = self.send(Method::GET, &path, None, wait).await?;
        if response.status == StatusCode::NOT_FOUND {
            return Ok((None, response.change));
        }
        if !response.status.is_success() {
            return Err(api_error(response.status, &response.body));
        }
        let view = serde_json::from_slice(&response.body).map_err(|e| ClientError::Decode {
            what: format!("GET {path}"),
            message: e.to_string(),
        })?;
        Ok((Some(view), response.change))
    }

    /// `GET /v1/objects/{kind}/{name}/describe`.
    pub async fn describe(&self, object: &ObjectRef) -> Result<DescribeView, ClientError> {
        let path = format!("{}/describe", object_path(object.kind, &object.name));
        self.call(Method::GET, &path, None, Duration::ZERO).await
    }

    /// `POST /v1/objects/{kind}/{name}/retry`.
    pub async fn retry(&self, object: &ObjectRef) -> Result<(), ClientError> {
        let path = format!("{}/retry", object_path(object.kind, &object.name));
        self.checked(Method::POST, &path, Some(b"{}".to_vec()), Duration::ZERO)
            .await
            .map(|_| ())
    }

    /// `GET /v1/events?…` (a long-poll when `wait_seconds` is set).
    pub async fn events(&self, query: &EventQuery) -> Result<Vec<EventView>, ClientError> {
        let wait = Duration::from_secs(query.wait_seconds.unwrap_or(0));
        self.call(Method::GET, &query.path(), None, wait).await
    }

    /// `GET /v1/vms/{name}/logs?offset=N[&waitSeconds=N]`: the bytes from `offset` and
    /// the next offset.
    pub async fn logs(
        &self,
        name: &str,
        offset: u64,
        wait_seconds: Option<u64>,
    ) -> Result<(Bytes, u64), ClientError> {
        let mut path = format!("/v1/vms/{}/logs?offset={offset}", encode(name));
        if let Some(wait) = wait_seconds {
            path.push_str(&format!("&waitSeconds={wait}"));
        }
        let wait = Duration::from_secs(wait_seconds.unwrap_or(0));
        let response = self.checked(Method::GET, &path, None, wait).await?;
        let next = response
            .offset
            .unwrap_or(offset + response.body.len() as u64);
        Ok((response.body, next))
    }
}

impl DaemonClient {
    /// `POST /v1/workspaces/{name}/sync[?force=true]`: asks the engine for a copy.
    pub async fn request_sync(
        &self,
        workspace: &str,
        force: bool,
    ) -> Result<SyncRequestView, ClientError> {
        let mut path = format!("/v1/workspaces/{}/sync", encode(workspace));
        if force {
            path.push_str("?force=true");
        }
        self.call(Method::POST, &path, Some(b"{}".to_vec()), Duration::ZERO)
            .await
    }

    /// `GET /v1/workspaces/{name}/export`: the patch, streamed into `out` as it comes.
    /// Bounded by [`EXPORT_LIMIT`].
    pub async fn export_into<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        workspace: &str,
        out: &mut W,
    ) -> Result<ExportInfo, CliError> {
        let path = format!("/v1/workspaces/{}/export", encode(workspace));
        match tokio::time::timeout(EXPORT_LIMIT, self.download(&path, out)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::TimedOut {
                socket: self.socket.clone(),
                what: format!("GET {path}"),
                limit: EXPORT_LIMIT,
            }
            .into()),
        }
    }

    async fn download<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        path: &str,
        out: &mut W,
    ) -> Result<ExportInfo, CliError> {
        use tokio::io::AsyncWriteExt;
        let http = |source| ClientError::Http {
            socket: self.socket.clone(),
            source,
        };
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ClientError::Unreachable {
                socket: self.socket.clone(),
                source,
            })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        let driver = tokio::spawn(connection);
        let request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header("host", "banger")
            .body(Empty::<Bytes>::new())
            .map_err(|e| ClientError::Decode {
                what: format!("GET {path}"),
                message: e.to_string(),
            })?;
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let base_commit = header("x-banger-base-commit");
        let method = header("x-banger-export-method").unwrap_or_default();
        let mut body = response.into_body();
        if !status.is_success() {
            let bytes = body.collect().await.map_err(http)?.to_bytes();
            driver.abort();
            return Err(api_error(status, &bytes).into());
        }
        let mut bytes = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(http)?;
            if let Some(data) = frame.data_ref() {
                out.write_all(data).await.map_err(CliError::Output)?;
                bytes += data.len() as u64;
            }
        }
        out.flush().await.map_err(CliError::Output)?;
        driver.abort();
        Ok(ExportInfo {
            bytes,
            base_commit,
            method,
        })
    }

    /// `GET /v1/ssh-identity`: where banger's SSH key and known_hosts are.
    pub async fn ssh_identity(&self) -> Result<SshIdentityView, ClientError> {
        self.call(Method::GET, "/v1/ssh-identity", None, Duration::ZERO)
            .await
    }

    /// `GET /v1/vms/{name}/connect?port=N` with an upgrade: a byte stream to the guest's
    /// TCP port. The daemon refuses (404, 409, 502, …) before upgrading; those answers
    /// become [`ClientError::Api`]. Bounded by `REQUEST_MARGIN` until the upgrade.
    pub async fn connect(&self, vm: &str, port: u16) -> Result<GuestStream, ClientError> {
        let path = format!("/v1/vms/{}/connect?port={port}", encode(vm));
        let what = format!("GET {path} (upgrade)");
        match tokio::time::timeout(REQUEST_MARGIN, self.upgrade(&path)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::TimedOut {
                socket: self.socket.clone(),
                what,
                limit: REQUEST_MARGIN,
            }),
        }
    }

    async fn upgrade(&self, path: &str) -> Result<GuestStream, ClientError> {
        let http = |source| self.http_error(source);
        let stream = self.open().await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        tokio::spawn(connection.with_upgrades());
        let request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header("host", "banger")
            .header("connection", "upgrade")
            .header("upgrade", UPGRADE_PROTOCOL)
            .body(Empty::<Bytes>::new())
            .map_err(|e| ClientError::Decode {
                what: format!("GET {path}"),
                message: e.to_string(),
            })?;
        let mut response = sender.send_request(request).await.map_err(http)?;
        let status = response.status();
        if status == StatusCode::SWITCHING_PROTOCOLS {
            let upgraded = hyper::upgrade::on(&mut response).await.map_err(http)?;
            return Ok(TokioIo::new(upgraded));
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(http)?
            .to_bytes();
        if status.is_success() {
            return Err(ClientError::Decode {
                what: format!("GET {path}"),
                message: format!("expected 101 Switching Protocols, got {status}"),
            });
        }
        Err(api_error(status, &body))
    }
}

/// The name of the group that owns `socket` (blocking: a stat and a group lookup).
fn socket_group_name(socket: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let gid = std::fs::metadata(socket).ok()?.gid();
    nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
        .ok()
        .flatten()
        .map(|g| g.name)
}

/// How long an export may take: the daemon bounds its own work (about ten minutes of
/// guest I/O, then the host diff); this bounds the whole exchange.
pub const EXPORT_LIMIT: Duration = Duration::from_secs(30 * 60);

/// What an export answered besides the patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    /// Bytes of patch received.
    pub bytes: u64,
    /// The base commit the patch applies to (absent: the empty tree).
    pub base_commit: Option<String>,
    /// `guest-git` or `host-diff`.
    pub method: String,
}

/// Decodes an error response; a body that is not an [`ErrorBody`] is kept as text.
pub fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    let body = serde_json::from_slice::<ErrorBody>(body).unwrap_or_else(|_| ErrorBody {
        error: format!("HTTP {status}: {}", String::from_utf8_lossy(body).trim()),
        code: if status == StatusCode::NOT_FOUND {
            "not-found"
        } else {
            "internal"
        }
        .to_string(),
        problems: Vec::new(),
    });
    ClientError::Api {
        status: status.as_u16(),
        body,
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn object_paths_use_plural_kinds() {
        assert_eq!(object_path(Kind::Vm, "dev"), "/v1/objects/vms/dev");
        assert_eq!(object_path(Kind::Image, "a b"), "/v1/objects/images/a%20b");
    }

    #[test]
    fn event_query_string() {
        assert_eq!(EventQuery::default().path(), "/v1/events");
        let q = EventQuery {
            kind: Some(Kind::Workspace),
            name: Some("src".into()),
            after: Some(7),
            wait_seconds: Some(30),
        };
        assert_eq!(
            q.path(),
            "/v1/events?kind=workspaces&name=src&after=7&waitSeconds=30"
        );
    }

    #[test]
    fn non_json_error_bodies_are_kept_as_text() {
        let err = api_error(StatusCode::BAD_GATEWAY, b"oops");
        assert_eq!(
            err.to_string(),
            "Error from daemon: HTTP 502 Bad Gateway: oops"
        );
        let err = api_error(
            StatusCode::NOT_FOUND,
            br#"{"error":"vm \"x\" not found","code":"not-found"}"#,
        );
        assert!(err.is_not_found());
        assert_eq!(err.to_string(), "Error from daemon: vm \"x\" not found");
    }

    #[tokio::test]
    async fn a_connection_closed_without_an_answer_says_why_that_happens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("refusing.sock");
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
        // Like the daemon refusing a peer: accept, close, no HTTP.
        let refuser = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            drop(stream);
        });
        let err = DaemonClient::new(&socket)
            .list(None)
            .await
            .expect_err("refused");
        assert!(
            matches!(err, ClientError::ClosedWithoutAnswer { .. }),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("neither root nor in the socket's group"),
            "{err}"
        );
        refuser.await.expect("refuser");
    }

    #[test]
    fn permission_denied_names_the_group_to_join() {
        let err = ClientError::NotAllowed {
            socket: "/run/banger/banger.sock".into(),
            group: Some("banger".into()),
        };
        assert_eq!(
            err.to_string(),
            "permission denied on the banger daemon's socket /run/banger/banger.sock: add yourself to the banger group (sudo usermod -aG banger $USER, then log in again), or run as root"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        let mine = nix::unistd::Group::from_gid(nix::unistd::getegid())
            .expect("group lookup")
            .map(|g| g.name);
        assert_eq!(socket_group_name(&socket), mine);
    }

    #[tokio::test]
    async fn absent_socket_says_how_to_start_the_daemon() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("none.sock");
        let err = DaemonClient::new(&socket)
            .list(None)
            .await
            .expect_err("no daemon");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "cannot reach the banger daemon at {}: ",
                socket.display()
            )),
            "{text}"
        );
        assert!(
            text.ends_with("start it with `banger daemon` (or `sudo banger daemon`)"),
            "{text}"
        );
    }
}
