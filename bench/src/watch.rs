//! P1: a spec file written into the watched directory → the first step of its
//! reconcile starts, for the ways editors and tools save files; and whether each save
//! produced exactly one reconcile of the final content.
//!
//! A simulated daemon watches a specs directory holding an Image and one VM per save
//! pattern. Each sample changes a VM's memory (a restart: its reconcile must run
//! steps) by saving its file one way:
//!
//! - `in-place`: open with truncation, one write, close (editors that overwrite);
//! - `temp-rename`: write a hidden temp file in the same directory, rename it over the
//!   file (atomic savers, vim's default);
//! - `chunked`: open with truncation and write the content in three writes 10 ms
//!   apart, the first ending inside the changed value (a slow writer: every
//!   intermediate state is a different or broken spec);
//! - `burst`: three complete saves 10 ms apart, the last one final (save, then a
//!   formatter saves again).
//!
//! Latency = start of the first journal row (from `describe`) − the instant the final
//! save returned (close or rename). One reconcile of the final content = the
//! generation moved by exactly one, the spec holds the final memory, no step ran twice
//! and no warning event was recorded, checked after a settle time long enough for a
//! late second reconcile to show.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::clock::ms_between;
use crate::daemon::BenchDaemon;
use crate::error::{BenchError, Result};
use crate::figures::Measured;
use crate::manifests::{self, fake_image_files, VmDoc};
use crate::poll;
use crate::setup::Setup;
use crate::stats::Summary;
use crate::views;

/// Quiet time after a sample converged, for a second reconcile to show up.
const SETTLE: Duration = Duration::from_millis(1000);
/// Gap between the writes of `chunked` and the saves of `burst`.
const WRITE_GAP: Duration = Duration::from_millis(10);
/// Bound on one sample's reconcile.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(20);

/// How a file is saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SavePattern {
    InPlace,
    TempRename,
    Chunked,
    Burst,
}

impl SavePattern {
    const ALL: [SavePattern; 4] = [
        SavePattern::InPlace,
        SavePattern::TempRename,
        SavePattern::Chunked,
        SavePattern::Burst,
    ];

    fn name(self) -> &'static str {
        match self {
            SavePattern::InPlace => "in-place",
            SavePattern::TempRename => "temp-rename",
            SavePattern::Chunked => "chunked",
            SavePattern::Burst => "burst",
        }
    }

    fn vm(self) -> String {
        format!("p1-{}", self.name())
    }

    /// Saves `memory_mib` into the VM's file; returns when the final save returned.
    fn save(self, dir: &Path, memory_mib: u64) -> Result<SystemTime> {
        let vm = self.vm();
        let path = dir.join(format!("{vm}.yaml"));
        let doc = |mib: u64| {
            let mut d = VmDoc::new(&vm, "sim");
            d.memory_mib = mib;
            d.yaml()
        };
        match self {
            SavePattern::InPlace => write_in_place(&path, &[doc(memory_mib).as_bytes()]),
            SavePattern::TempRename => {
                let tmp = dir.join(format!(".{vm}.yaml.tmp"));
                write_in_place(&tmp, &[doc(memory_mib).as_bytes()])?;
                fs::rename(&tmp, &path).map_err(BenchError::io("rename onto", &path))?;
                Ok(SystemTime::now())
            }
            SavePattern::Chunked => {
                let text = doc(memory_mib);
                let cut = text
                    .find("memory: ")
                    .map_or(text.len() / 3, |i| i + "memory: ".len() + 1);
                let mid = cut + (text.len() - cut) / 2;
                let b = text.as_bytes();
                write_in_place(&path, &[&b[..cut], &b[cut..mid], &b[mid..]])
            }
            SavePattern::Burst => {
                for early in [memory_mib - 8, memory_mib - 4] {
                    write_in_place(&path, &[doc(early).as_bytes()])?;
                    poll::pause(WRITE_GAP)?;
                }
                write_in_place(&path, &[doc(memory_mib).as_bytes()])
            }
        }
    }
}

/// Opens `path` truncated, writes `chunks` with [`WRITE_GAP`] between them, closes it.
fn write_in_place(path: &Path, chunks: &[&[u8]]) -> Result<SystemTime> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(BenchError::io("open", path))?;
    for (i, chunk) in chunks.iter().enumerate() {
        if i > 0 {
            poll::pause(WRITE_GAP)?;
        }
        f.write_all(chunk).map_err(BenchError::io("write", path))?;
    }
    drop(f);
    Ok(SystemTime::now())
}

/// One sample's result.
struct Sample {
    latency_ms: f64,
    problems: Vec<String>,
}

fn sample(d: &BenchDaemon, pattern: SavePattern, memory_mib: u64) -> Result<Sample> {
    let api = d.api();
    let path = format!("/v1/objects/vms/{}", pattern.vm());
    let before = api.get(&path)?;
    let g0 = views::generation(&before);
    let begin = SystemTime::now();
    let written = pattern.save(&d.specs_dir, memory_mib)?;
    let want = json!(memory_mib << 20);
    poll::until(
        &format!(
            "{} ({}) to converge on {memory_mib} MiB",
            pattern.vm(),
            pattern.name()
        ),
        SAMPLE_TIMEOUT,
        Duration::from_millis(5),
        || {
            let obj = api.get(&path)?;
            Ok((obj["spec"]["memory"] == want && views::vm_converged(&obj)).then_some(()))
        },
    )?;
    poll::pause(SETTLE)?;
    let described = api.get(&format!("{path}/describe"))?;
    let obj = &described["object"];
    let steps: Vec<views::Step> = views::steps(&described)?
        .into_iter()
        .filter(|s| s.started >= begin)
        .collect();
    let first = steps
        .iter()
        .map(|s| s.started)
        .min()
        .ok_or_else(|| BenchError::Unexpected(format!("{}: no step ran", pattern.vm())))?;
    let mut problems = Vec::new();
    let moved = views::generation(obj) - g0;
    if moved != 1 {
        problems.push(format!("generation moved by {moved}"));
    }
    if obj["spec"]["memory"] != want {
        problems.push(format!(
            "spec memory is {} after settling",
            obj["spec"]["memory"]
        ));
    }
    let mut names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        problems.push(format!("a step ran twice: {names:?}"));
    }
    let warnings: Vec<String> = views::events(&described)?
        .into_iter()
        .filter(|e| e.time >= begin && e.type_ == "Warning")
        .map(|e| e.reason)
        .collect();
    if !warnings.is_empty() {
        problems.push(format!("warning events {warnings:?}"));
    }
    Ok(Sample {
        latency_ms: ms_between(written, first),
        problems,
    })
}

/// Measures P1 on a simulated daemon of its own.
pub fn measure(setup: &Setup) -> Result<Measured> {
    let root = setup.work.join("p1");
    let (kernel, rootfs) = fake_image_files(&root.join("image"))?;
    let d = BenchDaemon::start(&setup.banger, &root, &["--simulate"], None)?;
    let image = manifests::image("sim", &kernel, None, &rootfs);
    let image_path = d.specs_dir.join("image.yaml");
    fs::write(&image_path, image).map_err(BenchError::io("write", &image_path))?;
    for p in SavePattern::ALL {
        p.save(&d.specs_dir, 256)?;
    }
    let api = d.api();
    for p in SavePattern::ALL {
        let path = format!("/v1/objects/vms/{}", p.vm());
        poll::until(
            &format!("{} to run", p.vm()),
            Duration::from_secs(60),
            Duration::from_millis(50),
            || Ok(api.get_optional(&path)?.filter(views::vm_converged)),
        )?;
    }

    let mut all = Vec::new();
    let mut per_pattern = serde_json::Map::new();
    let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); SavePattern::ALL.len()];
    let mut clean: Vec<usize> = vec![0; SavePattern::ALL.len()];
    let mut problems: Vec<String> = Vec::new();
    for i in 0..setup.scale.saves_per_pattern {
        let memory = 256 + 16 * (u64::try_from(i).unwrap_or(0) + 1);
        for (k, p) in SavePattern::ALL.into_iter().enumerate() {
            let s = sample(&d, p, memory)?;
            latencies[k].push(s.latency_ms);
            all.push(s.latency_ms);
            if s.problems.is_empty() {
                clean[k] += 1;
            }
            problems.extend(
                s.problems
                    .into_iter()
                    .map(|m| format!("{} save {}: {m}", p.name(), i + 1)),
            );
        }
    }
    for (k, p) in SavePattern::ALL.into_iter().enumerate() {
        per_pattern.insert(
            p.name().into(),
            json!({
                "latencyMs": Summary::of(&latencies[k]),
                "oneReconcileOfFinalContent": format!("{}/{}", clean[k], latencies[k].len()),
            }),
        );
    }
    let overall =
        Summary::of(&all).ok_or_else(|| BenchError::Unexpected("P1: no sample measured".into()))?;
    Ok(Measured {
        values: vec![overall.median],
        detail: json!({
            "latencyMs": overall,
            "patterns": Value::Object(per_pattern),
            "problems": problems,
            "settleMs": SETTLE.as_millis(),
            "writeGapMs": WRITE_GAP.as_millis(),
            "daemon": "banger daemon --simulate (defaults otherwise)",
        }),
    })
}
