//! The canonical form of a resource and its stable hash.
//!
//! A decoded [`Resource`] is already canonical: defaults filled, sizes in bytes, paths
//! absolute and normalised. This module fixes how it is *written*: JSON with object
//! keys sorted at every level and no insignificant whitespace. [`Resource::spec_hash`]
//! is the SHA-256 of that text for the `spec` alone, so two specs that mean the same
//! thing (an omitted default and an explicit one, `2G` and `2048MiB`) hash the same,
//! and later stages diff on it.
//!
//! [`resource_from_json`] reads a resource back (the daemon's store round trip) and
//! accepts only canonical, valid objects: it runs the same rules as a spec file.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::decode::decode_document;
use crate::types::Resource;
use crate::yaml::{parse_stream, to_yaml_string, PrintError};

/// Why a JSON value is not a canonical resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    /// The value breaks the spec rules; each entry is `field: message`.
    #[error("invalid resource: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The value is valid but not in canonical form (for example a relative path or a
    /// size written as text); holds the canonical form's JSON.
    #[error("resource is not in canonical form; canonical form is {0}")]
    NotCanonical(String),
}

impl Resource {
    /// The `spec` as JSON.
    pub fn spec_json(&self) -> Value {
        let result = match self {
            Resource::Image(o) => serde_json::to_value(&o.spec),
            Resource::Vm(o) => serde_json::to_value(&o.spec),
            Resource::Workspace(o) => serde_json::to_value(&o.spec),
        };
        // Plain data with string keys: serialising to a Value cannot fail.
        result.unwrap_or(Value::Null)
    }

    /// SHA-256 (lower-case hex) of the canonical JSON of the `spec` alone.
    pub fn spec_hash(&self) -> String {
        hex::encode(Sha256::digest(canonical_json(&self.spec_json()).as_bytes()))
    }

    /// The whole object (`apiVersion`, `kind`, `metadata`, `spec`) as JSON.
    pub fn to_json(&self) -> Value {
        let result = match self {
            Resource::Image(o) => serde_json::to_value(o),
            Resource::Vm(o) => serde_json::to_value(o),
            Resource::Workspace(o) => serde_json::to_value(o),
        };
        result.unwrap_or(Value::Null)
    }

    /// The whole object as YAML (what `banger get -o yaml` prints).
    pub fn to_yaml(&self) -> Result<String, PrintError> {
        to_yaml_string(self)
    }
}

/// Writes JSON with object keys sorted at every level and no whitespace: the text
/// that is hashed.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Reads a resource from its JSON form (as written by [`Resource::to_json`]). The value
/// must pass every rule of the spec language and already be canonical.
pub fn resource_from_json(value: Value) -> Result<Resource, CanonicalError> {
    // JSON is YAML: run the very rules a spec file goes through.
    let text = serde_json::to_string_pretty(&value)
        .map_err(|e| CanonicalError::Invalid(vec![e.to_string()]))?;
    let stream = parse_stream(&text);
    let mut messages: Vec<String> = stream.problems.iter().map(|p| p.message.clone()).collect();
    let decoded = match stream.documents.first() {
        Some(doc) => decode_document(&doc.root, std::path::Path::new("/")),
        None => return Err(CanonicalError::Invalid(vec!["empty value".to_string()])),
    };
    messages.extend(
        decoded
            .problems
            .iter()
            .filter(|p| p.severity == crate::problem::Severity::Error)
            .map(|p| match &p.field {
                Some(field) => format!("{field}: {}", p.message),
                None => p.message.clone(),
            }),
    );
    let resource = match decoded.resource {
        Some(r) if messages.is_empty() => r,
        _ => return Err(CanonicalError::Invalid(messages)),
    };
    if resource.to_json() != value {
        return Err(CanonicalError::NotCanonical(canonical_json(
            &resource.to_json(),
        )));
    }
    Ok(resource)
}

impl Serialize for Resource {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Resource::Image(o) => o.serialize(serializer),
            Resource::Vm(o) => o.serialize(serializer),
            Resource::Workspace(o) => o.serialize(serializer),
        }
    }
}

/// Dispatches on `kind` and accepts only valid, canonical objects (see
/// [`resource_from_json`]).
impl<'de> Deserialize<'de> for Resource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        resource_from_json(value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::load::parse_document_set;
    use std::path::Path;

    fn load_one(text: &str) -> Resource {
        let load = parse_document_set(text.as_bytes(), "t.yaml", Path::new("/base"));
        assert!(load.problems.is_empty(), "{:?}", load.problems);
        load.objects[0].resource.clone()
    }

    const VM: &str =
        "apiVersion: banger.dev/v1alpha1\nkind: VM\nmetadata: {name: dev}\nspec: {image: base}\n";

    #[test]
    fn canonical_json_sorts_keys() {
        let v = serde_json::json!({"b": 1, "a": {"d": [true, null], "c": "x"}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":"x","d":[true,null]},"b":1}"#
        );
    }

    #[test]
    fn equivalent_specs_hash_alike() {
        let a = load_one(VM);
        let b = load_one(&VM.replace(
            "{image: base}",
            "{image: base, disk: 2048Mi, memory: 536870912, vcpus: 1}",
        ));
        assert_eq!(a, b);
        assert_eq!(a.spec_hash(), b.spec_hash());
        assert_eq!(a.spec_hash().len(), 64);
        let c = load_one(&VM.replace("{image: base}", "{image: base, vcpus: 2}"));
        assert_ne!(a.spec_hash(), c.spec_hash());
        // Metadata is not part of the spec hash.
        let d = load_one(&VM.replace("{name: dev}", "{name: dev, labels: {a: b}}"));
        assert_eq!(a.spec_hash(), d.spec_hash());
    }

    #[test]
    fn spec_hash_is_pinned() {
        // Changing the canonical form changes every stored hash: do it on purpose only.
        let vm = load_one(VM);
        assert_eq!(
            canonical_json(&vm.spec_json()),
            r#"{"disk":2147483648,"hypervisor":"auto","image":"base","memory":536870912,"network":{"isolated":true,"nat":true},"restartPolicy":"Always","state":"Running","vcpus":1}"#
        );
    }

    #[test]
    fn json_round_trip() {
        let vm = load_one(VM);
        let json = vm.to_json();
        assert_eq!(json["kind"], "VM");
        assert_eq!(resource_from_json(json.clone()), Ok(vm.clone()));
        let via_serde: Resource = serde_json::from_value(json).unwrap();
        assert_eq!(via_serde, vm);
        assert_eq!(serde_json::to_value(&vm).unwrap(), vm.to_json());
    }

    #[test]
    fn from_json_rejects_invalid_and_non_canonical() {
        let mut json = load_one(VM).to_json();
        json["spec"]["vcpus"] = serde_json::json!(64);
        assert!(
            matches!(resource_from_json(json), Err(CanonicalError::Invalid(m)) if m[0].starts_with("spec.vcpus"))
        );
        let mut json = load_one(VM).to_json();
        json["spec"]["memory"] = serde_json::json!("512MiB");
        assert!(matches!(
            resource_from_json(json),
            Err(CanonicalError::NotCanonical(_))
        ));
        let mut json = load_one(VM).to_json();
        json["kind"] = serde_json::json!("Pod");
        assert!(resource_from_json(json).is_err());
    }
}
