//! `banger schema`: print the JSON Schema of the spec language.

use std::process::ExitCode;

use banger_specs::schema::{all_schemas, schema_for};
use banger_specs::Kind;

/// Arguments of `banger schema`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  banger schema vm                 # the JSON Schema of VM documents
  banger schema                    # all kinds, as one JSON object keyed by kind
  banger schema image > image.json

The same schemas are checked in under schemas/; point an editor at them with a first
line such as `# yaml-language-server: $schema=../schemas/vm.json`.")]
pub struct SchemaArgs {
    /// Kind: `image`, `vm` or `workspace` (singular or plural, any case); all when absent.
    #[arg(value_name = "KIND")]
    pub kind: Option<String>,
}

/// Prints one schema, or all keyed by kind.
pub fn run(args: &SchemaArgs) -> ExitCode {
    let value = match &args.kind {
        Some(text) => {
            match Kind::parse_cli(text) {
                Some(kind) => schema_for(kind),
                None => {
                    eprintln!("banger schema: unknown kind `{text}`; expected one of image, vm, workspace");
                    return ExitCode::from(2);
                }
            }
        }
        None => serde_json::Value::Object(
            all_schemas()
                .into_iter()
                .map(|(kind, schema)| (kind.as_str().to_string(), schema))
                .collect(),
        ),
    };
    match serde_json::to_string_pretty(&value) {
        Ok(text) => match crate::error::print_out(&format!("{text}\n")) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("banger schema: {e}");
                ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!("banger schema: cannot print the schema: {e}");
            ExitCode::from(1)
        }
    }
}
