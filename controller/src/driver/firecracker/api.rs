//! Firecracker's HTTP API: the request and response bodies banger uses, and a small
//! client that speaks HTTP/1.1 to the API socket (one connection per request).
//!
//! The body types mirror the definitions of Firecracker's published API description
//! (`MachineConfiguration`, `BootSource`, `Drive`, `NetworkInterface`, `Logger`,
//! `InstanceActionInfo`, `InstanceInfo`, `Error`). Optional fields banger never sets are
//! left out rather than sent as `null`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::UnixStream;

/// `PUT /logger`: where Firecracker writes its own (human-readable) log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logger {
    /// File (or named pipe) the log goes to.
    pub log_path: String,
    /// Log level (`Error`, `Warning`, `Info`, `Debug`, `Trace`, `Off`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// Whether each line shows its level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
    /// Whether each line shows the source location it came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub show_log_origin: Option<bool>,
}

/// `PUT /machine-config`: vCPUs and memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineConfiguration {
    /// Number of vCPUs (1..=32).
    pub vcpu_count: u8,
    /// Guest memory in MiB.
    pub mem_size_mib: u64,
}

/// `PUT /boot-source`: kernel, initrd and kernel command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootSource {
    /// Host path of the uncompressed ELF kernel.
    pub kernel_image_path: String,
    /// Host path of the initrd, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
    /// Kernel command line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
}

/// `PUT /drives/{drive_id}`: one virtio-block drive backed by a host file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drive {
    /// Drive id; must equal the `{drive_id}` of the request path.
    pub drive_id: String,
    /// Host path of the backing file.
    pub path_on_host: String,
    /// Whether the guest boots from this drive (at most one drive may be root).
    pub is_root_device: bool,
    /// Whether the guest sees the drive read-only.
    pub is_read_only: bool,
}

/// `PUT /network-interfaces/{iface_id}`: one virtio-net device backed by a host tap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInterface {
    /// Interface id; must equal the `{iface_id}` of the request path.
    pub iface_id: String,
    /// Name of the host tap device.
    pub host_dev_name: String,
    /// MAC address the guest sees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
}

/// The `action_type` values of `PUT /actions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    /// Boots the configured guest. Accepted once.
    InstanceStart,
    /// Presses Ctrl-Alt-Del on the guest's keyboard (x86): an orderly reboot request.
    SendCtrlAltDel,
    /// Flushes the metrics file.
    FlushMetrics,
}

/// `PUT /actions` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceActionInfo {
    /// Which action.
    pub action_type: ActionType,
}

/// The `state` of [`InstanceInfo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceState {
    /// Configured (or not) but `InstanceStart` has not succeeded yet.
    #[serde(rename = "Not started")]
    NotStarted,
    /// The guest runs.
    Running,
    /// The guest's vCPUs are paused.
    Paused,
}

/// `GET /` answer: general information about the instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// Application name (`Firecracker`).
    pub app_name: String,
    /// The `--id` Firecracker was started with.
    pub id: String,
    /// Instance state.
    pub state: InstanceState,
    /// Firecracker's version.
    pub vmm_version: String,
}

/// Firecracker's error body (`400` and other failures).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiFault {
    /// What went wrong, in Firecracker's words.
    pub fault_message: String,
}

/// One configuration request: a `PUT` of a JSON body to a path.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiCall {
    /// Request path, e.g. `/drives/rootfs`.
    pub path: String,
    /// JSON body.
    pub body: serde_json::Value,
}

impl ApiCall {
    /// A `PUT path` call with `body` serialised to JSON.
    pub fn put<T: Serialize>(path: impl Into<String>, body: &T) -> Result<Self, ApiError> {
        let path = path.into();
        let body = serde_json::to_value(body).map_err(|source| ApiError::Encode {
            path: path.clone(),
            source,
        })?;
        Ok(Self { path, body })
    }
}

/// Errors talking to the Firecracker API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The socket could not be connected to.
    #[error("connect to API socket {socket}: {source}")]
    Connect {
        /// Socket path.
        socket: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The HTTP exchange failed (connection reset, malformed answer, …).
    #[error("{method} {path}: HTTP exchange failed: {reason}")]
    Http {
        /// Request method.
        method: Method,
        /// Request path.
        path: String,
        /// What failed.
        reason: String,
    },
    /// No complete answer within the timeout.
    #[error("{method} {path}: no answer within {timeout:?}")]
    Timeout {
        /// Request method.
        method: Method,
        /// Request path.
        path: String,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// Firecracker refused the request; `fault_message` is its explanation.
    #[error("{method} {path}: Firecracker answered {status}: {fault_message}")]
    Fault {
        /// Request method.
        method: Method,
        /// Request path.
        path: String,
        /// HTTP status code.
        status: u16,
        /// Firecracker's `fault_message` (or the raw body if it sent none).
        fault_message: String,
    },
    /// A success answer whose body could not be understood.
    #[error("{method} {path}: unexpected answer: {reason}")]
    Unexpected {
        /// Request method.
        method: Method,
        /// Request path.
        path: String,
        /// What was unexpected.
        reason: String,
    },
    /// A request body could not be encoded.
    #[error("encode body for {path}: {source}")]
    Encode {
        /// Request path.
        path: String,
        /// Underlying error.
        source: serde_json::Error,
    },
}

/// An HTTP/1.1 client for one Firecracker API socket. Every request opens its own
/// connection and is bounded by the client's timeout (connect included).
#[derive(Debug, Clone)]
pub struct ApiClient {
    socket: PathBuf,
    timeout: Duration,
}

impl ApiClient {
    /// A client for the API socket at `socket`, each request bounded by `timeout`.
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        Self {
            socket: socket.into(),
            timeout,
        }
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `PUT` a JSON body; success is any 2xx answer (Firecracker sends 204).
    pub async fn put_json(&self, path: &str, body: &serde_json::Value) -> Result<(), ApiError> {
        let bytes = serde_json::to_vec(body).map_err(|source| ApiError::Encode {
            path: path.to_owned(),
            source,
        })?;
        self.exchange(Method::PUT, path, Some(bytes)).await?;
        Ok(())
    }

    /// Sends one [`ApiCall`].
    pub async fn send(&self, call: &ApiCall) -> Result<(), ApiError> {
        self.put_json(&call.path, &call.body).await
    }

    /// `PUT /actions` with the given action.
    pub async fn action(&self, action_type: ActionType) -> Result<(), ApiError> {
        self.send(&ApiCall::put(
            "/actions",
            &InstanceActionInfo { action_type },
        )?)
        .await
    }

    /// `GET /`: the instance information.
    pub async fn instance_info(&self) -> Result<InstanceInfo, ApiError> {
        let body = self.exchange(Method::GET, "/", None).await?;
        serde_json::from_slice(&body).map_err(|e| ApiError::Unexpected {
            method: Method::GET,
            path: "/".to_owned(),
            reason: format!("instance info is not valid: {e}"),
        })
    }

    /// One request/response exchange; returns the body of a 2xx answer.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ApiError> {
        let attempt = self.exchange_unbounded(method.clone(), path, body);
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(ApiError::Timeout {
                method,
                path: path.to_owned(),
                timeout: self.timeout,
            }),
        }
    }

    async fn exchange_unbounded(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ApiError> {
        let http_error = |reason: String| ApiError::Http {
            method: method.clone(),
            path: path.to_owned(),
            reason,
        };
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ApiError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                .await
                .map_err(|e| http_error(e.to_string()))?;
        // The connection future does the actual I/O; it ends when `sender` is dropped.
        let driver = tokio::spawn(connection);

        let builder = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, "localhost")
            .header(ACCEPT, "application/json");
        let request = match body {
            Some(bytes) => builder
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(bytes))),
            None => builder.body(Full::new(Bytes::new())),
        }
        .map_err(|e| http_error(format!("build request: {e}")))?;

        let outcome = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| http_error(e.to_string()))?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| http_error(format!("read body: {e}")))?
                .to_bytes();
            Ok::<_, ApiError>((status, bytes))
        }
        .await;
        drop(sender);
        driver.abort();
        let (status, bytes) = outcome?;

        if status.is_success() {
            return Ok(bytes);
        }
        Err(ApiError::Fault {
            method,
            path: path.to_owned(),
            status: status.as_u16(),
            fault_message: fault_message(status, &bytes),
        })
    }
}

/// Firecracker's `fault_message` from an error body, else the body as text.
fn fault_message(status: StatusCode, body: &[u8]) -> String {
    if let Ok(fault) = serde_json::from_slice::<ApiFault>(body) {
        return fault.fault_message;
    }
    let text = String::from_utf8_lossy(body).trim().to_owned();
    if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("no error message")
            .to_owned()
    } else {
        text
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn instance_state_uses_firecrackers_spelling() {
        let info: InstanceInfo = serde_json::from_str(
            r#"{"app_name":"Firecracker","id":"x","state":"Not started","vmm_version":"1.9.0"}"#,
        )
        .unwrap();
        assert_eq!(info.state, InstanceState::NotStarted);
        assert_eq!(
            serde_json::to_value(InstanceState::Paused).unwrap(),
            serde_json::json!("Paused")
        );
    }

    #[test]
    fn optional_fields_are_omitted_not_null() {
        let body = serde_json::to_value(BootSource {
            kernel_image_path: "/k".into(),
            initrd_path: None,
            boot_args: None,
        })
        .unwrap();
        assert_eq!(body, serde_json::json!({"kernel_image_path": "/k"}));
        let nic = serde_json::to_value(NetworkInterface {
            iface_id: "eth0".into(),
            host_dev_name: "tap0".into(),
            guest_mac: None,
        })
        .unwrap();
        assert_eq!(
            nic,
            serde_json::json!({"iface_id": "eth0", "host_dev_name": "tap0"})
        );
    }

    #[test]
    fn action_body_names_the_action() {
        let call = ApiCall::put(
            "/actions",
            &InstanceActionInfo {
                action_type: ActionType::SendCtrlAltDel,
            },
        )
        .unwrap();
        assert_eq!(call.path, "/actions");
        assert_eq!(
            call.body,
            serde_json::json!({"action_type": "SendCtrlAltDel"})
        );
    }

    #[test]
    fn fault_message_prefers_firecrackers_field() {
        assert_eq!(
            fault_message(StatusCode::BAD_REQUEST, br#"{"fault_message":"bad vcpu"}"#),
            "bad vcpu"
        );
        assert_eq!(
            fault_message(StatusCode::BAD_REQUEST, b"plain text"),
            "plain text"
        );
        assert_eq!(fault_message(StatusCode::BAD_REQUEST, b""), "Bad Request");
    }
}
