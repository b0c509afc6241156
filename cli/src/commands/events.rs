//! `banger events [KIND[/NAME]] [--follow]`: what the daemon did and why.

use std::process::ExitCode;

use banger_controller::api::types::EventView;
use time::OffsetDateTime;

use crate::client::{DaemonClient, EventQuery};
use crate::error::{print_out, CliError};
use crate::output::{age_since, Table};
use crate::selector::{parse_selection, show, Selection, SelectorError};

/// Seconds one long-poll of `--follow` waits for new events.
const FOLLOW_POLL_SECONDS: u64 = 30;

/// Most events the daemon returns in one answer.
const PAGE: usize = 1000;
/// Bound on the pages read at start.
const MAX_PAGES: usize = 10_000;

/// Arguments of `banger events`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  # Recent events of every object
  banger events

  # Events of all VMs, or of one VM
  banger events vms
  banger events vm/dev

  # Keep printing new events until Ctrl-C
  banger events vm/dev --follow")]
pub struct EventsArgs {
    /// KIND, KIND NAME or KIND/NAME (default: every object).
    #[arg(value_name = "KIND|KIND/NAME")]
    pub args: Vec<String>,
    /// Keep printing new events until interrupted.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

fn event_row(event: &EventView, now: OffsetDateTime) -> [String; 5] {
    [
        age_since(&event.time, now),
        event.type_.clone(),
        event.reason.clone(),
        show(event.kind, &event.name),
        event.message.clone(),
    ]
}

/// The events as a table.
pub fn events_table(events: &[EventView], now: OffsetDateTime) -> String {
    let mut table = Table::new(["AGE", "TYPE", "REASON", "OBJECT", "MESSAGE"]);
    for event in events {
        table.row(event_row(event, now));
    }
    table.render()
}

/// Runs `banger events`.
pub async fn run(client: &DaemonClient, args: &EventsArgs) -> Result<ExitCode, CliError> {
    let mut query = match parse_selection(&args.args)? {
        Selection::All => EventQuery::default(),
        Selection::Kind(kind) => EventQuery {
            kind: Some(kind),
            ..EventQuery::default()
        },
        Selection::Objects(objects) => match objects.as_slice() {
            [object] => EventQuery {
                kind: Some(object.kind),
                name: Some(object.name.clone()),
                ..EventQuery::default()
            },
            _ => return Err(SelectorError::NotOne(objects.len()).into()),
        },
    };
    // The daemon answers at most PAGE events at a time, oldest first: page to the end.
    let mut events = Vec::new();
    for _ in 0..MAX_PAGES {
        let page = client.events(&query).await?;
        let full = page.len() >= PAGE;
        query.after = page.iter().map(|e| e.id).max().or(query.after);
        events.extend(page);
        if !full {
            break;
        }
    }
    if events.is_empty() && !args.follow {
        eprintln!("No events found.");
    } else if !events.is_empty() {
        print_out(&events_table(&events, OffsetDateTime::now_utc()))?;
    }
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    query.after = query.after.or(Some(0));
    query.wait_seconds = Some(FOLLOW_POLL_SECONDS);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    // Runs until Ctrl-C or until the daemon goes away (each poll is bounded in time).
    loop {
        let batch = tokio::select! {
            _ = &mut interrupted => return Ok(ExitCode::SUCCESS),
            batch = client.events(&query) => batch?,
        };
        let now = OffsetDateTime::now_utc();
        let mut text = String::new();
        for event in &batch {
            text.push_str(&event_row(event, now).join("   "));
            text.push('\n');
            query.after = Some(query.after.unwrap_or(0).max(event.id));
        }
        print_out(&text)?;
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use banger_specs::Kind;
    use time::macros::datetime;

    #[test]
    fn events_table_columns() {
        let event = EventView {
            id: 3,
            time: "2026-01-01T00:00:00Z".into(),
            kind: Kind::Image,
            name: "base".into(),
            type_: "Warning".into(),
            reason: "PullFailed".into(),
            message: "registry unreachable".into(),
        };
        assert_eq!(
            events_table(&[event], datetime!(2026-01-01 00:00:05 UTC)),
            "AGE   TYPE      REASON       OBJECT       MESSAGE\n\
             5s    Warning   PullFailed   image/base   registry unreachable\n"
        );
    }
}
