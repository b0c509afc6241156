//! `banger get [KIND] [NAME…]`: list objects as a table, or print them as JSON/YAML.

use std::process::ExitCode;

use banger_controller::api::types::{ObjectList, ObjectView};
use banger_specs::Kind;
use time::OffsetDateTime;

use crate::client::DaemonClient;
use crate::commands::not_found;
use crate::error::{print_out, CliError};
use crate::output::{object_table, to_json, to_yaml, OutputFormat};
use crate::selector::{kind_word, parse_selection, Selection};

/// Arguments of `banger get`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  # Every object of every kind
  banger get

  # All VMs, with hypervisor, PID and owner columns
  banger get vms -o wide

  # One VM as JSON ({apiVersion, kind, metadata, spec, status})
  banger get vm dev -o json
  banger get vm/dev -o yaml

  # Several objects (a list prints as {\"items\": [...]})
  banger get vm dev web -o json")]
pub struct GetArgs {
    /// KIND (vm|vms, image|images, workspace|workspaces), KIND NAME…, or KIND/NAME….
    #[arg(value_name = "KIND|KIND/NAME")]
    pub args: Vec<String>,
    /// Output format: wide, json or yaml (default: a table).
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,
}

/// A value as JSON or YAML.
fn serialized<T: serde::Serialize>(value: &T, format: OutputFormat) -> Result<String, CliError> {
    Ok(if format == OutputFormat::Json {
        to_json(value)?
    } else {
        to_yaml(value)?
    })
}

/// Prints objects in the chosen format. `single` prints one object bare instead of a
/// list; `multi_kind` writes names as `vm/dev`.
pub fn render(
    objects: &[ObjectView],
    format: OutputFormat,
    single: bool,
    multi_kind: bool,
) -> Result<String, CliError> {
    match (format, objects) {
        (OutputFormat::Json | OutputFormat::Yaml, [object]) if single => serialized(object, format),
        (OutputFormat::Json | OutputFormat::Yaml, _) => serialized(
            &ObjectList {
                items: objects.to_vec(),
            },
            format,
        ),
        (OutputFormat::Table | OutputFormat::Wide, _) => {
            let now = OffsetDateTime::now_utc();
            let wide = format == OutputFormat::Wide;
            let mut sections = Vec::new();
            for kind in Kind::ALL {
                let of_kind: Vec<&ObjectView> = objects.iter().filter(|o| o.kind == kind).collect();
                if of_kind.is_empty() {
                    continue;
                }
                let table = object_table(kind, &of_kind, wide, now).render();
                sections.push(if multi_kind {
                    prefix_names(&table, kind)
                } else {
                    table
                });
            }
            Ok(sections.join("\n"))
        }
    }
}

/// Writes the NAME column as `vm/dev` (for tables that mix kinds), keeping alignment.
fn prefix_names(table: &str, kind: Kind) -> String {
    let prefix = format!("{}/", kind_word(kind));
    let pad = " ".repeat(prefix.len());
    table
        .lines()
        .enumerate()
        .map(|(i, line)| {
            if i == 0 {
                // The header: widen NAME's column by the prefix.
                match line.strip_prefix("NAME") {
                    Some(rest) => format!("NAME{pad}{rest}\n"),
                    None => format!("{line}\n"),
                }
            } else {
                format!("{prefix}{line}\n")
            }
        })
        .collect()
}

/// Runs `banger get`.
pub async fn run(client: &DaemonClient, args: &GetArgs) -> Result<ExitCode, CliError> {
    let format = args.output.unwrap_or_default();
    let selection = parse_selection(&args.args)?;
    let (objects, single, multi_kind, missing) = match &selection {
        Selection::All => (client.list(None).await?.items, false, true, Vec::new()),
        Selection::Kind(kind) => (
            client.list(Some(*kind)).await?.items,
            false,
            false,
            Vec::new(),
        ),
        Selection::Objects(refs) => {
            let mut found = Vec::new();
            let mut missing = Vec::new();
            for object in refs {
                match client.get(object).await? {
                    Some(view) => found.push(view),
                    None => missing.push(object.clone()),
                }
            }
            let kinds = refs
                .iter()
                .map(|r| r.kind)
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            (found, refs.len() == 1, kinds > 1, missing)
        }
    };
    let table_format = matches!(format, OutputFormat::Table | OutputFormat::Wide);
    if table_format && objects.is_empty() {
        if missing.is_empty() {
            eprintln!("No objects found.");
        }
    } else if !(single && objects.is_empty()) {
        print_out(&render(&objects, format, single, multi_kind)?)?;
    }
    match missing.split_last() {
        None => Ok(ExitCode::SUCCESS),
        Some((last, others)) => {
            for error in others {
                eprintln!("{}", not_found(error));
            }
            Err(CliError::Client(not_found(last)))
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn multi_kind_tables_prefix_names() {
        let table = "NAME   PHASE\ndev    Running\n";
        assert_eq!(
            prefix_names(table, Kind::Vm),
            "NAME      PHASE\nvm/dev    Running\n"
        );
    }
}
