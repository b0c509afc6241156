//! A small QMP (QEMU Machine Protocol) client over a Unix socket.
//!
//! QMP is newline-delimited JSON: the server greets (`{"QMP": …}`), the client
//! negotiates capabilities (`qmp_capabilities`), then sends `{"execute": …, "id": …}`
//! and gets `{"return": …}` or `{"error": {"class", "desc"}}` back, with asynchronous
//! `{"event": …}` messages interleaved at any time. [`QmpClient`] skips events while it
//! waits for the answer to its own command. Every call is bounded by a timeout, and a
//! line longer than [`MAX_LINE`] is refused.
//!
//! Parsing ([`parse_message`]) is pure and unit-tested; the client is the thin I/O shell.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// The longest QMP message accepted (QEMU's answers here are a few hundred bytes).
pub const MAX_LINE: u64 = 1024 * 1024;

/// Errors of a QMP exchange, naming the socket.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// Connecting, reading or writing failed.
    #[error("qmp {socket}: {operation}: {source}")]
    Io {
        /// Socket path.
        socket: PathBuf,
        /// What was attempted.
        operation: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// No answer within the timeout.
    #[error("qmp {socket}: {operation}: no answer within {timeout:?}")]
    Timeout {
        /// Socket path.
        socket: PathBuf,
        /// What was attempted.
        operation: String,
        /// The bound.
        timeout: Duration,
    },
    /// QEMU closed the connection.
    #[error("qmp {socket}: {operation}: connection closed by QEMU")]
    Closed {
        /// Socket path.
        socket: PathBuf,
        /// What was attempted.
        operation: String,
    },
    /// A message that is not valid QMP.
    #[error("qmp {socket}: malformed message: {reason}")]
    Protocol {
        /// Socket path.
        socket: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// QEMU answered a command with an error.
    #[error("qmp {socket}: {command}: {class}: {desc}")]
    Command {
        /// Socket path.
        socket: PathBuf,
        /// The command that failed.
        command: String,
        /// QMP error class, e.g. `GenericError`, `CommandNotFound`.
        class: String,
        /// Human-readable description.
        desc: String,
    },
}

/// One message from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum QmpMessage {
    /// The greeting, with QEMU's version as `major.minor.micro` if present.
    Greeting {
        /// QEMU version.
        version: Option<String>,
    },
    /// A successful answer.
    Return {
        /// The `id` echoed back, if the command carried one.
        id: Option<Value>,
        /// The `return` value.
        value: Value,
    },
    /// A failed command.
    Error {
        /// The `id` echoed back.
        id: Option<Value>,
        /// Error class.
        class: String,
        /// Description.
        desc: String,
    },
    /// An asynchronous event (`POWERDOWN`, `SHUTDOWN`, `STOP`, …).
    Event {
        /// Event name.
        name: String,
        /// Event data (`null` when absent).
        data: Value,
    },
}

/// Parses one QMP line.
pub fn parse_message(line: &str) -> Result<QmpMessage, String> {
    let value: Value = serde_json::from_str(line.trim())
        .map_err(|e| format!("not JSON ({e}): {}", excerpt(line)))?;
    let Value::Object(map) = value else {
        return Err(format!("not a JSON object: {}", excerpt(line)));
    };
    if let Some(greeting) = map.get("QMP") {
        let version = greeting.pointer("/version/qemu").and_then(|v| {
            Some(format!(
                "{}.{}.{}",
                v.get("major")?.as_u64()?,
                v.get("minor")?.as_u64()?,
                v.get("micro")?.as_u64()?
            ))
        });
        return Ok(QmpMessage::Greeting { version });
    }
    let id = map.get("id").cloned();
    if let Some(value) = map.get("return") {
        return Ok(QmpMessage::Return {
            id,
            value: value.clone(),
        });
    }
    if let Some(error) = map.get("error") {
        let field = |name: &str| error.get(name).and_then(Value::as_str).map(str::to_owned);
        let class =
            field("class").ok_or_else(|| format!("error without class: {}", excerpt(line)))?;
        let desc = field("desc").unwrap_or_default();
        return Ok(QmpMessage::Error { id, class, desc });
    }
    if let Some(name) = map.get("event").and_then(Value::as_str) {
        return Ok(QmpMessage::Event {
            name: name.to_owned(),
            data: map.get("data").cloned().unwrap_or(Value::Null),
        });
    }
    Err(format!("unknown message: {}", excerpt(line)))
}

fn excerpt(line: &str) -> String {
    let trimmed = line.trim();
    match trimmed.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &trimmed[..cut]),
        None => trimmed.to_owned(),
    }
}

/// The answer of `query-status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmStatus {
    /// Whether the vCPUs run.
    pub running: bool,
    /// QEMU's run state: `running`, `paused`, `shutdown`, `guest-panicked`, …
    pub status: String,
}

/// Parses the `return` value of `query-status`.
pub fn parse_status(value: &Value) -> Result<VmStatus, String> {
    let running = value
        .get("running")
        .and_then(Value::as_bool)
        .ok_or("query-status: no boolean 'running'")?;
    let status = value
        .get("status")
        .and_then(Value::as_str)
        .ok_or("query-status: no string 'status'")?;
    Ok(VmStatus {
        running,
        status: status.to_owned(),
    })
}

/// A negotiated QMP connection.
#[derive(Debug)]
pub struct QmpClient {
    socket: PathBuf,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
    timeout: Duration,
    version: Option<String>,
    events: Vec<String>,
}

impl QmpClient {
    /// Connects, reads the greeting and negotiates capabilities, all within `timeout`;
    /// later calls use the same `timeout` each.
    pub async fn connect(socket: &Path, timeout: Duration) -> Result<QmpClient, QmpError> {
        let stream = bounded(socket, "connect", timeout, async {
            UnixStream::connect(socket)
                .await
                .map_err(|source| io_error(socket, "connect", source))
        })
        .await?;
        let (read, writer) = stream.into_split();
        let mut client = QmpClient {
            socket: socket.to_path_buf(),
            reader: BufReader::new(read),
            writer,
            next_id: 1,
            timeout,
            version: None,
            events: Vec::new(),
        };
        let greeting =
            bounded(socket, "greeting", timeout, client.read_message("greeting")).await?;
        match greeting {
            QmpMessage::Greeting { version } => client.version = version,
            other => {
                return Err(QmpError::Protocol {
                    socket: socket.to_path_buf(),
                    reason: format!("expected a greeting, got {other:?}"),
                })
            }
        }
        client.execute("qmp_capabilities", None).await?;
        Ok(client)
    }

    /// QEMU's version from the greeting.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// Names of the asynchronous events seen so far on this connection.
    pub fn events(&self) -> &[String] {
        &self.events
    }

    /// Runs `command` with optional `arguments` and returns its `return` value.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = Map::new();
        request.insert("execute".to_owned(), json!(command));
        if let Some(arguments) = arguments {
            request.insert("arguments".to_owned(), arguments);
        }
        request.insert("id".to_owned(), json!(id));
        let mut line = Value::Object(request).to_string();
        line.push('\n');
        let socket = self.socket.clone();
        let timeout = self.timeout;
        bounded(&socket, command, timeout, async {
            self.writer
                .write_all(line.as_bytes())
                .await
                .map_err(|source| io_error(&self.socket, command, source))?;
            loop {
                match self.read_message(command).await? {
                    QmpMessage::Event { name, .. } => self.events.push(name),
                    QmpMessage::Return { id: answer, value } if id_matches(answer.as_ref(), id) => {
                        return Ok(value)
                    }
                    QmpMessage::Error {
                        id: answer,
                        class,
                        desc,
                    } if id_matches(answer.as_ref(), id) => {
                        return Err(QmpError::Command {
                            socket: self.socket.clone(),
                            command: command.to_owned(),
                            class,
                            desc,
                        })
                    }
                    // An answer to some other id (not ours): ignore.
                    QmpMessage::Return { .. } | QmpMessage::Error { .. } => {}
                    QmpMessage::Greeting { .. } => {
                        return Err(QmpError::Protocol {
                            socket: self.socket.clone(),
                            reason: "second greeting".to_owned(),
                        })
                    }
                }
            }
        })
        .await
    }

    /// `query-status`.
    pub async fn query_status(&mut self) -> Result<VmStatus, QmpError> {
        let value = self.execute("query-status", None).await?;
        parse_status(&value).map_err(|reason| QmpError::Protocol {
            socket: self.socket.clone(),
            reason,
        })
    }

    /// `system_powerdown`: presses the ACPI power button.
    pub async fn system_powerdown(&mut self) -> Result<(), QmpError> {
        self.execute("system_powerdown", None).await.map(drop)
    }

    /// `quit`: QEMU exits at once. A connection closed before the answer counts as
    /// success (QEMU may exit before flushing it).
    pub async fn quit(mut self) -> Result<(), QmpError> {
        match self.execute("quit", None).await {
            Ok(_) | Err(QmpError::Closed { .. }) => Ok(()),
            Err(QmpError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::ConnectionReset =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn read_message(&mut self, operation: &str) -> Result<QmpMessage, QmpError> {
        let mut buf = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut buf)
            .await
            .map_err(|source| io_error(&self.socket, operation, source))?;
        if n == 0 {
            return Err(QmpError::Closed {
                socket: self.socket.clone(),
                operation: operation.to_owned(),
            });
        }
        if buf.last() != Some(&b'\n') {
            let reason = if n as u64 >= MAX_LINE {
                format!("message longer than {MAX_LINE} bytes")
            } else {
                "truncated message".to_owned()
            };
            return Err(QmpError::Protocol {
                socket: self.socket.clone(),
                reason,
            });
        }
        let line = String::from_utf8_lossy(&buf);
        parse_message(&line).map_err(|reason| QmpError::Protocol {
            socket: self.socket.clone(),
            reason,
        })
    }
}

fn id_matches(answer: Option<&Value>, id: u64) -> bool {
    answer.and_then(Value::as_u64) == Some(id)
}

fn io_error(socket: &Path, operation: &str, source: std::io::Error) -> QmpError {
    QmpError::Io {
        socket: socket.to_path_buf(),
        operation: operation.to_owned(),
        source,
    }
}

async fn bounded<T>(
    socket: &Path,
    operation: &str,
    timeout: Duration,
    work: impl std::future::Future<Output = Result<T, QmpError>>,
) -> Result<T, QmpError> {
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(QmpError::Timeout {
            socket: socket.to_path_buf(),
            operation: operation.to_owned(),
            timeout,
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_greeting() {
        let line = r#"{"QMP": {"version": {"qemu": {"micro": 19, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7"}, "capabilities": ["oob"]}}"#;
        assert_eq!(
            parse_message(line).unwrap(),
            QmpMessage::Greeting {
                version: Some("7.2.19".to_owned())
            }
        );
        assert_eq!(
            parse_message(r#"{"QMP": {}}"#).unwrap(),
            QmpMessage::Greeting { version: None }
        );
    }

    #[test]
    fn parses_return_error_and_event() {
        assert_eq!(
            parse_message(
                "{\"return\": {\"status\": \"running\", \"running\": true}, \"id\": 3}\r\n"
            )
            .unwrap(),
            QmpMessage::Return {
                id: Some(json!(3)),
                value: json!({"status": "running", "running": true})
            }
        );
        assert_eq!(
            parse_message(r#"{"return": {}}"#).unwrap(),
            QmpMessage::Return {
                id: None,
                value: json!({})
            }
        );
        assert_eq!(
            parse_message(r#"{"id": 2, "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}"#).unwrap(),
            QmpMessage::Error { id: Some(json!(2)), class: "CommandNotFound".to_owned(), desc: "The command nope has not been found".to_owned() }
        );
        assert_eq!(
            parse_message(
                r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "POWERDOWN"}"#
            )
            .unwrap(),
            QmpMessage::Event {
                name: "POWERDOWN".to_owned(),
                data: Value::Null
            }
        );
        assert_eq!(
            parse_message(
                r#"{"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}"#
            )
            .unwrap(),
            QmpMessage::Event {
                name: "SHUTDOWN".to_owned(),
                data: json!({"guest": true, "reason": "guest-shutdown"})
            }
        );
    }

    #[test]
    fn rejects_malformed() {
        assert!(parse_message("not json").unwrap_err().contains("not JSON"));
        assert!(parse_message("[1,2]").unwrap_err().contains("object"));
        assert!(parse_message(r#"{"error": {"desc": "x"}}"#)
            .unwrap_err()
            .contains("class"));
        assert!(parse_message(r#"{"what": 1}"#)
            .unwrap_err()
            .contains("unknown"));
        let long = format!("{{\"x\": \"{}\"}}", "a".repeat(1000));
        assert!(parse_message(&long).unwrap_err().len() < 400);
    }

    #[test]
    fn parses_status() {
        assert_eq!(
            parse_status(&json!({"status": "shutdown", "singlestep": false, "running": false}))
                .unwrap(),
            VmStatus {
                running: false,
                status: "shutdown".to_owned()
            }
        );
        assert!(parse_status(&json!({"status": "running"})).is_err());
    }

    #[test]
    fn matches_ids() {
        assert!(id_matches(Some(&json!(4)), 4));
        assert!(!id_matches(Some(&json!("4")), 4));
        assert!(!id_matches(None, 4));
    }
}
