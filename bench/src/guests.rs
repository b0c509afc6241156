//! Real guests: P4, P8, P10 and P9, with QEMU booting the guest kit.
//!
//! Needs root, `ip`, `qemu-system-x86_64` and the guest kit; otherwise every figure
//! here is skipped with the reason. The harness creates a network namespace, runs
//! `banger daemon` inside it (default bridge, addresses and stop grace) and applies an
//! Image of the kit's kernel, initrd and rootfs. Then, interleaved, `boots` times each:
//!
//! - **a banger boot**: `banger apply -f vm.yaml` of a new VM (256 MiB, 1 vCPU,
//!   static address, NAT on as by default), then at once `banger wait vm/NAME
//!   --for=condition=Ready` as a user would. Timed from the spawn of `apply`: the
//!   console marker (guest ready, see [`crate::console`]), `Ready`'s transition time
//!   in status, the moment `wait` exited, the start of the QEMU process (`/proc` start
//!   times of QEMU and of the `apply` process, 10 ms ticks) and every journal row of
//!   `describe`. Then `banger delete vm NAME --wait`.
//! - **a bare boot**: `qemu-system-x86_64` started by the harness in the namespace with
//!   the kernel, initrd, `-append`, machine, accelerator, CPU, memory and vCPUs that
//!   banger's QEMU of the previous boot ran with (read from its `/proc/PID/cmdline`),
//!   its own address on the kernel command line, a fresh copy of the kit's rootfs (made
//!   before the clock starts) and a tap in the same bridge. Timed from its spawn to the
//!   console marker; then killed. It runs in a session of its own (`setsid`), as
//!   banger's VMMs do: with the kernel's autogroup scheduling, a process's session
//!   decides its share of a busy CPU, and a bare QEMU left in the harness's session
//!   booted up to twice as fast as banger's under load.
//!
//! P4 = median banger boot / median bare boot. P8 = median of apply → QEMU process
//! start. P10 = medians of marker → `Ready` transition and marker → `wait` exit.
//! Then, `deaf_deletes` times, **P9**: a VM booted with `kernelArgs:
//! module_blacklist=button` (the guest has no ACPI button driver, so it ignores the
//! power button), once Ready, timed through `banger delete vm NAME --wait`; the console
//! read through a descriptor kept open shows whether the guest powered itself off.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::clock::ms_between;
use crate::console::{contains, MarkerWatch, POWEROFF_LINE, READY_MARKER};
use crate::daemon::BenchDaemon;
use crate::error::{BenchError, Result};
use crate::figures::{FigureId, Measured, Outcome};
use crate::manifests::{self, VmDoc};
use crate::netns::{self, NetNs};
use crate::poll;
use crate::procfs;
use crate::run::{check, describe, on_path};
use crate::setup::Setup;
use crate::stats::Summary;
use crate::views;

/// The bridge banger's daemon makes (its default).
const BRIDGE: &str = "banger0";
/// The tap the bare boots use.
const BARE_TAP: &str = "bgbench0";
/// Bound on a boot reaching its marker.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// Bound on a delete.
const DELETE_TIMEOUT: &str = "3m";
/// The kernel argument that keeps the guest's ACPI power button driver from loading.
const DEAF_ARGS: &str = "module_blacklist=button";

/// The guest kit's files.
#[derive(Debug, Clone)]
struct Kit {
    kernel: PathBuf,
    initrd: PathBuf,
    rootfs: PathBuf,
}

impl Kit {
    fn at(dir: &Path) -> Kit {
        Kit {
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
            rootfs: dir.join("rootfs.ext4"),
        }
    }
}

/// Why real guests cannot run here, if they cannot.
fn unavailable(setup: &Setup) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (network namespace, bridge, taps, QEMU)".into());
    }
    for program in ["ip", "qemu-system-x86_64", "setsid"] {
        if !on_path(program) {
            return Some(format!("needs {program} on PATH"));
        }
    }
    let kit = Kit::at(&setup.kit);
    for p in [&kit.kernel, &kit.initrd, &kit.rootfs] {
        if !p.is_file() {
            return Some(format!(
                "guest kit file {} is missing: build it with scripts/guest-kit.sh (or pass --kit DIR)",
                p.display()
            ));
        }
    }
    None
}

/// Measures the wanted guest figures; every wanted figure gets an outcome.
pub fn measure(setup: &Setup, wanted: &BTreeSet<FigureId>) -> Vec<(FigureId, Outcome)> {
    if let Some(why) = unavailable(setup) {
        return wanted
            .iter()
            .map(|f| (*f, Outcome::Skipped(why.clone())))
            .collect();
    }
    let mut done = BTreeMap::new();
    if let Err(e) = run(setup, wanted, &mut done) {
        for f in wanted {
            done.entry(*f)
                .or_insert_with(|| Outcome::Failed(format!("guests: {e}")));
        }
    }
    done.into_iter().collect()
}

/// One boot through banger.
#[derive(Debug, Clone)]
struct BangerBoot {
    ready_ms: f64,
    port_after_marker_ms: f64,
    ready_lag_ms: f64,
    wait_lag_ms: f64,
    vmm_start_ms: f64,
    steps: Vec<(String, f64, f64)>,
    delete_ms: f64,
    powered_off: bool,
    argv: Vec<String>,
}

/// One bare QEMU boot.
#[derive(Debug, Clone)]
struct BareBoot {
    ready_ms: f64,
    port_after_marker_ms: f64,
}

fn run(
    setup: &Setup,
    wanted: &BTreeSet<FigureId>,
    done: &mut BTreeMap<FigureId, Outcome>,
) -> Result<()> {
    let kit = Kit::at(&setup.kit);
    let ns = NetNs::create("guests")?;
    let root = setup.work.join("guests");
    let files = root.join("files");
    fs::create_dir_all(&files).map_err(BenchError::io("create", &files))?;
    let d = BenchDaemon::start(&setup.banger, &root, &[], Some(&ns))?;
    let image_file = files.join("image.yaml");
    fs::write(
        &image_file,
        manifests::image("kit", &kit.kernel, Some(&kit.initrd), &kit.rootfs),
    )
    .map_err(BenchError::io("write", &image_file))?;
    d.cli_ok(&[
        "apply",
        "-f",
        &image_file.to_string_lossy(),
        "--wait",
        "--timeout",
        "2m",
    ])?;

    let boot_figures = [FigureId::P4, FigureId::P8, FigureId::P10];
    if boot_figures.iter().any(|f| wanted.contains(f)) {
        let mut banger = Vec::new();
        let mut bare = Vec::new();
        let mut tap_ready = false;
        for i in 0..setup.scale.boots {
            let b = banger_boot(&d, &ns, &files, i)?;
            if wanted.contains(&FigureId::P4) {
                if !tap_ready {
                    ns.ip(&["tuntap", "add", "dev", BARE_TAP, "mode", "tap"])?;
                    ns.ip(&["link", "set", BARE_TAP, "master", BRIDGE, "up"])?;
                    tap_ready = true;
                }
                bare.push(bare_boot(&ns, &kit, &root, i, &b.argv)?);
            }
            banger.push(b);
        }
        boot_outcomes(wanted, &banger, &bare, done)?;
    }

    if wanted.contains(&FigureId::P9) {
        let mut samples = Vec::new();
        let mut records = Vec::new();
        for j in 0..setup.scale.deaf_deletes {
            let (ms, powered_off) = deaf_delete(&d, &files, j)?;
            samples.push(ms / 1000.0);
            records.push(json!({"deleteWaitMs": ms, "guestPoweredOff": powered_off}));
        }
        let s = Summary::of(&samples)
            .ok_or_else(|| BenchError::Unexpected("P9: no delete measured".into()))?;
        done.insert(
            FigureId::P9,
            Outcome::Measured(Measured {
                values: vec![s.median],
                detail: json!({
                    "deleteWaitS": s,
                    "deletes": records,
                    "guest": format!("guest kit with kernelArgs {DEAF_ARGS} (no ACPI button driver: ignores the power button)"),
                    "daemon": "default --stop-grace",
                }),
            }),
        );
    }
    Ok(())
}

/// The guest address of the `i`th VM of a series starting at `base`.
fn address(base: u8, i: usize) -> Result<Ipv4Addr> {
    let host = u8::try_from(i)
        .ok()
        .and_then(|i| base.checked_add(i))
        .filter(|h| *h < 255)
        .ok_or_else(|| BenchError::Unexpected(format!("too many boots for .{base}+{i}")))?;
    Ok(Ipv4Addr::new(172, 30, 0, host))
}

/// Starts `cmd`, returning the child and its `/proc` start time.
fn spawn_timed(cmd: &mut Command) -> Result<(Child, u64)> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| BenchError::Spawn {
            program: describe(cmd),
            source,
        })?;
    // Not reaped yet, so /proc still has it even if it already exited.
    let start = procfs::stat(child.id())?.start_ticks;
    Ok((child, start))
}

/// Waits for `banger wait` on a thread, noting when it exited.
fn watch_exit(mut cmd: Command) -> Result<JoinHandle<Result<SystemTime>>> {
    let command = describe(&cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| BenchError::Spawn {
            program: command.clone(),
            source,
        })?;
    std::thread::Builder::new()
        .name("banger wait".into())
        .spawn(move || {
            let status = child.wait().map_err(|source| BenchError::Spawn {
                program: command.clone(),
                source,
            })?;
            let at = SystemTime::now();
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut stderr);
            }
            if status.success() {
                Ok(at)
            } else {
                Err(BenchError::Command {
                    command,
                    status: status.to_string(),
                    stderr,
                })
            }
        })
        .map_err(|source| BenchError::Spawn {
            program: "wait thread".into(),
            source,
        })
}

/// Connects to `addr` from inside `ns` until it answers (bounded); returns when.
fn port_answers(ns: &NetNs, addr: SocketAddr) -> Result<SystemTime> {
    ns.run_inside(move || {
        poll::until(
            &format!("{addr} to accept a connection"),
            Duration::from_secs(30),
            Duration::from_millis(2),
            || {
                Ok(
                    TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                        .ok()
                        .map(|_| SystemTime::now()),
                )
            },
        )
    })
}

/// The console log of a VM, from its status (`status.handles.consoleLog`).
fn console_of(d: &BenchDaemon, name: &str) -> Result<PathBuf> {
    let api = d.api();
    let path = format!("/v1/objects/vms/{name}");
    poll::until(
        &format!("{name}'s console log in its status"),
        BOOT_TIMEOUT,
        Duration::from_millis(5),
        || {
            Ok(api.get_optional(&path)?.and_then(|o| {
                o["status"]["handles"]["consoleLog"]
                    .as_str()
                    .map(PathBuf::from)
            }))
        },
    )
}

fn banger_boot(d: &BenchDaemon, ns: &NetNs, files: &Path, i: usize) -> Result<BangerBoot> {
    let name = format!("p4-{i}");
    let ip = address(10, i)?;
    let mut doc = VmDoc::new(&name, "kit");
    doc.ip = Some(ip);
    let file = files.join(format!("{name}.yaml"));
    fs::write(&file, doc.yaml()).map_err(BenchError::io("write", &file))?;

    let mut apply = d.cli();
    apply.arg("apply").arg("-f").arg(&file);
    let t0 = SystemTime::now();
    let (child, apply_ticks) = spawn_timed(&mut apply)?;
    let out = child
        .wait_with_output()
        .map_err(|source| BenchError::Spawn {
            program: describe(&apply),
            source,
        })?;
    check(&apply, out)?;
    let mut wait = d.cli();
    wait.args([
        "wait",
        &format!("vm/{name}"),
        "--for=condition=Ready",
        "--timeout",
        "3m",
    ]);
    let waiter = watch_exit(wait)?;

    let console = console_of(d, &name)?;
    let marker = MarkerWatch::new(&console, READY_MARKER, 0).wait(BOOT_TIMEOUT)?;
    let port = port_answers(ns, SocketAddr::from((ip, 22)))?;
    let waited = netns::join(waiter)?;
    let api = d.api();
    let described = api.get(&format!("/v1/objects/vms/{name}/describe"))?;
    let obj = &described["object"];
    if !views::is_true(obj, "Ready") {
        return Err(BenchError::Unexpected(format!(
            "{name}: banger wait returned but Ready is not True"
        )));
    }
    let ready = views::transition_time(obj, "Ready")?;
    let qemu = views::pid(obj)
        .ok_or_else(|| BenchError::Unexpected(format!("{name}: Ready without a pid")))?;
    let qemu_ticks = procfs::stat(qemu)?.start_ticks;
    let argv = procfs::cmdline(qemu)?;
    let steps = views::steps(&described)?
        .into_iter()
        .filter(|s| s.started >= t0)
        .map(|s| {
            (
                s.name.clone(),
                ms_between(t0, s.started),
                s.duration_ms.unwrap_or(-1.0),
            )
        })
        .collect();

    // Delete, reading the console through a descriptor that survives the VM directory.
    let mut log = File::open(&console).map_err(BenchError::io("open", &console))?;
    let from = log
        .seek(SeekFrom::End(0))
        .map_err(BenchError::io("seek", &console))?;
    let t_delete = SystemTime::now();
    d.cli_ok(&["delete", "vm", &name, "--wait", "--timeout", DELETE_TIMEOUT])?;
    let delete_ms = ms_between(t_delete, SystemTime::now());
    Ok(BangerBoot {
        ready_ms: ms_between(t0, marker),
        port_after_marker_ms: ms_between(marker, port),
        ready_lag_ms: ms_between(marker, ready),
        wait_lag_ms: ms_between(marker, waited),
        vmm_start_ms: procfs::ticks_to_ms(qemu_ticks.saturating_sub(apply_ticks)),
        steps,
        delete_ms,
        powered_off: powered_off_since(&mut log, from, &console)?,
        argv,
    })
}

/// Whether the guest's power-off line was written to `log` after byte `from`.
fn powered_off_since(log: &mut File, from: u64, path: &Path) -> Result<bool> {
    log.seek(SeekFrom::Start(from))
        .map_err(BenchError::io("seek", path))?;
    let mut rest = Vec::new();
    log.read_to_end(&mut rest)
        .map_err(BenchError::io("read", path))?;
    Ok(contains(&rest, POWEROFF_LINE.as_bytes()))
}

/// The value after `flag` in an argv.
fn value_after<'a>(argv: &'a [String], flag: &str) -> Option<&'a str> {
    argv.windows(2)
        .find(|w| w[0] == flag)
        .map(|w| w[1].as_str())
}

/// QEMU option value escaping: a comma is doubled.
fn qemu_escape(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

/// What differs between a bare boot and banger's.
#[derive(Debug, Clone)]
struct BareVm<'a> {
    kit: &'a Kit,
    name: String,
    disk: PathBuf,
    console: PathBuf,
    ip: Ipv4Addr,
    mac: String,
}

/// The bare QEMU argv (without the program): banger's machine, accelerator, CPU,
/// memory, vCPUs and kernel command line (its `ip=` address and `banger.name=` made
/// this VM's), the kit's kernel and initrd, this VM's disk, tap and console.
fn bare_argv(banger: &[String], vm: &BareVm<'_>) -> Result<Vec<String>> {
    let need = |flag: &str| {
        value_after(banger, flag).ok_or_else(|| {
            BenchError::Unexpected(format!("banger's QEMU argv has no {flag}: {banger:?}"))
        })
    };
    let append: Vec<String> = need("-append")?
        .split_whitespace()
        .map(|w| {
            if let Some(v) = w.strip_prefix("ip=") {
                let rest = v.find([':', '/']).map_or("", |k| &v[k..]);
                format!("ip={}{rest}", vm.ip)
            } else if w.starts_with("banger.name=") {
                format!("banger.name={}", vm.name)
            } else {
                w.to_string()
            }
        })
        .collect();
    let mut argv: Vec<String> = vec!["-name".into(), vm.name.clone()];
    for flag in ["-M", "-accel", "-cpu", "-smp", "-m"] {
        argv.extend([flag.to_string(), need(flag)?.to_string()]);
    }
    argv.extend(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"].map(String::from));
    argv.extend([
        "-kernel".into(),
        vm.kit.kernel.to_string_lossy().into_owned(),
        "-initrd".into(),
        vm.kit.initrd.to_string_lossy().into_owned(),
        "-append".into(),
        append.join(" "),
        "-drive".into(),
        format!(
            "id=root,file={},format=raw,if=none,cache=writeback",
            qemu_escape(&vm.disk)
        ),
        "-device".into(),
        "virtio-blk-device,drive=root".into(),
        "-netdev".into(),
        format!("tap,id=net0,ifname={BARE_TAP},script=no,downscript=no"),
        "-device".into(),
        format!("virtio-net-device,netdev=net0,mac={}", vm.mac),
        "-chardev".into(),
        format!("file,id=console,path={}", qemu_escape(&vm.console)),
        "-serial".into(),
        "chardev:console".into(),
    ]);
    Ok(argv)
}

/// A bare QEMU that is killed when dropped.
struct BareQemu(Child);

impl Drop for BareQemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bare_boot(
    ns: &NetNs,
    kit: &Kit,
    root: &Path,
    i: usize,
    banger_argv: &[String],
) -> Result<BareBoot> {
    let vm = BareVm {
        kit,
        name: format!("bare-{i}"),
        disk: root.join(format!("bare-{i}.ext4")),
        console: root.join(format!("bare-{i}.console")),
        ip: address(100, i)?,
        mac: format!("02:bb:00:00:00:{:02x}", i % 256),
    };
    fs::copy(&kit.rootfs, &vm.disk).map_err(BenchError::io("copy the rootfs to", &vm.disk))?;
    let argv = bare_argv(banger_argv, &vm)?;
    let log = root.join(format!("bare-{i}.qemu.log"));
    let out = File::create(&log).map_err(BenchError::io("create", &log))?;
    let t0 = SystemTime::now();
    let child = ns.run_inside(move || {
        // A session of its own, like banger's VMMs (see the module docs). `setsid`
        // execs QEMU in place (the child is no group leader), so the pid is QEMU's.
        let mut cmd = Command::new("setsid");
        cmd.arg("qemu-system-x86_64")
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out);
        cmd.spawn().map_err(|source| BenchError::Spawn {
            program: describe(&cmd),
            source,
        })
    })?;
    let qemu = BareQemu(child);
    let marker = MarkerWatch::new(&vm.console, READY_MARKER, 0)
        .wait(BOOT_TIMEOUT)
        .map_err(|e| {
            let tail = fs::read_to_string(&log).unwrap_or_default();
            BenchError::Unexpected(format!(
                "bare QEMU boot {i}: {e}; QEMU said: {}",
                tail.trim()
            ))
        })?;
    let port = port_answers(ns, SocketAddr::from((vm.ip, 22)))?;
    drop(qemu);
    let _ = fs::remove_file(&vm.disk);
    Ok(BareBoot {
        ready_ms: ms_between(t0, marker),
        port_after_marker_ms: ms_between(marker, port),
    })
}

/// P9: one guest that ignores the power button, deleted with `--wait`.
fn deaf_delete(d: &BenchDaemon, files: &Path, j: usize) -> Result<(f64, bool)> {
    let name = format!("p9-{j}");
    let mut doc = VmDoc::new(&name, "kit");
    doc.ip = Some(address(200, j)?);
    doc.kernel_args = Some(DEAF_ARGS);
    let file = files.join(format!("{name}.yaml"));
    fs::write(&file, doc.yaml()).map_err(BenchError::io("write", &file))?;
    d.cli_ok(&[
        "apply",
        "-f",
        &file.to_string_lossy(),
        "--wait",
        "--timeout",
        "3m",
    ])?;
    let console = console_of(d, &name)?;
    let mut log = File::open(&console).map_err(BenchError::io("open", &console))?;
    let from = log
        .seek(SeekFrom::End(0))
        .map_err(BenchError::io("seek", &console))?;
    let t0 = SystemTime::now();
    d.cli_ok(&["delete", "vm", &name, "--wait", "--timeout", DELETE_TIMEOUT])?;
    let ms = ms_between(t0, SystemTime::now());
    Ok((ms, powered_off_since(&mut log, from, &console)?))
}

fn median_of(what: &str, xs: &[f64]) -> Result<Summary> {
    Summary::of(xs).ok_or_else(|| BenchError::Unexpected(format!("{what}: no sample")))
}

/// P4, P8 and P10 from the boots.
fn boot_outcomes(
    wanted: &BTreeSet<FigureId>,
    banger: &[BangerBoot],
    bare: &[BareBoot],
    done: &mut BTreeMap<FigureId, Outcome>,
) -> Result<()> {
    let col = |f: fn(&BangerBoot) -> f64| banger.iter().map(f).collect::<Vec<f64>>();
    if wanted.contains(&FigureId::P4) {
        let b = median_of("P4 banger", &col(|b| b.ready_ms))?;
        let q = median_of(
            "P4 bare",
            &bare.iter().map(|b| b.ready_ms).collect::<Vec<_>>(),
        )?;
        let q_port = Summary::of(
            &bare
                .iter()
                .map(|b| b.port_after_marker_ms)
                .collect::<Vec<_>>(),
        );
        done.insert(
            FigureId::P4,
            Outcome::Measured(Measured {
                values: vec![b.median / q.median],
                detail: json!({
                    "bangerReadyMs": b,
                    "bareReadyMs": q,
                    "bangerPortAfterMarkerMs": Summary::of(&col(|b| b.port_after_marker_ms)),
                    "barePortAfterMarkerMs": q_port,
                    "bangerDeleteWaitMs": Summary::of(&col(|b| b.delete_ms)),
                    "bangerDeletesGuestPoweredOff": banger.iter().filter(|b| b.powered_off).count(),
                    "readiness": "the guest kit's BANGER-GUEST-READY console line (printed once dropbear listens on port 22)",
                    "bangerArgv": banger.first().map(|b| b.argv.clone()),
                    "order": "banger, bare, banger, bare, ...",
                    "bare": "setsid qemu-system-x86_64 with banger's machine, accelerator, CPU, memory, vCPUs and kernel line; a fresh rootfs copy; a tap in the same bridge",
                }),
            }),
        );
    }
    if wanted.contains(&FigureId::P8) {
        let s = median_of("P8", &col(|b| b.vmm_start_ms))?;
        let mut by_step: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut launch_started = Vec::new();
        let mut first_step = Vec::new();
        for b in banger {
            for (step, at, dur) in &b.steps {
                by_step.entry(step.clone()).or_default().push(*dur);
                if step == "launch" {
                    launch_started.push(*at);
                }
            }
            if let Some((_, at, _)) = b.steps.iter().min_by(|x, y| x.1.total_cmp(&y.1)) {
                first_step.push(*at);
            }
        }
        let durations: BTreeMap<String, Option<Summary>> = by_step
            .iter()
            .map(|(k, v)| (k.clone(), Summary::of(v)))
            .collect();
        done.insert(
            FigureId::P8,
            Outcome::Measured(Measured {
                values: vec![s.median],
                detail: json!({
                    "vmmStartMs": s,
                    "firstStepStartedMs": Summary::of(&first_step),
                    "launchStartedMs": Summary::of(&launch_started),
                    "stepDurationMs": durations,
                    "boots": banger.iter().map(|b| json!({
                        "vmmStartMs": b.vmm_start_ms,
                        "steps": b.steps.iter().map(|(n, at, d)| json!({"step": n, "atMs": at, "durationMs": d})).collect::<Vec<Value>>(),
                    })).collect::<Vec<Value>>(),
                    "method": "QEMU's /proc start time minus the apply process's (10 ms ticks); steps from describe, relative to the apply spawn",
                }),
            }),
        );
    }
    if wanted.contains(&FigureId::P10) {
        let r = median_of("P10 ready", &col(|b| b.ready_lag_ms))?;
        let w = median_of("P10 wait", &col(|b| b.wait_lag_ms))?;
        done.insert(
            FigureId::P10,
            Outcome::Measured(Measured {
                values: vec![r.median, w.median],
                detail: json!({
                    "readyAfterMarkerMs": r,
                    "waitAfterMarkerMs": w,
                    "portAfterMarkerMs": Summary::of(&col(|b| b.port_after_marker_ms)),
                    "guestReady": "the console marker (the kit's init prints it within 50 ms after port 22 listens)",
                }),
            }),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn bare_argv_follows_bangers_machine_and_kernel_line() {
        let banger = s(&[
            "/usr/bin/qemu-system-x86_64", "-name", "banger-abc", "-M", "microvm,x-option-roms=off",
            "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", "256M", "-nodefaults",
            "-kernel", "/k", "-append",
            "console=ttyS0 reboot=k panic=1 root=/dev/vda rw ip=172.30.0.10::172.30.0.1:255.255.255.0::eth0:off banger.name=p4-0 tsc_early_khz=2000000",
            "-pidfile", "/s/qemu.pid",
        ]);
        let kit = Kit::at(Path::new("/kit"));
        let vm = BareVm {
            kit: &kit,
            name: "bare-0".into(),
            disk: PathBuf::from("/t/a,b.ext4"),
            console: PathBuf::from("/t/c.log"),
            ip: Ipv4Addr::new(172, 30, 0, 100),
            mac: "02:bb:00:00:00:00".into(),
        };
        let argv = bare_argv(&banger, &vm).expect("argv");
        assert_eq!(value_after(&argv, "-M"), Some("microvm,x-option-roms=off"));
        assert_eq!(value_after(&argv, "-accel"), Some("tcg"));
        assert_eq!(value_after(&argv, "-m"), Some("256M"));
        assert_eq!(value_after(&argv, "-initrd"), Some("/kit/initrd.img"));
        assert_eq!(
            value_after(&argv, "-append"),
            Some("console=ttyS0 reboot=k panic=1 root=/dev/vda rw ip=172.30.0.100::172.30.0.1:255.255.255.0::eth0:off banger.name=bare-0 tsc_early_khz=2000000")
        );
        assert_eq!(
            value_after(&argv, "-drive"),
            Some("id=root,file=/t/a,,b.ext4,format=raw,if=none,cache=writeback")
        );
        assert!(!argv.iter().any(|a| a == "-pidfile" || a.contains("qmp")));
    }

    #[test]
    fn bare_argv_needs_bangers_flags() {
        let kit = Kit::at(Path::new("/kit"));
        let vm = BareVm {
            kit: &kit,
            name: "bare-0".into(),
            disk: PathBuf::from("/d"),
            console: PathBuf::from("/c"),
            ip: Ipv4Addr::new(172, 30, 0, 100),
            mac: "02:bb:00:00:00:00".into(),
        };
        assert!(bare_argv(&s(&["qemu", "-m", "256M"]), &vm).is_err());
    }

    #[test]
    fn addresses_stay_in_the_bridge_network() {
        assert_eq!(address(10, 0).ok(), Some(Ipv4Addr::new(172, 30, 0, 10)));
        assert_eq!(address(200, 54).ok(), Some(Ipv4Addr::new(172, 30, 0, 254)));
        assert!(address(200, 55).is_err());
    }
}
