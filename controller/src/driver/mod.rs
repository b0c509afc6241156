//! Hypervisor drivers: one trait, one adapter per hypervisor.
//!
//! A driver turns a [`LaunchSpec`] (everything needed to boot one VM, already prepared
//! by the host plumbing: disk, tap, kernel command line) into a running VMM process
//! that outlives the daemon, probes it, and shuts it down. Drivers never touch the
//! store; the engine records what they return ([`VmmProcess`]) in the VM's handles.
//!
//! Adding a hypervisor means one new module and one arm in [`Driver`].

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod firecracker;
pub mod qemu;
pub mod qmp;

/// Which hypervisor a VM runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HypervisorKind {
    /// Firecracker.
    Firecracker,
    /// QEMU `-M microvm`.
    Qemu,
    /// The simulated runtime (tests and benchmarks only).
    Simulated,
}

impl HypervisorKind {
    /// `firecracker`, `qemu` or `simulated`.
    pub fn as_str(self) -> &'static str {
        match self {
            HypervisorKind::Firecracker => "firecracker",
            HypervisorKind::Qemu => "qemu",
            HypervisorKind::Simulated => "simulated",
        }
    }
}

/// Everything a driver needs to boot one VM. Paths are absolute and already exist
/// (except the sockets and logs, which the driver creates inside `vm_dir`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Full kernel command line (console, root, `ip=…`, image and VM args).
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
}

/// A launched VMM process, as recorded in the VM's handles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmmProcess {
    /// Which hypervisor.
    pub hypervisor: HypervisorKind,
    /// Process id.
    pub pid: i32,
    /// Process start time in clock ticks since boot (`/proc/PID/stat` field 22): with
    /// the pid, identifies the process across PID reuse.
    pub start_time: u64,
    /// Control socket (QMP for QEMU, the API socket for Firecracker).
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
    /// The hypervisor binary is missing or unusable.
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

/// The contract every hypervisor adapter fulfils.
pub trait Hypervisor: Send + Sync {
    /// Which hypervisor this is.
    fn kind(&self) -> HypervisorKind;

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

/// Every hypervisor adapter, as one value: what the host runtime dispatches on. Adding a
/// hypervisor adds one variant here and one arm in each method below.
#[derive(Debug, Clone)]
pub enum Driver {
    /// QEMU `-M microvm`.
    Qemu(qemu::QemuDriver),
    /// Firecracker.
    Firecracker(firecracker::FirecrackerDriver),
}

impl Hypervisor for Driver {
    fn kind(&self) -> HypervisorKind {
        match self {
            Driver::Qemu(d) => d.kind(),
            Driver::Firecracker(d) => d.kind(),
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
