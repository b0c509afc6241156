//! The simulated runtime: an in-memory host, for engine tests and benchmarks ONLY.
//!
//! Selected by `banger daemon --simulate`, never by default. It keeps a model of "the
//! host" (processes, disks, taps, NAT rules) per VM uid in memory, so a daemon restart
//! with the same [`SimulatedRuntime`] value sees the same host. The only real files it
//! touches are each VM's `<vm_dir>` and its `console.log` (so `banger logs` works), and,
//! when made with [`SimulatedRuntime::persistent`] (as `--simulate` does), the host's
//! record `<state_dir>/simulated-host.jsonl`: like a real host's VMMs, taps and disks,
//! the simulated ones outlive the daemon, so a new daemon on the same state directory
//! adopts them instead of launching every VM again. The record is a log of one JSON
//! line per change of a VM's host objects (the last line of a uid wins; a torn last
//! line, from a crash mid-write, is skipped), compacted when the next daemon loads it.
//!
//! Fault injection and probes for tests: [`SimulatedRuntime::fail_step`] (fail a step N
//! times), [`SimulatedRuntime::fail_image`], [`SimulatedRuntime::exit_process`] (the
//! VMM exits on its own; the exit is notified like a pidfd would),
//! [`SimulatedRuntime::lose_process`] and [`SimulatedRuntime::lose_tap`] (a VMM or a
//! tap gone without notice: only a probe finds it),
//! [`SimulatedRuntime::hang_after`] (a step does its effect and never returns: a daemon
//! crash mid-step), counters of concurrent steps per VM
//! ([`SimulatedRuntime::max_concurrency_for`]) and [`SimulatedRuntime::plant_garbage`]
//! (host objects of a uid the store does not know, for `banger gc`).
//! Workspace copies are recorded, not performed: [`SimulatedRuntime::syncs_of`] counts
//! them, [`SimulatedRuntime::fail_sync`] makes the next ones fail and
//! [`SimulatedRuntime::hang_sync`] makes them never return. Each guest (VM
//! and disk) keeps the digests of what copies wrote into it, so a guarded copy is
//! refused after [`SimulatedRuntime::edit_guest`] changed one of them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    CopyManifest, EntryDigest, ExitNotice, ExitNotifier, ExportRecord, Garbage, GarbageKind,
    ImageContext, ImageFailure, ImageResolution, LaunchConfig, ObservedDisk, ObservedFilter,
    ObservedTap, ObservedVm, ProcessState, ResolvedImage, RuntimeError, SyncOutcome, SyncRecord,
    VmContext, VmHandles, VmRuntime, VmStep, WorkspaceContext,
};
use crate::driver::VmmProcess;

/// The id a simulated disk reports ([`ObservedDisk::id`]): from its serial, so every
/// disk made is a new one.
fn sim_disk_id(serial: u64) -> String {
    format!("simulated-disk-{serial}")
}

/// A simulated file's digest: of its made-up content.
fn sim_file(content: &[u8]) -> EntryDigest {
    EntryDigest::file(false, &Sha256::digest(content))
}

/// What a simulated copy of a Workspace writes: a few made-up files (one more for
/// `include: untracked`) and the guest repository's `HEAD`, with contents derived from
/// the source path.
fn sim_manifest(ws: &WorkspaceContext) -> CopyManifest {
    let mut files = vec!["README.md", "src/main.rs", ".git/HEAD"];
    if ws.spec.include == banger_specs::IncludeMode::Untracked {
        files.push("notes.txt");
    }
    let mut manifest = CopyManifest::default();
    for path in files {
        let content = format!("{}:{path}", ws.spec.source.display());
        manifest.insert(path, sim_file(content.as_bytes()));
    }
    manifest
}

/// What a simulated VM's status names as its hypervisor
/// ([`VmmProcess::hypervisor_name`]): no hypervisor runs it.
pub const SIMULATED_HYPERVISOR: &str = "simulated";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SimProcess {
    pid: i32,
    launched: LaunchConfig,
    alive: bool,
    clean_exit: bool,
    observations: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SimVm {
    process: Option<SimProcess>,
    disk: Option<ObservedDisk>,
    /// Which disk this is: a new number each time a disk is made (its "contents").
    disk_serial: Option<u64>,
    /// The disk exists but its record cannot be read: `observe` does not report it.
    disk_hidden: bool,
    tap: Option<String>,
    /// What the tap's guest filter enforces.
    filter: Option<ObservedFilter>,
    nat: bool,
    vm_dir: bool,
    /// The real directory behind `vm_dir`, once made.
    vm_dir_path: Option<PathBuf>,
}

#[derive(Default)]
struct World {
    vms: HashMap<String, SimVm>,
    step_faults: HashMap<(String, VmStep), u32>,
    image_faults: HashMap<String, u32>,
    hangs: HashMap<(String, VmStep), ()>,
    missing_images: std::collections::HashSet<PathBuf>,
    /// What each OCI reference's tag names now (default: a digest of the reference).
    tags: HashMap<String, String>,
    no_effect: std::collections::HashSet<(String, VmStep)>,
    in_flight: HashMap<String, u32>,
    max_in_flight: HashMap<String, u32>,
    global_in_flight: u32,
    global_max: u32,
    /// Steps running now, and the most seen at once, per kind of step.
    step_in_flight: HashMap<VmStep, u32>,
    step_max: HashMap<VmStep, u32>,
    next_pid: i32,
    next_disk_serial: u64,
    executed: Vec<(String, VmStep)>,
    /// No per-step records (`executed`, `max_in_flight`): see
    /// [`SimulatedRuntime::without_step_records`].
    no_step_records: bool,
    duplicate_launches: u32,
    /// Every `observe` call, of any uid.
    observe_calls: u64,
    boot_observations: u32,
    /// VM uid -> observations left that report an unresponsive VMM.
    probe_faults: HashMap<String, u32>,
    latency: Duration,
    notifier: Option<ExitNotifier>,
    /// Workspace name -> (VM uid, VMM pid) of every sync, in order.
    syncs: HashMap<String, Vec<(String, i32)>>,
    sync_faults: HashMap<String, u32>,
    /// Workspaces whose next copies write the files and then never return (a daemon
    /// stop in the middle of a copy).
    sync_hangs: std::collections::HashSet<String>,
    /// What each guest holds below a Workspace's path: by (VM uid, disk serial), so a
    /// restarted VMM on the same disk sees the same files and a new disk none.
    guest_files: HashMap<(String, u64), BTreeMap<String, EntryDigest>>,
    /// The host's record on disk, for a persistent simulated host.
    record: Option<HostRecord>,
}

/// One line of the record: a uid's host objects after a change (`vm: null`: none).
#[derive(Serialize, Deserialize)]
struct RecordLine {
    uid: String,
    vm: Option<SimVm>,
}

/// The record file of a persistent simulated host. Loaded on first use, once the
/// daemon holds its state directory (see [`SimulatedRuntime::persistent`]).
struct HostRecord {
    path: PathBuf,
    /// Open for appending, once loaded (`None` when it could not be opened).
    file: Option<std::fs::File>,
    loaded: bool,
}

impl World {
    /// Loads the record (once): replays its lines, then rewrites it compacted (one
    /// line per uid) and keeps it open for appending.
    fn load_record(&mut self) {
        let Some(mut record) = self.record.take() else {
            return;
        };
        if !record.loaded {
            record.loaded = true;
            match std::fs::read_to_string(&record.path) {
                Ok(text) => self.replay(&record.path, &text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %record.path.display(), error = %e, "simulated host record unreadable; starting empty");
                }
            }
            match self.compact(&record.path) {
                Ok(file) => record.file = Some(file),
                Err(e) => {
                    tracing::warn!(path = %record.path.display(), error = %e, "simulated host record cannot be written; the host will not survive a restart");
                }
            }
        }
        self.record = Some(record);
    }

    fn replay(&mut self, path: &Path, text: &str) {
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            match serde_json::from_str::<RecordLine>(line) {
                Ok(RecordLine { uid, vm: Some(vm) }) => {
                    if let Some(p) = &vm.process {
                        self.next_pid = self.next_pid.max(p.pid);
                    }
                    self.next_disk_serial = self.next_disk_serial.max(vm.disk_serial.unwrap_or(0));
                    self.vms.insert(uid, vm);
                }
                Ok(RecordLine { uid, vm: None }) => {
                    self.vms.remove(&uid);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), line = i + 1, error = %e, "skipping a simulated host record line");
                }
            }
        }
    }

    /// Writes every uid's line to a temporary file renamed over the record; returns
    /// the record open for appending.
    fn compact(&self, path: &Path) -> std::io::Result<std::fs::File> {
        let tmp = path.with_extension("jsonl.tmp");
        let mut text = String::new();
        let mut uids: Vec<&String> = self.vms.keys().collect();
        uids.sort();
        for uid in uids {
            let line = RecordLine {
                uid: uid.clone(),
                vm: self.vms.get(uid).cloned(),
            };
            text.push_str(&serde_json::to_string(&line).map_err(std::io::Error::other)?);
            text.push('\n');
        }
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)?;
        std::fs::OpenOptions::new().append(true).open(path)
    }

    /// Appends a uid's host objects to the record (no-op for an in-memory host).
    fn persist(&mut self, uid: &str) -> Result<(), String> {
        let Some(record) = self.record.as_mut() else {
            return Ok(());
        };
        let Some(file) = record.file.as_mut() else {
            return Ok(());
        };
        let line = RecordLine {
            uid: uid.to_string(),
            vm: self.vms.get(uid).cloned(),
        };
        let mut text = serde_json::to_string(&line).map_err(|e| e.to_string())?;
        text.push('\n');
        // One write of a whole line to an O_APPEND file: a crash leaves at most a torn
        // last line, which the next load skips.
        file.write_all(text.as_bytes())
            .map_err(|e| format!("simulated host record {}: {e}", record.path.display()))
    }

    /// [`Self::persist`] where a failure cannot fail anything: logged.
    fn persist_or_warn(&mut self, uid: &str) {
        if let Err(e) = self.persist(uid) {
            tracing::warn!(uid, error = %e, "recording the simulated host");
        }
    }
}

/// The simulated host. Cheap to clone (shared state).
#[derive(Clone, Default)]
pub struct SimulatedRuntime {
    world: Arc<Mutex<World>>,
}

struct InFlight {
    world: Arc<Mutex<World>>,
    name: String,
    step: VmStep,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut w = self.world.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = w.in_flight.get_mut(&self.name) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                w.in_flight.remove(&self.name);
            }
        }
        w.global_in_flight = w.global_in_flight.saturating_sub(1);
        if let Some(n) = w.step_in_flight.get_mut(&self.step) {
            *n = n.saturating_sub(1);
        }
    }
}

impl SimulatedRuntime {
    /// A fresh, empty simulated host, in memory only.
    pub fn new() -> Self {
        Self::default()
    }

    /// A simulated host recorded in `record` (`<state_dir>/simulated-host.jsonl` under
    /// `banger daemon --simulate`): its VMMs, taps, NAT rules and disks survive the
    /// daemon, as a real host's do. The record is read on first use — after the daemon
    /// locked its state directory — not here.
    pub fn persistent(record: PathBuf) -> Self {
        let runtime = Self::default();
        let mut w = runtime.world.lock().unwrap_or_else(|p| p.into_inner());
        w.record = Some(HostRecord {
            path: record,
            file: None,
            loaded: false,
        });
        drop(w);
        runtime
    }

    /// The host keeps no per-step records: [`Self::executed`] stays empty and
    /// [`Self::max_concurrency_for`] at 0 (the global maximum is still kept). For a
    /// `banger daemon --simulate`, whose host no test reads: the list of executed steps
    /// would grow by one entry per step for as long as the daemon runs.
    pub fn without_step_records(self) -> Self {
        // Not `w()`: that would read a persistent host's record before the daemon
        // locked its state directory.
        self.world
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .no_step_records = true;
        self
    }

    fn w(&self) -> MutexGuard<'_, World> {
        let mut w = self.world.lock().unwrap_or_else(|p| p.into_inner());
        if w.record.as_ref().is_some_and(|r| !r.loaded) {
            w.load_record();
        }
        w
    }

    fn enter(&self, name: &str, step: VmStep) -> InFlight {
        let mut w = self.w();
        let n = w.in_flight.entry(name.to_string()).or_default();
        *n += 1;
        let now = *n;
        if !w.no_step_records {
            let max = w.max_in_flight.entry(name.to_string()).or_default();
            *max = (*max).max(now);
        }
        w.global_in_flight += 1;
        w.global_max = w.global_max.max(w.global_in_flight);
        let of_step = w.step_in_flight.entry(step).or_default();
        *of_step += 1;
        let of_step = *of_step;
        let max = w.step_max.entry(step).or_default();
        *max = (*max).max(of_step);
        InFlight {
            world: self.world.clone(),
            name: name.to_string(),
            step,
        }
    }

    /// Makes `step` of VM `name` fail its next `times` runs.
    pub fn fail_step(&self, name: &str, step: VmStep, times: u32) {
        self.w().step_faults.insert((name.to_string(), step), times);
    }

    /// Makes syncing Workspace `name` fail its next `times` runs.
    pub fn fail_sync(&self, name: &str, times: u32) {
        self.w().sync_faults.insert(name.to_string(), times);
    }

    /// Makes copies of Workspace `name` write the guest's files and then never return
    /// (a daemon stop mid-copy), until [`Self::clear_hangs`].
    pub fn hang_sync(&self, name: &str) {
        self.w().sync_hangs.insert(name.to_string());
    }

    /// The syncs of Workspace `name` so far: `(VM uid, VMM pid)` of each, in order.
    pub fn syncs_of(&self, name: &str) -> Vec<(String, i32)> {
        self.w().syncs.get(name).cloned().unwrap_or_default()
    }

    /// Points the OCI reference `reference` at `digest` (a tag pushed again).
    pub fn move_tag(&self, reference: &str, digest: &str) {
        self.w()
            .tags
            .insert(reference.to_string(), digest.to_string());
    }

    /// The user changes `path` in the guest of VM `uid` (its current disk), as an edit
    /// over `banger exec` would: the next guarded copy onto it is refused.
    pub fn edit_guest(&self, uid: &str, path: &str) {
        let mut w = self.w();
        let Some(serial) = w.vms.get(uid).and_then(|v| v.disk_serial) else {
            return;
        };
        w.guest_files
            .entry((uid.to_string(), serial))
            .or_default()
            .insert(path.to_string(), sim_file(b"edited in the guest"));
    }

    /// What the guest of VM `uid` (its current disk) holds at `path`, as a copy left
    /// it or [`Self::edit_guest`] changed it.
    pub fn guest_file(&self, uid: &str, path: &str) -> Option<EntryDigest> {
        let w = self.w();
        let serial = w.vms.get(uid).and_then(|v| v.disk_serial)?;
        w.guest_files
            .get(&(uid.to_string(), serial))
            .and_then(|files| files.get(path).cloned())
    }

    /// Makes resolving Image `name` fail its next `times` runs.
    pub fn fail_image(&self, name: &str, times: u32) {
        self.w().image_faults.insert(name.to_string(), times);
    }

    /// Makes `step` of VM `name` report success without doing anything (`on`), or
    /// work again (`!on`): a runtime whose steps do not take effect.
    pub fn set_no_effect(&self, name: &str, step: VmStep, on: bool) {
        let key = (name.to_string(), step);
        let mut w = self.w();
        if on {
            w.no_effect.insert(key);
        } else {
            w.no_effect.remove(&key);
        }
    }

    /// Makes the resolved rootfs at `rootfs` disappear (until resolved again).
    pub fn lose_image_files(&self, rootfs: &std::path::Path) {
        self.w().missing_images.insert(rootfs.to_path_buf());
    }

    /// Makes `step` of VM `name` do its effect and then never return (a crash mid-step).
    pub fn hang_after(&self, name: &str, step: VmStep) {
        self.w().hangs.insert((name.to_string(), step), ());
    }

    /// Removes every hang (of steps and copies).
    pub fn clear_hangs(&self) {
        let mut w = self.w();
        w.hangs.clear();
        w.sync_hangs.clear();
    }

    /// The next `times` observations of VM `uid`'s running VMM report it unresponsive
    /// (its control socket does not answer), as a busy host or a concurrent client of a
    /// one-client control socket can make a real probe fail.
    pub fn fail_probes(&self, uid: &str, times: u32) {
        self.w().probe_faults.insert(uid.to_string(), times);
    }

    /// Makes VM `uid`'s disk unreadable to `observe` (its record lost), while the disk
    /// itself stays: the planner then asks for a disk, and `prepare-disk` refuses to
    /// replace the existing one, as the host does.
    pub fn hide_disk(&self, uid: &str) {
        let mut w = self.w();
        if let Some(vm) = w.vms.get_mut(uid) {
            vm.disk_hidden = vm.disk.is_some();
            w.persist_or_warn(uid);
        }
    }

    /// Which disk VM `uid` has (a new number each time one is made), if any.
    pub fn disk_serial(&self, uid: &str) -> Option<u64> {
        self.w().vms.get(uid).and_then(|vm| vm.disk_serial)
    }

    /// The guest becomes ready after this many observations of a running VMM.
    pub fn set_boot_observations(&self, n: u32) {
        self.w().boot_observations = n;
    }

    /// Each observe and step takes this long (widens race windows in tests).
    pub fn set_latency(&self, latency: Duration) {
        self.w().latency = latency;
    }

    /// The VMM of the VM with this uid exits on its own; the exit is notified.
    pub fn exit_process(&self, uid: &str, clean: bool) -> bool {
        let notifier = {
            let mut w = self.w();
            let Some(p) = w.vms.get_mut(uid).and_then(|v| v.process.as_mut()) else {
                return false;
            };
            p.alive = false;
            p.clean_exit = clean;
            w.persist_or_warn(uid);
            w.notifier.clone()
        };
        if let Some(n) = notifier {
            let _ = n.send(ExitNotice {
                uid: uid.to_string(),
            });
        }
        true
    }

    /// The VMM of the VM with this uid dies without any notice (an exit the daemon
    /// missed): only the next observation finds it. Returns whether one was running.
    pub fn lose_process(&self, uid: &str) -> bool {
        let mut w = self.w();
        let Some(p) = w.vms.get_mut(uid).and_then(|v| v.process.as_mut()) else {
            return false;
        };
        let was_alive = p.alive;
        p.alive = false;
        p.clean_exit = false;
        w.persist_or_warn(uid);
        was_alive
    }

    /// The tap of the VM with this uid disappears (deleted by someone else): only the
    /// next observation finds it gone. Returns whether it had one.
    pub fn lose_tap(&self, uid: &str) -> bool {
        let mut w = self.w();
        let Some(vm) = w.vms.get_mut(uid) else {
            return false;
        };
        let had = vm.tap.take().is_some();
        vm.filter = None;
        w.persist_or_warn(uid);
        had
    }

    /// Highest number of steps (`execute` calls) seen running at once for one VM name.
    /// Observations are not counted: the API also observes (for plans) while a
    /// reconcile runs, which is allowed.
    pub fn max_concurrency_for(&self, name: &str) -> u32 {
        self.w().max_in_flight.get(name).copied().unwrap_or(0)
    }

    /// Highest number of steps seen running at once, all VMs together.
    pub fn max_concurrency(&self) -> u32 {
        self.w().global_max
    }

    /// Highest number of `step`s seen running at once, all VMs together.
    pub fn max_concurrency_of(&self, step: VmStep) -> u32 {
        self.w().step_max.get(&step).copied().unwrap_or(0)
    }

    /// Number of VMs with a live VMM.
    pub fn running_count(&self) -> usize {
        self.w()
            .vms
            .values()
            .filter(|v| v.process.as_ref().is_some_and(|p| p.alive))
            .count()
    }

    /// Plants host objects of `uid` as if a VM with that uid had run and its record
    /// were lost: a live VMM, a tap, a NAT rule, a root disk and, when `vm_dir` is
    /// given, that directory (made for real). For `banger gc` tests.
    pub fn plant_garbage(&self, uid: &str, vm_dir: Option<PathBuf>) {
        if let Some(dir) = &vm_dir {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut w = self.w();
        w.next_pid = w.next_pid.max(100_000) + 1;
        let pid = w.next_pid;
        let tap = crate::host::names::ObjectUid::parse(uid)
            .map(|u| crate::host::names::tap_name(&u))
            .unwrap_or_else(|_| format!("bgt-{uid}"));
        w.vms.insert(
            uid.to_string(),
            SimVm {
                process: Some(SimProcess {
                    pid,
                    launched: LaunchConfig {
                        vcpus: 1,
                        memory_mib: 128,
                        hypervisor: banger_specs::HypervisorChoice::Auto,
                        boot_digest: String::new(),
                        ip: None,
                    },
                    alive: true,
                    clean_exit: false,
                    observations: 0,
                }),
                disk: Some(ObservedDisk {
                    image: "planted".into(),
                    digest: String::new(),
                    size: 0,
                    id: Some(sim_disk_id(0)),
                }),
                disk_serial: Some(0),
                disk_hidden: false,
                tap: Some(tap),
                filter: None,
                nat: true,
                vm_dir: vm_dir.is_some(),
                vm_dir_path: vm_dir,
            },
        );
        w.persist_or_warn(uid);
    }

    /// Whether anything at all exists for this uid on the simulated host.
    pub fn has_anything(&self, uid: &str) -> bool {
        self.w().vms.get(uid).is_some_and(|v| {
            v.process.is_some() || v.disk.is_some() || v.tap.is_some() || v.nat || v.vm_dir
        })
    }

    /// Every uid the simulated host has anything of (process, disk, tap, NAT, dir).
    pub fn uids_with_anything(&self) -> Vec<String> {
        let mut uids: Vec<String> = self
            .w()
            .vms
            .iter()
            .filter(|(_, v)| {
                v.process.is_some() || v.disk.is_some() || v.tap.is_some() || v.nat || v.vm_dir
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        uids.sort();
        uids
    }

    /// The live VMM's pid of a uid.
    pub fn pid_of(&self, uid: &str) -> Option<i32> {
        self.w()
            .vms
            .get(uid)
            .and_then(|v| v.process.as_ref())
            .filter(|p| p.alive)
            .map(|p| p.pid)
    }

    /// How many times the live VMM of a uid was observed.
    pub fn observations(&self, uid: &str) -> u32 {
        self.w()
            .vms
            .get(uid)
            .and_then(|v| v.process.as_ref())
            .map_or(0, |p| p.observations)
    }

    /// How many times any VM was observed (of any uid, live or not).
    pub fn observe_calls(&self) -> u64 {
        self.w().observe_calls
    }

    /// Steps executed so far, `(vm name, step)`, in order.
    pub fn executed(&self) -> Vec<(String, VmStep)> {
        self.w().executed.clone()
    }

    /// How many times a Launch found a live VMM already running (a duplicate VMM).
    pub fn duplicate_launches(&self) -> u32 {
        self.w().duplicate_launches
    }

    fn handles_of(vm: &SimVm, ctx: &VmContext) -> VmHandles {
        VmHandles {
            process: vm.process.as_ref().map(|p| VmmProcess {
                hypervisor: SIMULATED_HYPERVISOR.to_string(),
                pid: p.pid,
                start_time: u64::try_from(p.pid).unwrap_or(0),
                control_socket: ctx.vm_dir.join("simulated.sock"),
            }),
            launched: vm.process.as_ref().map(|p| p.launched.clone()),
            tap: vm.tap.clone(),
            root_disk: vm.disk.as_ref().map(|_| ctx.vm_dir.join("rootfs.ext4")),
            disk_image: vm.disk.as_ref().map(|d| d.image.clone()),
            disk_digest: vm.disk.as_ref().map(|d| d.digest.clone()),
            disk_size: vm.disk.as_ref().map(|d| d.size),
            disk_id: vm.disk.as_ref().and_then(|d| d.id.clone()),
            nat_rule: vm.nat.then(|| format!("banger-nat-{}", ctx.uid)),
            extra: Default::default(),
        }
    }

    /// Appends a line to the VM's console log, on the blocking pool.
    async fn console(ctx: &VmContext, line: String) {
        let path: PathBuf = ctx.console_log();
        let _ = tokio::task::spawn_blocking(move || {
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = writeln!(f, "{line}");
            }
        })
        .await;
    }

    /// The real files of a step (the VM's directory), on the blocking pool: the
    /// simulated host's state changes after, in [`Self::apply`].
    async fn host_files(step: VmStep, ctx: &VmContext) -> Result<(), String> {
        let dir = ctx.vm_dir.clone();
        let work = move || match step {
            VmStep::EnsureVmDir => {
                std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))
            }
            VmStep::RemoveVmDir => match std::fs::remove_dir_all(&dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!("remove {}: {e}", dir.display())),
            },
            VmStep::PrepareDisk
            | VmStep::GrowDisk
            | VmStep::EnsureTap
            | VmStep::EnsureNat
            | VmStep::Launch
            | VmStep::Shutdown
            | VmStep::RemoveNat
            | VmStep::RemoveTap
            | VmStep::RemoveDisk => Ok(()),
        };
        if !matches!(step, VmStep::EnsureVmDir | VmStep::RemoveVmDir) {
            return Ok(());
        }
        tokio::task::spawn_blocking(work)
            .await
            .unwrap_or_else(|e| Err(format!("{}: {e}", dir_of(ctx))))
    }

    fn apply(&self, step: VmStep, ctx: &VmContext) -> Result<(), String> {
        let mut w = self.w();
        w.next_pid = w.next_pid.max(100_000) + 1;
        let pid = w.next_pid;
        let mut serial = w.next_disk_serial;
        let mut duplicate = false;
        let vm = w.vms.entry(ctx.uid.clone()).or_default();
        match step {
            VmStep::EnsureVmDir => {
                // The directory itself was made by `host_files`.
                vm.vm_dir = true;
                vm.vm_dir_path = Some(ctx.vm_dir.clone());
            }
            VmStep::PrepareDisk => {
                let image = ctx.image.as_ref().ok_or("no resolved image")?;
                if vm.disk_hidden {
                    // Like the host: an existing disk whose record cannot be read is
                    // kept, never replaced.
                    return Err("the existing disk's record cannot be read".into());
                }
                if vm.disk.is_none() {
                    serial += 1;
                    vm.disk_serial = Some(serial);
                }
                vm.disk = Some(ObservedDisk {
                    image: ctx.spec.image.clone(),
                    digest: image.rootfs_digest.clone(),
                    size: ctx.spec.disk.0,
                    id: vm.disk_serial.map(sim_disk_id),
                });
            }
            VmStep::GrowDisk => {
                let disk = vm.disk.as_mut().ok_or("no root disk")?;
                if vm.process.as_ref().is_some_and(|p| p.alive) {
                    return Err("cannot grow the disk of a running VM".into());
                }
                disk.size = disk.size.max(ctx.spec.disk.0);
            }
            VmStep::EnsureTap => {
                // As on the host: the tap's guest filter needs the leased address.
                let lease = ctx.lease.as_ref().ok_or("no IP lease")?;
                vm.tap = ctx.tap_name();
                vm.filter = Some(ObservedFilter {
                    ip: lease.ip,
                    isolated: ctx.spec.network.isolated,
                });
            }
            VmStep::EnsureNat => {
                if vm.tap.is_none() {
                    return Err("no tap".into());
                }
                vm.nat = true;
            }
            VmStep::Launch => {
                let image = ctx.image.as_ref().ok_or("no resolved image")?;
                if vm.disk.is_none() {
                    return Err("no root disk".into());
                }
                if ctx.lease.is_none() {
                    return Err("no IP lease".into());
                }
                duplicate = vm.process.as_ref().is_some_and(|p| p.alive);
                vm.process = Some(SimProcess {
                    pid,
                    launched: LaunchConfig::desired(
                        &ctx.spec,
                        image,
                        ctx.lease.as_ref().map(|l| l.ip),
                    ),
                    alive: true,
                    clean_exit: false,
                    observations: 0,
                });
            }
            VmStep::Shutdown => vm.process = None,
            VmStep::RemoveNat => vm.nat = false,
            VmStep::RemoveTap => {
                if vm.nat {
                    return Err("NAT rule still references the tap".into());
                }
                vm.tap = None;
                vm.filter = None;
            }
            VmStep::RemoveDisk => {
                if vm.process.as_ref().is_some_and(|p| p.alive) {
                    return Err("disk in use by a running VMM".into());
                }
                vm.disk = None;
                vm.disk_serial = None;
                vm.disk_hidden = false;
            }
            VmStep::RemoveVmDir => {
                // The directory itself was removed by `host_files`.
                vm.vm_dir = false;
                vm.vm_dir_path = None;
            }
        }
        if duplicate {
            w.duplicate_launches += 1;
        }
        w.next_disk_serial = serial;
        if !w.no_step_records {
            w.executed.push((ctx.name.clone(), step));
        }
        w.persist(&ctx.uid)
    }
}

/// A VM's directory, for messages.
fn dir_of(ctx: &VmContext) -> String {
    ctx.vm_dir.display().to_string()
}

/// The digest a simulated tag names: what [`SimulatedRuntime::move_tag`] set, else a
/// digest of the reference.
fn simulated_tag(tags: &HashMap<String, String>, reference: &str) -> String {
    tags.get(reference).cloned().unwrap_or_else(|| {
        let mut h = Sha256::new();
        h.update(reference.as_bytes());
        format!("sha256:{}", hex::encode(h.finalize()))
    })
}

impl VmRuntime for SimulatedRuntime {
    fn name(&self) -> &'static str {
        "simulated"
    }

    fn set_exit_notifier(&self, notifier: ExitNotifier) {
        self.w().notifier = Some(notifier);
    }

    async fn resolve_image(&self, image: &ImageContext) -> Result<ImageResolution, RuntimeError> {
        let mut w = self.w();
        if let Some(n) = w.image_faults.get_mut(&image.name).filter(|n| **n > 0) {
            *n -= 1;
            return Err(RuntimeError::Image {
                image: image.name.clone(),
                cause: ImageFailure::Unavailable,
                message: "simulated failure".into(),
            });
        }
        let spec = &image.spec;
        // An OCI image keeps the digest it was resolved to (the pin); else the tag's.
        let digest = match &spec.oci {
            Some(oci) => image
                .pin
                .clone()
                .unwrap_or_else(|| simulated_tag(&w.tags, &oci.reference)),
            None => {
                let mut h = Sha256::new();
                h.update(
                    spec.rootfs
                        .clone()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .as_bytes(),
                );
                format!("sha256:{}", hex::encode(h.finalize()))
            }
        };
        let rootfs = match &spec.rootfs {
            Some(r) => r.clone(),
            None => image.image_dir.join(&digest).join("rootfs.ext4"),
        };
        w.missing_images.remove(&rootfs);
        Ok(ImageResolution {
            boot: ResolvedImage {
                kernel: spec
                    .kernel
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("/simulated/default/vmlinux")),
                initrd: spec.initrd.clone(),
                rootfs,
                kernel_args: spec.kernel_args.clone(),
                readiness: spec.readiness.clone(),
                rootfs_digest: digest.clone(),
            },
            digest,
            rootfs_bytes: 64 << 20,
            guest: None,
            default_kernel: spec.kernel.is_none(),
            reused: false,
        })
    }

    async fn latest_image_digest(&self, image: &ImageContext) -> Result<String, RuntimeError> {
        let w = self.w();
        match &image.spec.oci {
            Some(oci) => Ok(simulated_tag(&w.tags, &oci.reference)),
            None => Err(RuntimeError::Image {
                image: image.name.clone(),
                cause: ImageFailure::Unavailable,
                message: "not an OCI image".into(),
            }),
        }
    }

    async fn prune_images(
        &self,
        _keep: &BTreeSet<PathBuf>,
        _dry_run: bool,
    ) -> Result<Vec<crate::host::oci::store::StoreItem>, RuntimeError> {
        // The simulated host has no store: nothing is ever left to prune.
        Ok(Vec::new())
    }

    async fn image_present(&self, image: &ResolvedImage) -> bool {
        !self.w().missing_images.contains(&image.rootfs)
    }

    async fn remove_image(&self, _image: &ImageContext) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn observe(&self, vm: &VmContext) -> ObservedVm {
        let latency = self.w().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut w = self.w();
        w.observe_calls += 1;
        let boot = w.boot_observations;
        let probe_fails = match w.probe_faults.get_mut(&vm.uid) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        };
        let Some(sim) = w.vms.get_mut(&vm.uid) else {
            return ObservedVm::nothing();
        };
        let (process, guest_ready) = match sim.process.as_mut() {
            None => (ProcessState::Absent, false),
            Some(p) if p.alive && probe_fails => (
                ProcessState::Unresponsive {
                    reason: "simulated probe failure".into(),
                },
                false,
            ),
            Some(p) if p.alive => {
                p.observations += 1;
                (
                    ProcessState::Running {
                        launched: p.launched.clone(),
                    },
                    p.observations > boot,
                )
            }
            Some(p) => (
                ProcessState::Exited {
                    clean: p.clean_exit,
                },
                false,
            ),
        };
        ObservedVm {
            process,
            disk: sim.disk.clone().filter(|_| !sim.disk_hidden),
            tap: sim.tap.clone().map(|name| ObservedTap {
                name,
                attached: true,
                filter: sim.filter,
            }),
            nat: sim.nat,
            guest_ready,
            vm_dir: sim.vm_dir,
        }
    }

    async fn execute(&self, step: VmStep, vm: &VmContext) -> Result<VmHandles, RuntimeError> {
        let _guard = self.enter(&vm.name, step);
        let (latency, fault, hang, no_effect) = {
            let mut w = self.w();
            let fault = match w.step_faults.get_mut(&(vm.name.clone(), step)) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            };
            let key = (vm.name.clone(), step);
            (
                w.latency,
                fault,
                w.hangs.contains_key(&key),
                w.no_effect.contains(&key),
            )
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let err = |message: String| RuntimeError::Step {
            object: format!("vm/{}", vm.name),
            step: step.name().into(),
            message,
        };
        if fault {
            return Err(err("simulated failure".into()));
        }
        let applied = if no_effect {
            Ok(())
        } else {
            match Self::host_files(step, vm).await {
                Ok(()) => self.apply(step, vm),
                Err(e) => Err(e),
            }
        };
        if applied.is_ok() && step == VmStep::Launch {
            Self::console(vm, format!("[simulated] {} booted", vm.name)).await;
        }
        if hang {
            // A daemon crash in the middle of the step: whatever the effect did, the
            // answer never comes.
            std::future::pending::<()>().await;
        }
        applied.map_err(err)?;
        let w = self.w();
        let sim = w.vms.get(&vm.uid).cloned().unwrap_or_default();
        Ok(Self::handles_of(&sim, vm))
    }

    async fn sync_workspace(&self, ws: &WorkspaceContext) -> Result<SyncOutcome, RuntimeError> {
        let latency = self.w().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let fail = |step: &str, message: &str| RuntimeError::Sync {
            workspace: ws.name.clone(),
            vm: ws.vm.name.clone(),
            step: step.to_string(),
            message: message.to_string(),
        };
        let (manifest, hang) = {
            let mut w = self.w();
            if let Some(n) = w.sync_faults.get_mut(&ws.name) {
                if *n > 0 {
                    *n -= 1;
                    return Err(fail("ssh copy", "injected fault"));
                }
            }
            let vm = w.vms.get(&ws.vm.uid);
            let pid = vm
                .and_then(|v| v.process.as_ref())
                .filter(|p| p.alive)
                .map(|p| p.pid)
                .ok_or_else(|| fail("ssh copy", "no running guest"))?;
            let serial = vm
                .and_then(|v| v.disk_serial)
                .ok_or_else(|| fail("ssh copy", "no root disk"))?;
            let tree = w
                .guest_files
                .entry((ws.vm.uid.clone(), serial))
                .or_default();
            if let Some(previous) = ws.previous.as_ref().filter(|p| p.guard) {
                let changes = previous.manifest.changes(tree);
                if !changes.is_empty() {
                    return Ok(SyncOutcome::GuestChanged(changes));
                }
            }
            let manifest = sim_manifest(ws);
            if let Some(previous) = &ws.previous {
                for gone in previous
                    .manifest
                    .entries
                    .keys()
                    .filter(|p| !p.starts_with(".git/") && !manifest.entries.contains_key(*p))
                {
                    tree.remove(gone);
                }
            }
            tree.extend(manifest.entries.clone());
            w.syncs
                .entry(ws.name.clone())
                .or_default()
                .push((ws.vm.uid.clone(), pid));
            let hang = w.sync_hangs.contains(&ws.name);
            (manifest, hang)
        };
        if hang {
            // The files are written; the answer never comes.
            std::future::pending::<()>().await;
        }
        Ok(SyncOutcome::Copied {
            record: SyncRecord {
                files: 3,
                bytes: 42,
                commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            },
            manifest,
        })
    }

    /// Writes a made-up "patch": a header line naming the Workspace, the VM and the
    /// base, then one line per path the simulated guest holds (path and digest).
    async fn export_workspace(
        &self,
        ws: &WorkspaceContext,
        base: Option<String>,
        mut out: std::fs::File,
    ) -> Result<ExportRecord, RuntimeError> {
        let fail = |message: String| RuntimeError::Sync {
            workspace: ws.name.clone(),
            vm: ws.vm.name.clone(),
            step: "export".into(),
            message,
        };
        let mut text = format!(
            "# simulated export of workspace {} (vm {}) against {}\n",
            ws.name,
            ws.vm.name,
            base.as_deref().unwrap_or("the empty tree")
        );
        {
            let w = self.w();
            let serial = w.vms.get(&ws.vm.uid).and_then(|v| v.disk_serial);
            let tree = serial.and_then(|s| w.guest_files.get(&(ws.vm.uid.clone(), s)));
            for (path, digest) in tree.into_iter().flatten() {
                text.push_str(&format!("{path} {digest:?}\n"));
            }
        }
        let bytes = text.len() as u64;
        tokio::task::spawn_blocking(move || out.write_all(text.as_bytes()))
            .await
            .map_err(|e| fail(e.to_string()))?
            .map_err(|e| fail(e.to_string()))?;
        Ok(ExportRecord {
            method: crate::runtime::ExportMethod::GuestGit,
            bytes,
        })
    }

    async fn find_garbage(&self, known_vm_uids: &BTreeSet<String>) -> Vec<Garbage> {
        let w = self.w();
        let mut items = Vec::new();
        for (uid, vm) in w.vms.iter().filter(|(u, _)| !known_vm_uids.contains(*u)) {
            let item = |kind, name: String, detail: String| Garbage {
                kind,
                name,
                uid: Some(uid.clone()),
                detail,
            };
            if let Some(p) = vm.process.as_ref().filter(|p| p.alive) {
                items.push(item(
                    GarbageKind::Process,
                    p.pid.to_string(),
                    format!("simulated VMM banger-{uid}"),
                ));
            }
            if vm.nat {
                items.push(item(
                    GarbageKind::NatRule,
                    format!("banger-vm:{uid}"),
                    "simulated NAT rule".into(),
                ));
            }
            if let Some(tap) = &vm.tap {
                items.push(item(GarbageKind::Tap, tap.clone(), "simulated tap".into()));
            }
            if vm.vm_dir || vm.disk.is_some() {
                let detail = vm.vm_dir_path.as_ref().map_or_else(
                    || "simulated VM directory".into(),
                    |p| p.display().to_string(),
                );
                items.push(item(GarbageKind::VmDir, uid.clone(), detail));
            }
        }
        items.sort();
        items
    }

    async fn remove_garbage(&self, item: &Garbage) -> Result<(), RuntimeError> {
        let err = |message: String| RuntimeError::Step {
            object: item.to_string(),
            step: "gc".into(),
            message,
        };
        let mut w = self.w();
        let Some(uid) = item.uid.clone() else {
            return Ok(());
        };
        let result = Self::remove_garbage_item(&mut w, &uid, item).map_err(err);
        w.persist_or_warn(&uid);
        result
    }
}

impl SimulatedRuntime {
    fn remove_garbage_item(w: &mut World, uid: &str, item: &Garbage) -> Result<(), String> {
        let Some(vm) = w.vms.get_mut(uid) else {
            return Ok(());
        };
        match item.kind {
            GarbageKind::Process => vm.process = None,
            // The simulated host confines nothing: it never lists a cgroup.
            GarbageKind::Cgroup => {}
            GarbageKind::NatRule => vm.nat = false,
            // The simulated host keeps a tap's guest filter with the tap: it lists and
            // removes them as one item.
            GarbageKind::Tap | GarbageKind::FilterRules => {
                vm.tap = None;
                vm.filter = None;
            }
            GarbageKind::VmDir => {
                if let Some(path) = vm.vm_dir_path.take() {
                    match std::fs::remove_dir_all(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            vm.vm_dir_path = Some(path.clone());
                            return Err(format!("remove {}: {e}", path.display()));
                        }
                    }
                }
                vm.vm_dir = false;
                vm.disk = None;
            }
        }
        Ok(())
    }
}
