//! The run's report: one JSON object (machine, date, command, scale and a key per
//! figure) for `--json FILE`, and a plain table of the same for the terminal.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use crate::error::{BenchError, Result};
use crate::figures::{FigureId, Outcome};
use crate::setup::Scale;
use crate::stats::round3;

/// Everything a report says besides the figures.
#[derive(Debug, Clone)]
pub struct RunInfo<'a> {
    /// The command line of the run.
    pub command: &'a str,
    /// Start of the run (RFC 3339).
    pub date: &'a str,
    /// Whether `--quick` reduced the scale.
    pub quick: bool,
    /// The scale measured at.
    pub scale: &'a Scale,
    /// The machine's facts.
    pub machine: Value,
}

/// The report as JSON.
pub fn to_json(info: &RunInfo<'_>, results: &BTreeMap<FigureId, Outcome>) -> Value {
    let mut obj = json!({
        "harness": concat!("banger-bench ", env!("CARGO_PKG_VERSION")),
        "date": info.date,
        "command": info.command,
        "quick": info.quick,
        "scale": info.scale.to_json(),
        "machine": info.machine,
    });
    for (id, outcome) in results {
        obj[id.key()] = outcome.to_json(*id);
    }
    round_floats(&mut obj);
    obj
}

/// Rounds every non-integer number to three decimals: no figure is more precise, and
/// the report stays readable.
fn round_floats(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => {
            if let Some(r) = n
                .as_f64()
                .map(round3)
                .and_then(serde_json::Number::from_f64)
            {
                *n = r;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(round_floats),
        Value::Object(map) => map.values_mut().for_each(round_floats),
        _ => {}
    }
}

/// Writes the report atomically (a temp file renamed over `path`).
pub fn write(path: &Path, report: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(report)
        .map_err(|e| BenchError::Unexpected(format!("report: {e}")))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map_or("report".into(), |n| n.to_string_lossy())
    ));
    std::fs::write(&tmp, text + "\n").map_err(BenchError::io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(BenchError::io("rename onto", path))
}

fn number(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The plain-text table: figure, measured, target, met, the value on main.
pub fn table(results: &BTreeMap<FigureId, Outcome>) -> String {
    let mut rows = vec![[
        "figure".to_string(),
        "measured".into(),
        "target".into(),
        "met".into(),
        "on main (issue)".into(),
    ]];
    for (id, outcome) in results {
        let spec = id.spec();
        let target = spec
            .parts
            .iter()
            .map(|p| format!("{} {} {}", p.rule.symbol(), number(p.target), p.unit))
            .collect::<Vec<_>>()
            .join("; ");
        let (measured, met) = match outcome {
            Outcome::Measured(m) => {
                let parts: Vec<String> = spec
                    .parts
                    .iter()
                    .zip(&m.values)
                    .map(|(p, v)| format!("{} {}", number(*v), p.unit))
                    .collect();
                let met = spec
                    .parts
                    .iter()
                    .zip(&m.values)
                    .all(|(p, v)| p.rule.met(*v, p.target));
                (parts.join("; "), if met { "yes" } else { "no" }.to_string())
            }
            Outcome::Skipped(why) => (format!("skipped: {why}"), "-".into()),
            Outcome::Failed(why) => (format!("FAILED: {why}"), "-".into()),
        };
        rows.push([id.key().into(), measured, target, met, spec.on_main.into()]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
                .min(60)
        })
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::figures::Measured;

    fn results() -> BTreeMap<FigureId, Outcome> {
        BTreeMap::from([
            (
                FigureId::P5,
                Outcome::Measured(Measured {
                    values: vec![23.4, 0.1],
                    detail: json!({"rssKiB": 23962, "idleCpuMs": 61.23456789}),
                }),
            ),
            (FigureId::P9, Outcome::Skipped("needs root".into())),
        ])
    }

    #[test]
    fn the_json_has_a_key_per_figure_and_the_run() {
        let scale = Scale::quick();
        let info = RunInfo {
            command: "banger-bench --quick",
            date: "2026-11-30T10:00:00Z",
            quick: true,
            scale: &scale,
            machine: json!({"cores": 2}),
        };
        let j = to_json(&info, &results());
        assert_eq!(j["machine"]["cores"], 2);
        assert_eq!(j["P5"]["value"], 23.4);
        assert_eq!(j["P5"]["parts"]["idleCpu"]["met"], true);
        assert_eq!(j["P5"]["detail"]["idleCpuMs"], 61.235);
        assert_eq!(j["P5"]["detail"]["rssKiB"], 23962);
        assert_eq!(j["P9"]["skipped"], "needs root");
        assert!(j.get("P1").is_none(), "only measured figures are reported");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.json");
        write(&path, &j).expect("write");
        let back: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        assert_eq!(back, j);
    }

    #[test]
    fn the_table_shows_values_targets_and_skips() {
        let t = table(&results());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].starts_with("P5"), "{t}");
        assert!(lines[1].contains("23.4 MiB; 0.10 % of a core"), "{t}");
        assert!(lines[1].contains("<= 20.0 MiB; <= 0.20 % of a core"), "{t}");
        assert!(lines[1].contains(" no "), "{t}");
        assert!(lines[2].contains("skipped: needs root"), "{t}");
    }
}
