//! The host runtime: the real adapter of the runtime port.
//!
//! It composes the host plumbing into the steps the engine drives:
//!
//! | step | what it does on the host |
//! |------|--------------------------|
//! | `ensure-vm-dir` | `<state>/vms/<uid>` (mode 0700, symlink-checked) |
//! | `prepare-disk`, `grow-disk` | [`disk::ensure_root_disk`]: reflink or sparse copy of the image rootfs, grown to `spec.disk`; a NEW disk gets banger's public key in `/root/.ssh/authorized_keys` ([`guest_keys`]) |
//! | `ensure-tap` | IPv4 forwarding, the bridge, the VM's tap ([`names::tap_name`]) attached to it |
//! | `ensure-nat` / `remove-nat` | the VM's masquerade rule in `table ip banger` |
//! | `launch` | the hypervisor driver ([`Driver`]) boots the guest; a pidfd watch reports its exit |
//! | `shutdown` | graceful stop, bounded, then forced; stray VMMs carrying the uid marker too |
//! | `remove-tap`, `remove-disk`, `remove-vm-dir` | idempotent removal |
//!
//! [`HostRuntime::observe`] probes every one of those objects live (process identity
//! and control socket, disk and its sidecar, tap, NAT rule) plus the guest's readiness
//! (a TCP connect to the guest, or a console marker printed since the last launch).
//!
//! [`VmRuntime::sync_workspace`] copies a Workspace's checkout into the guest as a tar
//! stream over SSH with banger's own identity (`<state>/ssh/id_ed25519`, trust on first
//! use in `<state>/ssh/known_hosts`), then runs `sync` in the guest
//! ([`workspace_copy`]).
//!
//! Network objects live in the daemon's network namespace (tests run the daemon in a
//! namespace of their own).
//!
//! Garbage ([`VmRuntime::find_garbage`]): taps named like banger's that are no known
//! VM's, NAT rules whose comment names an unknown uid (both in the daemon's network
//! namespace), uid-named directories in `<state>/vms` of unknown uids, and stray VMMs
//! of this daemon ([`crate::host::garbage`]: the marker of an unknown uid **and** the
//! state directory on the command line, so another daemon's VMMs are never touched).
//! Tap and rule names do not name their daemon: two daemons must not share a network
//! namespace.

use std::collections::{BTreeSet, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banger_specs::HypervisorChoice;

use super::{
    ExitNotice, ExitNotifier, Garbage, GarbageKind, ImageContext, LaunchConfig, ObservedDisk,
    ObservedTap, ObservedVm, ProcessState, ResolvedImage, RuntimeError, SyncRecord, VmContext,
    VmHandles, VmRuntime, VmStep, WorkspaceContext,
};
use crate::driver::firecracker::{self, FirecrackerDriver};
use crate::driver::qemu::{self, QemuDriver, QemuOptions};
use crate::driver::{
    Driver, DriverError, Hypervisor, HypervisorKind, LaunchSpec, Liveness, VmmProcess,
};
use crate::host::disk::{self, ImageSource, RootDiskRequest};
use crate::host::garbage;
use crate::host::guest_keys;
use crate::host::kvm::{self, Accel, KvmStatus};
use crate::host::names::{self, ObjectUid};
use crate::host::net::bridge::ensure_bridge;
use crate::host::net::cidr::kernel_ip_arg;
use crate::host::net::nat::Nftables;
use crate::host::net::tap::{ensure_tap, probe_tap, remove_tap};
use crate::host::net::vm::list_net_garbage;
use crate::host::net::{enable_ipv4_forwarding, BridgeConfig, Netlink};
use crate::host::oci;
use crate::host::process::{self, ProcessIdentity};
use crate::host::readiness::{self, ConsoleWatch};
use crate::host::safe_path;
use crate::host::workspace_copy;

/// Key in [`VmHandles::extra`]: console log length when the current VMM was launched, so
/// readiness and halt markers of earlier boots are ignored.
const CONSOLE_OFFSET: &str = "consoleOffset";
/// Key in [`VmHandles::extra`]: the VMM's own log file (its stdout/stderr or logger).
const VMM_LOG: &str = "vmmLog";
/// Key in [`VmHandles::extra`]: the VMM's pid file, where the hypervisor writes one.
const PID_FILE: &str = "pidFile";
/// Kernel command line every guest gets before the image's and VM's arguments.
const BASE_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 root=/dev/vda rw";
/// How long a readiness TCP connect may take.
const READINESS_CONNECT_TIMEOUT: Duration = Duration::from_millis(400);

/// How the host runtime is set up (from `banger daemon` flags).
#[derive(Debug, Clone)]
pub struct HostRuntimeConfig {
    /// banger's state directory: every path the runtime writes is below it.
    pub state_dir: PathBuf,
    /// The bridge VMs are attached to, and its network.
    pub bridge: BridgeConfig,
    /// QEMU binary (default `qemu-system-x86_64` from PATH).
    pub qemu_bin: Option<PathBuf>,
    /// Firecracker binary (default `firecracker` from PATH).
    pub firecracker_bin: Option<PathBuf>,
    /// Accelerator for QEMU (auto: KVM when stock guests can use it, else TCG).
    pub accel: Accel,
    /// How long a guest gets to power off before the VMM is stopped by force.
    pub stop_grace: Duration,
}

/// The real host runtime. Create it inside the daemon's tokio runtime (it opens a
/// netlink connection).
pub struct HostRuntime {
    config: HostRuntimeConfig,
    qemu: Result<QemuDriver, String>,
    firecracker: FirecrackerDriver,
    /// Whether Firecracker can run stock guests here (its version), or why not.
    firecracker_suitable: Result<String, String>,
    /// What KVM can do here, probed once at start.
    kvm: KvmStatus,
    netlink: Netlink,
    nft: Nftables,
    notifier: Arc<Mutex<Option<ExitNotifier>>>,
    /// VMM processes with an exit watch, so each is watched once.
    watched: Arc<Mutex<HashSet<ProcessIdentity>>>,
}

impl std::fmt::Debug for HostRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostRuntime")
            .field("config", &self.config)
            .field("qemu", &self.qemu.as_ref().map(|q| q.options().clone()))
            .field("firecracker_suitable", &self.firecracker_suitable)
            .finish()
    }
}

/// Why the host runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostRuntimeError {
    /// No netlink connection.
    #[error("host runtime: netlink: {0}")]
    Netlink(String),
}

impl HostRuntime {
    /// Probes the host once (KVM, hypervisor binaries) and opens a netlink connection.
    pub fn new(config: HostRuntimeConfig) -> Result<HostRuntime, HostRuntimeError> {
        let qemu = QemuOptions::for_host(config.qemu_bin.clone(), config.accel)
            .map(QemuDriver::new)
            .map_err(|e| e.to_string());
        let fc_bin = config
            .firecracker_bin
            .clone()
            .unwrap_or_else(|| PathBuf::from(firecracker::DEFAULT_BINARY));
        let kvm = kvm::detect();
        let firecracker_suitable =
            firecracker::host_suitability(&fc_bin, &kvm).map_err(|e| e.to_string());
        let netlink = Netlink::connect().map_err(|e| HostRuntimeError::Netlink(e.to_string()))?;
        Ok(HostRuntime {
            firecracker: FirecrackerDriver::new(fc_bin),
            config,
            qemu,
            firecracker_suitable,
            kvm,
            netlink,
            nft: Nftables::default(),
            notifier: Arc::new(Mutex::new(None)),
            watched: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    /// The hypervisor `choice` resolves to on this host (`auto`: Firecracker when its
    /// binary is found and KVM runs stock guests, else QEMU).
    pub fn resolve_hypervisor(&self, choice: HypervisorChoice) -> HypervisorKind {
        match choice {
            HypervisorChoice::Qemu => HypervisorKind::Qemu,
            HypervisorChoice::Firecracker => HypervisorKind::Firecracker,
            HypervisorChoice::Auto => {
                kvm::choose_auto_hypervisor(self.firecracker_suitable.is_ok(), &self.kvm)
            }
        }
    }

    fn driver(&self, kind: HypervisorKind, vm: &str) -> Result<Driver, DriverError> {
        match kind {
            HypervisorKind::Qemu => match &self.qemu {
                Ok(q) => Ok(Driver::Qemu(q.clone())),
                Err(reason) => Err(DriverError::Binary {
                    vm: vm.to_string(),
                    binary: "qemu".into(),
                    reason: reason.clone(),
                }),
            },
            HypervisorKind::Firecracker => Ok(Driver::Firecracker(self.firecracker.clone())),
            HypervisorKind::Simulated => Err(DriverError::Binary {
                vm: vm.to_string(),
                binary: "simulated".into(),
                reason: "the host runtime does not run simulated VMs".into(),
            }),
        }
    }

    /// Watches a VMM for its exit (once per process) and reports it to the engine.
    fn watch(&self, uid: &str, vmm: &VmmProcess) {
        let identity = ProcessIdentity {
            pid: vmm.pid,
            start_time: vmm.start_time,
        };
        {
            let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
            if !watched.insert(identity) {
                return;
            }
        }
        let marker = process::uid_marker(uid);
        let exited = match process::watch_exit(&identity, &marker) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(uid, pid = vmm.pid, error = %e, "cannot watch VMM exit");
                self.unwatch(&identity);
                return;
            }
        };
        let notifier = Arc::clone(&self.notifier);
        let watched = Arc::clone(&self.watched);
        let uid = uid.to_string();
        tokio::spawn(async move {
            exited.await;
            watched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&identity);
            tracing::info!(uid, pid = identity.pid, "VMM exited");
            if let Some(n) = notifier.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                let _ = n.send(ExitNotice { uid });
            }
        });
    }

    fn unwatch(&self, identity: &ProcessIdentity) {
        self.watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(identity);
    }

    fn step_error(vm: &VmContext, step: VmStep, message: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::Step {
            object: format!("vm/{}", vm.name),
            step: step.name().to_string(),
            message: message.to_string(),
        }
    }

    fn check_below_state(
        &self,
        vm: &VmContext,
        step: VmStep,
        path: &Path,
    ) -> Result<(), RuntimeError> {
        safe_path::check_below(&self.config.state_dir, path)
            .map_err(|e| Self::step_error(vm, step, e))
    }

    async fn launch(
        &self,
        vm: &VmContext,
        mut handles: VmHandles,
    ) -> Result<VmHandles, RuntimeError> {
        let step = VmStep::Launch;
        let err = |m: String| Self::step_error(vm, step, m);
        let image = vm
            .image
            .as_ref()
            .ok_or_else(|| err("its Image is not resolved".into()))?;
        let lease = vm
            .lease
            .as_ref()
            .ok_or_else(|| err("it has no IP lease".into()))?;
        let uid = ObjectUid::parse(&vm.uid).map_err(|e| err(e.to_string()))?;
        let kind = self.resolve_hypervisor(vm.spec.hypervisor);
        let driver = self
            .driver(kind, &vm.name)
            .map_err(|e| err(e.to_string()))?;
        if kind == HypervisorKind::Firecracker {
            if let Err(reason) = &self.firecracker_suitable {
                return Err(err(format!("firecracker cannot run here: {reason}")));
            }
        }
        let console_log = vm.console_log();
        let console_offset = std::fs::metadata(&console_log)
            .map(|m| m.len())
            .unwrap_or(0);
        let spec = LaunchSpec {
            uid: vm.uid.clone(),
            name: vm.name.clone(),
            vcpus: vm.spec.vcpus,
            memory_mib: vm.spec.memory.mib(),
            kernel: image.kernel.clone(),
            initrd: image.initrd.clone(),
            cmdline: kernel_cmdline(
                vm,
                image,
                kind,
                &kernel_ip_arg(lease.ip, self.config.bridge.cidr(), None),
            ),
            root_disk: disk::root_disk_path(&vm.vm_dir),
            tap: Some(names::tap_name(&uid)),
            mac: lease.mac.clone(),
            vm_dir: vm.vm_dir.clone(),
            console_log: console_log.clone(),
        };
        let vmm = driver.launch(&spec).await.map_err(|e| err(e.to_string()))?;
        self.watch(&vm.uid, &vmm);
        handles
            .extra
            .insert(CONSOLE_OFFSET.into(), console_offset.to_string());
        // Every file the VMM keeps in the VM directory, so `describe` lists them all.
        let (vmm_log, pid_file) = match kind {
            HypervisorKind::Firecracker => (vm.vm_dir.join(firecracker::LOG_FILE), None),
            _ => (
                qemu::output_log_path(&vm.vm_dir),
                Some(qemu::pid_file_path(&vm.vm_dir)),
            ),
        };
        handles
            .extra
            .insert(VMM_LOG.into(), vmm_log.display().to_string());
        match pid_file {
            Some(p) => handles
                .extra
                .insert(PID_FILE.into(), p.display().to_string()),
            None => handles.extra.remove(PID_FILE),
        };
        handles.process = Some(vmm);
        handles.launched = Some(LaunchConfig::desired(&vm.spec, image, Some(lease.ip)));
        Ok(handles)
    }

    async fn shutdown(
        &self,
        vm: &VmContext,
        mut handles: VmHandles,
    ) -> Result<VmHandles, RuntimeError> {
        let step = VmStep::Shutdown;
        if let Some(vmm) = &handles.process {
            let driver = self
                .driver(vmm.hypervisor, &vm.name)
                .map_err(|e| Self::step_error(vm, step, e))?;
            driver
                .shutdown(vmm, &vm.uid, self.config.stop_grace)
                .await
                .map_err(|e| Self::step_error(vm, step, e))?;
        }
        // A launch interrupted before its handles were recorded leaves a VMM only the
        // uid marker on its command line can find.
        let marker = process::uid_marker(&vm.uid);
        for identity in process::find_by_marker(&marker) {
            tracing::warn!(vm = %vm.name, pid = identity.pid, "stopping a VMM the handles did not name");
            process::terminate(
                &identity,
                &marker,
                Duration::from_secs(3),
                Duration::from_secs(5),
            )
            .await
            .map_err(|e| Self::step_error(vm, step, e))?;
        }
        handles.process = None;
        handles.launched = None;
        handles.extra.remove(PID_FILE);
        Ok(handles)
    }

    async fn observe_process(&self, vm: &VmContext) -> ProcessState {
        let Some(vmm) = &vm.handles.process else {
            return ProcessState::Absent;
        };
        let liveness = match self.driver(vmm.hypervisor, &vm.name) {
            Ok(driver) => driver.probe(vmm, &vm.uid).await,
            Err(e) => Liveness::Unresponsive {
                reason: e.to_string(),
            },
        };
        match liveness {
            Liveness::Running => {
                self.watch(&vm.uid, vmm);
                match &vm.handles.launched {
                    Some(launched) => ProcessState::Running {
                        launched: launched.clone(),
                    },
                    None => ProcessState::Unresponsive {
                        reason: "running VMM without a recorded launch configuration".into(),
                    },
                }
            }
            Liveness::GuestHalted => ProcessState::Exited { clean: true },
            Liveness::Exited => ProcessState::Exited {
                clean: console_shows_halt(&vm.handles, &vm.console_log()),
            },
            Liveness::Unresponsive { reason } => ProcessState::Unresponsive { reason },
        }
    }

    async fn guest_ready(&self, vm: &VmContext) -> bool {
        let Some(image) = &vm.image else { return false };
        if let Some(marker) = &image.readiness.console_marker {
            return ConsoleWatch::new(&vm.console_log(), marker, console_offset(&vm.handles))
                .poll()
                .unwrap_or(false);
        }
        let (Some(port), Some(lease)) = (image.readiness.tcp_port, &vm.lease) else {
            return false;
        };
        readiness::tcp_ready(
            SocketAddr::from((lease.ip, port)),
            READINESS_CONNECT_TIMEOUT,
        )
        .await
        .is_ok()
    }
}

/// The guest kernel command line: banger's base, the address, the VM's name, then the
/// image's and the VM's own arguments (later arguments win in the guest).
fn kernel_cmdline(
    vm: &VmContext,
    image: &ResolvedImage,
    kind: HypervisorKind,
    ip_arg: &str,
) -> String {
    let mut parts = vec![BASE_CMDLINE.to_string()];
    if kind == HypervisorKind::Firecracker {
        parts.push("pci=off".into());
    }
    parts.push(ip_arg.to_string());
    parts.push(format!("banger.name={}", vm.name));
    parts.extend(image.kernel_args.iter().cloned());
    parts.extend(vm.spec.kernel_args.iter().cloned());
    parts.join(" ")
}

/// Where the console log ended when the current VMM was launched.
fn console_offset(handles: &VmHandles) -> u64 {
    handles
        .extra
        .get(CONSOLE_OFFSET)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Whether the guest of the current launch printed a power-off or halt line.
fn console_shows_halt(handles: &VmHandles, console_log: &Path) -> bool {
    firecracker::HALT_MARKERS.iter().any(|marker| {
        ConsoleWatch::new(console_log, marker, console_offset(handles))
            .poll()
            .unwrap_or(false)
    })
}

/// Identity of an image's root filesystem: path, size and modification time (cheap, and
/// changes whenever the file is replaced or rewritten).
fn rootfs_digest(path: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(format!(
        "{}:{}:{}.{}",
        path.display(),
        m.len(),
        m.mtime(),
        m.mtime_nsec()
    ))
}

/// The disk sidecar's image identity: `<image name>|<rootfs digest>`.
fn disk_identity(image_name: &str, digest: &str) -> String {
    format!("{image_name}|{digest}")
}

fn split_disk_identity(identity: &str) -> (String, String) {
    match identity.split_once('|') {
        Some((name, digest)) => (name.to_string(), digest.to_string()),
        None => (String::new(), identity.to_string()),
    }
}

/// Checks that `path` names an existing regular file.
fn require_file(image: &str, field: &str, path: &Path) -> Result<(), RuntimeError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(RuntimeError::Image {
            image: image.to_string(),
            message: format!("spec.{field}: {} is not a regular file", path.display()),
        }),
        Err(e) => Err(RuntimeError::Image {
            image: image.to_string(),
            message: format!("spec.{field}: {}: {e}", path.display()),
        }),
    }
}

/// Whether `path` holds an ext2/3/4 filesystem (superblock magic 0xEF53 at 1080).
fn is_ext4(path: &Path) -> bool {
    let mut magic = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(1080))?;
            f.read_exact(&mut magic)
        })
        .is_ok()
        && magic == [0x53, 0xEF]
}

impl VmRuntime for HostRuntime {
    fn name(&self) -> &'static str {
        "host"
    }

    fn set_exit_notifier(&self, notifier: ExitNotifier) {
        *self.notifier.lock().unwrap_or_else(|p| p.into_inner()) = Some(notifier);
    }

    async fn resolve_image(&self, image: &ImageContext) -> Result<ResolvedImage, RuntimeError> {
        let spec = &image.spec;
        require_file(&image.name, "kernel", &spec.kernel)?;
        if let Some(initrd) = &spec.initrd {
            require_file(&image.name, "initrd", initrd)?;
        }
        let Some(rootfs) = &spec.rootfs else {
            // The rootfs comes from a registry; kernel and initrd stay host files.
            let Some(source) = &spec.oci else {
                return Err(RuntimeError::Image {
                    image: image.name.clone(),
                    message: "spec: neither rootfs nor oci is set".into(),
                });
            };
            let limits = oci::OciLimits::default();
            let pulled = oci::pull_rootfs(&oci::OciPull {
                reference: &source.reference,
                insecure: source.insecure,
                image_dir: &image.image_dir,
                limits: &limits,
            })
            .await
            .map_err(|e| RuntimeError::Image {
                image: image.name.clone(),
                message: e.to_string(),
            })?;
            if !pulled.reused {
                tracing::info!(image = %image.name, reference = %source.reference,
                    digest = %pulled.manifest_digest, "pulled OCI root filesystem");
            }
            return Ok(ResolvedImage {
                kernel: spec.kernel.clone(),
                initrd: spec.initrd.clone(),
                rootfs: pulled.rootfs,
                kernel_args: spec.kernel_args.clone(),
                readiness: spec.readiness.clone(),
                rootfs_digest: pulled.manifest_digest,
            });
        };
        require_file(&image.name, "rootfs", rootfs)?;
        if !is_ext4(rootfs) {
            return Err(RuntimeError::Image {
                image: image.name.clone(),
                message: format!("spec.rootfs: {} is not an ext4 image", rootfs.display()),
            });
        }
        let rootfs_digest = rootfs_digest(rootfs).map_err(|e| RuntimeError::Image {
            image: image.name.clone(),
            message: format!("spec.rootfs: {}: {e}", rootfs.display()),
        })?;
        Ok(ResolvedImage {
            kernel: spec.kernel.clone(),
            initrd: spec.initrd.clone(),
            rootfs: rootfs.clone(),
            kernel_args: spec.kernel_args.clone(),
            readiness: spec.readiness.clone(),
            rootfs_digest,
        })
    }

    async fn image_present(&self, image: &ResolvedImage) -> bool {
        image.kernel.is_file()
            && image.initrd.as_ref().is_none_or(|i| i.is_file())
            && (oci::is_published(&image.rootfs, &image.rootfs_digest)
                || rootfs_digest(&image.rootfs).is_ok_and(|d| d == image.rootfs_digest))
    }

    async fn remove_image(&self, image: &ImageContext) -> Result<(), RuntimeError> {
        match std::fs::remove_dir_all(&image.image_dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::Image {
                image: image.name.clone(),
                message: format!("remove {}: {e}", image.image_dir.display()),
            }),
        }
    }

    async fn observe(&self, vm: &VmContext) -> ObservedVm {
        let mut observed = ObservedVm::nothing();
        observed.vm_dir = vm.vm_dir.is_dir();
        observed.process = self.observe_process(vm).await;
        if let Ok(Some(root)) = disk::probe_root_disk(&vm.vm_dir) {
            if let Some(source) = &root.source {
                let (image, digest) = split_disk_identity(&source.image_identity);
                observed.disk = Some(ObservedDisk {
                    image,
                    digest,
                    size: root.size_bytes,
                });
            }
        }
        if let Ok(uid) = ObjectUid::parse(&vm.uid) {
            let tap = names::tap_name(&uid);
            if let Ok(probe) = probe_tap(&self.netlink, &tap, &self.config.bridge).await {
                if probe.index.is_some() {
                    observed.tap = Some(ObservedTap {
                        attached: probe.is_healthy(),
                        name: tap,
                    });
                }
            }
            if let (Ok(Some(rule)), Some(lease)) = (self.nft.probe_vm(&uid), &vm.lease) {
                observed.nat = rule.ip == Some(lease.ip);
            }
        }
        if matches!(observed.process, ProcessState::Running { .. }) {
            observed.guest_ready = self.guest_ready(vm).await;
        }
        observed
    }

    async fn execute(&self, step: VmStep, vm: &VmContext) -> Result<VmHandles, RuntimeError> {
        let mut handles = vm.handles.clone();
        let err = |m: String| Self::step_error(vm, step, m);
        let uid = ObjectUid::parse(&vm.uid).map_err(|e| err(e.to_string()))?;
        match step {
            VmStep::EnsureVmDir => {
                self.check_below_state(vm, step, &vm.vm_dir)?;
                std::fs::create_dir_all(&vm.vm_dir)
                    .map_err(|e| err(format!("create {}: {e}", vm.vm_dir.display())))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&vm.vm_dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(|e| err(format!("chmod {}: {e}", vm.vm_dir.display())))?;
            }
            VmStep::PrepareDisk | VmStep::GrowDisk => {
                let image = vm
                    .image
                    .as_ref()
                    .ok_or_else(|| err("its Image is not resolved".into()))?;
                let image_name = vm.spec.image.clone();
                let source = ImageSource {
                    identity: disk_identity(&image_name, &image.rootfs_digest),
                    rootfs: image.rootfs.clone(),
                };
                let state_dir = self.config.state_dir.clone();
                let vm_dir = vm.vm_dir.clone();
                let vm_name = vm.name.clone();
                let size = vm.spec.disk.0;
                let root = tokio::task::spawn_blocking(move || {
                    let root = disk::ensure_root_disk(&RootDiskRequest {
                        vm_name: &vm_name,
                        state_dir: &state_dir,
                        vm_dir: &vm_dir,
                        image: &source,
                        size_bytes: size,
                    })
                    .map_err(|e| e.to_string())?;
                    if root.method != disk::CopyMethod::Existing {
                        // A new disk: let banger's own identity log in (workspaces).
                        // A disk without the key is removed, so a retry makes it again.
                        let injected = guest_keys::ensure_identity(&state_dir)
                            .and_then(|id| id.public_key_line())
                            .and_then(|key| {
                                guest_keys::inject_authorized_key(&root.path, &key, &vm_dir)
                            });
                        if let Err(e) = injected {
                            let _ = disk::remove_root_disk(&vm_name, &state_dir, &vm_dir);
                            return Err(format!("inject banger's ssh key: {e}"));
                        }
                    }
                    Ok(root)
                })
                .await
                .map_err(|e| err(e.to_string()))?
                .map_err(err)?;
                handles.root_disk = Some(root.path);
                handles.disk_image = Some(image_name);
                handles.disk_digest = Some(image.rootfs_digest.clone());
                handles.disk_size = Some(root.size_bytes);
            }
            VmStep::EnsureTap => {
                let bridge = &self.config.bridge;
                enable_ipv4_forwarding().map_err(|e| err(e.to_string()))?;
                ensure_bridge(&self.netlink, bridge)
                    .await
                    .map_err(|e| err(e.to_string()))?;
                let tap = ensure_tap(&self.netlink, &uid, bridge)
                    .await
                    .map_err(|e| err(e.to_string()))?;
                handles.tap = Some(tap.name);
            }
            VmStep::EnsureNat => {
                let lease = vm
                    .lease
                    .as_ref()
                    .ok_or_else(|| err("it has no IP lease".into()))?;
                let rule = self
                    .nft
                    .ensure_vm(&uid, lease.ip, &self.config.bridge)
                    .map_err(|e| err(e.to_string()))?;
                handles.nat_rule = Some(format!(
                    "table ip {} handle {} comment {}",
                    names::NFT_TABLE,
                    rule.handle,
                    names::nat_rule_comment(&uid)
                ));
            }
            VmStep::RemoveNat => {
                self.nft.remove_vm(&uid).map_err(|e| err(e.to_string()))?;
                handles.nat_rule = None;
            }
            VmStep::Launch => return self.launch(vm, handles).await,
            VmStep::Shutdown => return self.shutdown(vm, handles).await,
            VmStep::RemoveTap => {
                remove_tap(&self.netlink, &names::tap_name(&uid))
                    .await
                    .map_err(|e| err(e.to_string()))?;
                handles.tap = None;
            }
            VmStep::RemoveDisk => {
                disk::remove_root_disk(&vm.name, &self.config.state_dir, &vm.vm_dir)
                    .map_err(|e| err(e.to_string()))?;
                handles.root_disk = None;
                handles.disk_image = None;
                handles.disk_digest = None;
                handles.disk_size = None;
            }
            VmStep::RemoveVmDir => {
                self.check_below_state(vm, step, &vm.vm_dir)?;
                match std::fs::remove_dir_all(&vm.vm_dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(err(format!("remove {}: {e}", vm.vm_dir.display()))),
                }
                handles.extra.clear();
            }
        }
        Ok(handles)
    }

    async fn sync_workspace(&self, ws: &WorkspaceContext) -> Result<SyncRecord, RuntimeError> {
        let fail = |step: &str, message: String| RuntimeError::Sync {
            workspace: ws.name.clone(),
            vm: ws.vm.name.clone(),
            step: step.to_string(),
            message,
        };
        let ip = ws
            .vm
            .lease
            .as_ref()
            .map(|l| l.ip)
            .ok_or_else(|| fail("address", "the VM has no IP lease".into()))?;
        let state_dir = self.config.state_dir.clone();
        let identity = tokio::task::spawn_blocking(move || guest_keys::ensure_identity(&state_dir))
            .await
            .map_err(|e| fail("ssh identity", e.to_string()))?
            .map_err(|e| fail("ssh identity", e.to_string()))?;
        let source = ws.spec.source.clone();
        let include = ws.spec.include;
        let guest_path = ws.spec.path.clone();
        let (stream, commit) = tokio::task::spawn_blocking(move || {
            let files = workspace_copy::list_files(&source, include)?;
            let stream = workspace_copy::build_stream(&source, &files, &guest_path)?;
            Ok::<_, workspace_copy::CopyError>((stream, workspace_copy::head_commit(&source)))
        })
        .await
        .map_err(|e| fail("build archive", e.to_string()))?
        .map_err(|e| fail(e.step, e.message))?;
        workspace_copy::copy_into_guest(&identity, ip, stream.data)
            .await
            .map_err(|e| fail(e.step, e.message))?;
        Ok(SyncRecord {
            files: stream.files,
            bytes: stream.bytes,
            commit,
        })
    }

    async fn find_garbage(&self, known_vm_uids: &BTreeSet<String>) -> Vec<Garbage> {
        self.host_garbage(known_vm_uids).await
    }

    async fn remove_garbage(&self, item: &Garbage) -> Result<(), RuntimeError> {
        self.remove_host_garbage(item).await
    }
}

impl HostRuntime {
    /// [`VmRuntime::find_garbage`] for the host.
    async fn host_garbage(&self, known_vm_uids: &BTreeSet<String>) -> Vec<Garbage> {
        let state_dir = &self.config.state_dir;
        let mut items: Vec<Garbage> = garbage::find_stray_vmms(state_dir, known_vm_uids)
            .into_iter()
            .map(|vmm| Garbage {
                kind: GarbageKind::Process,
                name: vmm.identity.pid.to_string(),
                uid: Some(vmm.uid.to_string()),
                detail: vmm.cmdline,
            })
            .collect();
        // Known uids that are not valid ObjectUids own no host object banger names.
        let known: BTreeSet<ObjectUid> = known_vm_uids
            .iter()
            .filter_map(|u| ObjectUid::parse(u).ok())
            .collect();
        match list_net_garbage(&self.netlink, &self.nft, &known).await {
            Ok(net) => {
                items.extend(net.nat_rules.into_iter().map(|rule| Garbage {
                    kind: GarbageKind::NatRule,
                    name: names::nat_rule_comment(&rule.uid),
                    uid: Some(rule.uid.to_string()),
                    detail: match rule.ip {
                        Some(ip) => format!(
                            "table ip {} handle {} saddr {ip}",
                            names::NFT_TABLE,
                            rule.handle
                        ),
                        None => format!("table ip {} handle {}", names::NFT_TABLE, rule.handle),
                    },
                }));
                items.extend(net.taps.into_iter().map(|tap| Garbage {
                    kind: GarbageKind::Tap,
                    name: tap,
                    uid: None,
                    detail: "tap device named like banger's, of no known VM".into(),
                }));
            }
            Err(e) => tracing::warn!(error = %e, "gc: cannot list taps and NAT rules"),
        }
        match garbage::find_stray_vm_dirs(state_dir, known_vm_uids) {
            Ok(dirs) => items.extend(dirs.into_iter().map(|d| Garbage {
                kind: GarbageKind::VmDir,
                name: d.uid.to_string(),
                uid: Some(d.uid.to_string()),
                detail: d.path.display().to_string(),
            })),
            Err(e) => tracing::warn!(
                dir = %state_dir.join("vms").display(),
                error = %e,
                "gc: cannot list VM directories"
            ),
        }
        items.sort();
        items
    }

    /// [`VmRuntime::remove_garbage`] for the host.
    async fn remove_host_garbage(&self, item: &Garbage) -> Result<(), RuntimeError> {
        let err = |m: String| RuntimeError::Step {
            object: item.to_string(),
            step: "gc".into(),
            message: m,
        };
        match item.kind {
            GarbageKind::Process => {
                let uid = item
                    .uid
                    .as_deref()
                    .ok_or_else(|| err("no uid recorded for the process".into()))?;
                garbage::stop_stray_vmm(&item.name, uid, &self.config.state_dir)
                    .await
                    .map_err(|e| err(e.to_string()))
            }
            GarbageKind::NatRule => {
                let uid = names::uid_from_nat_comment(&item.name)
                    .ok_or_else(|| err("not a banger NAT rule comment".into()))?;
                self.nft.remove_vm(&uid).map_err(|e| err(e.to_string()))
            }
            GarbageKind::Tap => {
                if !names::is_banger_tap(&item.name) {
                    return Err(err("not a banger tap name".into()));
                }
                remove_tap(&self.netlink, &item.name)
                    .await
                    .map_err(|e| err(e.to_string()))
            }
            GarbageKind::VmDir => garbage::remove_stray_vm_dir(&self.config.state_dir, &item.name)
                .map_err(|e| err(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_identity_round_trips() {
        let id = disk_identity("base", "/x/rootfs.ext4:67108864:1.2");
        assert_eq!(
            split_disk_identity(&id),
            (
                "base".to_string(),
                "/x/rootfs.ext4:67108864:1.2".to_string()
            )
        );
    }

    #[test]
    fn ext4_detection_reads_the_superblock_magic() {
        let dir = tempfile::tempdir().unwrap();
        let not = dir.path().join("zero");
        std::fs::write(&not, vec![0u8; 4096]).unwrap();
        assert!(!is_ext4(&not));
        let mut bytes = vec![0u8; 4096];
        bytes[1080] = 0x53;
        bytes[1081] = 0xEF;
        let yes = dir.path().join("ext");
        std::fs::write(&yes, bytes).unwrap();
        assert!(is_ext4(&yes));
    }
}
