//! Reading the API's documented JSON (`docs/api.md`): an object's generation, phase,
//! conditions and pid, and `describe`'s journal rows and events with their times.
//!
//! The harness reads only these documented fields, so it keeps working while the
//! engine behind them changes.

use std::time::SystemTime;

use serde_json::Value;

use crate::clock;
use crate::error::{BenchError, Result};

/// `metadata.generation`.
pub fn generation(obj: &Value) -> i64 {
    obj["metadata"]["generation"].as_i64().unwrap_or(-1)
}

/// `status.observedGeneration`.
pub fn observed_generation(obj: &Value) -> i64 {
    obj["status"]["observedGeneration"].as_i64().unwrap_or(-1)
}

/// `status.phase`.
pub fn phase(obj: &Value) -> &str {
    obj["status"]["phase"].as_str().unwrap_or("")
}

/// `status.pid`.
pub fn pid(obj: &Value) -> Option<u32> {
    obj["status"]["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
}

/// `metadata.name`.
pub fn name(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or("")
}

/// The condition of type `type_`.
pub fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Whether condition `type_` is `True` for the object's current generation.
pub fn is_true(obj: &Value, type_: &str) -> bool {
    condition(obj, type_).is_some_and(|c| {
        c["status"] == "True" && c["observedGeneration"].as_i64() == Some(generation(obj))
    })
}

/// When condition `type_` last changed status.
pub fn transition_time(obj: &Value, type_: &str) -> Result<SystemTime> {
    let c = condition(obj, type_)
        .ok_or_else(|| BenchError::Unexpected(format!("{} has no {type_} condition", name(obj))))?;
    clock::parse(c["lastTransitionTime"].as_str().unwrap_or_default())
}

/// A VM that runs as desired: phase `Running`, `Ready=True`, work done.
pub fn vm_converged(obj: &Value) -> bool {
    phase(obj) == "Running"
        && is_true(obj, "Ready")
        && observed_generation(obj) == generation(obj)
        && condition(obj, "Reconciling").is_some_and(|c| c["status"] == "False")
}

/// One journal row of `describe`.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Step name (`launch`, `prepare-disk`, …).
    pub name: String,
    /// When it started.
    pub started: SystemTime,
    /// How long it took, once finished.
    pub duration_ms: Option<f64>,
    /// `running`, `done`, `failed`, …
    pub outcome: String,
}

impl Step {
    /// When it finished (its start while it runs).
    pub fn ended(&self) -> SystemTime {
        let ms = self.duration_ms.unwrap_or(0.0).max(0.0);
        self.started + std::time::Duration::from_secs_f64(ms / 1000.0)
    }
}

/// The journal rows of a `describe` answer.
pub fn steps(describe: &Value) -> Result<Vec<Step>> {
    describe["steps"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|s| {
            Ok(Step {
                name: s["step"].as_str().unwrap_or_default().to_string(),
                started: clock::parse(s["started"].as_str().unwrap_or_default())?,
                duration_ms: s["durationMs"].as_f64(),
                outcome: s["outcome"].as_str().unwrap_or_default().to_string(),
            })
        })
        .collect()
}

/// One event of `describe`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When.
    pub time: SystemTime,
    /// `Normal` or `Warning`.
    pub type_: String,
    /// CamelCase reason.
    pub reason: String,
}

/// The events of a `describe` answer.
pub fn events(describe: &Value) -> Result<Vec<Event>> {
    describe["events"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|e| {
            Ok(Event {
                time: clock::parse(e["time"].as_str().unwrap_or_default())?,
                type_: e["type"].as_str().unwrap_or_default().to_string(),
                reason: e["reason"].as_str().unwrap_or_default().to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vm() -> Value {
        json!({
            "metadata": {"name": "a", "generation": 2},
            "status": {"phase": "Running", "observedGeneration": 2, "pid": 42,
                "conditions": [
                    {"type": "Ready", "status": "True", "observedGeneration": 2,
                     "lastTransitionTime": "2026-11-30T10:00:00.5Z"},
                    {"type": "Reconciling", "status": "False", "observedGeneration": 2,
                     "lastTransitionTime": "2026-11-30T10:00:00Z"}]}
        })
    }

    #[test]
    fn reads_an_object() {
        let v = vm();
        assert_eq!((generation(&v), observed_generation(&v)), (2, 2));
        assert_eq!((phase(&v), name(&v), pid(&v)), ("Running", "a", Some(42)));
        assert!(is_true(&v, "Ready") && vm_converged(&v));
        assert!(!is_true(&v, "Stalled"));
        let t = transition_time(&v, "Ready").expect("time");
        let t0 = clock::parse("2026-11-30T10:00:00Z").expect("time");
        assert_eq!(clock::ms_between(t0, t), 500.0);
    }

    #[test]
    fn a_condition_of_an_older_generation_does_not_count() {
        let mut v = vm();
        v["metadata"]["generation"] = json!(3);
        assert!(!is_true(&v, "Ready") && !vm_converged(&v));
    }

    #[test]
    fn reads_describe() {
        let d = json!({
            "steps": [{"step": "launch", "started": "2026-11-30T10:00:00Z", "durationMs": 60,
                       "outcome": "done"}],
            "events": [{"time": "2026-11-30T10:00:01Z", "type": "Warning", "reason": "InvalidSpec"}]
        });
        let s = steps(&d).expect("steps");
        assert_eq!(s[0].name, "launch");
        assert_eq!(clock::ms_between(s[0].started, s[0].ended()), 60.0);
        let e = events(&d).expect("events");
        assert_eq!(
            (e[0].type_.as_str(), e[0].reason.as_str()),
            ("Warning", "InvalidSpec")
        );
    }
}
