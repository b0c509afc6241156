//! Desired objects as the engine keeps them: canonical JSON, spec hash, ownership.
//!
//! An object is stored as its canonical document (`apiVersion`, `kind`, `metadata`,
//! `spec`). `metadata.generation` moves only when [`spec_hash`] changes: the hash is
//! taken over the canonical spec alone, so an explicit default and an omitted one (both
//! canonicalised by the specs crate) are the same spec, and label or annotation edits do
//! not bump the generation.

use banger_specs::{ImageSpec, Kind, Object, Resource, VmSpec, WorkspaceSpec};
use serde::{Deserialize, Serialize};

/// Annotation: what happens to a directory object whose file is removed.
pub const ANNOTATION_ON_REMOVE: &str = "banger.dev/on-remove";
/// Annotation: allow recreates for a directory object.
pub const ANNOTATION_ALLOW_RECREATE: &str = "banger.dev/allow-recreate";
/// Annotation reported in views: the owning source.
pub const ANNOTATION_OWNER: &str = "banger.dev/owner";

/// Which source owns an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "source")]
pub enum Owner {
    /// The watched specs directory, from this file.
    SpecsDir {
        /// The declaring file (absolute path).
        file: String,
    },
    /// `banger apply`, with the path set the user named.
    Cli {
        /// The `-f` paths of the apply, sorted: the scope of `--prune`.
        path_set: Vec<String>,
    },
}

impl Owner {
    /// `specs-dir` or `cli`.
    pub fn label(&self) -> &'static str {
        match self {
            Owner::SpecsDir { .. } => "specs-dir",
            Owner::Cli { .. } => "cli",
        }
    }

    /// A human description: `the specs directory (FILE)` or `banger apply`.
    pub fn describe(&self) -> String {
        match self {
            Owner::SpecsDir { file } => format!("the specs directory ({file})"),
            Owner::Cli { .. } => "banger apply".to_string(),
        }
    }
}

/// What to do when a directory object's file disappears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRemove {
    /// Delete the object and everything it made (default).
    Delete,
    /// Forget the object; leave the VM (and its lease) alone.
    Orphan,
    /// Keep the object but stop its VM.
    Stop,
}

/// Reads `banger.dev/on-remove` of a resource.
pub fn on_remove(resource: &Resource) -> OnRemove {
    match resource
        .metadata()
        .annotations
        .get(ANNOTATION_ON_REMOVE)
        .map(String::as_str)
    {
        Some("Orphan") => OnRemove::Orphan,
        Some("Stop") => OnRemove::Stop,
        _ => OnRemove::Delete,
    }
}

/// Whether `banger.dev/allow-recreate: "true"` is set.
pub fn allow_recreate_annotation(resource: &Resource) -> bool {
    resource
        .metadata()
        .annotations
        .get(ANNOTATION_ALLOW_RECREATE)
        .is_some_and(|v| v == "true")
}

/// The canonical JSON of the spec alone (see [`banger_specs::canonical`]).
pub fn spec_json(resource: &Resource) -> serde_json::Value {
    resource.spec_json()
}

/// The stable hash of the canonical spec (hex SHA-256 of its canonical JSON).
pub fn spec_hash(resource: &Resource) -> String {
    resource.spec_hash()
}

/// The whole document as canonical JSON text (keys sorted, no whitespace).
pub fn document_json(resource: &Resource) -> String {
    banger_specs::canonical::canonical_json(&resource.to_json())
}

/// Parses a document stored by [`document_json`].
pub fn document_from_json(kind: Kind, text: &str) -> Result<Resource, serde_json::Error> {
    Ok(match kind {
        Kind::Image => Resource::Image(serde_json::from_str::<Object<ImageSpec>>(text)?),
        Kind::Vm => Resource::Vm(serde_json::from_str::<Object<VmSpec>>(text)?),
        Kind::Workspace => {
            Resource::Workspace(serde_json::from_str::<Object<WorkspaceSpec>>(text)?)
        }
    })
}

/// The name of the object this one depends on: a VM's Image, a Workspace's VM.
pub fn reference(resource: &Resource) -> Option<(Kind, String)> {
    match resource {
        Resource::Image(_) => None,
        Resource::Vm(o) => Some((Kind::Image, o.spec.image.clone())),
        Resource::Workspace(o) => Some((Kind::Vm, o.spec.vm.clone())),
    }
}

/// Field-level changes between two specs of the same kind (`spec.memory: a -> b`).
pub fn spec_changes(old: &Resource, new: &Resource) -> Vec<String> {
    let mut out = Vec::new();
    diff_values("spec", &spec_json(old), &spec_json(new), &mut out);
    out
}

fn diff_values(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let null = Value::Null;
                diff_values(
                    &format!("{path}.{k}"),
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        _ if a != b => out.push(format!("{path}: {a} -> {b}")),
        _ => {}
    }
}
