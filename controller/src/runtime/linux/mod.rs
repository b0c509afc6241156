//! The Linux runtime: the real adapter of the runtime port, on this Linux host.
//!
//! It composes the host plumbing ([`crate::host`]) and the hypervisor drivers
//! ([`crate::driver`]) into the steps the engine drives, one concern per file:
//!
//! | step | file | what it does on the host |
//! |------|------|--------------------------|
//! | `ensure-vm-dir`, `remove-vm-dir` | `vm_dir.rs` | `<state>/vms/<uid>` (mode 0700, symlink-checked); idempotent removal, with the VM's cgroup |
//! | `prepare-disk`, `grow-disk`, `remove-disk` | `disk.rs` | [`crate::host::disk::ensure_root_disk`]: a NEW disk is a copy of a prepared base of the image and size ([`crate::host::prepared_disk`]: the image's rootfs grown to `spec.disk` and given banger's public key in `/root/.ssh/authorized_keys` once, [`crate::host::guest_keys`]), usually a spare made ahead in the background and renamed into place (the first disk of an image and size is made from the image, and the base after it, in the background); the bases go with their Image |
//! | `ensure-tap`, `remove-tap`, `ensure-nat`, `remove-nat` | `network.rs` | IPv4 forwarding, the bridge, the VM's tap ([`crate::host::names::tap_name`]) attached to it and its guest filter in `table bridge banger` ([`crate::host::net::guest_filter`]: its own source only, no other guest unless both left isolation, no host address); the VM's masquerade rule in `table ip banger` ([`crate::host::net::vm`]) |
//! | `launch`, `shutdown` | `vmm.rs` | the hypervisor's driver ([`Driver`]) boots the guest confined (the VMM user, the VM's cgroup: [`crate::driver::Confinement`]), a pidfd watch reports its exit; graceful stop, bounded, then forced, stray VMMs carrying the uid marker too, then the cgroup removed |
//!
//! [`LinuxRuntime::observe`] (`observe.rs`) probes every one of those objects live
//! (process identity and control socket, disk and its sidecar, tap and guest filter,
//! NAT rule) plus the
//! guest's readiness (a TCP connect to the guest, or a console marker printed since the
//! last launch). A running VMM whose guest is not ready yet gets a boot watch
//! (`boot_watch.rs`): the same check every 20 ms, bounded, reported through the
//! [`ReadyNotifier`] the moment it passes, so `Ready` does not wait for the engine's
//! next look.
//!
//! Images (`images.rs`): an Image's kernel, initrd and rootfs are checked, or its rootfs
//! pulled from a registry into the shared store `<state>/images/store`
//! ([`crate::host::oci`]) with banger's guest bits; an Image without a kernel boots
//! the default one of the guest directory ([`ImageConfig`]).
//!
//! [`VmRuntime::sync_workspace`] (`workspace.rs`) copies a Workspace's checkout into the
//! guest as a tar stream over SSH with banger's own identity (`<state>/ssh/id_ed25519`,
//! the guest's host key pinned per VM uid in `<state>/ssh/known_hosts`), then runs
//! `sync` in the guest ([`crate::host::workspace`]).
//!
//! Network objects live in the daemon's network namespace (tests run the daemon in a
//! namespace of their own).
//!
//! Garbage (`garbage.rs`, [`VmRuntime::find_garbage`]): taps named like banger's that
//! are no known VM's, NAT rules and guest filter rules whose comment names an unknown
//! uid (all in the daemon's network namespace), uid-named directories in `<state>/vms`
//! and VM cgroups below this daemon's parent cgroup of unknown uids, and stray VMMs of
//! this daemon ([`crate::host::garbage`]: the marker of an unknown uid **and**
//! the state directory on the command line, so another daemon's VMMs are never
//! touched). Tap and rule names do not name their daemon: two daemons must not share a
//! network namespace.
//!
//! Nothing here blocks an async worker: filesystem and `/proc` work runs on the blocking
//! pool (`spawn_blocking`, [`tokio::fs`]), `nft` as a [`tokio::process`] child. The one
//! exception is [`LinuxRuntime::new`], which probes the host (KVM, each hypervisor's
//! `--version`, the TSC under TCG, the cgroup hierarchies) and makes sure the VMM user
//! exists, once, before the daemon serves.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{
    ExitNotifier, ExportRecord, Garbage, ImageContext, ImageResolution, ObservedVm, ReadyNotifier,
    ResolvedImage, RuntimeError, SyncOutcome, VmContext, VmHandles, VmRuntime, VmStep,
    WorkspaceContext,
};
use crate::driver::{Driver, DriverConfig, Hypervisors};
use crate::host::cgroup::{self, CgroupLayout};
use crate::host::kvm;
use crate::host::names::ObjectUid;
use crate::host::net::nat::Nftables;
use crate::host::net::{BridgeConfig, Netlink};
use crate::host::oci::store::{ImageStore, StoreItem};
use crate::host::process::ProcessIdentity;
use crate::host::safe_path;
use crate::host::vmm_user::{self, VmmUser};

mod boot_watch;
mod consoles;
mod disk;
mod garbage;
mod images;

pub use images::{ImageConfig, DEFAULT_INITRD, DEFAULT_KERNEL, GUEST_BITS_DIR, KERNEL_RELEASE};
mod nat_reads;
mod network;
mod observe;
mod vm_dir;
mod vmm;
mod workspace;

/// Where Firecracker's jailer builds its jails, below the state directory.
const JAIL_DIR: &str = "jail";

/// How the Linux runtime is set up (from `banger daemon` flags).
#[derive(Debug, Clone)]
pub struct LinuxRuntimeConfig {
    /// banger's state directory: every path the runtime writes is below it.
    pub state_dir: PathBuf,
    /// The bridge VMs are attached to, and its network.
    pub bridge: BridgeConfig,
    /// Where the hypervisors' binaries are and how QEMU accelerates.
    pub drivers: DriverConfig,
    /// How long a guest gets to power off before the VMM is stopped by force.
    pub stop_grace: Duration,
    /// Default kernel, guest bits, registry credentials and pull limits.
    pub images: ImageConfig,
    /// The unprivileged user the VMMs run as, created at start when missing
    /// ([`crate::host::vmm_user::DEFAULT_VMM_USER`] by default).
    pub vmm_user: String,
}

/// The real runtime on this Linux host. Create it inside the daemon's tokio runtime
/// (it opens a netlink connection).
pub struct LinuxRuntime {
    config: LinuxRuntimeConfig,
    /// Every hypervisor, configured for this host, with whether it can run here.
    hypervisors: Hypervisors,
    netlink: Netlink,
    nft: Nftables,
    /// The VMM user, or why it could not be found or made (then every launch fails
    /// saying so).
    vmm_user: Result<VmmUser, String>,
    /// The cgroup hierarchies VMMs are confined in, or why there are none usable.
    cgroups: Result<CgroupLayout, String>,
    /// This daemon's parent cgroup ([`cgroup::daemon_parent`]).
    cgroup_parent: String,
    notifier: Arc<Mutex<Option<ExitNotifier>>>,
    /// Where guests that became ready are reported ([`boot_watch`]).
    ready_notifier: Arc<Mutex<Option<ReadyNotifier>>>,
    /// The shared image store (`<state>/images/store`).
    store: ImageStore,
    /// VMM processes with an exit watch, so each is watched once.
    watched: Arc<Mutex<HashSet<ProcessIdentity>>>,
    /// VMM processes whose guest's boot is watched, so each is watched once.
    booting: Arc<Mutex<HashSet<ProcessIdentity>>>,
    /// Every VM's console: kept readiness watches and the log rotation sweep.
    consoles: consoles::Consoles,
    /// NAT table reads `observe` made, for the `ensure-nat` step after it.
    nat_reads: nat_reads::NatReads,
}

impl std::fmt::Debug for LinuxRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxRuntime")
            .field("config", &self.config)
            .field("hypervisors", &self.hypervisors)
            .finish()
    }
}

/// Why the Linux runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum LinuxRuntimeError {
    /// No netlink connection.
    #[error("linux runtime: netlink: {0}")]
    Netlink(String),
}

impl LinuxRuntime {
    /// Probes the host once (KVM, then every hypervisor: [`Hypervisors::probe`]; the
    /// cgroup hierarchies), makes sure the VMM user exists (creating it when missing) and
    /// opens a netlink connection. Blocking for as long as the probes take (bounded
    /// `--version` runs, `useradd`): call it before the daemon serves.
    pub fn new(config: LinuxRuntimeConfig) -> Result<LinuxRuntime, LinuxRuntimeError> {
        let kvm = kvm::detect();
        let mut drivers = config.drivers.clone();
        drivers
            .jail_dir
            .get_or_insert_with(|| config.state_dir.join(JAIL_DIR));
        let hypervisors = Hypervisors::probe(&drivers, &kvm);
        let netlink = Netlink::connect().map_err(|e| LinuxRuntimeError::Netlink(e.to_string()))?;
        let consoles = consoles::Consoles::default();
        consoles.start_sweep();
        let vmm_user = vmm_user::ensure(&config.vmm_user).map_err(|e| e.to_string());
        if let Err(e) = &vmm_user {
            tracing::error!(error = %e, "VMMs cannot be started without their user");
        }
        let cgroups = CgroupLayout::detect().map_err(|e| e.to_string());
        if let Err(e) = &cgroups {
            tracing::error!(error = %e, "VMMs cannot be started without their cgroups");
        }
        let cgroup_parent = cgroup::daemon_parent(&config.state_dir);
        Ok(LinuxRuntime {
            consoles,
            store: ImageStore::at(config.state_dir.join("images").join("store")),
            config,
            hypervisors,
            netlink,
            nft: Nftables::default(),
            vmm_user,
            cgroups,
            cgroup_parent,
            notifier: Arc::new(Mutex::new(None)),
            ready_notifier: Arc::new(Mutex::new(None)),
            watched: Arc::new(Mutex::new(HashSet::new())),
            booting: Arc::new(Mutex::new(HashSet::new())),
            nat_reads: nat_reads::NatReads::default(),
        })
    }

    fn step_error(vm: &VmContext, step: VmStep, message: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::Step {
            object: format!("vm/{}", vm.name),
            step: step.name().to_string(),
            message: message.to_string(),
        }
    }

    /// [`safe_path::check_below`] of the state directory, on the blocking pool (it
    /// `lstat`s every component).
    async fn check_below_state(
        &self,
        vm: &VmContext,
        step: VmStep,
        path: &Path,
    ) -> Result<(), RuntimeError> {
        let root = self.config.state_dir.clone();
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || safe_path::check_below(&root, &path))
            .await
            .map_err(|e| Self::step_error(vm, step, e))?
            .map_err(|e| Self::step_error(vm, step, e))
    }
}

/// The driver that launched `process`, if it names a hypervisor this runtime offers.
fn driver_of<'a>(
    hypervisors: &'a Hypervisors,
    process: &crate::driver::VmmProcess,
) -> Result<&'a Driver, String> {
    process
        .hypervisor_kind()
        .and_then(|kind| hypervisors.driver(kind))
        .ok_or_else(|| {
            format!(
                "the recorded VMM runs on {:?}, which this runtime does not drive",
                process.hypervisor_name()
            )
        })
}

impl VmRuntime for LinuxRuntime {
    fn name(&self) -> &'static str {
        "host"
    }

    fn set_exit_notifier(&self, notifier: ExitNotifier) {
        *self.notifier.lock().unwrap_or_else(|p| p.into_inner()) = Some(notifier);
    }

    fn set_ready_notifier(&self, notifier: ReadyNotifier) {
        *self
            .ready_notifier
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(notifier);
    }

    async fn resolve_image(&self, image: &ImageContext) -> Result<ImageResolution, RuntimeError> {
        images::resolve_image(image, &self.store, &self.config.images).await
    }

    async fn latest_image_digest(&self, image: &ImageContext) -> Result<String, RuntimeError> {
        images::latest_digest(image, &self.store, &self.config.images).await
    }

    async fn prune_images(
        &self,
        keep: &BTreeSet<PathBuf>,
        dry_run: bool,
    ) -> Result<Vec<StoreItem>, RuntimeError> {
        images::prune(&self.store, keep, dry_run).await
    }

    async fn prune_prepared_disks(
        &self,
        images: &BTreeSet<String>,
        dry_run: bool,
    ) -> Result<Vec<StoreItem>, RuntimeError> {
        disk::prune_prepared_disks(&self.config.state_dir, images, dry_run).await
    }

    async fn image_present(&self, image: &ResolvedImage) -> bool {
        images::image_present(image).await
    }

    async fn remove_image(&self, image: &ImageContext) -> Result<(), RuntimeError> {
        images::remove_image(image).await?;
        disk::remove_prepared_disks(&self.config.state_dir, &image.name).await
    }

    async fn observe(&self, vm: &VmContext) -> ObservedVm {
        self.observe_vm(vm).await
    }

    async fn execute(&self, step: VmStep, vm: &VmContext) -> Result<VmHandles, RuntimeError> {
        let handles = vm.handles.clone();
        // Every host object is named from the uid: a uid banger did not make is refused
        // before any step touches the host.
        let uid = ObjectUid::parse(&vm.uid).map_err(|e| Self::step_error(vm, step, e))?;
        match step {
            VmStep::EnsureVmDir => self.ensure_vm_dir(vm, handles).await,
            VmStep::PrepareDisk | VmStep::GrowDisk => self.prepare_disk(step, vm, handles).await,
            VmStep::EnsureTap => self.ensure_tap(vm, &uid, handles).await,
            VmStep::EnsureNat => self.ensure_nat(vm, &uid, handles).await,
            VmStep::RemoveNat => self.remove_nat(vm, &uid, handles).await,
            VmStep::Launch => self.launch(vm, &uid, handles).await,
            VmStep::Shutdown => self.shutdown(vm, handles).await,
            VmStep::RemoveTap => self.remove_tap(vm, &uid, handles).await,
            VmStep::RemoveDisk => self.remove_disk(vm, handles).await,
            VmStep::RemoveVmDir => self.remove_vm_dir(vm, &uid, handles).await,
        }
    }

    async fn sync_workspace(&self, ws: &WorkspaceContext) -> Result<SyncOutcome, RuntimeError> {
        workspace::sync_workspace(&self.config.state_dir, ws).await
    }

    async fn export_workspace(
        &self,
        ws: &WorkspaceContext,
        base: Option<String>,
        out: std::fs::File,
    ) -> Result<ExportRecord, RuntimeError> {
        workspace::export_workspace(&self.config.state_dir, ws, base, out).await
    }

    async fn find_garbage(&self, known_vm_uids: &BTreeSet<String>) -> Vec<Garbage> {
        self.host_garbage(known_vm_uids).await
    }

    async fn remove_garbage(&self, item: &Garbage) -> Result<(), RuntimeError> {
        self.remove_host_garbage(item).await
    }
}
