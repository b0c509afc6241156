//! Object status: phases and Kubernetes-style conditions.
//!
//! Guarantee: a condition's `lastTransitionTime` moves only when its `status` changes;
//! reason, message and observedGeneration are refreshed in place. The functions here
//! are pure; the clock is passed in.

use serde::{Deserialize, Serialize};

use crate::api::types::Condition;

/// Condition type: the object is as desired.
pub const READY: &str = "Ready";
/// Condition type: the engine is working on the object.
pub const RECONCILING: &str = "Reconciling";
/// Condition type: repeated failures; the engine backs off.
pub const STALLED: &str = "Stalled";
/// Condition type (VMs): the guest passed its readiness check.
pub const GUEST_READY: &str = "GuestReady";
/// Condition type (Workspaces): the files are copied into the VM's current guest.
pub const SYNCED: &str = "Synced";
/// Condition type: the object's spec file is invalid; the last good spec is kept.
pub const SPEC_VALID: &str = "SpecValid";

/// `True`.
pub const TRUE: &str = "True";
/// `False`.
pub const FALSE: &str = "False";
/// `Unknown`.
pub const UNKNOWN: &str = "Unknown";

/// Lifecycle phase of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Phase {
    /// Accepted, nothing done yet (or waiting on another object).
    #[default]
    Pending,
    /// Being made.
    Creating,
    /// VM: the VMM runs.
    Running,
    /// VM: stopped on purpose (disk kept).
    Stopped,
    /// VM: exited and not restarted; or an unrecoverable error.
    Failed,
    /// Being deleted.
    Deleting,
    /// Image/Workspace: usable.
    Ready,
}

impl Phase {
    /// The phase's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Creating => "Creating",
            Phase::Running => "Running",
            Phase::Stopped => "Stopped",
            Phase::Failed => "Failed",
            Phase::Deleting => "Deleting",
            Phase::Ready => "Ready",
        }
    }
}

/// A condition to set: type, status, reason, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionUpdate<'a> {
    /// Condition type.
    pub type_: &'a str,
    /// `True`, `False`, `Unknown`.
    pub status: &'a str,
    /// CamelCase reason.
    pub reason: &'a str,
    /// Message.
    pub message: String,
}

/// Sets a condition. `lastTransitionTime` becomes `now` only when the status changes
/// (or the condition is new). Returns whether anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    update: ConditionUpdate<'_>,
    generation: i64,
    now: &str,
) -> bool {
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == update.type_) {
        let before = c.clone();
        if c.status != update.status {
            c.last_transition_time = now.to_string();
        }
        c.status = update.status.to_string();
        c.reason = update.reason.to_string();
        c.message = update.message;
        c.observed_generation = generation;
        return *c != before;
    }
    conditions.push(Condition {
        type_: update.type_.to_string(),
        status: update.status.to_string(),
        reason: update.reason.to_string(),
        message: update.message,
        last_transition_time: now.to_string(),
        observed_generation: generation,
    });
    true
}

/// Removes a condition; returns whether it was there.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != type_);
    before != conditions.len()
}

/// Finds a condition.
pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether a condition is `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    condition(conditions, type_).is_some_and(|c| c.status == TRUE)
}

/// The current time as RFC 3339 (UTC).
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up<'a>(status: &'a str, reason: &'a str) -> ConditionUpdate<'a> {
        ConditionUpdate {
            type_: READY,
            status,
            reason,
            message: reason.to_string(),
        }
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut cs = Vec::new();
        assert!(set_condition(&mut cs, up(FALSE, "Creating"), 1, "t1"));
        assert!(set_condition(&mut cs, up(FALSE, "Booting"), 1, "t2"));
        assert_eq!(cs[0].last_transition_time, "t1");
        assert_eq!(cs[0].reason, "Booting");
        assert!(!set_condition(&mut cs, up(FALSE, "Booting"), 1, "t3"));
        assert!(set_condition(&mut cs, up(TRUE, "Running"), 2, "t4"));
        assert_eq!(cs[0].last_transition_time, "t4");
        assert_eq!(cs[0].observed_generation, 2);
        assert!(is_true(&cs, READY));
        assert!(remove_condition(&mut cs, READY));
        assert!(cs.is_empty());
    }
}
