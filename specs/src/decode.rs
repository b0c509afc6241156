//! From a marked YAML tree to a canonical [`Resource`]: every field rule of the spec
//! language lives here.
//!
//! Decoding never stops at the first problem: it walks the whole document, records
//! every problem with the position and dotted path of the field, and produces a
//! resource only when there was no error. Defaults are filled and values canonicalised
//! on the way (sizes in bytes, paths absolute and lexically normalised), so an omitted
//! default and an explicit default decode to the same value.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Component, Path, PathBuf};

use crate::name;
use crate::problem::Severity;
use crate::quantity::ByteSize;
use crate::suggest::{did_you_mean, list};
use crate::types::{
    GuestMode, HypervisorChoice, ImageSpec, IncludeMode, Kind, NetworkSpec, Object, ObjectKey,
    ObjectMeta, OciSource, PowerState, Readiness, Resource, RestartPolicy, VmSpec, WorkspaceSpec,
    API_VERSION,
};
use crate::yaml::{shown_key, Entry, Mark, Node, Resolved, Value};

/// Default number of vCPUs of a VM.
pub const DEFAULT_VCPUS: u8 = 1;
/// Most vCPUs a VM may have.
pub const MAX_VCPUS: u8 = 32;
/// Default guest memory of a VM.
pub const DEFAULT_MEMORY: ByteSize = ByteSize::from_mib(512);
/// Least guest memory of a VM.
pub const MIN_MEMORY: ByteSize = ByteSize::from_mib(128);
/// Default size of a VM's writable root disk.
pub const DEFAULT_DISK: ByteSize = ByteSize::from_mib(2048);
/// Smallest root disk of a VM.
pub const MIN_DISK: ByteSize = ByteSize::from_mib(64);
/// Longest grace period a VM's stop may give its guest (`spec.stopGracePeriodSeconds`).
pub const MAX_STOP_GRACE_SECONDS: u32 = 3600;
/// Default readiness probe port (SSH).
pub const DEFAULT_TCP_PORT: u16 = 22;

/// A problem found while decoding one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// Where.
    pub mark: Mark,
    /// Dotted field path.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
    /// Error or warning.
    pub severity: Severity,
}

/// The result of decoding one document.
#[derive(Debug, Clone, Default)]
pub struct Decoded {
    /// The canonical resource, when the document has no error.
    pub resource: Option<Resource>,
    /// Kind and name as far as they could be read, valid or not.
    pub key: Option<ObjectKey>,
    /// Everything wrong with the document.
    pub problems: Vec<FieldProblem>,
}

/// Decodes one document's root node. Relative paths resolve against `base_dir`
/// (which should be absolute).
pub fn decode_document(root: &Node, base_dir: &Path) -> Decoded {
    let mut cx = Cx {
        base_dir,
        problems: Vec::new(),
    };
    let (resource, key) = cx.document(root);
    let has_error = cx.problems.iter().any(|p| p.severity == Severity::Error);
    Decoded {
        resource: if has_error { None } else { resource },
        key,
        problems: cx.problems,
    }
}

struct Cx<'a> {
    base_dir: &'a Path,
    problems: Vec<FieldProblem>,
}

/// The known keys of one mapping, looked up by name.
struct Fields<'n> {
    entries: BTreeMap<&'static str, &'n Entry>,
    /// Where to report a missing field: the key that holds this mapping.
    at: Mark,
    /// Dotted path of this mapping (`""` for the document).
    path: String,
}

impl<'n> Fields<'n> {
    fn path_of(&self, name: &str) -> String {
        join(&self.path, name)
    }

    /// The value of an optional field; an explicit null counts as absent.
    fn get(&self, name: &str) -> Option<&'n Node> {
        self.entries
            .get(name)
            .map(|e| &e.value)
            .filter(|v| !v.is_null())
    }

    fn key_mark(&self, name: &str) -> Option<Mark> {
        self.entries.get(name).map(|e| e.key_mark)
    }

    /// The value of a required field, or an error.
    fn required(&self, cx: &mut Cx<'_>, name: &str) -> Option<&'n Node> {
        match self.entries.get(name) {
            None => {
                let message = format!("missing required field `{name}`");
                cx.error(self.at, &self.path_of(name), message);
                None
            }
            Some(e) if e.value.is_null() => {
                cx.error(
                    e.key_mark,
                    &self.path_of(name),
                    format!("`{name}` needs a value"),
                );
                None
            }
            Some(e) => Some(&e.value),
        }
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

impl Cx<'_> {
    fn error(&mut self, mark: Mark, field: &str, message: String) {
        let field = (!field.is_empty()).then(|| field.to_string());
        self.problems.push(FieldProblem {
            mark,
            field,
            message,
            severity: Severity::Error,
        });
    }

    fn warn(&mut self, mark: Mark, field: &str, message: String) {
        let field = (!field.is_empty()).then(|| field.to_string());
        self.problems.push(FieldProblem {
            mark,
            field,
            message,
            severity: Severity::Warning,
        });
    }

    /// Checks that `node` is a mapping of known keys only.
    fn fields<'n>(
        &mut self,
        node: &'n Node,
        at: Mark,
        path: &str,
        allowed: &[&'static str],
    ) -> Option<Fields<'n>> {
        let Value::Map(entries) = &node.value else {
            let what = if path.is_empty() {
                "a document must be"
            } else {
                "must be"
            };
            self.error(
                node.mark,
                path,
                format!("{what} a mapping, found {}", node.type_name()),
            );
            return None;
        };
        let mut known = BTreeMap::new();
        for entry in entries {
            match allowed.iter().find(|a| **a == entry.key) {
                Some(name) => {
                    known.insert(*name, entry);
                }
                None => {
                    let shown = shown_key(&entry.key);
                    let hint = did_you_mean(&shown, allowed.iter().copied());
                    let message = if hint.is_empty() {
                        format!("unknown field `{shown}`; known fields: {}", list(allowed))
                    } else {
                        format!("unknown field `{shown}`{hint}")
                    };
                    self.error(entry.key_mark, &join(path, &shown), message);
                }
            }
        }
        Some(Fields {
            entries: known,
            at,
            path: path.to_string(),
        })
    }

    fn type_error(&mut self, node: &Node, field: &str, expected: &str) {
        let mut message = format!("expected {expected}, found {}", node.type_name());
        if let Value::Scalar(s) = &node.value {
            if expected == "a string" && s.plain {
                message.push_str(&format!("; quote it: \"{}\"", s.text));
            }
        }
        self.error(node.mark, field, message);
    }

    fn string(&mut self, node: &Node, field: &str) -> Option<String> {
        match &node.value {
            Value::Scalar(s) => match s.resolve() {
                Resolved::Str(t) => Some(t.to_string()),
                _ => {
                    self.type_error(node, field, "a string");
                    None
                }
            },
            _ => {
                self.type_error(node, field, "a string");
                None
            }
        }
    }

    fn boolean(&mut self, node: &Node, field: &str) -> Option<bool> {
        match &node.value {
            Value::Scalar(s) => match s.resolve() {
                Resolved::Bool(b) => Some(b),
                _ => {
                    self.type_error(node, field, "a boolean (true or false)");
                    None
                }
            },
            _ => {
                self.type_error(node, field, "a boolean (true or false)");
                None
            }
        }
    }

    fn integer(&mut self, node: &Node, field: &str, min: i128, max: i128) -> Option<i128> {
        let value = match &node.value {
            Value::Scalar(s) => match s.resolve() {
                Resolved::Int(n) => n,
                _ => {
                    self.type_error(node, field, "an integer");
                    return None;
                }
            },
            _ => {
                self.type_error(node, field, "an integer");
                return None;
            }
        };
        match value {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(n) => {
                self.error(
                    node.mark,
                    field,
                    format!("{n} is out of range; expected {min} to {max}"),
                );
                None
            }
            None => {
                self.error(
                    node.mark,
                    field,
                    format!("number is out of range; expected {min} to {max}"),
                );
                None
            }
        }
    }

    fn size(&mut self, node: &Node, field: &str) -> Option<ByteSize> {
        let parsed = match &node.value {
            Value::Scalar(s) => match s.resolve() {
                Resolved::Int(Some(n)) => ByteSize::from_int(n),
                Resolved::Int(None) => Err(crate::quantity::SizeError::Overflow(s.text.clone())),
                Resolved::Float => Err(crate::quantity::SizeError::Fractional(s.text.clone())),
                Resolved::Str(t) => ByteSize::parse(t),
                _ => {
                    self.type_error(node, field, "a size such as `512MiB` or a number of bytes");
                    return None;
                }
            },
            _ => {
                self.type_error(node, field, "a size such as `512MiB` or a number of bytes");
                return None;
            }
        };
        match parsed {
            Ok(size) => Some(size),
            Err(e) => {
                self.error(node.mark, field, e.to_string());
                None
            }
        }
    }

    /// A size that must be a whole number of MiB and at least `min`.
    fn mib_size(
        &mut self,
        node: &Node,
        field: &str,
        what: &str,
        min: ByteSize,
    ) -> Option<ByteSize> {
        let size = self.size(node, field)?;
        if !size.0.is_multiple_of(ByteSize::MIB) {
            self.error(
                node.mark,
                field,
                format!(
                    "{what} must be a whole number of MiB; {} bytes is not",
                    size.0
                ),
            );
            return None;
        }
        if size < min {
            self.error(
                node.mark,
                field,
                format!("{what} {size} is below the minimum of {min}"),
            );
            return None;
        }
        Some(size)
    }

    fn one_of<T: Copy>(
        &mut self,
        node: &Node,
        field: &str,
        options: &[(&'static str, T)],
    ) -> Option<T> {
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        let text = match &node.value {
            Value::Scalar(s) => match s.resolve() {
                Resolved::Str(t) => t,
                _ => {
                    self.type_error(node, field, &format!("one of {}", list(&names)));
                    return None;
                }
            },
            _ => {
                self.type_error(node, field, &format!("one of {}", list(&names)));
                return None;
            }
        };
        if let Some((_, value)) = options.iter().find(|(n, _)| *n == text) {
            return Some(*value);
        }
        let hint = did_you_mean(text, names.iter().copied());
        self.error(
            node.mark,
            field,
            format!(
                "unknown value `{text}`{hint}; expected one of {}",
                list(&names)
            ),
        );
        None
    }

    fn dns_name(&mut self, node: &Node, field: &str) -> Option<String> {
        let name = self.string(node, field)?;
        match name::check_dns_label(&name) {
            Ok(()) => Some(name),
            Err(message) => {
                self.error(node.mark, field, message);
                None
            }
        }
    }

    /// A host path, resolved against the base directory and normalised lexically.
    fn host_path(&mut self, node: &Node, field: &str) -> Option<PathBuf> {
        let text = self.string(node, field)?;
        if text.trim().is_empty() {
            self.error(node.mark, field, "path is empty".to_string());
            return None;
        }
        if text.contains('\0') {
            self.error(node.mark, field, "path contains a NUL byte".to_string());
            return None;
        }
        Some(normalize_lexically(&self.base_dir.join(text)))
    }

    /// Kernel command-line arguments: one line, no control characters; blank means none.
    fn kernel_args(&mut self, node: &Node, field: &str) -> Option<Option<String>> {
        let text = self.string(node, field)?;
        // Surrounding whitespace (such as the final newline of a `>` block) is dropped.
        let text = text.trim();
        if let Some(bad) = text.chars().find(|c| c.is_control()) {
            let message = format!(
                "kernel arguments must be one line without control characters; found `{}`",
                bad.escape_default()
            );
            self.error(node.mark, field, message);
            return None;
        }
        Some((!text.is_empty()).then(|| text.to_string()))
    }

    fn string_map(
        &mut self,
        node: &Node,
        field: &str,
        annotations: bool,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Value::Map(entries) = &node.value else {
            self.type_error(node, field, "a mapping of strings to strings");
            return out;
        };
        for entry in entries {
            let entry_field = format!("{field}.{}", shown_key(&entry.key));
            if let Err(message) = name::check_key(&entry.key) {
                self.error(entry.key_mark, &entry_field, message);
                continue;
            }
            let Some(value) = self.string(&entry.value, &entry_field) else {
                continue;
            };
            if annotations {
                match name::check_annotation(&entry.key, &value) {
                    Ok(None) => {}
                    Ok(Some(warning)) => self.warn(entry.key_mark, &entry_field, warning),
                    Err(message) => {
                        self.error(entry.value.mark, &entry_field, message);
                        continue;
                    }
                }
            } else if value.chars().any(char::is_control) {
                self.error(
                    entry.value.mark,
                    &entry_field,
                    "label values must be one line without control characters".into(),
                );
                continue;
            }
            out.insert(entry.key.clone(), value);
        }
        out
    }

    fn document(&mut self, root: &Node) -> (Option<Resource>, Option<ObjectKey>) {
        if let Value::Seq(_) = root.value {
            self.error(
                root.mark,
                "",
                "a document must be a mapping with apiVersion, kind, metadata and spec, found a list; put each object in its own document, separated by `---`".into(),
            );
            return (None, None);
        }
        // Missing top-level fields are reported at the document's first key.
        let first_key = match &root.value {
            Value::Map(entries) => entries.first().map_or(root.mark, |e| e.key_mark),
            _ => root.mark,
        };
        let Some(top) = self.fields(
            root,
            first_key,
            "",
            &["apiVersion", "kind", "metadata", "spec"],
        ) else {
            return (None, None);
        };
        if let Some(node) = top.required(self, "apiVersion") {
            if let Some(v) = self.string(node, "apiVersion") {
                if v != API_VERSION {
                    self.error(
                        node.mark,
                        "apiVersion",
                        format!("unsupported apiVersion `{v}`; expected `{API_VERSION}`"),
                    );
                }
            }
        }
        let kinds = [
            ("Image", Kind::Image),
            ("VM", Kind::Vm),
            ("Workspace", Kind::Workspace),
        ];
        let kind = top
            .required(self, "kind")
            .and_then(|node| self.one_of(node, "kind", &kinds));
        let meta_at = top.key_mark("metadata").unwrap_or(top.at);
        let (metadata, name) = match top.required(self, "metadata") {
            Some(node) => self.metadata(node, meta_at),
            None => (None, None),
        };
        let key = match (kind, name) {
            (Some(kind), Some(name)) => Some(ObjectKey { kind, name }),
            _ => None,
        };
        let spec_at = top.key_mark("spec").unwrap_or(top.at);
        let spec_node = top.required(self, "spec");
        let (Some(kind), Some(spec_node)) = (kind, spec_node) else {
            return (None, key);
        };
        // The spec is checked even when the metadata is invalid, to report everything.
        let resource = match kind {
            Kind::Image => self
                .image_spec(spec_node, spec_at)
                .and_then(|spec| Some(Resource::Image(object(kind, metadata?, spec)))),
            Kind::Vm => self
                .vm_spec(spec_node, spec_at)
                .and_then(|spec| Some(Resource::Vm(object(kind, metadata?, spec)))),
            Kind::Workspace => self
                .workspace_spec(spec_node, spec_at)
                .and_then(|spec| Some(Resource::Workspace(object(kind, metadata?, spec)))),
        };
        (resource, key)
    }

    /// Returns the metadata when valid, and the name when it is at least a string.
    fn metadata(&mut self, node: &Node, at: Mark) -> (Option<ObjectMeta>, Option<String>) {
        let Some(f) = self.fields(node, at, "metadata", &["name", "labels", "annotations"]) else {
            return (None, None);
        };
        let errors_before = self.error_count();
        let raw_name = f
            .required(self, "name")
            .and_then(|n| self.string(n, "metadata.name"));
        if let (Some(name), Some(node)) = (&raw_name, f.get("name")) {
            if let Err(message) = name::check_dns_label(name) {
                self.error(node.mark, "metadata.name", message);
            }
        }
        let labels = f
            .get("labels")
            .map(|n| self.string_map(n, "metadata.labels", false))
            .unwrap_or_default();
        let annotations = f
            .get("annotations")
            .map(|n| self.string_map(n, "metadata.annotations", true))
            .unwrap_or_default();
        let meta = match (&raw_name, self.error_count() == errors_before) {
            (Some(name), true) => Some(ObjectMeta {
                name: name.clone(),
                labels,
                annotations,
            }),
            _ => None,
        };
        (meta, raw_name)
    }

    fn error_count(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .count()
    }

    fn image_spec(&mut self, node: &Node, at: Mark) -> Option<ImageSpec> {
        let f = self.fields(
            node,
            at,
            "spec",
            &[
                "kernel",
                "initrd",
                "rootfs",
                "oci",
                "kernelArgs",
                "readiness",
                "guest",
            ],
        )?;
        let errors_before = self.error_count();
        let kernel = f
            .get("kernel")
            .and_then(|n| self.host_path(n, "spec.kernel"));
        let initrd = f
            .get("initrd")
            .and_then(|n| self.host_path(n, "spec.initrd"));
        let rootfs = f
            .get("rootfs")
            .and_then(|n| self.host_path(n, "spec.rootfs"));
        let oci = f
            .get("oci")
            .and_then(|n| self.oci(n, f.key_mark("oci").unwrap_or(at)));
        match (f.get("rootfs"), f.get("oci")) {
            (Some(_), Some(oci_node)) => {
                let mark = f.key_mark("oci").unwrap_or(oci_node.mark);
                self.error(
                    mark,
                    "spec.oci",
                    "set exactly one of `rootfs` and `oci`, not both".into(),
                );
            }
            (None, None) => {
                self.error(f.at, "spec.rootfs", "set exactly one of `rootfs` (an ext4 image file) and `oci` (a registry reference)".into());
            }
            _ => {}
        }
        let kernel_args = f
            .get("kernelArgs")
            .and_then(|n| self.kernel_args(n, "spec.kernelArgs"))
            .flatten();
        let readiness = match f.get("readiness") {
            Some(n) => self.readiness(n, f.key_mark("readiness").unwrap_or(at)),
            None => Some(Readiness::default()),
        };
        let guest = match f.get("guest") {
            Some(n) => self.guest_mode(n),
            None => Some(ImageSpec::default_guest(f.get("oci").is_some())),
        };
        if f.get("initrd").is_some() && f.get("kernel").is_none() {
            let mark = f.key_mark("initrd").unwrap_or(at);
            self.error(
                mark,
                "spec.initrd",
                "an initrd needs its `kernel`; without `kernel` the daemon's default kernel boots with its own initrd".into(),
            );
        }
        if self.error_count() != errors_before {
            return None;
        }
        Some(ImageSpec {
            kernel,
            initrd,
            rootfs,
            oci,
            kernel_args,
            readiness: readiness?,
            guest: guest?,
        })
    }

    fn guest_mode(&mut self, node: &Node) -> Option<GuestMode> {
        let text = self.string(node, "spec.guest")?;
        match text.as_str() {
            "inject" => Some(GuestMode::Inject),
            "none" => Some(GuestMode::None),
            other => {
                self.error(
                    node.mark,
                    "spec.guest",
                    format!(
                        "`{}` is not a guest mode: use `inject` (add banger's init, network and SSH set-up) or `none`",
                        other.escape_default()
                    ),
                );
                None
            }
        }
    }

    fn oci(&mut self, node: &Node, at: Mark) -> Option<OciSource> {
        let f = self.fields(node, at, "spec.oci", &["ref", "insecure", "caFile"])?;
        let reference = f.required(self, "ref").and_then(|n| {
            let text = self.string(n, "spec.oci.ref")?;
            if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
                self.error(
                    n.mark,
                    "spec.oci.ref",
                    format!(
                        "`{}` is not an image reference such as `127.0.0.1:5000/base:1.0`",
                        text.escape_default()
                    ),
                );
                return None;
            }
            Some(text)
        });
        let insecure = match f.get("insecure") {
            Some(n) => self.boolean(n, "spec.oci.insecure")?,
            None => false,
        };
        let ca_file = match f.get("caFile") {
            Some(n) => Some(self.host_path(n, "spec.oci.caFile")?),
            None => None,
        };
        Some(OciSource {
            reference: reference?,
            insecure,
            ca_file,
        })
    }

    fn readiness(&mut self, node: &Node, at: Mark) -> Option<Readiness> {
        let f = self.fields(node, at, "spec.readiness", &["tcpPort", "consoleMarker"])?;
        let port = f
            .get("tcpPort")
            .map(|n| self.integer(n, "spec.readiness.tcpPort", 1, 65535));
        let marker = f.get("consoleMarker").map(|n| {
            let text = self.string(n, "spec.readiness.consoleMarker")?;
            if text.is_empty() || text.contains(['\n', '\r', '\0']) {
                self.error(
                    n.mark,
                    "spec.readiness.consoleMarker",
                    "console marker must be a non-empty single line".into(),
                );
                return None;
            }
            Some(text)
        });
        match (port, marker) {
            (Some(port), None) => Some(Readiness {
                tcp_port: Some(u16::try_from(port?).ok()?),
                console_marker: None,
            }),
            (None, Some(marker)) => Some(Readiness {
                tcp_port: None,
                console_marker: Some(marker?),
            }),
            (Some(_), Some(_)) => {
                let mark = f.key_mark("consoleMarker").unwrap_or(at);
                self.error(
                    mark,
                    "spec.readiness.consoleMarker",
                    "set exactly one of `tcpPort` and `consoleMarker`, not both".into(),
                );
                None
            }
            (None, None) => {
                self.error(at, "spec.readiness", "set exactly one of `tcpPort` and `consoleMarker` (or leave out `readiness` for tcpPort 22)".into());
                None
            }
        }
    }

    fn vm_spec(&mut self, node: &Node, at: Mark) -> Option<VmSpec> {
        let allowed = [
            "image",
            "vcpus",
            "memory",
            "disk",
            "state",
            "restartPolicy",
            "hypervisor",
            "network",
            "kernelArgs",
            "stopGracePeriodSeconds",
        ];
        let f = self.fields(node, at, "spec", &allowed)?;
        let errors_before = self.error_count();
        let image = f
            .required(self, "image")
            .and_then(|n| self.dns_name(n, "spec.image"));
        let stop_grace_period_seconds = f.get("stopGracePeriodSeconds").and_then(|n| {
            self.integer(
                n,
                "spec.stopGracePeriodSeconds",
                0,
                i128::from(MAX_STOP_GRACE_SECONDS),
            )
            .and_then(|v| u32::try_from(v).ok())
        });
        let vcpus = match f.get("vcpus") {
            Some(n) => self
                .integer(n, "spec.vcpus", 1, i128::from(MAX_VCPUS))
                .and_then(|v| u8::try_from(v).ok()),
            None => Some(DEFAULT_VCPUS),
        };
        let memory = match f.get("memory") {
            Some(n) => self.mib_size(n, "spec.memory", "memory", MIN_MEMORY),
            None => Some(DEFAULT_MEMORY),
        };
        let disk = match f.get("disk") {
            Some(n) => self.mib_size(n, "spec.disk", "disk", MIN_DISK),
            None => Some(DEFAULT_DISK),
        };
        let state = match f.get("state") {
            Some(n) => self.one_of(
                n,
                "spec.state",
                &[
                    ("Running", PowerState::Running),
                    ("Stopped", PowerState::Stopped),
                ],
            ),
            None => Some(PowerState::default()),
        };
        let restart_policy = match f.get("restartPolicy") {
            Some(n) => self.one_of(
                n,
                "spec.restartPolicy",
                &[
                    ("Always", RestartPolicy::Always),
                    ("OnFailure", RestartPolicy::OnFailure),
                    ("Never", RestartPolicy::Never),
                ],
            ),
            None => Some(RestartPolicy::default()),
        };
        let hypervisor = match f.get("hypervisor") {
            Some(n) => self.one_of(
                n,
                "spec.hypervisor",
                &[
                    ("auto", HypervisorChoice::Auto),
                    ("firecracker", HypervisorChoice::Firecracker),
                    ("qemu", HypervisorChoice::Qemu),
                ],
            ),
            None => Some(HypervisorChoice::default()),
        };
        let network = match f.get("network") {
            Some(n) => self.network(n, f.key_mark("network").unwrap_or(at)),
            None => Some(NetworkSpec::default()),
        };
        let kernel_args = f
            .get("kernelArgs")
            .and_then(|n| self.kernel_args(n, "spec.kernelArgs"))
            .flatten();
        if self.error_count() != errors_before {
            return None;
        }
        Some(VmSpec {
            image: image?,
            vcpus: vcpus?,
            memory: memory?,
            disk: disk?,
            state: state?,
            restart_policy: restart_policy?,
            hypervisor: hypervisor?,
            network: network?,
            kernel_args,
            stop_grace_period_seconds,
        })
    }

    fn network(&mut self, node: &Node, at: Mark) -> Option<NetworkSpec> {
        let f = self.fields(node, at, "spec.network", &["nat", "ip", "isolated"])?;
        let nat = match f.get("nat") {
            Some(n) => self.boolean(n, "spec.network.nat"),
            None => Some(true),
        };
        let isolated = match f.get("isolated") {
            Some(n) => self.boolean(n, "spec.network.isolated"),
            None => Some(true),
        };
        let ip = match f.get("ip") {
            Some(n) => Some(self.ipv4(n, "spec.network.ip")?),
            None => None,
        };
        Some(NetworkSpec {
            nat: nat?,
            ip,
            isolated: isolated?,
        })
    }

    fn ipv4(&mut self, node: &Node, field: &str) -> Option<Ipv4Addr> {
        let text = self.string(node, field)?;
        let Ok(ip) = text.parse::<Ipv4Addr>() else {
            self.error(
                node.mark,
                field,
                format!("`{text}` is not an IPv4 address such as `172.30.0.10`"),
            );
            return None;
        };
        let problem = if ip.is_unspecified() {
            Some("the unspecified address")
        } else if ip.is_loopback() {
            Some("a loopback address")
        } else if ip.is_multicast() {
            Some("a multicast address")
        } else if ip.is_broadcast() {
            Some("the broadcast address")
        } else {
            None
        };
        if let Some(what) = problem {
            self.error(
                node.mark,
                field,
                format!(
                    "`{ip}` is {what}; a VM needs a unicast address of banger's bridge network"
                ),
            );
            return None;
        }
        Some(ip)
    }

    fn workspace_spec(&mut self, node: &Node, at: Mark) -> Option<WorkspaceSpec> {
        let f = self.fields(node, at, "spec", &["vm", "source", "path", "include"])?;
        let errors_before = self.error_count();
        let vm = f
            .required(self, "vm")
            .and_then(|n| self.dns_name(n, "spec.vm"));
        let source = f
            .required(self, "source")
            .and_then(|n| self.host_path(n, "spec.source"));
        let path = match f.get("path") {
            Some(n) => self.guest_path(n, "spec.path"),
            None => match &source {
                Some(source) => match source.file_name().and_then(|s| s.to_str()) {
                    Some(base) => Some(format!("/root/{base}")),
                    None => {
                        let mark = f.get("source").map_or(at, |n| n.mark);
                        self.error(
                            mark,
                            "spec.source",
                            format!(
                                "cannot derive `path` from source `{}`; set `spec.path`",
                                source.display()
                            ),
                        );
                        None
                    }
                },
                None => None,
            },
        };
        let include = match f.get("include") {
            Some(n) => self.one_of(
                n,
                "spec.include",
                &[
                    ("tracked", IncludeMode::Tracked),
                    ("untracked", IncludeMode::Untracked),
                ],
            ),
            None => Some(IncludeMode::default()),
        };
        if self.error_count() != errors_before {
            return None;
        }
        Some(WorkspaceSpec {
            vm: vm?,
            source: source?,
            path: path?,
            include: include?,
        })
    }

    /// An absolute guest path without `..`, normalised (`//`, `.` and a trailing `/` go).
    fn guest_path(&mut self, node: &Node, field: &str) -> Option<String> {
        let text = self.string(node, field)?;
        match normalize_guest_path(&text) {
            Ok(path) => Some(path),
            Err(message) => {
                self.error(node.mark, field, message);
                None
            }
        }
    }
}

fn object<S>(kind: Kind, metadata: ObjectMeta, spec: S) -> Object<S> {
    Object {
        api_version: API_VERSION.to_string(),
        kind,
        metadata,
        spec,
    }
}

/// Normalises a guest path: absolute, no `..`, no `.` or empty components, not `/`.
pub fn normalize_guest_path(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!("path `{text}` must be absolute (start with `/`)"));
    }
    if text.contains(['\0', '\n', '\r']) {
        return Err("path must not contain NUL or line breaks".to_string());
    }
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("path `{text}` must not contain `..`")),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err("path must not be the guest's root directory `/`".to_string());
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Resolves `.` and `..` without touching the file system (`..` at the root stays at
/// the root), and drops repeated and trailing separators.
pub fn normalize_lexically(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Prefix(p) => out.push(p.as_os_str()),
            Component::RootDir => out.push(Component::RootDir.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() && !out.has_root() {
                    out.push("..");
                }
            }
            Component::Normal(p) => out.push(p),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::yaml::parse_stream;

    fn decode(text: &str) -> Decoded {
        let stream = parse_stream(text);
        assert!(stream.problems.is_empty(), "{:?}", stream.problems);
        decode_document(&stream.documents[0].root, Path::new("/srv/specs"))
    }

    fn only_error(text: &str) -> FieldProblem {
        let d = decode(text);
        let errors: Vec<_> = d
            .problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .collect();
        assert_eq!(errors.len(), 1, "{:#?}", d.problems);
        assert!(d.resource.is_none());
        errors[0].clone()
    }

    const VM: &str =
        "apiVersion: banger.dev/v1alpha1\nkind: VM\nmetadata:\n  name: dev\nspec:\n  image: base\n";

    fn vm_with(extra: &str) -> String {
        format!("{VM}{extra}")
    }

    #[test]
    fn vm_defaults() {
        let d = decode(VM);
        let Some(Resource::Vm(vm)) = d.resource else {
            panic!("{:?}", d.problems)
        };
        assert_eq!(vm.spec.vcpus, 1);
        assert_eq!(vm.spec.memory, ByteSize(512 * ByteSize::MIB));
        assert_eq!(vm.spec.disk, ByteSize(2 * ByteSize::GIB));
        assert_eq!(vm.spec.state, PowerState::Running);
        assert_eq!(vm.spec.restart_policy, RestartPolicy::Always);
        assert_eq!(vm.spec.hypervisor, HypervisorChoice::Auto);
        assert_eq!(
            vm.spec.network,
            NetworkSpec {
                nat: true,
                ip: None,
                isolated: true
            }
        );
        assert_eq!(vm.spec.kernel_args, None);
        assert_eq!(vm.spec.stop_grace_period_seconds, None);
        assert_eq!(
            d.key,
            Some(ObjectKey {
                kind: Kind::Vm,
                name: "dev".into()
            })
        );
    }

    #[test]
    fn stop_grace_period_is_read_in_seconds() {
        for (text, want) in [("0", 0), ("30", 30), ("3600", 3600)] {
            let d = decode(&vm_with(&format!("  stopGracePeriodSeconds: {text}\n")));
            let Some(Resource::Vm(vm)) = d.resource else {
                panic!("{:?}", d.problems)
            };
            assert_eq!(vm.spec.stop_grace_period_seconds, Some(want));
        }
    }

    #[test]
    fn explicit_defaults_equal_omitted_ones() {
        let explicit = vm_with(
            "  vcpus: 1\n  memory: 512Mi\n  disk: 2G\n  state: Running\n  restartPolicy: Always\n  hypervisor: auto\n  network: {nat: true, isolated: true}\n  kernelArgs: \"  \"\n",
        );
        assert_eq!(decode(&explicit).resource, decode(VM).resource);
    }

    #[test]
    fn a_vm_may_leave_isolation() {
        let d = decode(&vm_with("  network: {isolated: false}\n"));
        let Some(Resource::Vm(vm)) = d.resource else {
            panic!("{:?}", d.problems)
        };
        assert!(!vm.spec.network.isolated);
        assert!(vm.spec.network.nat, "nat keeps its default");
    }

    #[test]
    fn vm_field_rules() {
        let cases: &[(&str, &str, &str)] = &[
            ("  vcpus: 0\n", "spec.vcpus", "out of range"),
            ("  vcpus: 33\n", "spec.vcpus", "out of range"),
            ("  vcpus: \"2\"\n", "spec.vcpus", "expected an integer"),
            (
                "  memory: 64MiB\n",
                "spec.memory",
                "below the minimum of 128MiB",
            ),
            (
                "  memory: 1000000000\n",
                "spec.memory",
                "whole number of MiB",
            ),
            ("  memory: 0\n", "spec.memory", "zero"),
            ("  memory: -1G\n", "spec.memory", "negative"),
            ("  memory: 1.5G\n", "spec.memory", "not a whole number"),
            (
                "  memory: lots\n",
                "spec.memory",
                "not a number with a suffix",
            ),
            (
                "  memory: 99999999999999999999999\n",
                "spec.memory",
                "too large",
            ),
            ("  disk: 32MiB\n", "spec.disk", "below the minimum of 64MiB"),
            ("  disk: true\n", "spec.disk", "expected a size"),
            ("  state: running\n", "spec.state", "did you mean `Running`"),
            (
                "  restartPolicy: Sometimes\n",
                "spec.restartPolicy",
                "`Always`, `OnFailure`, `Never`",
            ),
            (
                "  hypervisor: kvm\n",
                "spec.hypervisor",
                "`auto`, `firecracker`, `qemu`",
            ),
            (
                "  network: {nat: yes}\n",
                "spec.network.nat",
                "expected a boolean",
            ),
            (
                "  network: {isolated: no}\n",
                "spec.network.isolated",
                "expected a boolean",
            ),
            (
                "  network: {ip: 10.0.0.300}\n",
                "spec.network.ip",
                "not an IPv4 address",
            ),
            (
                "  network: {ip: 127.0.0.2}\n",
                "spec.network.ip",
                "loopback",
            ),
            (
                "  network: {ipv4: 10.0.0.2}\n",
                "spec.network.ipv4",
                "did you mean `ip`",
            ),
            ("  network: true\n", "spec.network", "must be a mapping"),
            ("  kernelArgs: \"a\\nb\"\n", "spec.kernelArgs", "one line"),
            (
                "  stopGracePeriodSeconds: 3601\n",
                "spec.stopGracePeriodSeconds",
                "expected 0 to 3600",
            ),
            (
                "  stopGracePeriodSeconds: -1\n",
                "spec.stopGracePeriodSeconds",
                "out of range",
            ),
            (
                "  stopGracePeriodSeconds: 5s\n",
                "spec.stopGracePeriodSeconds",
                "an integer",
            ),
            ("  memroy: 1G\n", "spec.memroy", "did you mean `memory`"),
        ];
        for (extra, field, needle) in cases {
            let p = only_error(&vm_with(extra));
            assert_eq!(p.field.as_deref(), Some(*field), "{extra}");
            assert!(p.message.contains(needle), "{extra}: {}", p.message);
            assert_eq!(p.mark.line, 7, "{extra}");
        }
    }

    #[test]
    fn references_are_dns_labels() {
        let p = only_error(&VM.replace("image: base", "image: Base"));
        assert_eq!(p.field.as_deref(), Some("spec.image"));
        assert!(p.message.contains("lower case"));
    }

    #[test]
    fn all_problems_are_reported() {
        let d = decode(&vm_with(
            "  vcpus: 99\n  memory: 1KiB\n  state: Off\n  color: blue\n",
        ));
        let fields: Vec<_> = d
            .problems
            .iter()
            .map(|p| p.field.clone().unwrap_or_default())
            .collect();
        assert_eq!(
            fields,
            ["spec.color", "spec.vcpus", "spec.memory", "spec.state"]
        );
    }

    #[test]
    fn missing_fields_point_at_the_parent_key() {
        let p = only_error("apiVersion: banger.dev/v1alpha1\nkind: VM\nmetadata:\n  name: dev\nspec:\n  vcpus: 2\n");
        assert_eq!(p.field.as_deref(), Some("spec.image"));
        assert_eq!(p.mark.line, 5);
        assert!(p.message.contains("missing required field `image`"));
        let p = only_error("apiVersion: banger.dev/v1alpha1\nkind: VM\nmetadata:\n  name: dev\n");
        assert_eq!(p.field.as_deref(), Some("spec"));
        assert_eq!(p.mark.line, 1);
    }

    #[test]
    fn header_rules() {
        let p = only_error(
            "apiVersion: banger.dev/v1\nkind: VM\nmetadata:\n  name: dev\nspec:\n  image: base\n",
        );
        assert_eq!(p.field.as_deref(), Some("apiVersion"));
        let p = only_error("apiVersion: banger.dev/v1alpha1\nkind: Vm\nmetadata:\n  name: dev\nspec:\n  image: base\n");
        assert_eq!(p.field.as_deref(), Some("kind"));
        assert!(p.message.contains("did you mean `VM`"), "{}", p.message);
        let p = only_error("apiVersion: banger.dev/v1alpha1\nkind: VM\nmetadata:\n  name: -dev\nspec:\n  image: base\n");
        assert_eq!(p.field.as_deref(), Some("metadata.name"));
        assert_eq!(p.mark.line, 4);
        let p = only_error("- a\n- b\n");
        assert!(p.message.contains("found a list"));
    }

    #[test]
    fn labels_and_annotations() {
        let d = decode(&format!(
            "{}  labels:\n    team: infra\n  annotations:\n    banger.dev/on-remove: Orphan\n    banger.dev/allow-recreate: \"true\"\n{}",
            &VM[..VM.find("spec:").unwrap()],
            "spec:\n  image: base\n"
        ));
        let Some(Resource::Vm(vm)) = d.resource else {
            panic!("{:?}", d.problems)
        };
        assert_eq!(vm.metadata.labels["team"], "infra");
        assert_eq!(vm.metadata.annotations[name::ON_REMOVE], "Orphan");

        let head = &VM[..VM.find("spec:").unwrap()];
        let p = only_error(&format!(
            "{head}  annotations:\n    banger.dev/allow-recreate: true\nspec:\n  image: base\n"
        ));
        assert_eq!(
            p.field.as_deref(),
            Some("metadata.annotations.banger.dev/allow-recreate")
        );
        assert!(p.message.contains("quote it"));
        let p = only_error(&format!(
            "{head}  annotations:\n    banger.dev/on-remove: Keep\nspec:\n  image: base\n"
        ));
        assert!(p.message.contains("`Delete`, `Orphan`, `Stop`"));
        let p = only_error(&format!(
            "{head}  labels:\n    \"a b\": x\nspec:\n  image: base\n"
        ));
        assert!(p.message.contains("whitespace"));

        let d = decode(&format!(
            "{head}  annotations:\n    banger.dev/on-delete: Orphan\nspec:\n  image: base\n"
        ));
        assert!(d.resource.is_some());
        assert_eq!(d.problems.len(), 1);
        assert_eq!(d.problems[0].severity, Severity::Warning);
    }

    const IMAGE: &str = "apiVersion: banger.dev/v1alpha1\nkind: Image\nmetadata:\n  name: base\nspec:\n  kernel: ../k/./vmlinuz\n";

    #[test]
    fn image_paths_resolve_against_the_base_dir() {
        let d = decode(&format!(
            "{IMAGE}  rootfs: /images//root.ext4\n  initrd: initrd.img\n"
        ));
        let Some(Resource::Image(img)) = d.resource else {
            panic!("{:?}", d.problems)
        };
        assert_eq!(img.spec.kernel, Some(PathBuf::from("/srv/k/vmlinuz")));
        assert_eq!(
            img.spec.guest,
            GuestMode::None,
            "a rootfs boots as it is by default"
        );
        assert_eq!(
            img.spec.initrd,
            Some(PathBuf::from("/srv/specs/initrd.img"))
        );
        assert_eq!(img.spec.rootfs, Some(PathBuf::from("/images/root.ext4")));
        assert_eq!(
            img.spec.readiness,
            Readiness {
                tcp_port: Some(22),
                console_marker: None
            }
        );
    }

    #[test]
    fn an_oci_reference_alone_is_an_image() {
        let head = "apiVersion: banger.dev/v1alpha1\nkind: Image\nmetadata:\n  name: deb\nspec:\n";
        let d = decode(&format!(
            "{head}  oci: {{ref: 127.0.0.1:5000/debian:12, caFile: ca.pem}}\n"
        ));
        let Some(Resource::Image(img)) = d.resource else {
            panic!("{:?}", d.problems)
        };
        assert_eq!(img.spec.kernel, None);
        assert_eq!(img.spec.guest, GuestMode::Inject);
        assert_eq!(
            img.spec.oci.and_then(|o| o.ca_file),
            Some(PathBuf::from("/srv/specs/ca.pem"))
        );
        let p = only_error(&format!("{head}  oci: {{ref: x}}\n  initrd: i.img\n"));
        assert_eq!(p.field.as_deref(), Some("spec.initrd"));
        assert!(p.message.contains("needs its `kernel`"), "{}", p.message);
        let d = decode(&format!("{head}  rootfs: r.ext4\n  guest: inject\n"));
        let Some(Resource::Image(img)) = d.resource else {
            panic!("{:?}", d.problems)
        };
        assert_eq!(img.spec.guest, GuestMode::Inject);
    }

    #[test]
    fn image_rules() {
        let cases: &[(&str, &str, &str)] = &[
            ("", "spec.rootfs", "exactly one of `rootfs`"),
            (
                "  rootfs: r.ext4\n  oci: {ref: x/y}\n",
                "spec.oci",
                "not both",
            ),
            (
                "  oci: {ref: \"a b\"}\n",
                "spec.oci.ref",
                "not an image reference",
            ),
            (
                "  oci: {ref: x, insecure: \"no\"}\n",
                "spec.oci.insecure",
                "expected a boolean",
            ),
            ("  oci: {}\n", "spec.oci.ref", "missing required field"),
            ("  rootfs: \"\"\n", "spec.rootfs", "empty"),
            (
                "  rootfs: r\n  readiness: {tcpPort: 0}\n",
                "spec.readiness.tcpPort",
                "out of range",
            ),
            (
                "  rootfs: r\n  readiness: {tcpPort: 22, consoleMarker: up}\n",
                "spec.readiness.consoleMarker",
                "not both",
            ),
            (
                "  rootfs: r\n  readiness: {}\n",
                "spec.readiness",
                "exactly one",
            ),
            (
                "  rootfs: r\n  kernelArgs: \"a\\0b\"\n",
                "spec.kernelArgs",
                "one line",
            ),
            (
                "  rootfs: r\n  guest: always\n",
                "spec.guest",
                "not a guest mode",
            ),
            (
                "  oci: {ref: x, caFile: \"\"}\n",
                "spec.oci.caFile",
                "empty",
            ),
        ];
        for (extra, field, needle) in cases {
            let p = only_error(&format!("{IMAGE}{extra}"));
            assert_eq!(p.field.as_deref(), Some(*field), "{extra}");
            assert!(p.message.contains(needle), "{extra}: {}", p.message);
        }
        let d = decode(&format!("{IMAGE}  oci: {{ref: 127.0.0.1:5000/base:1}}\n  readiness: {{consoleMarker: 'login:'}}\n"));
        let Some(Resource::Image(img)) = d.resource else {
            panic!("{:?}", d.problems)
        };
        assert_eq!(
            img.spec.oci,
            Some(OciSource {
                reference: "127.0.0.1:5000/base:1".into(),
                insecure: false,
                ca_file: None,
            })
        );
        assert_eq!(
            img.spec.guest,
            GuestMode::Inject,
            "oci images get the guest bits"
        );
        assert_eq!(
            img.spec.readiness,
            Readiness {
                tcp_port: None,
                console_marker: Some("login:".into())
            }
        );
    }

    const WS: &str = "apiVersion: banger.dev/v1alpha1\nkind: Workspace\nmetadata:\n  name: code\nspec:\n  vm: dev\n";

    #[test]
    fn workspace_defaults_and_rules() {
        let d = decode(&format!("{WS}  source: ../repo/\n"));
        let Some(Resource::Workspace(ws)) = d.resource else {
            panic!("{:?}", d.problems)
        };
        assert_eq!(ws.spec.source, PathBuf::from("/srv/repo"));
        assert_eq!(ws.spec.path, "/root/repo");
        assert_eq!(ws.spec.include, IncludeMode::Untracked);

        let d = decode(&format!(
            "{WS}  source: /r\n  path: /home//me/./src/\n  include: tracked\n"
        ));
        let Some(Resource::Workspace(ws)) = d.resource else {
            panic!("{:?}", d.problems)
        };
        assert_eq!(ws.spec.path, "/home/me/src");

        let cases: &[(&str, &str, &str)] = &[
            ("  source: /r\n  path: src\n", "spec.path", "absolute"),
            ("  source: /r\n  path: /a/../b\n", "spec.path", "`..`"),
            ("  source: /r\n  path: /\n", "spec.path", "root directory"),
            ("  source: /\n", "spec.source", "cannot derive"),
            (
                "  source: /r\n  include: all\n",
                "spec.include",
                "`tracked`, `untracked`",
            ),
            ("  path: /x\n", "spec.source", "missing required field"),
        ];
        for (extra, field, needle) in cases {
            let p = only_error(&format!("{WS}{extra}"));
            assert_eq!(p.field.as_deref(), Some(*field), "{extra}");
            assert!(p.message.contains(needle), "{extra}: {}", p.message);
        }
    }

    #[test]
    fn lexical_normalisation() {
        assert_eq!(
            normalize_lexically(Path::new("/a/b/../../../c/./d/")),
            PathBuf::from("/c/d")
        );
        assert_eq!(
            normalize_lexically(Path::new("/a//b")),
            PathBuf::from("/a/b")
        );
    }
}
