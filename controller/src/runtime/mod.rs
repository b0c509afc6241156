//! The runtime port: everything a reconcile needs from the host, and nothing more.
//!
//! The engine ([`crate::engine`]) is written against the [`VmRuntime`] trait only.
//! Two adapters exist: the real [`linux::LinuxRuntime`] (disks, taps, NAT, hypervisor
//! drivers) and [`simulated::SimulatedRuntime`], an in-memory
//! stand-in used **only** by engine tests and benchmarks (`banger daemon --simulate`).
//!
//! ## The contract
//! - [`VmRuntime::observe`] measures: it probes every handle it is given (process
//!   identity and control socket, disk file, tap, NAT rule, guest readiness) and reports
//!   plain values ([`ObservedVm`]). It never changes anything and never fails: what it
//!   cannot confirm is reported as absent or unresponsive.
//! - [`VmRuntime::execute`] acts: it performs one [`VmStep`] and returns the VM's
//!   updated [`VmHandles`]. Every step is idempotent (running it twice is the same as
//!   once) and verifies its own effect before returning `Ok`. A step that can leave a
//!   partial artefact publishes it only complete and atomically (a disk is finished —
//!   banger's SSH key included — under a temporary name, then renamed), so that
//!   `observe` never reports a half-made object as present and an interrupted step
//!   never leaves one; the next run of the step removes its own leftovers.
//! - The engine writes a journal row before each `execute` and completes it after. If
//!   the daemon dies in between, on the next start the engine rolls back an interrupted
//!   [`VmStep::Launch`] (runs [`VmStep::Shutdown`]; the runtime must then find the VMM
//!   by the uid marker on its command line even when the handles do not name it), and
//!   resumes every other step by planning again. No rollback ever removes a disk: an
//!   interrupted [`VmStep::PrepareDisk`] published a whole disk or none, and the disk it
//!   ran on may hold the user's work.
//! - The engine stores the handles `execute` returns (with the step's journal row) and
//!   passes the last known handles back in [`VmContext::handles`]. Handles are hints to
//!   probe, never trusted blindly.
//! - IP leases belong to the engine (SQLite): the context carries the VM's lease.
//! - A VMM that exits on its own is reported through the [`ExitNotifier`] the engine
//!   hands over once at start ([`VmRuntime::set_exit_notifier`]), so the VM is
//!   reconciled at once instead of at the next resync.
//! - A runtime may also watch a booting guest closely and report the moment it passes
//!   its readiness check through the [`ReadyNotifier`]
//!   ([`VmRuntime::set_ready_notifier`]), so `Ready` follows at once instead of at the
//!   engine's next re-check of a booting VM. The notice is a hint: readiness is what
//!   [`VmRuntime::observe`] measures.
//! - [`VmRuntime::find_garbage`] lists host objects that carry banger's naming but
//!   belong to no VM the store knows ([`Garbage`]); it never changes anything.
//!   [`VmRuntime::remove_garbage`] removes one of them (idempotent). Neither ever
//!   touches an object of a known uid, nor one of another daemon (another state
//!   directory).
//! - [`VmRuntime::resolve_image`] checks or builds an Image's root filesystem (OCI
//!   images and `guest: inject` images into the shared content-addressed store) and
//!   reports what it resolved ([`ImageResolution`]); an OCI Image resolved before keeps
//!   its digest ([`ImageContext::pin`]) until the user applies an update;
//!   [`VmRuntime::latest_image_digest`] only looks at what a tag names now.
//!   [`VmRuntime::prune_images`] removes store content no Image uses (`banger gc`).
//! - [`VmRuntime::sync_workspace`] copies a Workspace's checkout into its VM's guest
//!   and flushes the guest's filesystems before returning; asked to guard a previous
//!   copy, it refuses (copying nothing) when the guest changed what that copy wrote.
//!   It is called only when the VM is running with its guest ready, never while one of
//!   the VM's steps runs. [`VmRuntime::export_workspace`] reads the guest's work back
//!   out as a patch and changes nothing, in the guest or on the host.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use banger_specs::{HypervisorChoice, ImageSpec, Readiness, VmSpec, WorkspaceSpec};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::driver::VmmProcess;

pub mod linux;
pub mod simulated;

/// An IP lease of one VM, as the engine allocated it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// The guest's IPv4 address.
    pub ip: Ipv4Addr,
    /// The guest's MAC address (`02:…`, derived from the VM uid).
    pub mac: String,
    /// The bridge's address: the guest's gateway.
    pub gateway: Ipv4Addr,
    /// Prefix length of the bridge network.
    pub prefix: u8,
}

/// An Image after resolution: local files a VM can boot from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedImage {
    /// Kernel file.
    pub kernel: PathBuf,
    /// Optional initrd.
    pub initrd: Option<PathBuf>,
    /// Root filesystem (ext4) the VMs' disks are copied from.
    pub rootfs: PathBuf,
    /// Extra kernel arguments of the image.
    pub kernel_args: Option<String>,
    /// How readiness is checked.
    pub readiness: Readiness,
    /// Identity of the root filesystem's content (a digest, or path + size + mtime):
    /// when it changes, VM disks made from the old one must be recreated.
    pub rootfs_digest: String,
}

/// What the runtime needs to resolve (check or pull) one Image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageContext {
    /// The Image object's uid.
    pub uid: String,
    /// Its name.
    pub name: String,
    /// Its canonical spec.
    pub spec: ImageSpec,
    /// Its own directory (`<state_dir>/images/<uid>`): content of earlier versions,
    /// removed with the Image (pulled content lives in the shared store).
    pub image_dir: PathBuf,
    /// OCI: the manifest digest the Image already uses for `spec.oci.ref`; resolution
    /// keeps it (from the store, or fetched by digest) instead of following the tag.
    pub pin: Option<String>,
    /// Where pull progress is reported.
    pub progress: PullReporter,
}

/// Where an Image's pull reports the bytes of each layer ([`crate::host::oci::PullProgress`]).
/// Compares equal to every other reporter: it is a channel, not a value.
#[derive(Clone, Default)]
pub struct PullReporter(
    Option<std::sync::Arc<dyn Fn(crate::host::oci::PullProgress) + Send + Sync>>,
);

impl PullReporter {
    /// A reporter calling `f` (from the pulling task; `f` must not block).
    pub fn new(f: impl Fn(crate::host::oci::PullProgress) + Send + Sync + 'static) -> Self {
        PullReporter(Some(std::sync::Arc::new(f)))
    }

    /// Reports one progress value (nothing when no one listens).
    pub fn report(&self, p: crate::host::oci::PullProgress) {
        if let Some(f) = &self.0 {
            f(p);
        }
    }
}

impl std::fmt::Debug for PullReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "PullReporter"
        } else {
            "PullReporter(none)"
        })
    }
}

impl PartialEq for PullReporter {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for PullReporter {}

/// What an Image resolved to: what VMs boot ([`ResolvedImage`]) and what its status
/// shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageResolution {
    /// What VMs boot from.
    pub boot: ResolvedImage,
    /// The manifest digest (OCI) or the sha256 of the root filesystem file (local).
    pub digest: String,
    /// Size of the root filesystem in bytes.
    pub rootfs_bytes: u64,
    /// What banger's guest bits found and added, when they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<crate::host::guest_bits::GuestReport>,
    /// The kernel is the daemon's default kernel (the spec names none).
    #[serde(default)]
    pub default_kernel: bool,
    /// Nothing was downloaded or built: the store had it.
    #[serde(default)]
    pub reused: bool,
}

/// The configuration a VMM process was (or will be) launched with: what the planner
/// compares to tell a `restart` change from a `live` one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchConfig {
    /// Virtual CPUs.
    pub vcpus: u8,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Requested hypervisor (as in the spec, before `auto` is resolved).
    pub hypervisor: HypervisorChoice,
    /// Kernel, initrd and kernel arguments (image's then VM's), hashed.
    pub boot_digest: String,
    /// The guest address passed on the kernel command line (`ip=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
}

impl LaunchConfig {
    /// The launch configuration a VM asks for. Both runtimes record this value in
    /// [`VmHandles::launched`] on [`VmStep::Launch`] (`ip` from [`VmContext::lease`]).
    pub fn desired(spec: &VmSpec, image: &ResolvedImage, ip: Option<Ipv4Addr>) -> Self {
        LaunchConfig {
            ip,
            vcpus: spec.vcpus,
            memory_mib: spec.memory.0 / (1024 * 1024),
            hypervisor: spec.hypervisor,
            boot_digest: boot_digest(image, spec.kernel_args.as_deref()),
        }
    }
}

/// Digest of what the guest boots: kernel and initrd paths and the extra arguments.
pub fn boot_digest(image: &ResolvedImage, vm_args: Option<&str>) -> String {
    let mut h = Sha256::new();
    h.update(image.kernel.to_string_lossy().as_bytes());
    h.update([0]);
    if let Some(i) = &image.initrd {
        h.update(i.to_string_lossy().as_bytes());
    }
    h.update([0]);
    h.update(image.kernel_args.as_deref().unwrap_or("").as_bytes());
    h.update([0]);
    h.update(vm_args.unwrap_or("").as_bytes());
    hex::encode(&h.finalize()[..12])
}

/// A VM's transient host handles: what exists on the host for it. Persisted by the
/// engine in `<vm_dir>/handles.json` and mirrored in the store; re-probed on every
/// reconcile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmHandles {
    /// The VMM process, once launched (kept after it exits, so an exit can be told from
    /// a deliberate stop; cleared by [`VmStep::Shutdown`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<VmmProcess>,
    /// The configuration the process was launched with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launched: Option<LaunchConfig>,
    /// Tap device name (derived from the uid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap: Option<String>,
    /// The VM's root disk file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_disk: Option<PathBuf>,
    /// Name of the Image the disk was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_image: Option<String>,
    /// [`ResolvedImage::rootfs_digest`] of the image the disk was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_digest: Option<String>,
    /// Size of the disk in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_size: Option<u64>,
    /// The disk's identity ([`ObservedDisk::id`]), set when the disk is made: what a
    /// Workspace copy is counted against. `None` without a disk, or for a disk made
    /// before disks had ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_id: Option<String>,
    /// NAT rule identifier (for example the nftables rule handle or comment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_rule: Option<String>,
    /// Anything else an adapter wants to remember (sockets, log paths, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

/// Everything the runtime knows about one VM when asked to observe it or run a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmContext {
    /// The VM object's uid: every host object is named from it.
    pub uid: String,
    /// The VM's name.
    pub name: String,
    /// Its canonical spec (for deletion: the last spec known).
    pub spec: VmSpec,
    /// The resolved image, when its Image is Ready (steps that need it fail without).
    pub image: Option<ResolvedImage>,
    /// `<state_dir>/vms/<uid>`.
    pub vm_dir: PathBuf,
    /// The VM's IP lease.
    pub lease: Option<Lease>,
    /// Bridge device name.
    pub bridge: String,
    /// The VM is being deleted: its disk is discarded, so a shutdown gives the guest no
    /// grace period ([`VmContext::stop_grace`]).
    pub deleting: bool,
    /// The last handles the engine recorded.
    pub handles: VmHandles,
}

impl VmContext {
    /// How long a shutdown waits for the guest to power off after the power button
    /// before stopping the VMM by force: none for a delete (the disk is discarded, so
    /// nothing the guest could flush survives), else the spec's
    /// `stopGracePeriodSeconds`, else `default` (the daemon's `--stop-grace`).
    pub fn stop_grace(&self, default: Duration) -> Duration {
        if self.deleting {
            return Duration::ZERO;
        }
        self.spec
            .stop_grace_period_seconds
            .map_or(default, |s| Duration::from_secs(u64::from(s)))
    }

    /// Where the guest's serial console is written: `<vm_dir>/console.log`.
    pub fn console_log(&self) -> PathBuf {
        self.vm_dir.join("console.log")
    }

    /// The tap device name ([`crate::host::names::tap_name`]); `None` when the uid is not
    /// one banger generates.
    pub fn tap_name(&self) -> Option<String> {
        crate::host::names::ObjectUid::parse(&self.uid)
            .ok()
            .map(|uid| crate::host::names::tap_name(&uid))
    }
}

pub use crate::host::workspace::manifest::{
    describe_changes, ChangeKind, CopyManifest, EntryDigest, GuestChange,
};

/// Everything the runtime needs to copy one Workspace into its VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceContext {
    /// The Workspace's name.
    pub name: String,
    /// The Workspace object's uid.
    pub uid: String,
    /// Its canonical spec (source, guest path, include mode).
    pub spec: WorkspaceSpec,
    /// The VM it is copied into, as the VM's reconcile last saw it (lease, handles).
    pub vm: VmContext,
    /// The last copy into this same guest (VM and root disk), when there was one and
    /// its manifest is known.
    pub previous: Option<PreviousCopy>,
}

/// The last copy into the guest a copy goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousCopy {
    /// What it wrote: the paths the checkout no longer has are removed in the guest.
    pub manifest: CopyManifest,
    /// Refuse the copy when the guest changed any of it ([`SyncOutcome::GuestChanged`]);
    /// `false` for a forced copy.
    pub guard: bool,
}

pub use crate::host::workspace::export::ExportMethod;

/// What [`VmRuntime::export_workspace`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportRecord {
    /// How the patch was made: by the guest's git, or on the host from the guest's tree.
    pub method: ExportMethod,
    /// Its size in bytes.
    pub bytes: u64,
}

/// What [`VmRuntime::sync_workspace`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    /// The files are in the guest.
    Copied {
        /// What was copied.
        record: SyncRecord,
        /// What was written where (for the next copy's check).
        manifest: CopyManifest,
    },
    /// Nothing was copied: the guest changed what the last copy wrote.
    GuestChanged(Vec<GuestChange>),
}

/// What one [`VmRuntime::sync_workspace`] copied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncRecord {
    /// Files (regular files and symlinks) copied.
    pub files: u64,
    /// Bytes of file content copied.
    pub bytes: u64,
    /// The source's `HEAD` commit, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// State of the VMM process as probed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum ProcessState {
    /// No process was launched, or it was stopped deliberately.
    Absent,
    /// Running, launched with this configuration.
    Running {
        /// The configuration it was launched with.
        launched: LaunchConfig,
    },
    /// A launched process exited on its own (or its guest powered off).
    Exited {
        /// The guest powered off by itself (a clean exit).
        clean: bool,
    },
    /// The process is ours but does not answer; treated as failed.
    Unresponsive {
        /// What went wrong.
        reason: String,
    },
}

/// What the runtime measured about a VM: plain values, the planner's input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedVm {
    /// The VMM process.
    pub process: ProcessState,
    /// The root disk, if present and complete.
    pub disk: Option<ObservedDisk>,
    /// The tap device, if present.
    pub tap: Option<ObservedTap>,
    /// The NAT rule is present.
    pub nat: bool,
    /// The guest passed its readiness check.
    pub guest_ready: bool,
    /// `<vm_dir>` exists.
    pub vm_dir: bool,
}

impl ObservedVm {
    /// Nothing exists on the host for this VM.
    pub fn nothing() -> Self {
        ObservedVm {
            process: ProcessState::Absent,
            disk: None,
            tap: None,
            nat: false,
            guest_ready: false,
            vm_dir: false,
        }
    }
}

/// A present root disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedDisk {
    /// Name of the Image it was made from.
    pub image: String,
    /// Rootfs digest of that image.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// The disk's own identity: a random id given when the disk was made and kept for
    /// its whole life (a VMM restart, a stop/start, a grow and a daemon restart keep
    /// it; a rebuilt disk has a new one). `None` for a disk made before disks had ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// A present tap device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedTap {
    /// Its name.
    pub name: String,
    /// It is attached to the bridge.
    pub attached: bool,
    /// What its guest filter enforces; `None` when the filter is missing or incomplete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<ObservedFilter>,
}

/// What a VM's guest filter enforces (see `docs/security.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedFilter {
    /// The only source address the guest may use.
    pub ip: Ipv4Addr,
    /// No frame passes between this guest and another (`network.isolated`).
    pub isolated: bool,
}

/// One side-effecting step on the host for one VM. Every step is idempotent.
///
/// Its kebab-case name (`prepare-disk`) is what the journal records and `describe`
/// shows; [`VmStep::name`] and parsing (`VmStep::from_str`) come from one derived
/// mapping, so every step round-trips, and `VmStep::iter()` (strum) lists them all.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::EnumIter,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum VmStep {
    /// Create `<vm_dir>`.
    EnsureVmDir,
    /// Create the root disk: a copy of the image rootfs grown to `spec.disk`.
    PrepareDisk,
    /// Grow the (stopped VM's) root disk to `spec.disk`.
    GrowDisk,
    /// Create the tap device (named from the uid), attach it to the bridge, and make its
    /// guest filter (the leased source only; other guests kept away unless
    /// `network.isolated: false`).
    EnsureTap,
    /// Add the VM's NAT masquerade rule.
    EnsureNat,
    /// Launch the VMM and boot the guest.
    Launch,
    /// Stop the VMM (graceful, bounded, then forced). Clears the process handle.
    Shutdown,
    /// Remove the NAT rule.
    RemoveNat,
    /// Remove the tap device and its guest filter.
    RemoveTap,
    /// Remove the root disk.
    RemoveDisk,
    /// Remove `<vm_dir>` and everything left in it.
    RemoveVmDir,
}

impl VmStep {
    /// The step's kebab-case name, as journaled and shown by `describe`.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// The step that undoes an interrupted run of this one, when a retry cannot simply
    /// resume it (see the module docs).
    pub fn rollback(self) -> Option<VmStep> {
        match self {
            VmStep::Launch => Some(VmStep::Shutdown),
            VmStep::PrepareDisk
            | VmStep::EnsureVmDir
            | VmStep::GrowDisk
            | VmStep::EnsureTap
            | VmStep::EnsureNat
            | VmStep::Shutdown
            | VmStep::RemoveNat
            | VmStep::RemoveTap
            | VmStep::RemoveDisk
            | VmStep::RemoveVmDir => None,
        }
    }
}

/// What kind of host object a [`Garbage`] item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GarbageKind {
    /// A VMM process carrying banger's uid marker and this daemon's state directory.
    Process,
    /// A VM's cgroup below this daemon's parent cgroup (after the processes: a cgroup
    /// with a process in it cannot be removed).
    Cgroup,
    /// A NAT rule in banger's nftables table.
    NatRule,
    /// The guest filter rules of a VM (`table bridge banger`).
    FilterRules,
    /// A tap device named like banger's.
    Tap,
    /// A VM directory below `<state_dir>/vms`.
    VmDir,
}

impl GarbageKind {
    /// The kebab-case name (`process`, `cgroup`, `nat-rule`, `filter-rules`, `tap`,
    /// `vm-dir`).
    pub fn name(self) -> &'static str {
        match self {
            GarbageKind::Process => "process",
            GarbageKind::Cgroup => "cgroup",
            GarbageKind::NatRule => "nat-rule",
            GarbageKind::FilterRules => "filter-rules",
            GarbageKind::Tap => "tap",
            GarbageKind::VmDir => "vm-dir",
        }
    }
}

/// A host object that carries banger's naming but belongs to no VM the store knows.
/// Ordered by kind in removal order: processes before the network, directories last.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Garbage {
    /// What it is.
    pub kind: GarbageKind,
    /// Its name: the pid of a process, the cgroup's directory name, the tap's name, the
    /// NAT rule's comment, the VM directory's name.
    pub name: String,
    /// The uid it names, when it can be told (a tap's name is a hash of it: `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// More about it, for people: a command line, a rule handle, a path.
    #[serde(default)]
    pub detail: String,
}

impl std::fmt::Display for Garbage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind.name(), self.name)
    }
}

/// A VMM exit noticed by the runtime: the uid of the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitNotice {
    /// The VM's uid.
    pub uid: String,
}

/// Where the runtime reports VMM exits.
pub type ExitNotifier = tokio::sync::mpsc::UnboundedSender<ExitNotice>;

/// A booting guest that passed its readiness check, noticed by the runtime between
/// reconciles: the uid of the VM. A hint to reconcile now; the reconcile's own
/// observation decides readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyNotice {
    /// The VM's uid.
    pub uid: String,
}

/// Where the runtime reports guests that became ready.
pub type ReadyNotifier = tokio::sync::mpsc::UnboundedSender<ReadyNotice>;

/// An error of a runtime operation, with the VM/image and step it concerns.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RuntimeError {
    /// A step failed.
    #[error("{object}: step {step}: {message}")]
    Step {
        /// `vm/NAME` or `image/NAME` (or `KIND/NAME` of a [`Garbage`] item, step `gc`).
        object: String,
        /// The step's name.
        step: String,
        /// What went wrong.
        message: String,
    },
    /// Copying a Workspace into its VM failed.
    #[error("workspace {workspace}: vm {vm}: {step}: {message}")]
    Sync {
        /// The Workspace's name.
        workspace: String,
        /// The VM's name.
        vm: String,
        /// What was being done (`list files`, `ssh copy`, `sync`, …).
        step: String,
        /// What went wrong.
        message: String,
    },
    /// The image cannot be resolved (missing file, pull failed).
    #[error("image {image}: {message}")]
    Image {
        /// Image name.
        image: String,
        /// Why, in one word (the condition's reason).
        cause: ImageFailure,
        /// What went wrong.
        message: String,
    },
}

/// Why an Image could not be resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFailure {
    /// Files missing, registry unreachable, content refused.
    Unavailable,
    /// banger's guest bits cannot serve the image (no shell for root, …).
    Unsupported,
    /// The registry refused the credentials, or wants some.
    Unauthorized,
}

/// The port: what a reconcile needs from the host. See the module docs for the contract.
pub trait VmRuntime: Send + Sync + 'static {
    /// `host` or `simulated`: reported in VM status as the runtime in use.
    fn name(&self) -> &'static str;

    /// Called once at daemon start: the runtime reports every VMM exit it notices here.
    fn set_exit_notifier(&self, notifier: ExitNotifier);

    /// Called once at daemon start: a runtime that watches booting guests (rather than
    /// leaving it to the engine's re-checks) reports each one that becomes ready here.
    /// The default ignores it.
    fn set_ready_notifier(&self, notifier: ReadyNotifier) {
        drop(notifier);
    }

    /// Checks an Image's files, or pulls and builds it, and returns what VMs boot from
    /// and what its status shows. Heavy: the engine bounds how many run at once.
    fn resolve_image(
        &self,
        image: &ImageContext,
    ) -> impl std::future::Future<Output = Result<ImageResolution, RuntimeError>> + Send;

    /// The manifest digest an OCI Image's tag names now (no pull): the update check.
    fn latest_image_digest(
        &self,
        image: &ImageContext,
    ) -> impl std::future::Future<Output = Result<String, RuntimeError>> + Send;

    /// Removes the store's root filesystems not in `keep` and the blobs only they use
    /// (with `dry_run`, only lists them).
    fn prune_images(
        &self,
        keep: &BTreeSet<PathBuf>,
        dry_run: bool,
    ) -> impl std::future::Future<
        Output = Result<Vec<crate::host::oci::store::StoreItem>, RuntimeError>,
    > + Send;

    /// Removes the prepared disks (bases and spares) of Images none of `images` names,
    /// and leftover temporary files of their builds (with `dry_run`, only lists them).
    /// A runtime without prepared disks has nothing to remove.
    fn prune_prepared_disks(
        &self,
        images: &BTreeSet<String>,
        dry_run: bool,
    ) -> impl std::future::Future<
        Output = Result<Vec<crate::host::oci::store::StoreItem>, RuntimeError>,
    > + Send {
        let _ = (images, dry_run);
        async { Ok(Vec::new()) }
    }

    /// Cheap check, at every reconcile of the Image (so at every resync), that a
    /// resolved image's files are still there; when not, the engine resolves it again.
    fn image_present(
        &self,
        image: &ResolvedImage,
    ) -> impl std::future::Future<Output = bool> + Send;

    /// Removes whatever [`Self::resolve_image`] put in the image's cache directory.
    fn remove_image(
        &self,
        image: &ImageContext,
    ) -> impl std::future::Future<Output = Result<(), RuntimeError>> + Send;

    /// Measures everything that exists on the host for a VM. Never changes anything.
    fn observe(&self, vm: &VmContext) -> impl std::future::Future<Output = ObservedVm> + Send;

    /// Runs one idempotent step and returns the VM's updated handles.
    fn execute(
        &self,
        step: VmStep,
        vm: &VmContext,
    ) -> impl std::future::Future<Output = Result<VmHandles, RuntimeError>> + Send;

    /// Copies the Workspace's files into its running VM's guest (at `spec.path`), then
    /// flushes the guest (`sync`). With a guarded [`WorkspaceContext::previous`] copy,
    /// first compares what the guest holds at the paths that copy wrote with what it
    /// wrote, and copies nothing when anything differs ([`SyncOutcome::GuestChanged`]).
    /// Bounded in time; errors name the workspace, the VM and the step.
    fn sync_workspace(
        &self,
        ws: &WorkspaceContext,
    ) -> impl std::future::Future<Output = Result<SyncOutcome, RuntimeError>> + Send;

    /// Writes into `out` a binary patch of everything in the Workspace's guest copy
    /// since `base` (the commit the copy brought; `None`: the empty tree): commits made
    /// in the guest, staged and unstaged changes, new files its `.gitignore` does not
    /// exclude. Never changes the guest repository's index or `HEAD`, nor the host
    /// checkout. Works without git in the guest (the tree is pulled back and diffed on
    /// the host). Bounded in time; errors name the workspace, the VM and the step.
    fn export_workspace(
        &self,
        ws: &WorkspaceContext,
        base: Option<String>,
        out: std::fs::File,
    ) -> impl std::future::Future<Output = Result<ExportRecord, RuntimeError>> + Send;

    /// Lists the host objects carrying banger's naming whose uid is none of
    /// `known_vm_uids` (see the module docs), sorted. Never changes anything; what
    /// cannot be listed is logged and skipped.
    fn find_garbage(
        &self,
        known_vm_uids: &BTreeSet<String>,
    ) -> impl std::future::Future<Output = Vec<Garbage>> + Send;

    /// Removes one item [`Self::find_garbage`] listed (idempotent: an item already gone
    /// is `Ok`). The item is re-checked against the host before anything is removed.
    fn remove_garbage(
        &self,
        item: &Garbage,
    ) -> impl std::future::Future<Output = Result<(), RuntimeError>> + Send;
}
