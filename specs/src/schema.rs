//! JSON Schemas of the three kinds, generated from the Rust types with `schemars`.
//!
//! The schemas describe what a *user* may write (editors use them through the
//! `# yaml-language-server: $schema=…` modeline): fields with defaults are optional,
//! sizes are integers or strings such as `512MiB`, `apiVersion` and `kind` are fixed.
//! The rules a schema cannot say (exactly one of `rootfs`/`oci`, memory a whole number
//! of MiB, references) are checked by `banger validate`.
//!
//! The generated files are checked in under `schemas/`; a test fails when they are
//! stale. Regenerate them with
//! `BANGER_UPDATE_SCHEMAS=1 cargo test -p banger-specs --test schemas`.

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Value};

use crate::types::{ImageSpec, Kind, Object, VmSpec, WorkspaceSpec, API_VERSION};

/// The JSON Schema (draft 2020-12) of one kind's documents.
pub fn schema_for(kind: Kind) -> Value {
    let mut schema = match kind {
        Kind::Image => generate::<Object<ImageSpec>>(),
        Kind::Vm => generate::<Object<VmSpec>>(),
        Kind::Workspace => generate::<Object<WorkspaceSpec>>(),
    };
    if let Some(root) = schema.as_object_mut() {
        root.insert(
            "$id".into(),
            Value::String(format!(
                "https://banger.dev/schemas/{}.json",
                kind.as_str().to_ascii_lowercase()
            )),
        );
        root.insert(
            "title".into(),
            Value::String(format!("banger {}", kind.as_str())),
        );
        root.insert(
            "description".into(),
            Value::String(format!(
                "A banger {} document ({API_VERSION}).",
                kind.as_str()
            )),
        );
        if let Some(props) = root.get_mut("properties").and_then(Value::as_object_mut) {
            props.insert(
                "apiVersion".into(),
                json!({ "description": "API version of the spec language.", "const": API_VERSION }),
            );
            props.insert(
                "kind".into(),
                json!({ "description": "The kind of object.", "const": kind.as_str() }),
            );
        }
        if let Some(defs) = root.get_mut("$defs").and_then(Value::as_object_mut) {
            defs.remove("Kind");
            // The guest path has a default derived from `source`, so users may omit it.
            if let Some(required) = defs
                .get_mut("WorkspaceSpec")
                .and_then(|d| d.get_mut("required"))
            {
                if let Some(list) = required.as_array_mut() {
                    list.retain(|f| f != "path");
                }
            }
        }
    }
    schema
}

/// Every kind's schema, in dependency order.
pub fn all_schemas() -> Vec<(Kind, Value)> {
    Kind::ALL.iter().map(|k| (*k, schema_for(*k))).collect()
}

/// The file name of a kind's schema under `schemas/`: `image.json`, `vm.json`,
/// `workspace.json`.
pub fn schema_file_name(kind: Kind) -> String {
    format!("{}.json", kind.as_str().to_ascii_lowercase())
}

fn generate<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::draft2020_12()
        .for_deserialize()
        .into_generator();
    generator.into_root_schema_for::<T>().to_value()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn def<'a>(schema: &'a Value, name: &str) -> &'a Value {
        &schema["$defs"][name]
    }

    fn required(v: &Value) -> Vec<&str> {
        v["required"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    #[test]
    fn user_forms_are_accepted() {
        let vm = schema_for(Kind::Vm);
        assert_eq!(vm["properties"]["kind"]["const"], "VM");
        assert_eq!(vm["properties"]["apiVersion"]["const"], API_VERSION);
        assert_eq!(required(&vm), ["apiVersion", "kind", "metadata", "spec"]);
        assert_eq!(
            required(def(&vm, "VmSpec")),
            ["image"],
            "every VM field but image has a default"
        );
        let size = def(&vm, "ByteSize");
        let types: Vec<&str> = size["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["type"].as_str())
            .collect();
        assert_eq!(types, ["integer", "string"]);
        assert_eq!(def(&vm, "VmSpec")["additionalProperties"], false);
        assert!(vm["$defs"].get("Kind").is_none());
        assert_eq!(def(&vm, "VmSpec")["properties"]["vcpus"]["maximum"], 32);
    }

    #[test]
    fn workspace_path_is_optional() {
        let ws = schema_for(Kind::Workspace);
        assert_eq!(required(def(&ws, "WorkspaceSpec")), ["vm", "source"]);
        let image = schema_for(Kind::Image);
        assert!(required(def(&image, "ImageSpec")).is_empty());
        assert_eq!(required(def(&image, "ObjectMeta")), ["name"]);
    }

    #[test]
    fn all_kinds() {
        let all = all_schemas();
        assert_eq!(all.iter().map(|(k, _)| *k).collect::<Vec<_>>(), Kind::ALL);
        assert_eq!(schema_file_name(Kind::Vm), "vm.json");
    }
}
