//! The checked-in JSON Schemas under `schemas/` match the Rust types.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use banger_specs::schema::{all_schemas, schema_file_name};

fn schemas_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas")
}

/// The file text of a schema: pretty JSON with a trailing newline.
fn render(value: &serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

#[test]
fn schemas_are_up_to_date() {
    let update = std::env::var_os("BANGER_UPDATE_SCHEMAS").is_some_and(|v| v == "1");
    let dir = schemas_dir();
    let mut stale = Vec::new();
    for (kind, schema) in all_schemas() {
        let path = dir.join(schema_file_name(kind));
        let want = render(&schema);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &want).unwrap();
            continue;
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have != want {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "stale JSON Schemas: {}\nregenerate them with: BANGER_UPDATE_SCHEMAS=1 cargo test -p banger-specs --test schemas",
        stale.join(", ")
    );
}
