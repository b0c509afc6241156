//! `banger get [KIND] [NAME…]`: list objects as a table, or print them as JSON/YAML.

use std::process::ExitCode;

use banger_controller::api::types::{ObjectList, ObjectView};
use banger_specs::Kind;
use hyper::body::Bytes;
use time::OffsetDateTime;

use crate::client::{ClientError, DaemonClient};
use crate::commands::not_found;
use crate::error::{print_json, print_out, CliError};
use crate::output::{rows_table, to_yaml, OutputFormat, PrettyJson, TableList, TableObject};
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

/// What `get` read from the daemon: one list answer, or one answer per named object
/// (in the order named), each as the daemon wrote it.
#[derive(Debug)]
pub enum Fetched {
    /// `{"items": [...]}` of `GET /v1/objects`.
    List(Bytes),
    /// The objects found by name.
    Objects(Vec<Bytes>),
}

/// A decoding error of the daemon's answer.
fn undecodable(e: serde_json::Error) -> CliError {
    CliError::Client(ClientError::Decode {
        what: "GET /v1/objects".into(),
        message: e.to_string(),
    })
}

/// What `get` prints: a table or YAML as text, or JSON written out a piece at a time.
#[derive(Debug)]
pub enum Rendered {
    /// A table (empty when there was nothing to show) or YAML.
    Text(String),
    /// JSON, checked, to be re-indented as it is written.
    Json(PrettyJson),
}

/// Prints objects in the chosen format. `single` prints one object bare instead of a
/// list; `multi_kind` writes names as `vm/dev`. JSON is the daemon's text re-indented
/// (no typed round trip); tables read only their columns ([`TableObject`]).
pub fn render(
    fetched: &Fetched,
    format: OutputFormat,
    single: bool,
    multi_kind: bool,
) -> Result<Rendered, CliError> {
    let text = match (format, fetched) {
        (OutputFormat::Json, Fetched::List(body)) => {
            return Ok(Rendered::Json(PrettyJson::new(body.clone())?))
        }
        (OutputFormat::Json, Fetched::Objects(bodies)) => match bodies.as_slice() {
            [body] if single => return Ok(Rendered::Json(PrettyJson::new(body.clone())?)),
            _ => {
                let mut list = b"{\"items\":[".to_vec();
                for (i, body) in bodies.iter().enumerate() {
                    if i > 0 {
                        list.push(b',');
                    }
                    list.extend_from_slice(body);
                }
                list.extend_from_slice(b"]}");
                return Ok(Rendered::Json(PrettyJson::new(list)?));
            }
        },
        (OutputFormat::Yaml, Fetched::List(body)) => {
            let list: ObjectList = serde_json::from_slice(body).map_err(undecodable)?;
            to_yaml(&list)?
        }
        (OutputFormat::Yaml, Fetched::Objects(bodies)) => {
            let items = bodies
                .iter()
                .map(|b| serde_json::from_slice::<ObjectView>(b))
                .collect::<Result<Vec<_>, _>>()
                .map_err(undecodable)?;
            match items.as_slice() {
                [object] if single => to_yaml(object)?,
                _ => to_yaml(&ObjectList { items })?,
            }
        }
        (OutputFormat::Table | OutputFormat::Wide, _) => {
            let objects = table_objects(fetched)?;
            tables(&objects, format == OutputFormat::Wide, multi_kind)
        }
    };
    Ok(Rendered::Text(text))
}

/// The table rows of what was fetched.
fn table_objects(fetched: &Fetched) -> Result<Vec<TableObject<'_>>, CliError> {
    match fetched {
        Fetched::List(body) => Ok(serde_json::from_slice::<TableList<'_>>(body)
            .map_err(undecodable)?
            .items),
        Fetched::Objects(bodies) => bodies
            .iter()
            .map(|b| serde_json::from_slice::<TableObject<'_>>(b).map_err(undecodable))
            .collect(),
    }
}

/// One table per kind present, in kind order; names as `vm/dev` when `multi_kind`.
fn tables(objects: &[TableObject<'_>], wide: bool, multi_kind: bool) -> String {
    let now = OffsetDateTime::now_utc();
    let mut sections = Vec::new();
    for kind in Kind::ALL {
        let of_kind: Vec<&TableObject<'_>> = objects.iter().filter(|o| o.kind == kind).collect();
        if of_kind.is_empty() {
            continue;
        }
        let table = rows_table(kind, &of_kind, wide, now).render();
        sections.push(if multi_kind {
            prefix_names(&table, kind)
        } else {
            table
        });
    }
    sections.join("\n")
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
    let (fetched, single, multi_kind, missing) = match &selection {
        Selection::All => (
            Fetched::List(client.list_json(None).await?),
            false,
            true,
            Vec::new(),
        ),
        Selection::Kind(kind) => (
            Fetched::List(client.list_json(Some(*kind)).await?),
            false,
            false,
            Vec::new(),
        ),
        Selection::Objects(refs) => {
            let mut found = Vec::new();
            let mut missing = Vec::new();
            for object in refs {
                match client.get_json(object).await? {
                    Some(body) => found.push(body),
                    None => missing.push(object.clone()),
                }
            }
            let kinds = refs
                .iter()
                .map(|r| r.kind)
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            (Fetched::Objects(found), refs.len() == 1, kinds > 1, missing)
        }
    };
    let table_format = matches!(format, OutputFormat::Table | OutputFormat::Wide);
    let text = match &fetched {
        Fetched::Objects(found) if found.is_empty() && (single || table_format) => None,
        _ => Some(render(&fetched, format, single, multi_kind)?),
    };
    match text {
        // A table of nothing: the list answer had no items.
        Some(Rendered::Text(text)) if table_format && text.is_empty() => {
            eprintln!("No objects found.")
        }
        Some(Rendered::Text(text)) => print_out(&text)?,
        Some(Rendered::Json(json)) => print_json(&json)?,
        None if table_format && missing.is_empty() => eprintln!("No objects found."),
        None => {}
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
