//! Waiting for an object to reach a condition or to disappear, until a deadline (used by
//! `wait`, `apply --wait` and `delete --wait`): each answer of the daemon carries its
//! change counter, and the next request long-polls with it (the daemon answers as soon
//! as a reconcile changes the object); a daemon that sends no counter is polled.

use std::str::FromStr;
use std::time::Duration;

use banger_controller::api::types::{ObjectRef, ObjectView};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::client::{ClientError, DaemonClient};
use crate::output::condition;
use crate::selector::Shown;

/// How often a daemon that sends no change counter is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// The longest single long-poll; the wait asks again until its deadline.
const LONG_POLL: Duration = Duration::from_secs(30);

/// What to wait for (`--for`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitFor {
    /// `condition=TYPE` (status `True`) or `condition=TYPE=STATUS`.
    Condition {
        /// Condition type, e.g. `Ready`.
        type_: String,
        /// `True`, `False` or `Unknown`.
        status: String,
    },
    /// `delete`: the object is gone.
    Delete,
}

impl WaitFor {
    /// Waiting for `Ready=True`.
    pub fn ready() -> WaitFor {
        WaitFor::Condition {
            type_: "Ready".into(),
            status: "True".into(),
        }
    }
}

impl FromStr for WaitFor {
    type Err = String;

    fn from_str(s: &str) -> Result<WaitFor, String> {
        const EXPECTED: &str = "expected condition=TYPE, condition=TYPE=STATUS or delete";
        if s == "delete" {
            return Ok(WaitFor::Delete);
        }
        let Some(rest) = s.strip_prefix("condition=") else {
            return Err(format!("bad --for {s:?}: {EXPECTED}"));
        };
        let (type_, status) = rest.split_once('=').unwrap_or((rest, "True"));
        if type_.is_empty() || type_.contains('=') {
            return Err(format!("bad --for {s:?}: {EXPECTED}"));
        }
        let status = match status.to_ascii_lowercase().as_str() {
            "true" => "True",
            "false" => "False",
            "unknown" => "Unknown",
            _ => {
                return Err(format!(
                    "bad condition status {status:?}: expected True, False or Unknown"
                ))
            }
        };
        Ok(WaitFor::Condition {
            type_: type_.to_string(),
            status: status.to_string(),
        })
    }
}

impl std::fmt::Display for WaitFor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitFor::Condition { type_, status } => write!(f, "condition {type_}={status}"),
            WaitFor::Delete => f.write_str("deletion"),
        }
    }
}

/// Whether `object` (None = absent) satisfies `wanted`. A condition counts only when it
/// was computed for the object's current generation, so a `Ready=True` left over from
/// the previous spec does not end a wait after an apply.
pub fn is_met(object: Option<&ObjectView>, wanted: &WaitFor) -> bool {
    match (wanted, object) {
        (WaitFor::Delete, None) => true,
        (WaitFor::Delete, Some(_)) | (WaitFor::Condition { .. }, None) => false,
        (WaitFor::Condition { type_, status }, Some(object)) => condition(object, type_)
            .is_some_and(|c| {
                c.status == *status && c.observed_generation >= object.metadata.generation
            }),
    }
}

/// Describes where an object stands, for a timeout message.
pub fn current_state(object: Option<&ObjectView>, wanted: &WaitFor) -> String {
    let Some(object) = object else {
        return "it does not exist".to_string();
    };
    let type_ = match wanted {
        WaitFor::Condition { type_, .. } => type_.as_str(),
        WaitFor::Delete => "Ready",
    };
    let mut state = format!(
        "phase {}",
        if object.status.phase.is_empty() {
            "-"
        } else {
            &object.status.phase
        }
    );
    match condition(object, type_) {
        Some(c) => {
            state.push_str(&format!(", {}={}", c.type_, c.status));
            if !c.reason.is_empty() {
                state.push_str(&format!(" ({})", c.reason));
            }
            if c.observed_generation < object.metadata.generation {
                state.push_str(&format!(
                    " for generation {} of {}",
                    c.observed_generation, object.metadata.generation
                ));
            }
            if !c.message.is_empty() {
                state.push_str(&format!(": {}", c.message));
            }
        }
        None => state.push_str(&format!(", no {type_} condition yet")),
    }
    if let Some(stalled) =
        condition(object, "Stalled").filter(|c| c.status == "True" && type_ != "Stalled")
    {
        state.push_str(&format!("; Stalled: {}", stalled.message));
    }
    state
}

/// The outcome of a wait.
#[derive(Debug)]
pub enum WaitOutcome {
    /// The wait was satisfied.
    Met,
    /// The deadline passed; where the object stood then.
    TimedOut(String),
    /// The object cannot get there without the user acting (see [`blocked_reason`]).
    Blocked(String),
}

/// Reasons of `Ready=False` that no amount of waiting fixes: the user must act.
const BLOCKING_REASONS: [&str; 2] = ["RecreateBlocked", "GuestChanged"];

/// Why `object` cannot become Ready without the user acting, if it cannot: `Ready=False`
/// for its current generation with a reason in [`BLOCKING_REASONS`], set at or after
/// `since` (a condition set before then may predate what the user just changed).
pub fn blocked_reason(object: &ObjectView, since: OffsetDateTime) -> Option<String> {
    condition(object, "Ready")
        .filter(|c| {
            c.status == "False"
                && c.observed_generation >= object.metadata.generation
                && BLOCKING_REASONS.contains(&c.reason.as_str())
                && OffsetDateTime::parse(&c.last_transition_time, &Rfc3339)
                    .is_ok_and(|t| t >= since)
        })
        .map(|c| format!("{}: {}", c.reason, c.message))
}

/// Waits until `wanted` holds for `object` or `deadline` passes.
pub async fn wait_until(
    client: &DaemonClient,
    object: &ObjectRef,
    wanted: &WaitFor,
    deadline: Instant,
) -> Result<WaitOutcome, ClientError> {
    wait_until_or_blocked(client, object, wanted, deadline, None, None).await
}

/// Like [`wait_until`]; with `blocked_since`, also returns as soon as the object is
/// blocked (see [`blocked_reason`]); with `progress`, shows an Image's pull while it
/// runs.
pub async fn wait_until_or_blocked(
    client: &DaemonClient,
    object: &ObjectRef,
    wanted: &WaitFor,
    deadline: Instant,
    blocked_since: Option<OffsetDateTime>,
    mut progress: Option<&mut crate::progress::PullProgress>,
) -> Result<WaitOutcome, ClientError> {
    let (mut after, mut wait) = (None, Duration::ZERO);
    loop {
        let asked = client.get_changed(object, after, wait);
        let (view, change) = match tokio::time::timeout_at(deadline, asked).await {
            Ok(answer) => answer?,
            // The deadline passed during a long-poll: where the object stands now.
            Err(_) => client.get_changed(object, None, Duration::ZERO).await?,
        };
        if let (Some(p), Some(v)) = (progress.as_deref_mut(), view.as_ref()) {
            p.show(v);
        }
        if is_met(view.as_ref(), wanted) {
            if let Some(p) = progress.as_deref_mut() {
                p.finish();
            }
            return Ok(WaitOutcome::Met);
        }
        let blocked = view
            .as_ref()
            .zip(blocked_since)
            .and_then(|(v, since)| blocked_reason(v, since));
        if let Some(reason) = blocked {
            return Ok(WaitOutcome::Blocked(reason));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(WaitOutcome::TimedOut(current_state(view.as_ref(), wanted)));
        }
        after = change;
        wait = LONG_POLL.min(deadline - now);
        if change.is_none() {
            tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
        }
    }
}

/// The timeout message of a wait.
pub fn timeout_message(
    object: &ObjectRef,
    wanted: &WaitFor,
    timeout: Duration,
    state: &str,
) -> String {
    format!(
        "timed out after {} waiting for {} of {}: {state}",
        crate::duration::show(timeout),
        wanted,
        Shown(object)
    )
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use banger_controller::api::types::{Condition, ObjectMetaView, StatusView};
    use banger_specs::Kind;

    fn view(generation: i64, conditions: &[(&str, &str, i64)]) -> ObjectView {
        ObjectView {
            api_version: "banger.dev/v1alpha1".into(),
            kind: Kind::Vm,
            metadata: ObjectMetaView {
                name: "dev".into(),
                uid: "u".into(),
                generation,
                creation_timestamp: "2026-01-01T00:00:00Z".into(),
                deletion_timestamp: None,
                labels: Default::default(),
                annotations: Default::default(),
            },
            spec: serde_json::json!({}),
            status: StatusView {
                phase: "Creating".into(),
                conditions: conditions
                    .iter()
                    .map(|(t, s, g)| Condition {
                        type_: t.to_string(),
                        status: s.to_string(),
                        reason: "Because".into(),
                        message: "msg".into(),
                        last_transition_time: String::new(),
                        observed_generation: *g,
                    })
                    .collect(),
                ..StatusView::default()
            },
        }
    }

    #[test]
    fn parses_for_forms() {
        assert_eq!("condition=Ready".parse(), Ok(WaitFor::ready()));
        assert_eq!(
            "condition=Stalled=false".parse(),
            Ok(WaitFor::Condition {
                type_: "Stalled".into(),
                status: "False".into()
            })
        );
        assert_eq!("delete".parse(), Ok(WaitFor::Delete));
        for bad in [
            "Ready",
            "condition=",
            "condition=Ready=maybe",
            "condition==True",
            "deleted",
        ] {
            assert!(bad.parse::<WaitFor>().is_err(), "{bad}");
        }
    }

    #[test]
    fn conditions_count_only_for_the_current_generation() {
        assert!(is_met(
            Some(&view(2, &[("Ready", "True", 2)])),
            &WaitFor::ready()
        ));
        assert!(!is_met(
            Some(&view(2, &[("Ready", "True", 1)])),
            &WaitFor::ready()
        ));
        assert!(!is_met(
            Some(&view(2, &[("Ready", "False", 2)])),
            &WaitFor::ready()
        ));
        assert!(!is_met(Some(&view(1, &[])), &WaitFor::ready()));
        assert!(!is_met(None, &WaitFor::ready()));
        let not_ready = WaitFor::Condition {
            type_: "Ready".into(),
            status: "False".into(),
        };
        assert!(is_met(Some(&view(1, &[("Ready", "False", 1)])), &not_ready));
    }

    #[test]
    fn recreate_blocked_for_the_current_generation_blocks() {
        let since = time::macros::datetime!(2026-01-01 00:00:00 UTC);
        let mut v = view(2, &[("Ready", "False", 2)]);
        v.status.conditions[0].reason = "RecreateBlocked".into();
        v.status.conditions[0].last_transition_time = "2026-01-01T00:00:00.5Z".into();
        assert_eq!(
            blocked_reason(&v, since),
            Some("RecreateBlocked: msg".to_string())
        );
        // Set before the apply: it may be stale.
        let later = time::macros::datetime!(2026-01-01 00:00:01 UTC);
        assert_eq!(blocked_reason(&v, later), None);
        v.status.conditions[0].observed_generation = 1;
        assert_eq!(blocked_reason(&v, since), None);
        assert_eq!(
            blocked_reason(&view(2, &[("Ready", "False", 2)]), since),
            None
        );
    }

    #[test]
    fn delete_is_met_when_absent() {
        assert!(is_met(None, &WaitFor::Delete));
        assert!(!is_met(Some(&view(1, &[])), &WaitFor::Delete));
    }

    #[test]
    fn state_for_messages() {
        assert_eq!(current_state(None, &WaitFor::ready()), "it does not exist");
        assert_eq!(
            current_state(Some(&view(2, &[("Ready", "False", 1)])), &WaitFor::ready()),
            "phase Creating, Ready=False (Because) for generation 1 of 2: msg"
        );
        assert_eq!(
            current_state(Some(&view(1, &[])), &WaitFor::ready()),
            "phase Creating, no Ready condition yet"
        );
    }
}
