//! # banger-test-firecracker: TEST SUPPORT for banger's Firecracker driver
//!
//! This crate is never part of banger. It holds a model of Firecracker's HTTP API on a
//! Unix socket (this library), a stand-in `firecracker` binary that serves the model
//! (`banger-test-firecracker-stand-in`, `src/stand_in.rs`), and the driver's tests
//! against both (`tests/firecracker_api.rs`). They live in their own crate so that the
//! production crates carry no test-only binaries, while `cargo test` still builds the
//! stand-in next to the tests that run it.
//!
//! No Firecracker binary exists on banger's machines, so the driver is tested against
//! this server. It is not a hypervisor: it boots nothing. It checks every request
//! against the part of Firecracker's published API description (the swagger file
//! `src/firecracker/swagger/firecracker.yaml`, API version 1.9, and
//! `docs/api_requests/`) that is encoded below as data ([`OPERATIONS`] and the
//! [`Definition`]s), and answers the way Firecracker does: `204` with no body on
//! success, `400` with `{"fault_message": …}` on a refusal, `200` with JSON for reads.
//!
//! Checks, per request:
//! - method and path must be a known operation (path templates like
//!   `/drives/{drive_id}`);
//! - `PUT`/`PATCH` bodies must be JSON objects matching the operation's definition:
//!   required fields present, every field known, each of the right type, integers in
//!   range, enum values valid (recursively for nested objects); `GET` takes no body;
//! - the id in the path must be alphanumeric or `_` and equal the id in the body
//!   (`drive_id`, `iface_id`);
//! - pre-boot-only operations are refused after `InstanceStart`, post-boot-only ones
//!   before it; `InstanceStart` is accepted once;
//! - semantic rules Firecracker applies when it acts on a request: the kernel, initrd
//!   and drive files and the logger's `log_path` must exist, one root drive at most, a valid and unique guest MAC,
//!   a unique tap name of at most 15 bytes, SMT needs 1 or an even vCPU count, memory
//!   is not zero, virtio-block drives carry `path_on_host` and `is_read_only`;
//! - banger's launch contract, stricter than Firecracker (which defaults the machine
//!   config and needs only a boot source): `InstanceStart` is refused unless the
//!   machine config, the boot source and a root drive were all `PUT` before.
//!
//! Every request is recorded ([`RecordedRequest`]) so tests can assert order and bodies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::UnixListener;
use tokio::sync::Notify;

/// The Firecracker version the model reports.
pub const MODEL_VERSION: &str = "1.9.0";

// ---------------------------------------------------------------------------------
// The encoded subset of the API description.
// ---------------------------------------------------------------------------------

/// The type of one property of a definition.
#[derive(Debug, Clone, Copy)]
pub enum FieldType {
    /// JSON string.
    String,
    /// JSON boolean.
    Boolean,
    /// JSON integer (no fraction), optionally bounded.
    Integer {
        /// Inclusive lower bound.
        minimum: Option<i64>,
        /// Inclusive upper bound.
        maximum: Option<i64>,
    },
    /// A string from a fixed set.
    Enum(&'static [&'static str]),
    /// A string from a fixed set, compared case-insensitively (the logger level).
    EnumIgnoreCase(&'static [&'static str]),
    /// A nested object.
    Object(&'static Definition),
}

/// One property of a definition.
#[derive(Debug, Clone, Copy)]
pub struct Property {
    /// JSON key.
    pub name: &'static str,
    /// Its type.
    pub ty: FieldType,
}

/// An object definition of the API description.
#[derive(Debug)]
pub struct Definition {
    /// Definition name, as in the description.
    pub name: &'static str,
    /// Required keys.
    pub required: &'static [&'static str],
    /// All known keys.
    pub properties: &'static [Property],
}

const fn prop(name: &'static str, ty: FieldType) -> Property {
    Property { name, ty }
}

const STRING: FieldType = FieldType::String;
const BOOLEAN: FieldType = FieldType::Boolean;
const INTEGER: FieldType = FieldType::Integer {
    minimum: None,
    maximum: None,
};
const NON_NEGATIVE: FieldType = FieldType::Integer {
    minimum: Some(0),
    maximum: None,
};

/// `TokenBucket`.
pub static TOKEN_BUCKET: Definition = Definition {
    name: "TokenBucket",
    required: &["refill_time", "size"],
    properties: &[
        prop("one_time_burst", NON_NEGATIVE),
        prop("refill_time", NON_NEGATIVE),
        prop("size", NON_NEGATIVE),
    ],
};

/// `RateLimiter`.
pub static RATE_LIMITER: Definition = Definition {
    name: "RateLimiter",
    required: &[],
    properties: &[
        prop("bandwidth", FieldType::Object(&TOKEN_BUCKET)),
        prop("ops", FieldType::Object(&TOKEN_BUCKET)),
    ],
};

/// `Logger`.
pub static LOGGER: Definition = Definition {
    name: "Logger",
    required: &[],
    properties: &[
        prop(
            "level",
            FieldType::EnumIgnoreCase(&["Error", "Warning", "Info", "Debug", "Trace", "Off"]),
        ),
        prop("log_path", STRING),
        prop("show_level", BOOLEAN),
        prop("show_log_origin", BOOLEAN),
        prop("module", STRING),
    ],
};

/// `MachineConfiguration`.
pub static MACHINE_CONFIGURATION: Definition = Definition {
    name: "MachineConfiguration",
    required: &["mem_size_mib", "vcpu_count"],
    properties: &[
        prop(
            "cpu_template",
            FieldType::Enum(&["C3", "T2", "T2S", "T2CL", "T2A", "V1N1", "None"]),
        ),
        prop("smt", BOOLEAN),
        prop("mem_size_mib", INTEGER),
        prop("track_dirty_pages", BOOLEAN),
        prop(
            "vcpu_count",
            FieldType::Integer {
                minimum: Some(1),
                maximum: Some(32),
            },
        ),
        prop("huge_pages", FieldType::Enum(&["None", "2M"])),
    ],
};

/// `BootSource`.
pub static BOOT_SOURCE: Definition = Definition {
    name: "BootSource",
    required: &["kernel_image_path"],
    properties: &[
        prop("boot_args", STRING),
        prop("initrd_path", STRING),
        prop("kernel_image_path", STRING),
    ],
};

/// `Drive`.
pub static DRIVE: Definition = Definition {
    name: "Drive",
    required: &["drive_id", "is_root_device"],
    properties: &[
        prop("drive_id", STRING),
        prop("partuuid", STRING),
        prop("is_root_device", BOOLEAN),
        prop("cache_type", FieldType::Enum(&["Unsafe", "Writeback"])),
        prop("is_read_only", BOOLEAN),
        prop("path_on_host", STRING),
        prop("rate_limiter", FieldType::Object(&RATE_LIMITER)),
        prop("io_engine", FieldType::Enum(&["Sync", "Async"])),
        prop("socket", STRING),
    ],
};

/// `PartialDrive`.
pub static PARTIAL_DRIVE: Definition = Definition {
    name: "PartialDrive",
    required: &["drive_id"],
    properties: &[
        prop("drive_id", STRING),
        prop("path_on_host", STRING),
        prop("rate_limiter", FieldType::Object(&RATE_LIMITER)),
    ],
};

/// `NetworkInterface`.
pub static NETWORK_INTERFACE: Definition = Definition {
    name: "NetworkInterface",
    required: &["host_dev_name", "iface_id"],
    properties: &[
        prop("guest_mac", STRING),
        prop("host_dev_name", STRING),
        prop("iface_id", STRING),
        prop("rx_rate_limiter", FieldType::Object(&RATE_LIMITER)),
        prop("tx_rate_limiter", FieldType::Object(&RATE_LIMITER)),
    ],
};

/// `PartialNetworkInterface`.
pub static PARTIAL_NETWORK_INTERFACE: Definition = Definition {
    name: "PartialNetworkInterface",
    required: &["iface_id"],
    properties: &[
        prop("iface_id", STRING),
        prop("rx_rate_limiter", FieldType::Object(&RATE_LIMITER)),
        prop("tx_rate_limiter", FieldType::Object(&RATE_LIMITER)),
    ],
};

/// `InstanceActionInfo`.
pub static INSTANCE_ACTION_INFO: Definition = Definition {
    name: "InstanceActionInfo",
    required: &["action_type"],
    properties: &[prop(
        "action_type",
        FieldType::Enum(&["FlushMetrics", "InstanceStart", "SendCtrlAltDel"]),
    )],
};

/// `Vm`.
pub static VM: Definition = Definition {
    name: "Vm",
    required: &["state"],
    properties: &[prop("state", FieldType::Enum(&["Paused", "Resumed"]))],
};

/// When an operation is allowed relative to `InstanceStart`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Always.
    Any,
    /// Only before the guest was started ("Pre-boot only").
    PreBoot,
    /// Only after ("Post-boot only").
    PostBoot,
}

/// One operation of the API: method, path template, body definition, phase.
#[derive(Debug)]
pub struct Operation {
    /// HTTP method.
    pub method: &'static str,
    /// Path template; `{name}` matches one non-empty segment.
    pub path: &'static str,
    /// Body definition (`None`: the operation takes no body).
    pub body: Option<&'static Definition>,
    /// When it is allowed.
    pub phase: Phase,
    /// The body field that must equal the path parameter, if any.
    pub id_field: Option<&'static str>,
}

/// The operations the model serves.
pub static OPERATIONS: &[Operation] = &[
    Operation {
        method: "GET",
        path: "/",
        body: None,
        phase: Phase::Any,
        id_field: None,
    },
    Operation {
        method: "GET",
        path: "/version",
        body: None,
        phase: Phase::Any,
        id_field: None,
    },
    Operation {
        method: "GET",
        path: "/machine-config",
        body: None,
        phase: Phase::Any,
        id_field: None,
    },
    Operation {
        method: "PUT",
        path: "/actions",
        body: Some(&INSTANCE_ACTION_INFO),
        phase: Phase::Any,
        id_field: None,
    },
    Operation {
        method: "PUT",
        path: "/logger",
        body: Some(&LOGGER),
        phase: Phase::PreBoot,
        id_field: None,
    },
    Operation {
        method: "PUT",
        path: "/machine-config",
        body: Some(&MACHINE_CONFIGURATION),
        phase: Phase::PreBoot,
        id_field: None,
    },
    Operation {
        method: "PUT",
        path: "/boot-source",
        body: Some(&BOOT_SOURCE),
        phase: Phase::PreBoot,
        id_field: None,
    },
    Operation {
        method: "PUT",
        path: "/drives/{drive_id}",
        body: Some(&DRIVE),
        phase: Phase::PreBoot,
        id_field: Some("drive_id"),
    },
    Operation {
        method: "PATCH",
        path: "/drives/{drive_id}",
        body: Some(&PARTIAL_DRIVE),
        phase: Phase::PostBoot,
        id_field: Some("drive_id"),
    },
    Operation {
        method: "PUT",
        path: "/network-interfaces/{iface_id}",
        body: Some(&NETWORK_INTERFACE),
        phase: Phase::PreBoot,
        id_field: Some("iface_id"),
    },
    Operation {
        method: "PATCH",
        path: "/network-interfaces/{iface_id}",
        body: Some(&PARTIAL_NETWORK_INTERFACE),
        phase: Phase::PostBoot,
        id_field: Some("iface_id"),
    },
    Operation {
        method: "PATCH",
        path: "/vm",
        body: Some(&VM),
        phase: Phase::PostBoot,
        id_field: None,
    },
];

/// Finds the operation for `method path`; returns it and the path parameter, if any.
pub fn route(method: &str, path: &str) -> Option<(&'static Operation, Option<String>)> {
    let segments: Vec<&str> = path.split('/').collect();
    OPERATIONS.iter().find_map(|op| {
        if op.method != method {
            return None;
        }
        let template: Vec<&str> = op.path.split('/').collect();
        if template.len() != segments.len() {
            return None;
        }
        let mut param = None;
        for (t, s) in template.iter().zip(&segments) {
            if t.starts_with('{') && t.ends_with('}') {
                if s.is_empty() {
                    return None;
                }
                param = Some((*s).to_owned());
            } else if t != s {
                return None;
            }
        }
        Some((op, param))
    })
}

/// Checks `value` against `definition`; the error names the definition and field.
pub fn check_definition(definition: &Definition, value: &Value) -> Result<(), String> {
    let Value::Object(object) = value else {
        return Err(format!("{} must be a JSON object", definition.name));
    };
    for (key, field) in object {
        let Some(property) = definition.properties.iter().find(|p| p.name == key) else {
            let known: Vec<&str> = definition.properties.iter().map(|p| p.name).collect();
            return Err(format!(
                "unknown field `{key}` in {}, expected one of {}",
                definition.name,
                known.join(", ")
            ));
        };
        check_type(definition.name, key, property.ty, field)?;
    }
    for required in definition.required {
        if !object.contains_key(*required) {
            return Err(format!("missing field `{required}` in {}", definition.name));
        }
    }
    Ok(())
}

fn check_type(owner: &str, key: &str, ty: FieldType, value: &Value) -> Result<(), String> {
    let wrong = |expected: &str| Err(format!("{owner}.{key}: expected {expected}, got {value}"));
    match ty {
        FieldType::String => {
            if !value.is_string() {
                return wrong("a string");
            }
        }
        FieldType::Boolean => {
            if !value.is_boolean() {
                return wrong("a boolean");
            }
        }
        FieldType::Integer { minimum, maximum } => {
            let Some(n) = value.as_i64().or_else(|| value.as_u64().map(|_| i64::MAX)) else {
                return wrong("an integer");
            };
            if minimum.is_some_and(|min| n < min) || maximum.is_some_and(|max| n > max) {
                return Err(format!(
                    "{owner}.{key}: {value} is out of range [{}, {}]",
                    minimum.map_or("-inf".to_owned(), |v| v.to_string()),
                    maximum.map_or("inf".to_owned(), |v| v.to_string())
                ));
            }
        }
        FieldType::Enum(values) | FieldType::EnumIgnoreCase(values) => {
            let Some(s) = value.as_str() else {
                return wrong("a string");
            };
            let ignore_case = matches!(ty, FieldType::EnumIgnoreCase(_));
            let valid = values.iter().any(|v| {
                if ignore_case {
                    v.eq_ignore_ascii_case(s)
                } else {
                    *v == s
                }
            });
            if !valid {
                return Err(format!(
                    "{owner}.{key}: unknown variant `{s}`, expected one of {}",
                    values.join(", ")
                ));
            }
        }
        FieldType::Object(definition) => {
            check_definition(definition, value).map_err(|e| format!("{owner}.{key}: {e}"))?
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// The instance model.
// ---------------------------------------------------------------------------------

/// One request as the model saw it, with its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Parsed JSON body (`Null` when empty; a string when it was not JSON).
    pub body: Value,
    /// Status answered.
    pub status: u16,
    /// `fault_message` answered, for refusals.
    pub fault_message: Option<String>,
}

/// Something the instance did that the host process may act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceEvent {
    /// `InstanceStart` succeeded.
    Started,
    /// `SendCtrlAltDel` was accepted.
    CtrlAltDel,
}

/// An answer of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// JSON body (`None` for 204).
    pub body: Option<Value>,
    /// What happened, if anything worth telling the process.
    pub event: Option<InstanceEvent>,
}

impl Answer {
    fn no_content() -> Self {
        Self {
            status: 204,
            body: None,
            event: None,
        }
    }

    fn ok(body: Value) -> Self {
        Self {
            status: 200,
            body: Some(body),
            event: None,
        }
    }

    fn fault(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            body: Some(json!({ "fault_message": message.into() })),
            event: None,
        }
    }
}

/// The state of one modelled Firecracker instance.
#[derive(Debug)]
pub struct FirecrackerModel {
    instance_id: String,
    started: bool,
    paused: bool,
    logger: Option<Value>,
    machine_config: Option<Value>,
    boot_source: Option<Value>,
    drives: BTreeMap<String, Value>,
    interfaces: BTreeMap<String, Value>,
    journal: Vec<RecordedRequest>,
    journal_file: Option<PathBuf>,
}

/// The message Firecracker gives for a pre-boot-only request after the start.
pub const NOT_AFTER_START: &str =
    "The requested operation is not supported after starting the microVM.";
/// The message Firecracker gives for a post-boot-only request before the start.
pub const NOT_BEFORE_START: &str =
    "The requested operation is not supported before starting the microVM.";

impl FirecrackerModel {
    /// A fresh instance started with `--id instance_id`.
    pub fn new(instance_id: impl Into<String>) -> Self {
        Self {
            instance_id: instance_id.into(),
            started: false,
            paused: false,
            logger: None,
            machine_config: None,
            boot_source: None,
            drives: BTreeMap::new(),
            interfaces: BTreeMap::new(),
            journal: Vec::new(),
            journal_file: None,
        }
    }

    /// The same model, also appending each [`RecordedRequest`] as one JSON line to
    /// `path` (how a stand-in process shows its journal to the test).
    pub fn with_journal_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.journal_file = Some(path.into());
        self
    }

    /// Every request so far, in arrival order.
    pub fn journal(&self) -> &[RecordedRequest] {
        &self.journal
    }

    /// Whether `InstanceStart` succeeded.
    pub fn started(&self) -> bool {
        self.started
    }

    /// The instance state as `GET /` reports it.
    pub fn state(&self) -> &'static str {
        match (self.started, self.paused) {
            (false, _) => "Not started",
            (true, false) => "Running",
            (true, true) => "Paused",
        }
    }

    /// Handles one request and records it.
    pub fn handle(&mut self, method: &str, path: &str, body: &[u8]) -> Answer {
        let parsed = if body.iter().all(u8::is_ascii_whitespace) {
            Ok(Value::Null)
        } else {
            serde_json::from_slice::<Value>(body)
                .map_err(|e| format!("request body is not valid JSON: {e}"))
        };
        let answer = match &parsed {
            Ok(value) => self.dispatch(method, path, value),
            Err(message) => Answer::fault(message.clone()),
        };
        let recorded_body = match parsed {
            Ok(value) => value,
            Err(_) => Value::String(String::from_utf8_lossy(body).into_owned()),
        };
        let record = RecordedRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            body: recorded_body,
            status: answer.status,
            fault_message: answer
                .body
                .as_ref()
                .filter(|_| answer.status >= 400)
                .and_then(|b| b.get("fault_message"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        };
        if let Some(path) = &self.journal_file {
            append_json_line(path, &record);
        }
        self.journal.push(record);
        answer
    }

    fn dispatch(&mut self, method: &str, path: &str, body: &Value) -> Answer {
        let Some((operation, param)) = route(method, path) else {
            return Answer::fault(format!(
                "Invalid request method and/or path: {method} {path}."
            ));
        };
        match (operation.body, body) {
            (None, Value::Null) => {}
            (None, _) => return Answer::fault(format!("{method} request cannot have a body.")),
            (Some(_), Value::Null) => return Answer::fault(format!("Empty {method} request.")),
            (Some(definition), body) => {
                if let Err(message) = check_definition(definition, body) {
                    return Answer::fault(format!("An error occurred when deserializing the json body of a request: {message}."));
                }
            }
        }
        if let Some(param) = &param {
            if !param.chars().all(|c| c == '_' || c.is_alphanumeric()) {
                return Answer::fault(
                    "API Resource IDs can only contain alphanumeric characters and underscores.",
                );
            }
        }
        if let (Some(field), Some(param)) = (operation.id_field, &param) {
            if body.get(field).and_then(Value::as_str) != Some(param.as_str()) {
                return Answer::fault("The id from the path does not match the id from the body!");
            }
        }
        match (operation.phase, self.started) {
            (Phase::PreBoot, true) => return Answer::fault(NOT_AFTER_START),
            (Phase::PostBoot, false) => return Answer::fault(NOT_BEFORE_START),
            _ => {}
        }
        match (method, operation.path) {
            ("GET", "/") => Answer::ok(json!({
                "app_name": "Firecracker",
                "id": self.instance_id,
                "state": self.state(),
                "vmm_version": MODEL_VERSION,
            })),
            ("GET", "/version") => Answer::ok(json!({ "firecracker_version": MODEL_VERSION })),
            ("GET", "/machine-config") => Answer::ok(self.machine_config.clone().unwrap_or_else(
                || json!({"vcpu_count": 1, "mem_size_mib": 128, "smt": false, "track_dirty_pages": false}),
            )),
            ("PUT", "/actions") => self.action(body),
            ("PUT", "/logger") => self.put_logger(body),
            ("PUT", "/machine-config") => self.put_machine_config(body),
            ("PUT", "/boot-source") => self.put_boot_source(body),
            ("PUT", "/drives/{drive_id}") => self.put_drive(body),
            ("PUT", "/network-interfaces/{iface_id}") => self.put_interface(body),
            ("PATCH", "/drives/{drive_id}") => self.patch_drive(body),
            ("PATCH", "/network-interfaces/{iface_id}") => {
                let id = str_field(body, "iface_id");
                if self.interfaces.contains_key(id) {
                    Answer::no_content()
                } else {
                    Answer::fault(format!("Invalid network interface id: {id}"))
                }
            }
            ("PATCH", "/vm") => {
                self.paused = str_field(body, "state") == "Paused";
                Answer::no_content()
            }
            _ => Answer::fault(format!("Invalid request method and/or path: {method} {path}.")),
        }
    }

    fn action(&mut self, body: &Value) -> Answer {
        match str_field(body, "action_type") {
            "InstanceStart" => {
                if self.started {
                    return Answer::fault(NOT_AFTER_START);
                }
                // Firecracker itself needs only the boot source; banger's contract also
                // demands an explicit machine config and a root drive.
                let mut missing = Vec::new();
                if self.boot_source.is_none() {
                    missing.push("boot source");
                }
                if self.machine_config.is_none() {
                    missing.push("machine configuration");
                }
                if !self
                    .drives
                    .values()
                    .any(|d| d["is_root_device"] == json!(true))
                {
                    missing.push("root drive");
                }
                if !missing.is_empty() {
                    return Answer::fault(format!(
                        "Cannot start microvm without configuration: missing {}.",
                        missing.join(", ")
                    ));
                }
                self.started = true;
                Answer {
                    event: Some(InstanceEvent::Started),
                    ..Answer::no_content()
                }
            }
            "SendCtrlAltDel" => {
                if !self.started {
                    return Answer::fault(NOT_BEFORE_START);
                }
                Answer {
                    event: Some(InstanceEvent::CtrlAltDel),
                    ..Answer::no_content()
                }
            }
            // No metrics system is ever configured in this model.
            _ => Answer::fault("The metrics system is not initialized."),
        }
    }

    fn put_logger(&mut self, body: &Value) -> Answer {
        if let Some(path) = body.get("log_path").and_then(Value::as_str) {
            // Firecracker opens an existing file or named pipe; it does not create one.
            if !Path::new(path).exists() {
                return Answer::fault(format!(
                    "Cannot initialize the logger: cannot open {path}: No such file or directory"
                ));
            }
        }
        self.logger = Some(body.clone());
        Answer::no_content()
    }

    fn put_machine_config(&mut self, body: &Value) -> Answer {
        let vcpus = body["vcpu_count"].as_i64().unwrap_or(0);
        let memory = body["mem_size_mib"].as_i64().unwrap_or(0);
        if memory <= 0 {
            return Answer::fault("The memory size (MiB) is invalid.");
        }
        if body.get("smt") == Some(&json!(true)) && vcpus > 1 && vcpus % 2 == 1 {
            return Answer::fault("The number of vCPUs is invalid: with SMT it must be 1 or even.");
        }
        if body.get("huge_pages") == Some(&json!("2M")) && memory % 2 == 1 {
            return Answer::fault(
                "The memory size must be a multiple of 2 MiB with 2M huge pages.",
            );
        }
        self.machine_config = Some(body.clone());
        Answer::no_content()
    }

    fn put_boot_source(&mut self, body: &Value) -> Answer {
        let kernel = str_field(body, "kernel_image_path");
        if !Path::new(kernel).is_file() {
            return Answer::fault(format!(
                "The kernel file cannot be opened: No such file or directory (os error 2): {kernel}"
            ));
        }
        if let Some(initrd) = body.get("initrd_path").and_then(Value::as_str) {
            if !Path::new(initrd).is_file() {
                return Answer::fault(format!(
                    "The initrd file cannot be opened: No such file or directory (os error 2): {initrd}"
                ));
            }
        }
        self.boot_source = Some(body.clone());
        Answer::no_content()
    }

    fn put_drive(&mut self, body: &Value) -> Answer {
        let id = str_field(body, "drive_id").to_owned();
        let vhost_user = body.get("socket").is_some();
        if vhost_user {
            for field in ["path_on_host", "is_read_only", "rate_limiter", "io_engine"] {
                if body.get(field).is_some() {
                    return Answer::fault(format!(
                        "Drive {id}: `{field}` must be omitted for a vhost-user-block drive."
                    ));
                }
            }
        } else {
            for field in ["path_on_host", "is_read_only"] {
                if body.get(field).is_none() {
                    return Answer::fault(format!(
                        "Drive {id}: `{field}` is required for a virtio-block drive."
                    ));
                }
            }
            let path = str_field(body, "path_on_host");
            if !Path::new(path).is_file() {
                return Answer::fault(format!(
                    "Unable to create the block device: cannot open {path}: No such file or directory (os error 2)"
                ));
            }
        }
        if body["is_root_device"] == json!(true)
            && self
                .drives
                .iter()
                .any(|(other, d)| *other != id && d["is_root_device"] == json!(true))
        {
            return Answer::fault("A root block device already exists!");
        }
        self.drives.insert(id, body.clone());
        Answer::no_content()
    }

    fn patch_drive(&mut self, body: &Value) -> Answer {
        let id = str_field(body, "drive_id");
        if self.drives.contains_key(id) {
            Answer::no_content()
        } else {
            Answer::fault(format!("Invalid block device ID: {id}"))
        }
    }

    fn put_interface(&mut self, body: &Value) -> Answer {
        let id = str_field(body, "iface_id").to_owned();
        let tap = str_field(body, "host_dev_name");
        if tap.is_empty() || tap.len() > 15 {
            return Answer::fault(format!(
                "Could not create the network device: invalid tap name {tap:?} (1 to 15 bytes)"
            ));
        }
        if let Some(mac) = body.get("guest_mac").and_then(Value::as_str) {
            if !is_mac(mac) {
                return Answer::fault(format!("Invalid MAC address: {mac}"));
            }
        }
        for (other, existing) in &self.interfaces {
            if *other == id {
                continue;
            }
            if existing["host_dev_name"] == body["host_dev_name"] {
                return Answer::fault(format!("The host device name {tap} is already in use."));
            }
            if body.get("guest_mac").is_some() && existing.get("guest_mac") == body.get("guest_mac")
            {
                return Answer::fault("The guest MAC address is already in use.");
            }
        }
        self.interfaces.insert(id, body.clone());
        Answer::no_content()
    }
}

fn append_json_line(path: &Path, record: &RecordedRequest) {
    use std::io::Write;
    let Ok(mut line) = serde_json::to_vec(record) else {
        return;
    };
    line.push(b'\n');
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = file.write_all(&line);
    }
}

/// Reads a journal file written by [`FirecrackerModel::with_journal_file`].
pub fn read_journal_file(path: &Path) -> Vec<RecordedRequest> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn str_field<'a>(body: &'a Value, key: &str) -> &'a str {
    body.get(key).and_then(Value::as_str).unwrap_or("")
}

fn is_mac(text: &str) -> bool {
    let parts: Vec<&str> = text.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

// ---------------------------------------------------------------------------------
// The HTTP shell.
// ---------------------------------------------------------------------------------

/// Called for each [`InstanceEvent`] (after the model changed, before the answer is
/// written).
pub type EventHook = Arc<dyn Fn(InstanceEvent) + Send + Sync>;

/// A running model server on a Unix socket. Dropping it stops accepting connections.
pub struct FcApiServer {
    socket: PathBuf,
    model: Arc<Mutex<FirecrackerModel>>,
    stop: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl FcApiServer {
    /// Binds `socket` and serves a fresh model with `--id instance_id`.
    pub fn start(
        socket: &Path,
        instance_id: &str,
        hook: Option<EventHook>,
    ) -> std::io::Result<Self> {
        Self::start_model(socket, FirecrackerModel::new(instance_id), hook)
    }

    /// Binds `socket` and serves `model`.
    pub fn start_model(
        socket: &Path,
        model: FirecrackerModel,
        hook: Option<EventHook>,
    ) -> std::io::Result<Self> {
        let listener = UnixListener::bind(socket)?;
        let model = Arc::new(Mutex::new(model));
        let stop = Arc::new(Notify::new());
        let task = tokio::spawn(serve(listener, Arc::clone(&model), hook, Arc::clone(&stop)));
        Ok(Self {
            socket: socket.to_path_buf(),
            model,
            stop,
            task,
        })
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Locks the model (to read the journal or state).
    pub fn model(&self) -> MutexGuard<'_, FirecrackerModel> {
        lock(&self.model)
    }

    /// A copy of the journal.
    pub fn journal(&self) -> Vec<RecordedRequest> {
        self.model().journal().to_vec()
    }
}

impl Drop for FcApiServer {
    fn drop(&mut self) {
        self.stop.notify_one();
        self.task.abort();
    }
}

fn lock(model: &Mutex<FirecrackerModel>) -> MutexGuard<'_, FirecrackerModel> {
    match model.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

async fn serve(
    listener: UnixListener,
    model: Arc<Mutex<FirecrackerModel>>,
    hook: Option<EventHook>,
    stop: Arc<Notify>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.notified() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let model = Arc::clone(&model);
        let hook = hook.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let model = Arc::clone(&model);
                let hook = hook.clone();
                async move { Ok::<_, hyper::Error>(answer(request, &model, hook.as_ref()).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    request: Request<Incoming>,
    model: &Mutex<FirecrackerModel>,
    hook: Option<&EventHook>,
) -> Response<Full<Bytes>> {
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let answer = lock(model).handle(&method, &path, &body);
    if let (Some(event), Some(hook)) = (answer.event, hook) {
        hook(event);
    }
    let mut response = Response::builder()
        .status(StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    let bytes = match answer.body {
        Some(body) => {
            response = response.header("content-type", "application/json");
            Bytes::from(body.to_string())
        }
        None => Bytes::new(),
    };
    response
        .body(Full::new(bytes))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}
