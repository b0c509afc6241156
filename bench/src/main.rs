//! `banger-bench`: measures banger the way a user sees it, figure by figure (P1–P10 of
//! issue 11), and writes one JSON report.
//!
//! It starts its own daemons (the real `banger` binary, each with its own temporary
//! state directory and socket), drives them only through the `banger` CLI and the
//! documented API (`docs/api.md`), and measures from outside: wall clock, `/proc`,
//! the journal and conditions the API shows. Sections:
//!
//! - [`watch`]: P1, a simulated daemon watching a specs directory;
//! - [`fleet`]: P3, P5, P6, P7, P2 on a simulated fleet of 1,000 VMs;
//! - [`guests`]: P4, P8, P10, P9 on real QEMU guests in a network namespace the
//!   harness creates (root, QEMU and the guest kit; skipped with a reason otherwise).
//!
//! Every wait is bounded; every daemon, VM, namespace and temp directory it made is
//! removed at the end, on failure and on Ctrl-C. Not a test: CI only builds it and
//! runs `--quick`. `BENCHMARKS.md` holds a real run.

mod api;
mod clock;
mod console;
mod daemon;
mod error;
mod figures;
mod fleet;
mod guests;
mod interrupt;
mod machine;
mod manifests;
mod netns;
mod poll;
mod procfs;
mod report;
mod run;
mod setup;
mod stats;
mod views;
mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;

use crate::figures::{FigureId, Outcome};
use crate::setup::{Scale, Setup};

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "banger-bench",
    version,
    about = "Measure banger's figures P1-P10 (issue 11) from outside and write a JSON report",
    after_help = "\
Figures (targets in BENCHMARKS.md):
  P1  spec file written -> first step starts (save patterns; one reconcile each)
  P2  daemon CPU per no-op resync of the fleet; mutating steps
  P3  fleet applied in one request -> all Running (VMs/s)
  P4  apply -> guest ready, banger / bare qemu-system-x86_64 (ratio of medians)
  P5  daemon RSS with the fleet recorded; idle CPU with the default resync
  P6  `banger get vms` with the fleet (table; -o json)
  P7  daemon restart with the fleet recorded -> all observed and Ready again
  P8  apply -> VMM process started, with a per-step breakdown
  P9  `delete --wait` of a VM whose guest ignores the power button
  P10 guest ready -> Ready=True; -> `banger wait --for=condition=Ready` returns

P1-P3 and P5-P7 use `banger daemon --simulate` (no root needed). P4, P8, P9 and P10
boot real QEMU guests of the guest kit (scripts/guest-kit.sh) in a network namespace
the harness creates: they need root and qemu-system-x86_64, and are skipped (with the
reason in the report) otherwise.

--quick (CI) measures less: a fleet of 200 VMs instead of 1,000, 3 saves per pattern
instead of 15, 5 runs of each `get` instead of 20, idle CPU over 30 s instead of 60 s,
3 resyncs instead of 10, 2 boots of each kind instead of 5 (below P4's definition of
at least 5), 1 delete for P9 instead of 3. A full run takes 6 to 7 minutes on 2
cores, a --quick one about 2.

Examples:
  cargo run --release --bin banger-bench -- --json bench.json
  cargo run --release --bin banger-bench -- --quick --only P1,P6 --json /tmp/b.json
  sudo target/release/banger-bench --only P4,P8,P9,P10 --kit .cache/guest-kit"
)]
struct Args {
    /// Measure less, for a run of a few minutes (see below).
    #[arg(long)]
    quick: bool,
    /// Only these figures, comma-separated (e.g. P1,P6).
    #[arg(long, value_name = "P1,P6", value_delimiter = ',', value_parser = FigureId::parse)]
    only: Vec<FigureId>,
    /// Write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// The banger binary (default: `banger` next to this executable).
    #[arg(long, value_name = "PATH")]
    banger: Option<PathBuf>,
    /// The guest kit directory (default: $BANGER_KIT_DIR, else .cache/guest-kit of
    /// this checkout).
    #[arg(long, value_name = "DIR")]
    kit: Option<PathBuf>,
    /// VMs in the simulated fleet (default 1000; 200 with --quick).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10000))]
    vms: Option<u32>,
    /// Boots of each kind for P4, P8 and P10 (default 5; 2 with --quick).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=40))]
    boots: Option<u32>,
}

/// `banger` next to this executable (`target/<profile>/`).
fn sibling_banger() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("where is banger-bench")?;
    let dir = exe.parent().context("banger-bench has no directory")?;
    Ok(dir.join("banger"))
}

fn default_kit() -> PathBuf {
    std::env::var_os("BANGER_KIT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/guest-kit"))
}

/// Runs the sections the wanted figures need; returns their outcomes.
fn measure(setup: &Setup, wanted: &BTreeSet<FigureId>) -> BTreeMap<FigureId, Outcome> {
    use FigureId::*;
    let mut results = BTreeMap::new();
    let section = |ids: &[FigureId]| -> BTreeSet<FigureId> {
        ids.iter().copied().filter(|f| wanted.contains(f)).collect()
    };
    if wanted.contains(&FigureId::P1) {
        eprintln!(
            "banger-bench: P1 ({} saves per pattern)",
            setup.scale.saves_per_pattern
        );
        let outcome = match watch::measure(setup) {
            Ok(m) => Outcome::Measured(m),
            Err(e) => Outcome::Failed(format!("P1: {e}")),
        };
        results.insert(FigureId::P1, outcome);
    }
    let fleet = section(&[P2, P3, P5, P6, P7]);
    if !fleet.is_empty() && interrupt::check().is_ok() {
        eprintln!(
            "banger-bench: {} on a simulated fleet of {} VMs",
            names(&fleet),
            setup.scale.fleet_vms
        );
        results.extend(fleet::measure(setup, &fleet));
    }
    let guests = section(&[P4, P8, P9, P10]);
    if !guests.is_empty() && interrupt::check().is_ok() {
        eprintln!(
            "banger-bench: {} on real guests ({} boots of each kind)",
            names(&guests),
            setup.scale.boots
        );
        results.extend(guests::measure(setup, &guests));
    }
    results
}

fn names(ids: &BTreeSet<FigureId>) -> String {
    ids.iter().map(|f| f.key()).collect::<Vec<_>>().join(",")
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let banger = match args.banger {
        Some(p) => p,
        None => sibling_banger()?,
    };
    if !banger.is_file() {
        bail!(
            "{} does not exist: build it (`cargo build --release -p banger`) or pass --banger PATH",
            banger.display()
        );
    }
    let wanted: BTreeSet<FigureId> = if args.only.is_empty() {
        FigureId::ALL.into_iter().collect()
    } else {
        args.only.iter().copied().collect()
    };
    let mut scale = if args.quick {
        Scale::quick()
    } else {
        Scale::full()
    };
    if let Some(n) = args.vms {
        scale.fleet_vms = usize::try_from(n)?;
    }
    if let Some(n) = args.boots {
        scale.boots = usize::try_from(n)?;
    }
    let work = tempfile::Builder::new()
        .prefix("banger-bench-")
        .tempdir()
        .context("create the run's temporary directory")?;
    let setup = Setup {
        banger: banger.clone(),
        kit: args.kit.unwrap_or_else(default_kit),
        scale,
        work: work.path().to_path_buf(),
    };
    let command: Vec<String> = std::env::args().collect();
    let command = command.join(" ");
    let date = clock::now_rfc3339();
    let results = measure(&setup, &wanted);
    drop(work);
    if interrupt::check().is_err() {
        return Ok(ExitCode::from(130));
    }
    let info = report::RunInfo {
        command: &command,
        date: &date,
        quick: args.quick,
        scale: &setup.scale,
        machine: machine::facts(&banger),
    };
    let json = report::to_json(&info, &results);
    if let Some(path) = &args.json {
        report::write(path, &json)?;
        eprintln!("banger-bench: report written to {}", path.display());
    }
    println!("{}", report::table(&results));
    let failed = results.values().any(|o| matches!(o, Outcome::Failed(_)));
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn main() -> ExitCode {
    if let Err(e) = interrupt::install() {
        eprintln!("banger-bench: {e}");
        return ExitCode::FAILURE;
    }
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("banger-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn arguments_parse() {
        Args::command().debug_assert();
        let a = Args::try_parse_from([
            "banger-bench",
            "--quick",
            "--only",
            "P1,p6",
            "--json",
            "x.json",
        ])
        .expect("parse");
        assert!(a.quick);
        assert_eq!(a.only, vec![FigureId::P1, FigureId::P6]);
        assert_eq!(a.json, Some(PathBuf::from("x.json")));
        assert!(Args::try_parse_from(["banger-bench", "--only", "P11"]).is_err());
        assert!(Args::try_parse_from(["banger-bench", "--vms", "0"]).is_err());
    }
}
