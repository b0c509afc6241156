//! The simulated fleet: P3, P5, P6, P7 and P2 on one `banger daemon --simulate` with
//! 1,000 VMs (200 with `--quick`).
//!
//! The simulated runtime is banger's runtime for engine tests and benchmarks: VMs
//! "run" in the daemon's memory, so these figures are the controller's own cost. The
//! daemon gets a /16 bridge network (`--bridge-cidr 10.200.0.0/16`) so that every VM
//! can lease an address. In order:
//!
//! 1. **P3**: `banger apply -f fleet.yaml` (one request, every VM) → every VM
//!    Running with `Ready=True`; the end is the latest `Ready` transition time.
//!    While waiting the harness polls one VM every 100 ms and the list only at the end,
//!    so that its own reads cost the daemon little.
//! 2. **P5**: the daemon's `VmRSS` (and peak) once settled, then its CPU over whole
//!    periods of the default 30 s resync, as % of one core.
//! 3. **P6**: `banger get vms` and `banger get vms -o json`, interleaved, each run
//!    timed from spawn to exit with its whole output read (and checked: one row or
//!    item per VM).
//! 4. **P7**: SIGTERM, then the same state directory under a new daemon (`--resync
//!    2s` for P2). The simulated host outlives the daemon (it is recorded in the state
//!    directory), so the new daemon adopts every VM: P7 is spawn → the new daemon's
//!    first resync pass completed (`/v1/healthz`: every VM reconciled since the
//!    start), or the last `Ready` transition if later (a VM launched again), checked
//!    with one list that every VM is converged and Ready. Steps since the restart are
//!    counted (0 expected).
//! 5. **P2**: after two quiet resync periods, daemon CPU over `resyncs` periods of 2 s,
//!    per period; journal rows started in that window are the mutating steps (0
//!    expected), and `/v1/healthz` says how many passes completed in the window.
//!    Since the resync is periodic, CPU over whole periods divided by their count is
//!    the cost of one resync (including the idle time between).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use crate::clock::{self, ms_between};
use crate::daemon::BenchDaemon;
use crate::error::{BenchError, Result};
use crate::figures::{FigureId, Measured, Outcome};
use crate::manifests::{self, fake_image_files, VmDoc};
use crate::poll;
use crate::procfs;
use crate::run::{check, describe};
use crate::setup::Setup;
use crate::stats::Summary;
use crate::views;

/// The network the simulated VMs lease from (room for every VM).
const FLEET_CIDR: &str = "10.200.0.0/16";
/// The daemon's default resync period (what P5's idle CPU is measured with).
const DEFAULT_RESYNC: Duration = Duration::from_secs(30);
/// The resync period P2 runs at.
const P2_RESYNC: Duration = Duration::from_secs(2);
/// Bound on the fleet converging (apply or restart).
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(600);

/// The fleet's VM names.
fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("vm-{i:04}")).collect()
}

/// Measures the wanted fleet figures; every wanted figure gets an outcome.
pub fn measure(setup: &Setup, wanted: &BTreeSet<FigureId>) -> Vec<(FigureId, Outcome)> {
    let mut done = BTreeMap::new();
    if let Err(e) = run(setup, wanted, &mut done) {
        for f in wanted {
            done.entry(*f)
                .or_insert_with(|| Outcome::Failed(format!("fleet: {e}")));
        }
    }
    done.into_iter().collect()
}

fn run(
    setup: &Setup,
    wanted: &BTreeSet<FigureId>,
    done: &mut BTreeMap<FigureId, Outcome>,
) -> Result<()> {
    let n = setup.scale.fleet_vms;
    let root = setup.work.join("fleet");
    let (kernel, rootfs) = fake_image_files(&root.join("image"))?;
    let files = root.join("files");
    fs::create_dir_all(&files).map_err(BenchError::io("create", &files))?;
    let image_file = files.join("image.yaml");
    fs::write(&image_file, manifests::image("sim", &kernel, None, &rootfs))
        .map_err(BenchError::io("write", &image_file))?;
    let names = names(n);
    let docs: Vec<String> = names.iter().map(|v| VmDoc::new(v, "sim").yaml()).collect();
    let fleet_file = files.join("fleet.yaml");
    fs::write(&fleet_file, manifests::join(&docs)).map_err(BenchError::io("write", &fleet_file))?;

    let base_args = ["--simulate", "--bridge-cidr", FLEET_CIDR];
    let mut d = BenchDaemon::start(&setup.banger, &root, &base_args, None)?;
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    d.cli_ok(&[
        "apply",
        "-f",
        &path(&image_file),
        "--wait",
        "--timeout",
        "60s",
    ])?;

    // P3 (also the setup of every other fleet figure).
    let t0 = SystemTime::now();
    d.cli_ok(&["apply", "-f", &path(&fleet_file)])?;
    let applied = SystemTime::now();
    let last = names.last().cloned().unwrap_or_default();
    wait_converged(&d, &last)?;
    let fleet = wait_all(&d, n, CONVERGE_TIMEOUT)?;
    let mut ready_times = Vec::with_capacity(n);
    for vm in &fleet {
        ready_times.push(views::transition_time(vm, "Ready")?);
    }
    let first = ready_times.iter().min().copied().unwrap_or(t0);
    let all = ready_times.iter().max().copied().unwrap_or(t0);
    let secs = ms_between(t0, all) / 1000.0;
    if wanted.contains(&FigureId::P3) {
        done.insert(
        FigureId::P3,
        Outcome::Measured(Measured {
            values: vec![n as f64 / secs],
            detail: json!({
                "vms": n,
                "applyCommandMs": ms_between(t0, applied),
                "firstReadyMs": ms_between(t0, first),
                "allReadyMs": ms_between(t0, all),
                "method": "banger apply -f fleet.yaml (one request); end = latest Ready transition",
            }),
        }),
    );
    }

    poll::pause(Duration::from_secs(3))?;
    let pid = d.pid()?;
    let (rss_kib, hwm_kib) = procfs::memory_kib(pid)?;

    if wanted.contains(&FigureId::P6) {
        done.insert(FigureId::P6, get_vms(setup, &d, n));
    }

    if wanted.contains(&FigureId::P5) {
        let ticks0 = procfs::stat(pid)?.cpu_ticks;
        let started = Instant::now();
        poll::pause(setup.scale.idle_window)?;
        let ticks1 = procfs::stat(pid)?.cpu_ticks;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        let cpu_ms = procfs::ticks_to_ms(ticks1.saturating_sub(ticks0));
        let (rss_after, _) = procfs::memory_kib(pid)?;
        done.insert(
            FigureId::P5,
            Outcome::Measured(Measured {
                values: vec![rss_kib as f64 / 1024.0, cpu_ms / elapsed_ms * 100.0],
                detail: json!({
                    "vms": n,
                    "rssKiB": rss_kib,
                    "peakRssKiB": hwm_kib,
                    "rssAfterIdleKiB": rss_after,
                    "idleWindowS": elapsed_ms / 1000.0,
                    "idleCpuMs": cpu_ms,
                    "resyncPeriodS": DEFAULT_RESYNC.as_secs_f64(),
                }),
            }),
        );
    }

    if !(wanted.contains(&FigureId::P7) || wanted.contains(&FigureId::P2)) {
        return Ok(());
    }
    d.terminate(Duration::from_secs(60))?;
    let resync = format!("{}s", P2_RESYNC.as_secs());
    let mut args = base_args.to_vec();
    args.extend(["--resync", &resync]);
    let spawned = d.spawn(&args)?;
    d.wait_answering()?;
    let answering = SystemTime::now();
    // Observed again = the new daemon's first resync pass completed (every VM reconciled
    // since the restart: `/v1/healthz`), with every VM converged and Ready. The
    // simulated host outlives the daemon (`<state_dir>/simulated-host.jsonl`), so this
    // is an adoption, as on a real host.
    let api = d.api();
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    let pass_done = poll::until(
        "the first resync pass after the restart",
        CONVERGE_TIMEOUT,
        Duration::from_millis(10),
        || {
            let health = api.get("/v1/healthz")?;
            let completed = health["resyncs"]["completed"].as_u64().unwrap_or(0);
            match health["resyncs"]["lastCompleted"].as_str() {
                Some(at) if completed >= 1 => Ok(Some(clock::parse(at)?)),
                _ => Ok(None),
            }
        },
    )?;
    let fleet_after = wait_all(&d, n, deadline.saturating_duration_since(Instant::now()))?;
    let seen = SystemTime::now();
    let last_ready = fleet_after
        .iter()
        .map(|vm| views::transition_time(vm, "Ready"))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .max()
        .unwrap_or(spawned);
    // Converged at the pass's end, unless a VM became Ready only later (a relaunch).
    let restart_end = pass_done.max(last_ready);
    let pid = d.pid()?;
    let describe_vm = |vm: &str| api.get(&format!("/v1/objects/vms/{vm}/describe"));

    let window = if wanted.contains(&FigureId::P2) {
        poll::pause(P2_RESYNC * 2)?;
        let health0 = api.get("/v1/healthz")?;
        let ticks0 = procfs::stat(pid)?.cpu_ticks;
        let w0 = SystemTime::now();
        let started = Instant::now();
        poll::pause(P2_RESYNC * setup.scale.resyncs)?;
        let ticks1 = procfs::stat(pid)?.cpu_ticks;
        let elapsed = started.elapsed();
        let w1 = SystemTime::now();
        let health1 = api.get("/v1/healthz")?;
        let delta = |field: &dyn Fn(&Value) -> &Value| {
            field(&health1)
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(field(&health0).as_u64().unwrap_or(0))
        };
        let passes = delta(&|h| &h["resyncs"]["completed"]);
        let reconciles = delta(&|h| &h["reconciles"]);
        let trips = delta(&|h| &h["storeTrips"]);
        Some((
            w0,
            w1,
            elapsed,
            procfs::ticks_to_ms(ticks1.saturating_sub(ticks0)),
            passes,
            reconciles,
            trips,
        ))
    } else {
        None
    };

    // P2's steps: every journal row started in the window; P7's: since the restart.
    let mut in_window: BTreeMap<String, usize> = BTreeMap::new();
    let mut since_restart: BTreeMap<String, usize> = BTreeMap::new();
    let mut restart_end = restart_end;
    for vm in &names {
        for s in views::steps(&describe_vm(vm)?)? {
            if s.started >= spawned && s.started <= seen {
                // A VM launched again after the restart ends with its last step.
                restart_end = restart_end.max(s.ended());
                *since_restart.entry(s.name.clone()).or_default() += 1;
            }
            if let Some((w0, w1, ..)) = window {
                if s.started >= w0 && s.started <= w1 {
                    *in_window.entry(s.name).or_default() += 1;
                }
            }
        }
    }
    let (rss_b, _) = procfs::memory_kib(pid)?;
    if wanted.contains(&FigureId::P7) {
        done.insert(
            FigureId::P7,
            Outcome::Measured(Measured {
                values: vec![ms_between(spawned, restart_end) / 1000.0],
                detail: json!({
                    "vms": n,
                    "apiAnswersMs": ms_between(spawned, answering),
                    "firstPassCompletedMs": ms_between(spawned, pass_done),
                    "lastReadyMs": ms_between(spawned, last_ready),
                    "listSawAllMs": ms_between(spawned, seen),
                    "stepsSinceRestartByName": since_restart,
                    "rssAfterRestartKiB": rss_b,
                    "method": "spawn of the new daemon -> its first resync pass completed (/v1/healthz), every VM then converged and Ready (one list); the simulated host outlives the daemon, so the VMs are adopted",
                }),
            }),
        );
    }
    if let Some((w0, w1, elapsed, cpu_ms, passes, reconciles, trips)) = window {
        let periods = elapsed.as_secs_f64() / P2_RESYNC.as_secs_f64();
        let steps: usize = in_window.values().sum();
        done.insert(
            FigureId::P2,
            Outcome::Measured(Measured {
                values: vec![cpu_ms / periods, steps as f64],
                detail: json!({
                    "vms": n,
                    "resyncPeriodS": P2_RESYNC.as_secs_f64(),
                    "windowS": ms_between(w0, w1) / 1000.0,
                    "periods": periods,
                    "cpuMs": cpu_ms,
                    "resyncsCompleted": passes,
                    "reconciles": reconciles,
                    "storeTrips": trips,
                    "mutatingStepsByName": in_window,
                }),
            }),
        );
    }
    d.terminate(Duration::from_secs(60))
}

/// Polls one VM (every 100 ms) until it converged.
fn wait_converged(d: &BenchDaemon, vm: &str) -> Result<()> {
    let api = d.api();
    let path = format!("/v1/objects/vms/{vm}");
    poll::until(
        &format!("{vm} to run"),
        CONVERGE_TIMEOUT,
        Duration::from_millis(100),
        || {
            Ok(api
                .get_optional(&path)?
                .filter(views::vm_converged)
                .map(|_| ()))
        },
    )
}

/// Polls the VM list (every 500 ms, at most `timeout`) until `n` VMs converged.
fn wait_all(d: &BenchDaemon, n: usize, timeout: Duration) -> Result<Vec<Value>> {
    let api = d.api();
    poll::until(
        &format!("all {n} VMs to run"),
        timeout,
        Duration::from_millis(500),
        || {
            let list = api.get("/v1/objects?kind=vms")?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            let ok = items.len() == n && items.iter().all(views::vm_converged);
            Ok(ok.then_some(items))
        },
    )
}

/// P6: both forms of `banger get vms`, interleaved.
fn get_vms(setup: &Setup, d: &BenchDaemon, n: usize) -> Outcome {
    let mut table = Vec::new();
    let mut json_ms = Vec::new();
    for _ in 0..setup.scale.get_runs {
        for (form, samples) in [(None, &mut table), (Some("json"), &mut json_ms)] {
            match time_get(d, form, n) {
                Ok(ms) => samples.push(ms),
                Err(e) => return Outcome::Failed(e.to_string()),
            }
        }
    }
    match (Summary::of(&table), Summary::of(&json_ms)) {
        (Some(t), Some(j)) => Outcome::Measured(Measured {
            values: vec![t.median, j.median],
            detail: json!({"vms": n, "tableMs": t, "jsonMs": j,
                "method": "wall time from spawn to exit of the real binary, stdout read through a pipe"}),
        }),
        _ => Outcome::Failed("no run of banger get vms".into()),
    }
}

/// Times one `banger get vms [-o FORM]` and checks it printed every VM.
fn time_get(d: &BenchDaemon, form: Option<&str>, n: usize) -> Result<f64> {
    let mut cmd: Command = d.cli();
    cmd.args(["get", "vms"]).stdin(Stdio::null());
    if let Some(f) = form {
        cmd.args(["-o", f]);
    }
    let started = Instant::now();
    let out = cmd.output().map_err(|source| BenchError::Spawn {
        program: describe(&cmd),
        source,
    })?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let out = check(&cmd, out)?;
    let shown = match form {
        None => String::from_utf8_lossy(&out.stdout)
            .lines()
            .count()
            .saturating_sub(1),
        Some(_) => serde_json::from_slice::<Value>(&out.stdout)
            .map_err(|e| BenchError::Unexpected(format!("{}: not JSON: {e}", describe(&cmd))))?
            ["items"]
            .as_array()
            .map_or(0, Vec::len),
    };
    if shown != n {
        return Err(BenchError::Unexpected(format!(
            "{} showed {shown} VMs, not {n}",
            describe(&cmd)
        )));
    }
    Ok(ms)
}
