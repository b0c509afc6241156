//! The figures of issue 11 (P1–P10): what each measures, its unit, its target and the
//! value the issue measured on main, and the outcome of measuring it.
//!
//! A figure has one or more parts (P5 is memory *and* idle CPU); its headline is the
//! first part. An outcome is a measurement (a value per part plus free-form detail),
//! a skip with its reason (no root, no QEMU, no guest kit) or a failure with its error.

use std::fmt;

use serde_json::{json, Value};

use crate::stats::round3;

/// One figure of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FigureId {
    /// Spec file written → first step starts.
    P1,
    /// Daemon CPU per no-op resync of the fleet.
    P2,
    /// Fleet applied in one request → all Running.
    P3,
    /// Apply → guest ready, banger vs bare QEMU.
    P4,
    /// Daemon RSS with the fleet recorded; idle CPU.
    P5,
    /// `banger get vms` with the fleet.
    P6,
    /// Daemon restart → all observed and Ready again.
    P7,
    /// Apply → VMM process started.
    P8,
    /// `delete --wait` of a VM whose guest ignores the power button.
    P9,
    /// Guest ready → `Ready=True` → `banger wait` returns.
    P10,
}

/// Whether a part's value must stay under or over its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// `value <= target`.
    AtMost,
    /// `value >= target`.
    AtLeast,
}

impl Rule {
    /// `<=` or `>=`.
    pub fn symbol(self) -> &'static str {
        match self {
            Rule::AtMost => "<=",
            Rule::AtLeast => ">=",
        }
    }

    /// Whether `value` meets `target`.
    pub fn met(self, value: f64, target: f64) -> bool {
        match self {
            Rule::AtMost => value <= target,
            Rule::AtLeast => value >= target,
        }
    }
}

/// One measured quantity of a figure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Part {
    /// Key in the JSON (`table`, `json`, …).
    pub key: &'static str,
    /// Unit of the value.
    pub unit: &'static str,
    /// The target.
    pub target: f64,
    /// How the value compares to the target.
    pub rule: Rule,
}

/// What the issue says about a figure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FigureSpec {
    /// What is measured, in the words.
    pub title: &'static str,
    /// Its parts, headline first.
    pub parts: &'static [Part],
    /// The value the issue measured on main.
    pub on_main: &'static str,
}

const fn at_most(key: &'static str, unit: &'static str, target: f64) -> Part {
    Part {
        key,
        unit,
        target,
        rule: Rule::AtMost,
    }
}

const P1_PARTS: &[Part] = &[at_most("median", "ms", 25.0)];
const P2_PARTS: &[Part] = &[
    at_most("cpuPerResync", "ms", 50.0),
    at_most("mutatingSteps", "steps", 0.0),
];
const P3_PARTS: &[Part] = &[Part {
    key: "rate",
    unit: "VMs/s",
    target: 1000.0,
    rule: Rule::AtLeast,
}];
const P4_PARTS: &[Part] = &[at_most("ratio", "x", 1.10)];
const P5_PARTS: &[Part] = &[
    at_most("rss", "MiB", 20.0),
    at_most("idleCpu", "% of a core", 0.2),
];
const P6_PARTS: &[Part] = &[at_most("table", "ms", 30.0), at_most("json", "ms", 30.0)];
const P7_PARTS: &[Part] = &[at_most("restart", "s", 1.0)];
const P8_PARTS: &[Part] = &[at_most("vmmStart", "ms", 50.0)];
const P9_PARTS: &[Part] = &[at_most("deleteWait", "s", 2.0)];
const P10_PARTS: &[Part] = &[at_most("ready", "ms", 50.0), at_most("wait", "ms", 50.0)];

impl FigureId {
    /// Every figure, in order.
    pub const ALL: [FigureId; 10] = [
        FigureId::P1,
        FigureId::P2,
        FigureId::P3,
        FigureId::P4,
        FigureId::P5,
        FigureId::P6,
        FigureId::P7,
        FigureId::P8,
        FigureId::P9,
        FigureId::P10,
    ];

    /// `P1` … `P10`.
    pub fn key(self) -> &'static str {
        match self {
            FigureId::P1 => "P1",
            FigureId::P2 => "P2",
            FigureId::P3 => "P3",
            FigureId::P4 => "P4",
            FigureId::P5 => "P5",
            FigureId::P6 => "P6",
            FigureId::P7 => "P7",
            FigureId::P8 => "P8",
            FigureId::P9 => "P9",
            FigureId::P10 => "P10",
        }
    }

    /// Parses `P6` (or `p6`).
    pub fn parse(text: &str) -> Result<FigureId, String> {
        let t = text.trim();
        FigureId::ALL
            .into_iter()
            .find(|f| f.key().eq_ignore_ascii_case(t))
            .ok_or_else(|| format!("unknown figure {t:?} (known: P1 to P10)"))
    }

    /// What the issue says about this figure.
    pub fn spec(self) -> FigureSpec {
        match self {
            FigureId::P1 => FigureSpec {
                title: "spec file written -> first step starts (median; editors' save patterns, one reconcile each)",
                parts: P1_PARTS,
                on_main: "~204 ms",
            },
            FigureId::P2 => FigureSpec {
                title: "daemon CPU per no-op resync of 1,000 converged VMs; mutating steps",
                parts: P2_PARTS,
                on_main: "~210 ms",
            },
            FigureId::P3 => FigureSpec {
                title: "1,000 VMs applied in one request -> all Running",
                parts: P3_PARTS,
                on_main: "~330 VMs/s",
            },
            FigureId::P4 => FigureSpec {
                title: "apply -> guest ready through banger / bare qemu-system-x86_64 (ratio of medians)",
                parts: P4_PARTS,
                on_main: "~0.9-1.0",
            },
            FigureId::P5 => FigureSpec {
                title: "daemon RSS with 1,000 VMs recorded; idle CPU with the default resync",
                parts: P5_PARTS,
                on_main: "~23 MiB; ~1 %",
            },
            FigureId::P6 => FigureSpec {
                title: "`banger get vms` with 1,000 VMs, end to end (table; -o json)",
                parts: P6_PARTS,
                on_main: "~84 ms; ~105 ms",
            },
            FigureId::P7 => FigureSpec {
                title: "daemon restart with 1,000 running VMs recorded -> all observed and Ready again",
                parts: P7_PARTS,
                on_main: "not measured",
            },
            FigureId::P8 => FigureSpec {
                title: "apply -> VMM process started (the controller's critical path)",
                parts: P8_PARTS,
                on_main: "160-170 ms",
            },
            FigureId::P9 => FigureSpec {
                title: "`delete --wait` of a running VM whose guest ignores the power button",
                parts: P9_PARTS,
                on_main: "15.2 s",
            },
            FigureId::P10 => FigureSpec {
                title: "guest ready -> Ready=True in status; -> `banger wait --for=condition=Ready` returns",
                parts: P10_PARTS,
                on_main: "~310 ms; ~380 ms",
            },
        }
    }
}

impl fmt::Display for FigureId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// A measurement: one value per part of the figure, in the spec's order.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// The values.
    pub values: Vec<f64>,
    /// How they were obtained: samples, breakdowns, checks.
    pub detail: Value,
}

/// What became of one figure in a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Measured.
    Measured(Measured),
    /// Not measured on this machine, and why.
    Skipped(String),
    /// The measurement failed.
    Failed(String),
}

impl Outcome {
    /// The figure's JSON object in the report.
    pub fn to_json(&self, id: FigureId) -> Value {
        let spec = id.spec();
        let head = spec.parts[0];
        let mut obj = json!({
            "title": spec.title,
            "unit": head.unit,
            "target": head.target,
            "rule": head.rule.symbol(),
            "onMain": spec.on_main,
        });
        match self {
            Outcome::Measured(m) => {
                let part_json = |p: &Part, v: f64| {
                    json!({"value": round3(v), "unit": p.unit, "target": p.target,
                           "rule": p.rule.symbol(), "met": p.rule.met(v, p.target)})
                };
                let pairs: Vec<(&Part, f64)> =
                    spec.parts.iter().zip(m.values.iter().copied()).collect();
                obj["value"] = pairs
                    .first()
                    .map_or(Value::Null, |(_, v)| json!(round3(*v)));
                obj["met"] = json!(
                    pairs.len() == spec.parts.len()
                        && pairs.iter().all(|(p, v)| p.rule.met(*v, p.target))
                );
                if spec.parts.len() > 1 {
                    obj["parts"] = pairs
                        .iter()
                        .map(|(p, v)| (p.key.to_string(), part_json(p, *v)))
                        .collect::<serde_json::Map<_, _>>()
                        .into();
                }
                obj["detail"] = m.detail.clone();
            }
            Outcome::Skipped(why) => {
                obj["value"] = Value::Null;
                obj["skipped"] = json!(why);
            }
            Outcome::Failed(why) => {
                obj["value"] = Value::Null;
                obj["error"] = json!(why);
            }
        }
        obj
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_figure_names() {
        assert_eq!(FigureId::parse("p6"), Ok(FigureId::P6));
        assert_eq!(FigureId::parse(" P10 "), Ok(FigureId::P10));
        assert!(FigureId::parse("P11").is_err());
        for f in FigureId::ALL {
            assert_eq!(FigureId::parse(f.key()), Ok(f));
            assert!(!f.spec().parts.is_empty());
        }
    }

    #[test]
    fn rules_compare_with_targets() {
        assert!(Rule::AtMost.met(25.0, 25.0) && !Rule::AtMost.met(25.1, 25.0));
        assert!(Rule::AtLeast.met(1000.0, 1000.0) && !Rule::AtLeast.met(999.0, 1000.0));
    }

    #[test]
    fn a_measured_figure_reports_every_part() {
        let out = Outcome::Measured(Measured {
            values: vec![84.0, 29.0],
            detail: json!({"runs": 20}),
        });
        let j = out.to_json(FigureId::P6);
        assert_eq!(j["value"], 84.0);
        assert_eq!(j["unit"], "ms");
        assert_eq!(j["met"], false);
        assert_eq!(j["parts"]["json"]["met"], true);
        assert_eq!(j["parts"]["table"]["target"], 30.0);
        assert_eq!(j["detail"]["runs"], 20);
    }

    #[test]
    fn skipped_and_failed_figures_say_why() {
        let j = Outcome::Skipped("needs root".into()).to_json(FigureId::P4);
        assert_eq!(j["value"], Value::Null);
        assert_eq!(j["skipped"], "needs root");
        let j = Outcome::Failed("boom".into()).to_json(FigureId::P4);
        assert_eq!(j["error"], "boom");
    }
}
