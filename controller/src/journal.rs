//! The step journal's records: a row is written `running` before each side-effecting
//! step and completed after it, so a daemon that dies mid-step leaves a row saying what
//! it was doing ([`crate::engine`] recovers them at the next start).

use banger_specs::Kind;
use serde::{Deserialize, Serialize};
use strum::{Display, EnumIter, EnumString, IntoStaticStr};

/// How a journaled step ended (stored as its kebab-case name).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    Display,
    EnumString,
    IntoStaticStr,
    EnumIter,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum JournalOutcome {
    /// Started, not finished (or the daemon died meanwhile).
    Running,
    /// Finished successfully.
    Done,
    /// Finished with an error.
    Failed,
    /// Interrupted by a daemon stop and undone at the next start.
    RolledBack,
    /// Interrupted by a daemon stop; the next reconcile plans again from what is there.
    Resumed,
    /// Interrupted, and its object is gone.
    Abandoned,
}

/// One journal row as recovery reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRow {
    /// Row id.
    pub id: i64,
    /// Object uid.
    pub uid: String,
    /// Object kind.
    pub kind: Kind,
    /// Object name.
    pub name: String,
    /// Step name (a [`crate::planner::Action`] name).
    pub step: String,
    /// How it ended so far.
    pub outcome: JournalOutcome,
}

/// One step of an object, as `describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// Step name.
    pub step: String,
    /// RFC 3339 start time.
    pub started: String,
    /// Duration in milliseconds, when finished.
    pub duration_ms: Option<i64>,
    /// How it ended.
    pub outcome: JournalOutcome,
    /// Error message, when failed.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;
    use strum::IntoEnumIterator;

    #[test]
    fn outcomes_are_stored_as_kebab_case_names() {
        assert_eq!(JournalOutcome::RolledBack.to_string(), "rolled-back");
        for o in JournalOutcome::iter() {
            assert_eq!(JournalOutcome::from_str(&o.to_string()).unwrap(), o);
            assert_eq!(serde_json::to_string(&o).unwrap(), format!("\"{o}\""));
        }
    }
}
