//! Hypervisor drivers: the port every hypervisor adapter fulfils, and the set of them a
//! host offers.
//!
//! A driver turns a [`LaunchSpec`] (everything needed to boot one VM, already prepared
//! by the host plumbing: disk, tap, kernel command line) into a running VMM process
//! that outlives the daemon, probes it, and shuts it down. Drivers never touch the
//! store; the engine records what they return ([`VmmProcess`]) in the VM's handles.
//!
//! The [`Hypervisor`] trait also owns every fact that differs between hypervisors, so
//! that nothing outside a driver's own module names one hypervisor's special case:
//! the kernel arguments its guests need ([`Hypervisor::kernel_args`]), the files it
//! keeps in the VM directory ([`Hypervisor::vm_files`]), how a halted guest shows on
//! the console ([`Hypervisor::console_shows_halt`]), what it needs of the host
//! ([`Hypervisor::check_binary`], [`Hypervisor::host_requirement`]) and its rank for
//! `hypervisor: auto` ([`Hypervisor::auto_rank`]).
//!
//! This module (the port) owns the hypervisor-neutral types. The adapters ([`qemu`],
//! [`firecracker`]) use the host plumbing ([`crate::host`]) and never each other; the
//! plumbing never imports a driver.
//!
//! Adding a hypervisor means: one new module here, one [`HypervisorKind`] variant (and
//! its entry in [`HypervisorKind::ALL`]), one [`Driver`] variant with one arm in each of
//! its methods, and one `HypervisorChoice` variant in the spec language.

use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_specs::HypervisorChoice;
use serde::{Deserialize, Serialize};

use crate::host::cgroup::VmCgroup;
use crate::host::kvm::{Accel, KvmStatus};
use crate::host::vmm_user::VmmUser;

pub mod firecracker;
mod hypervisors;
pub mod qemu;
pub mod qmp;

pub use hypervisors::{choose_auto, Hypervisors, Suitability};

/// Which hypervisor a VM runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HypervisorKind {
    /// Firecracker.
    Firecracker,
    /// QEMU `-M microvm`.
    Qemu,
}

impl HypervisorKind {
    /// Every hypervisor banger drives, in the order `banger doctor` reports them.
    pub const ALL: [HypervisorKind; 2] = [HypervisorKind::Firecracker, HypervisorKind::Qemu];

    /// `firecracker` or `qemu`: the name recorded in a [`VmmProcess`] and shown in a VM's
    /// status.
    pub fn as_str(self) -> &'static str {
        match self {
            HypervisorKind::Firecracker => "firecracker",
            HypervisorKind::Qemu => "qemu",
        }
    }

    /// The kind named `name` ([`Self::as_str`]), if banger drives one of that name.
    pub fn from_name(name: &str) -> Option<HypervisorKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The kind a spec names explicitly; `None` for `auto`, which the host decides
    /// ([`Hypervisors::resolve`]).
    pub fn of_choice(choice: HypervisorChoice) -> Option<HypervisorKind> {
        match choice {
            HypervisorChoice::Auto => None,
            HypervisorChoice::Firecracker => Some(HypervisorKind::Firecracker),
            HypervisorChoice::Qemu => Some(HypervisorKind::Qemu),
        }
    }
}

impl std::fmt::Display for HypervisorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a VMM is confined (see `docs/security.md`, "How VMMs are confined").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confinement {
    /// The unprivileged user the VMM runs as: QEMU always, Firecracker when it runs
    /// through its jailer.
    pub user: VmmUser,
    /// The VM's cgroup. The driver makes it with the VM's limits and spawns the VMM into
    /// it (Firecracker's jailer makes it itself). `None` leaves the VMM in the daemon's
    /// own cgroups: only the driver tests against stand-ins, which run as any user, do
    /// that; the Linux runtime always gives one.
    pub cgroup: Option<VmCgroup>,
}

/// Everything a driver needs to boot one VM. Paths are absolute and already exist
/// (except the sockets and logs, which the driver creates inside `vm_dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    /// The VM object's uid: the PID-reuse-safe marker put on the VMM's command line.
    pub uid: String,
    /// The VM's name (for logs only).
    pub name: String,
    /// Virtual CPUs.
    pub vcpus: u8,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Kernel image (bzImage for QEMU, ELF vmlinux for Firecracker).
    pub kernel: PathBuf,
    /// Optional initrd.
    pub initrd: Option<PathBuf>,
    /// Full kernel command line (console, root, `ip=…`, the hypervisor's
    /// [`Hypervisor::kernel_args`], image and VM args).
    pub cmdline: String,
    /// The VM's writable root disk.
    pub root_disk: PathBuf,
    /// Host tap device for the VM's one NIC, if it has networking.
    pub tap: Option<String>,
    /// Guest MAC address, `02:xx:xx:xx:xx:xx`.
    pub mac: String,
    /// The VM's state directory: sockets, pid files and logs go here.
    pub vm_dir: PathBuf,
    /// Where the guest's serial console is written (appended to).
    pub console_log: PathBuf,
    /// Who the VMM runs as and in which cgroup.
    pub confinement: Confinement,
}

/// A launched VMM process, as recorded in the VM's handles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmmProcess {
    /// The name of the program that runs the guest: a [`HypervisorKind::as_str`] for the
    /// drivers here; a runtime that is no hypervisor (the simulated one) records its own
    /// name. Read it with [`Self::hypervisor_name`] or [`Self::hypervisor_kind`].
    pub hypervisor: String,
    /// Process id.
    pub pid: i32,
    /// Process start time in clock ticks since boot (`/proc/PID/stat` field 22): with
    /// the pid, identifies the process across PID reuse.
    pub start_time: u64,
    /// Control socket (QMP for QEMU, the API socket for Firecracker).
    pub control_socket: PathBuf,
}

impl VmmProcess {
    /// What runs the guest, as shown in a VM's status (`qemu`, `firecracker`, or
    /// `simulated` under the simulated runtime).
    pub fn hypervisor_name(&self) -> &str {
        &self.hypervisor
    }

    /// The hypervisor that runs the guest; `None` when the record names none banger
    /// drives (a simulated process, or a hand-edited handles file).
    pub fn hypervisor_kind(&self) -> Option<HypervisorKind> {
        HypervisorKind::from_name(&self.hypervisor)
    }
}

/// The files a hypervisor keeps in a VM's directory, besides the console log and the
/// root disk: what `describe` lists in the VM's handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmmFiles {
    /// The VMM's own log (its output, or the log it writes).
    pub log: PathBuf,
    /// The pid file, for a hypervisor that writes one.
    pub pid_file: Option<PathBuf>,
    /// The control socket (QMP, or Firecracker's API).
    pub control_socket: PathBuf,
}

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum Liveness {
    /// The process is ours (pid, start time and uid marker match) and its control socket
    /// answers with a running guest.
    Running,
    /// The process is alive but the guest has powered off or halted: counts as an exit.
    GuestHalted,
    /// No such process (or the pid now belongs to another process).
    Exited,
    /// The process is ours but its control socket does not answer as expected.
    Unresponsive {
        /// What went wrong.
        reason: String,
    },
}

/// Errors of a driver, with the VM and operation they concern.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The hypervisor binary is missing or unusable, or the host cannot run it.
    #[error("vm {vm}: hypervisor binary {binary}: {reason}")]
    Binary {
        /// VM name.
        vm: String,
        /// Binary path or name.
        binary: String,
        /// What is wrong.
        reason: String,
    },
    /// Spawning or talking to the VMM failed.
    #[error("vm {vm}: {operation}: {reason}")]
    Operation {
        /// VM name.
        vm: String,
        /// `spawn`, `configure`, `start`, `shutdown`, …
        operation: String,
        /// What went wrong.
        reason: String,
    },
}

/// Where the hypervisors' binaries are and how QEMU accelerates: the per-hypervisor
/// settings of `banger daemon` (`--qemu-bin`, `--firecracker-bin`, `--jailer-bin`,
/// `--firecracker-skip-kvm-check`, `--accel`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriverConfig {
    /// QEMU binary (default `qemu-system-x86_64` from PATH).
    pub qemu_bin: Option<PathBuf>,
    /// Firecracker binary (default `firecracker` from PATH).
    pub firecracker_bin: Option<PathBuf>,
    /// Firecracker's jailer (default: a `jailer` beside the Firecracker binary, if any).
    pub jailer_bin: Option<PathBuf>,
    /// Where the jailer builds its jails (the Linux runtime gives `<state>/jail`;
    /// default the jailer's own `/srv/jailer`).
    pub jail_dir: Option<PathBuf>,
    /// Launch Firecracker even where the KVM probe says stock guests cannot run.
    pub firecracker_skip_kvm_check: bool,
    /// Accelerator for QEMU (auto: KVM when stock guests can use it, else TCG).
    pub accel: Accel,
}

/// The contract every hypervisor adapter fulfils: the VM's life (launch, probe,
/// shutdown) and every fact that differs between hypervisors.
pub trait Hypervisor: Send + Sync {
    /// Which hypervisor this is.
    fn kind(&self) -> HypervisorKind;

    /// Its binary, as configured (a path, or a name looked up in `PATH`).
    fn binary(&self) -> &Path;

    /// Kernel arguments every guest needs on this hypervisor, added after banger's base
    /// command line (Firecracker: `pci=off`, it has no PCI bus).
    fn kernel_args(&self) -> &'static [&'static str];

    /// The files this hypervisor keeps for VM `uid`, whose directory is `vm_dir`.
    fn vm_files(&self, vm_dir: &Path, uid: &str) -> VmmFiles;

    /// Whether console output of one launch shows the guest halted, powered off or
    /// panicked: how an exited VMM is told to have stopped cleanly.
    fn console_shows_halt(&self, console: &str) -> bool;

    /// Checks that the binary runs and is this hypervisor; returns its version line.
    /// Blocking (runs `--version`, bounded): call it off the async workers or before the
    /// daemon serves.
    fn check_binary(&self) -> Result<String, String>;

    /// What this hypervisor needs of the host besides its binary, judged from the KVM
    /// probe: `Ok`, or why this host cannot run it.
    fn host_requirement(&self, kvm: &KvmStatus) -> Result<(), String>;

    /// Rank for `hypervisor: auto`: among the hypervisors this host can run, the highest
    /// rank is chosen ([`choose_auto`]).
    fn auto_rank(&self) -> u8;

    /// Spawns the VMM in its own session (it must survive the daemon), configures it and
    /// boots the guest. Returns once the VMM reports the guest started.
    fn launch(
        &self,
        spec: &LaunchSpec,
    ) -> impl std::future::Future<Output = Result<VmmProcess, DriverError>> + Send;

    /// Probes a recorded process: identity (pid + start time + uid marker) and control
    /// socket.
    fn probe(
        &self,
        process: &VmmProcess,
        uid: &str,
    ) -> impl std::future::Future<Output = Liveness> + Send;

    /// Stops the VM: graceful request, bounded wait of `grace`, then SIGTERM, then
    /// SIGKILL. Returns when the process is gone. Succeeds if it was already gone.
    fn shutdown(
        &self,
        process: &VmmProcess,
        uid: &str,
        grace: Duration,
    ) -> impl std::future::Future<Output = Result<(), DriverError>> + Send;
}

/// Every hypervisor adapter, as one value: what the Linux runtime dispatches on. Adding
/// a hypervisor adds one variant here and one arm in each method below.
#[derive(Debug, Clone)]
pub enum Driver {
    /// QEMU `-M microvm`.
    Qemu(qemu::QemuDriver),
    /// Firecracker.
    Firecracker(firecracker::FirecrackerDriver),
}

impl Driver {
    /// The driver of `kind` configured for this host: `kvm` decides QEMU's accelerator
    /// (and measures the TSC under TCG, ~20 ms). Also returns why the configured
    /// accelerator cannot be used here, if it cannot (the driver then falls back to TCG
    /// for probes and shutdowns of processes launched earlier, and the hypervisor is
    /// reported unsuitable).
    pub fn configure(
        kind: HypervisorKind,
        config: &DriverConfig,
        kvm: &KvmStatus,
    ) -> (Driver, Result<(), String>) {
        match kind {
            HypervisorKind::Qemu => {
                let (driver, accel) =
                    qemu::QemuDriver::for_kvm(config.qemu_bin.clone(), config.accel, kvm);
                (Driver::Qemu(driver), accel.map_err(|e| e.to_string()))
            }
            HypervisorKind::Firecracker => {
                let binary = config
                    .firecracker_bin
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(firecracker::DEFAULT_BINARY));
                let resolved = firecracker::resolve_binary(&binary);
                let driver = firecracker::FirecrackerDriver::new(binary)
                    .skipping_kvm_check(config.firecracker_skip_kvm_check);
                match firecracker::jail::find_jailer(
                    resolved.as_deref(),
                    config.jailer_bin.as_deref(),
                ) {
                    Ok(Some(jailer)) => (
                        Driver::Firecracker(driver.with_jailer(firecracker::jail::Jailer {
                            binary: jailer,
                            chroot_base: config.jail_dir.clone().unwrap_or_else(|| {
                                PathBuf::from(firecracker::jail::DEFAULT_CHROOT_BASE)
                            }),
                        })),
                        Ok(()),
                    ),
                    Ok(None) => (Driver::Firecracker(driver), Ok(())),
                    Err(reason) => (Driver::Firecracker(driver), Err(reason)),
                }
            }
        }
    }
}

impl Hypervisor for Driver {
    fn kind(&self) -> HypervisorKind {
        match self {
            Driver::Qemu(d) => d.kind(),
            Driver::Firecracker(d) => d.kind(),
        }
    }

    fn binary(&self) -> &Path {
        match self {
            Driver::Qemu(d) => d.binary(),
            Driver::Firecracker(d) => d.binary(),
        }
    }

    fn kernel_args(&self) -> &'static [&'static str] {
        match self {
            Driver::Qemu(d) => d.kernel_args(),
            Driver::Firecracker(d) => d.kernel_args(),
        }
    }

    fn vm_files(&self, vm_dir: &Path, uid: &str) -> VmmFiles {
        match self {
            Driver::Qemu(d) => d.vm_files(vm_dir, uid),
            Driver::Firecracker(d) => d.vm_files(vm_dir, uid),
        }
    }

    fn console_shows_halt(&self, console: &str) -> bool {
        match self {
            Driver::Qemu(d) => d.console_shows_halt(console),
            Driver::Firecracker(d) => d.console_shows_halt(console),
        }
    }

    fn check_binary(&self) -> Result<String, String> {
        match self {
            Driver::Qemu(d) => d.check_binary(),
            Driver::Firecracker(d) => d.check_binary(),
        }
    }

    fn host_requirement(&self, kvm: &KvmStatus) -> Result<(), String> {
        match self {
            Driver::Qemu(d) => d.host_requirement(kvm),
            Driver::Firecracker(d) => d.host_requirement(kvm),
        }
    }

    fn auto_rank(&self) -> u8 {
        match self {
            Driver::Qemu(d) => d.auto_rank(),
            Driver::Firecracker(d) => d.auto_rank(),
        }
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<VmmProcess, DriverError> {
        match self {
            Driver::Qemu(d) => d.launch(spec).await,
            Driver::Firecracker(d) => d.launch(spec).await,
        }
    }

    async fn probe(&self, process: &VmmProcess, uid: &str) -> Liveness {
        match self {
            Driver::Qemu(d) => d.probe(process, uid).await,
            Driver::Firecracker(d) => d.probe(process, uid).await,
        }
    }

    async fn shutdown(
        &self,
        process: &VmmProcess,
        uid: &str,
        grace: Duration,
    ) -> Result<(), DriverError> {
        match self {
            Driver::Qemu(d) => d.shutdown(process, uid, grace).await,
            Driver::Firecracker(d) => d.shutdown(process, uid, grace).await,
        }
    }
}

/// Runs a driver's blocking filesystem or `/proc` work on the blocking pool, so no
/// async worker waits on it. `Err` only when the work panicked or was cancelled.
async fn off_worker<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| format!("blocking work did not finish: {e}"))
}

/// Kernel messages a Linux guest prints when it halts, powers off or panics. The guest
/// kernel prints them whatever runs it; a driver's [`Hypervisor::console_shows_halt`]
/// decides whether they are how a halt shows on its console.
pub const LINUX_HALT_MARKERS: &[&str] = &[
    "reboot: Power down",
    "reboot: System halted",
    "Kernel panic - not syncing",
];

/// Whether console output contains one of [`LINUX_HALT_MARKERS`].
pub fn shows_linux_halt(console: &str) -> bool {
    LINUX_HALT_MARKERS
        .iter()
        .any(|marker| console.contains(marker))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_their_names() {
        for kind in HypervisorKind::ALL {
            assert_eq!(HypervisorKind::from_name(kind.as_str()), Some(kind));
        }
        assert_eq!(HypervisorKind::from_name("simulated"), None);
        assert_eq!(HypervisorKind::of_choice(HypervisorChoice::Auto), None);
        assert_eq!(
            HypervisorKind::of_choice(HypervisorChoice::Qemu),
            Some(HypervisorKind::Qemu)
        );
    }

    #[test]
    fn a_process_record_keeps_its_wire_form() {
        let json = r#"{"hypervisor":"qemu","pid":7,"start_time":9,"control_socket":"/s"}"#;
        let process: VmmProcess = serde_json::from_str(json).unwrap();
        assert_eq!(process.hypervisor_kind(), Some(HypervisorKind::Qemu));
        assert_eq!(process.hypervisor_name(), "qemu");
        assert_eq!(serde_json::to_string(&process).unwrap(), json);
    }

    #[test]
    fn linux_halt_lines_are_recognised() {
        assert!(shows_linux_halt("[   3.2] reboot: Power down\n"));
        assert!(shows_linux_halt("Kernel panic - not syncing: VFS"));
        assert!(!shows_linux_halt("reboot: Restarting system\nlogin:"));
    }
}
