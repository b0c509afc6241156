//! QEMU `-M microvm` driver.
//!
//! A VM is one detached `qemu-system-x86_64` process ([`crate::host::process`]) started
//! from an argv vector built by the pure [`qemu_argv`]: virtio-mmio block and net
//! devices, the serial console appended to the VM's console log, QMP on a Unix socket in
//! the VM directory, and `-name banger-<uid>` as the identity marker.
//!
//! # Confinement
//! QEMU never runs privileged. The driver spawns it as the VMM user
//! ([`crate::host::vmm_user`]), into the VM's cgroup ([`crate::host::cgroup`]), with
//! `-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny`
//! (seccomp). Privileges are dropped by banger between fork and exec rather than with
//! QEMU's `-runas` (or `-run-with user=`): QEMU installs its seccomp filter before it
//! would drop privileges, so `-runas` together with `elevateprivileges=deny` dies of
//! SIGSYS at the `setuid` (QEMU 7.2, measured). Dropping them before exec leaves QEMU
//! nothing to elevate.
//!
//! The VMM user may open nothing in banger's state directory. The daemon opens what QEMU
//! needs and hands the descriptors over ([`QemuFiles`]): the root disk (read-write and a
//! read-only twin, in one fd set: `-add-fd` and `file=/dev/fdset/1`), the console log
//! (`/dev/fdset/2`), a queue of the VM's tap (`-netdev tap,fd=`) and the QMP socket,
//! bound by the daemon (`-chardev socket,fd=`). The kernel and initrd are handed over
//! too, and QEMU reopens them through `/proc/self/fd/N` (its loader takes only paths):
//! that reopening checks the file's own mode, so they must be readable by the VMM
//! user. Each `-add-fd` carries the file's path as its opaque string, so the command
//! line still names the VM directory (garbage collection's rule, [`crate::host::garbage`]).
//! Under KVM the VMM user also gets the group of `/dev/kvm`, nothing else.
//!
//! Under TCG the translation cache is bounded (`-accel tcg,tb-size=`,
//! [`QemuOptions::tcg_tb_size_mib`]) and counted in the cgroup's memory limit; QEMU's
//! own default (up to 1 GiB) would make the limit meaningless.
//!
//! # Life
//! - **Launch** spawns QEMU and waits, bounded by [`QemuOptions::launch_timeout`], until
//!   QMP answers `query-status` with `running`; if QEMU exits first, the error carries
//!   the tail of its output log. A failed launch leaves no process behind.
//! - **Probe** checks the identity (pid + start time + marker), then asks QMP.
//! - **Shutdown**: `system_powerdown` (the ACPI power button), a bounded wait of `grace`;
//!   then QMP `quit`; then SIGTERM and SIGKILL. A guest without acpid ignores the button,
//!   so the fallbacks are part of the normal path. Already gone counts as success.
//!
//! QMP connections are short-lived (one per probe or step) because QEMU's QMP socket
//! serves one client at a time; callers serialise operations per VM.
//!
//! Under TCG the guest's TSC is the host's, but the guest kernel calibrates it against
//! the emulated PIT, which fails on a busy host and leaves the guest without a working
//! clock (it hangs in early boot). The driver therefore passes the host's measured TSC
//! frequency as `tsc_early_khz=` ([`QemuOptions::tsc_khz`]) unless the command line
//! already sets it.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::driver::qmp::QmpClient;
use crate::driver::{
    off_worker, shows_linux_halt, DriverError, Hypervisor, HypervisorKind, LaunchSpec, Liveness,
    VmmFiles, VmmProcess,
};
use crate::host::cgroup::CgroupLimits;
use crate::host::kvm::{self, Accel, AccelError, KvmStatus, ResolvedAccel};
use crate::host::net::tap::open_tap_queue;
use crate::host::process::{self, DetachedCommand, IdentityCheck, ProcessIdentity, TrackedProcess};
use crate::host::vmm_user::VmmUser;
use crate::host::which::{find_executable, run_bounded};

/// The QEMU binary looked up in `PATH` when none is configured.
pub const DEFAULT_BINARY: &str = "qemu-system-x86_64";

/// How the driver runs QEMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuOptions {
    /// QEMU binary: a path, or a name looked up in `PATH`.
    pub binary: PathBuf,
    /// The accelerator (already resolved against the host).
    pub accel: ResolvedAccel,
    /// Under TCG: the host TSC frequency in kHz, passed to the guest as `tsc_early_khz=`.
    pub tsc_khz: Option<u64>,
    /// Under TCG: the translation cache's size in MiB (`-accel tcg,tb-size=`), which the
    /// VM's cgroup memory limit includes.
    pub tcg_tb_size_mib: u64,
    /// Bound on launch: from spawn until QMP reports the guest running.
    pub launch_timeout: Duration,
    /// Bound on each QMP connection and command.
    pub qmp_timeout: Duration,
    /// Wait after QMP `quit` before SIGTERM.
    pub quit_grace: Duration,
    /// Wait after SIGTERM before SIGKILL.
    pub term_grace: Duration,
    /// Wait after SIGKILL before giving up.
    pub kill_grace: Duration,
}

impl QemuOptions {
    /// Options for `binary` with a resolved accelerator and default bounds; no TSC hint.
    pub fn new(binary: impl Into<PathBuf>, accel: ResolvedAccel) -> QemuOptions {
        QemuOptions {
            binary: binary.into(),
            accel,
            tsc_khz: None,
            tcg_tb_size_mib: TCG_TB_SIZE_MIB,
            launch_timeout: Duration::from_secs(30),
            qmp_timeout: Duration::from_secs(3),
            quit_grace: Duration::from_secs(3),
            term_grace: Duration::from_secs(3),
            kill_grace: Duration::from_secs(5),
        }
    }

    /// Options for a host whose KVM probe found `kvm`: resolves `accel` and, under TCG,
    /// measures the TSC frequency (blocks ~20 ms). `binary` defaults to
    /// [`DEFAULT_BINARY`].
    pub fn for_kvm(
        binary: Option<PathBuf>,
        accel: Accel,
        kvm: &KvmStatus,
    ) -> Result<QemuOptions, AccelError> {
        let resolved = kvm::resolve(accel, kvm)?;
        let mut options = QemuOptions::new(
            binary.unwrap_or_else(|| PathBuf::from(DEFAULT_BINARY)),
            resolved,
        );
        if resolved == ResolvedAccel::Tcg {
            options.tsc_khz = measure_tsc_khz();
        }
        Ok(options)
    }
}

/// How long `qemu-system-x86_64 --version` (and `-help`) may take when the host is
/// probed.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);
/// The translation cache under TCG, in MiB: enough for a Debian guest's working set;
/// QEMU flushes and refills it when it is full.
pub const TCG_TB_SIZE_MIB: u64 = 256;
/// The seccomp filter every QEMU runs under.
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";
/// The command-line options the driver needs of a QEMU binary, as its `-help` lists them.
const REQUIRED_OPTIONS: [&str; 2] = ["-sandbox", "-add-fd"];
/// The pid file QEMU wrote before banger handed it descriptors (removed when found).
const LEGACY_PID_FILE: &str = "qemu.pid";
/// The KVM device, whose group a QEMU under KVM joins.
const KVM_DEVICE: &str = "/dev/kvm";
/// The fd set holding the root disk's descriptors.
const ROOT_DISK_FDSET: u32 = 1;
/// The fd set holding the console log's descriptor.
const CONSOLE_FDSET: u32 = 2;

/// The QMP socket of a VM.
pub fn qmp_socket_path(vm_dir: &Path) -> PathBuf {
    vm_dir.join("qmp.sock")
}

/// Where QEMU's own stdout and stderr go.
pub fn output_log_path(vm_dir: &Path) -> PathBuf {
    vm_dir.join("qemu.log")
}

/// The kernel command line QEMU passes: `spec.cmdline`, plus `tsc_early_khz=` under TCG
/// when known and not already set.
pub fn kernel_cmdline(spec: &LaunchSpec, options: &QemuOptions) -> String {
    match (options.accel, options.tsc_khz) {
        (ResolvedAccel::Tcg, Some(khz))
            if !spec
                .cmdline
                .split_whitespace()
                .any(|a| a.starts_with("tsc_early_khz=")) =>
        {
            if spec.cmdline.trim().is_empty() {
                format!("tsc_early_khz={khz}")
            } else {
                format!("{} tsc_early_khz={khz}", spec.cmdline.trim_end())
            }
        }
        _ => spec.cmdline.clone(),
    }
}

/// Escapes a value for QEMU's `key=value,…` option syntax (a comma is written twice).
pub fn escape_option_value(value: &OsStr) -> OsString {
    let mut out = Vec::with_capacity(value.len());
    for &b in value.as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

fn option(prefix: &str, value: &OsStr, suffix: &str) -> OsString {
    let mut out = OsString::from(prefix);
    out.push(escape_option_value(value));
    out.push(suffix);
    out
}

/// An argv under construction.
#[derive(Default)]
struct Argv(Vec<OsString>);

impl Argv {
    fn flag(&mut self, flag: &str) {
        self.0.push(flag.into());
    }

    fn opt(&mut self, flag: &str, value: impl Into<OsString>) {
        self.0.push(flag.into());
        self.0.push(value.into());
    }
}

/// The descriptor numbers QEMU inherits ([`QemuFiles::numbers`]), as [`qemu_argv`]
/// names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QemuFds {
    /// The kernel, read-only (reopened by QEMU through `/proc/self/fd`).
    pub kernel: RawFd,
    /// The initrd, read-only, if the VM has one.
    pub initrd: Option<RawFd>,
    /// The root disk, read-write.
    pub disk: RawFd,
    /// The root disk again, read-only (QEMU's block layer opens read-only first).
    pub disk_read_only: RawFd,
    /// The console log, append-only.
    pub console: RawFd,
    /// A queue of the VM's tap, if it has networking.
    pub tap: Option<RawFd>,
    /// The QMP socket, listening.
    pub qmp: RawFd,
}

/// `-add-fd fd=N,set=S,opaque=PATH` (the path says what the descriptor is, and keeps the
/// VM directory on the command line).
fn add_fd(argv: &mut Argv, fd: RawFd, set: u32, opaque: &OsStr) {
    argv.opt(
        "-add-fd",
        option(&format!("fd={fd},set={set},opaque="), opaque, ""),
    );
}

/// The full QEMU argv (without the program) for `spec`, with the inherited descriptors
/// `fds`. Pure.
pub fn qemu_argv(spec: &LaunchSpec, options: &QemuOptions, fds: &QemuFds) -> Vec<OsString> {
    let mut argv = Argv::default();
    argv.opt(
        "-name",
        escape_option_value(OsStr::new(&process::uid_marker(&spec.uid))),
    );
    // microvm without option ROMs; the ISA serial port, ACPI (the power button that
    // `system_powerdown` presses) and the RTC stay.
    argv.opt("-M", "microvm,x-option-roms=off");
    let (accel, cpu) = match options.accel {
        ResolvedAccel::Kvm => ("kvm".to_owned(), "host"),
        ResolvedAccel::Tcg => (format!("tcg,tb-size={}", options.tcg_tb_size_mib), "max"),
    };
    argv.opt("-accel", accel);
    argv.opt("-cpu", cpu);
    argv.opt("-smp", spec.vcpus.max(1).to_string());
    argv.opt("-m", format!("{}M", spec.memory_mib));
    for flag in ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"] {
        argv.flag(flag);
    }
    argv.opt("-sandbox", SANDBOX);
    argv.opt("-kernel", format!("/proc/self/fd/{}", fds.kernel));
    if let Some(initrd) = fds.initrd {
        argv.opt("-initrd", format!("/proc/self/fd/{initrd}"));
    }
    argv.opt("-append", kernel_cmdline(spec, options));
    add_fd(
        &mut argv,
        fds.disk,
        ROOT_DISK_FDSET,
        spec.root_disk.as_os_str(),
    );
    add_fd(
        &mut argv,
        fds.disk_read_only,
        ROOT_DISK_FDSET,
        spec.root_disk.as_os_str(),
    );
    argv.opt(
        "-drive",
        format!("id=root,file=/dev/fdset/{ROOT_DISK_FDSET},format=raw,if=none,cache=writeback"),
    );
    argv.opt("-device", "virtio-blk-device,drive=root");
    if let Some(tap) = fds.tap {
        argv.opt("-netdev", format!("tap,id=net0,fd={tap}"));
        argv.opt(
            "-device",
            option(
                "virtio-net-device,netdev=net0,mac=",
                OsStr::new(&spec.mac),
                "",
            ),
        );
    }
    add_fd(
        &mut argv,
        fds.console,
        CONSOLE_FDSET,
        spec.console_log.as_os_str(),
    );
    argv.opt(
        "-chardev",
        format!("file,id=console,path=/dev/fdset/{CONSOLE_FDSET},append=on"),
    );
    argv.opt("-serial", "chardev:console");
    argv.opt(
        "-chardev",
        format!("socket,id=qmp,fd={},server=on,wait=off", fds.qmp),
    );
    argv.opt("-mon", "chardev=qmp,mode=control");
    argv.0
}

/// The files one QEMU gets as descriptors, opened by the daemon (blocking). They stay
/// open (close-on-exec in the daemon) until the spawn has handed them over.
#[derive(Debug)]
pub struct QemuFiles {
    kernel: File,
    initrd: Option<File>,
    disk: File,
    disk_read_only: File,
    console: File,
    tap: Option<OwnedFd>,
    qmp: UnixListener,
}

impl QemuFiles {
    /// Opens what `spec` needs for a QEMU running as `user`: checks that the kernel and
    /// initrd are readable by that user, opens the root disk twice, the console log
    /// (created 0600 when missing), a queue of the tap, and binds the QMP socket (mode
    /// 0600; the VM directory must not hold one that answers). Blocking.
    pub fn open(spec: &LaunchSpec, user: &VmmUser) -> Result<QemuFiles, String> {
        let read_only =
            |path: &Path| File::open(path).map_err(|e| format!("open {}: {e}", path.display()));
        user.check_readable(&spec.kernel)?;
        if let Some(initrd) = &spec.initrd {
            user.check_readable(initrd)?;
        }
        let disk = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&spec.root_disk)
            .map_err(|e| format!("open {}: {e}", spec.root_disk.display()))?;
        let console = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&spec.console_log)
            .map_err(|e| format!("open {}: {e}", spec.console_log.display()))?;
        let tap = match &spec.tap {
            Some(name) => Some(open_tap_queue(name).map_err(|e| e.to_string())?),
            None => None,
        };
        let socket = qmp_socket_path(&spec.vm_dir);
        let qmp = UnixListener::bind(&socket)
            .map_err(|e| format!("bind QMP socket {}: {e}", socket.display()))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("chmod {}: {e}", socket.display()))?;
        Ok(QemuFiles {
            kernel: read_only(&spec.kernel)?,
            initrd: spec.initrd.as_deref().map(read_only).transpose()?,
            disk_read_only: read_only(&spec.root_disk)?,
            disk,
            console,
            tap,
            qmp,
        })
    }

    /// The descriptor numbers, for [`qemu_argv`].
    pub fn numbers(&self) -> QemuFds {
        QemuFds {
            kernel: self.kernel.as_raw_fd(),
            initrd: self.initrd.as_ref().map(AsRawFd::as_raw_fd),
            disk: self.disk.as_raw_fd(),
            disk_read_only: self.disk_read_only.as_raw_fd(),
            console: self.console.as_raw_fd(),
            tap: self.tap.as_ref().map(AsRawFd::as_raw_fd),
            qmp: self.qmp.as_raw_fd(),
        }
    }

    /// Every descriptor, to hand over at spawn.
    pub fn inherited(&self) -> Vec<BorrowedFd<'_>> {
        let mut fds = vec![
            self.kernel.as_fd(),
            self.disk.as_fd(),
            self.disk_read_only.as_fd(),
            self.console.as_fd(),
            self.qmp.as_fd(),
        ];
        fds.extend(self.initrd.as_ref().map(AsFd::as_fd));
        fds.extend(self.tap.as_ref().map(AsFd::as_fd));
        fds
    }
}

/// The supplementary groups a QEMU under `accel` needs: the group of `/dev/kvm` under
/// KVM (blocking: one `stat`), none under TCG.
fn accel_groups(accel: ResolvedAccel) -> Result<Vec<u32>, String> {
    use std::os::unix::fs::MetadataExt;
    match accel {
        ResolvedAccel::Tcg => Ok(Vec::new()),
        ResolvedAccel::Kvm => std::fs::metadata(KVM_DEVICE)
            .map(|m| vec![m.gid()])
            .map_err(|e| format!("stat {KVM_DEVICE}: {e}")),
    }
}

/// Whether QEMU's `-help` text lists every option the driver relies on; `Err` names the
/// missing ones. Pure.
pub fn check_help_text(help: &str) -> Result<(), String> {
    let missing: Vec<&str> = REQUIRED_OPTIONS
        .into_iter()
        .filter(|option| {
            !help
                .lines()
                .any(|l| l.split_whitespace().next() == Some(*option))
        })
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "this QEMU lacks {} (banger confines QEMU with seccomp and hands it descriptors; a QEMU built without seccomp cannot run its VMs)",
            missing.join(", ")
        ))
    }
}

/// Measures the host TSC frequency in kHz against the monotonic clock (~20 ms), if the
/// TSC is constant and non-stop. `None` elsewhere.
pub fn measure_tsc_khz() -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
        let flags = cpuinfo.lines().find(|l| l.starts_with("flags"))?;
        let has = |flag: &str| flags.split_whitespace().any(|f| f == flag);
        if !(has("constant_tsc") && has("nonstop_tsc")) {
            return None;
        }
        // Pair a TSC read with the clock; keep the tightest of several pairs so that a
        // preemption between the two reads does not skew the result.
        let sample = || -> (Instant, u64) {
            let mut best: Option<(Duration, Instant, u64)> = None;
            for _ in 0..9 {
                let before = Instant::now();
                // SAFETY: RDTSC has no memory effects; every x86_64 CPU implements it.
                #[allow(unused_unsafe)]
                let tsc = unsafe { core::arch::x86_64::_rdtsc() };
                let after = Instant::now();
                let gap = after - before;
                if best.is_none_or(|(g, _, _)| gap < g) {
                    best = Some((gap, before + gap / 2, tsc));
                }
            }
            best.map(|(_, at, tsc)| (at, tsc))
                .unwrap_or((Instant::now(), 0))
        };
        let (t0, c0) = sample();
        std::thread::sleep(Duration::from_millis(20));
        let (t1, c1) = sample();
        let nanos = u64::try_from((t1 - t0).as_nanos()).ok()?;
        let cycles = c1.checked_sub(c0)?;
        let khz = u128::from(cycles) * 1_000_000 / u128::from(nanos.max(1));
        u64::try_from(khz).ok().filter(|&k| k > 100_000)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// The QEMU adapter behind [`Hypervisor`].
#[derive(Debug, Clone)]
pub struct QemuDriver {
    options: QemuOptions,
}

impl QemuDriver {
    /// A driver with these options.
    pub fn new(options: QemuOptions) -> QemuDriver {
        QemuDriver { options }
    }

    /// The driver for a host whose KVM probe found `kvm` ([`QemuOptions::for_kvm`]).
    /// When `accel` cannot be used here, the driver runs under TCG (so processes
    /// launched earlier can still be probed and stopped) and the error says why.
    pub fn for_kvm(
        binary: Option<PathBuf>,
        accel: Accel,
        kvm: &KvmStatus,
    ) -> (QemuDriver, Result<(), AccelError>) {
        match QemuOptions::for_kvm(binary.clone(), accel, kvm) {
            Ok(options) => (QemuDriver::new(options), Ok(())),
            Err(e) => {
                let binary = binary.unwrap_or_else(|| PathBuf::from(DEFAULT_BINARY));
                let options = QemuOptions::new(binary, ResolvedAccel::Tcg);
                (QemuDriver::new(options), Err(e))
            }
        }
    }

    /// The options in use.
    pub fn options(&self) -> &QemuOptions {
        &self.options
    }

    /// The cgroup limits of a VM of `spec` under this driver: the guest's memory, the
    /// overhead, and the translation cache under TCG.
    pub fn cgroup_limits(&self, spec: &LaunchSpec) -> CgroupLimits {
        let cache = match self.options.accel {
            ResolvedAccel::Tcg => self.options.tcg_tb_size_mib,
            ResolvedAccel::Kvm => 0,
        };
        CgroupLimits::for_vm(spec.memory_mib, spec.vcpus, cache)
    }

    async fn launch_inner(&self, spec: &LaunchSpec) -> Result<VmmProcess, DriverError> {
        let op = |operation: &str, reason: String| DriverError::Operation {
            vm: spec.name.clone(),
            operation: operation.to_owned(),
            reason,
        };
        let binary_name = self.options.binary.clone();
        let owned_spec = spec.clone();
        let limits = self.cgroup_limits(spec);
        let accel = self.options.accel;
        let prepared = off_worker(move || {
            let binary = resolve_binary(&binary_name).map_err(PrepareError::Binary)?;
            prepare_vm_dir(&owned_spec.vm_dir).map_err(PrepareError::VmDir)?;
            let groups = accel_groups(accel).map_err(PrepareError::VmDir)?;
            if let Some(cgroup) = &owned_spec.confinement.cgroup {
                cgroup
                    .ensure(&limits)
                    .map_err(|e| PrepareError::VmDir(e.to_string()))?;
            }
            let files = QemuFiles::open(&owned_spec, &owned_spec.confinement.user)
                .map_err(PrepareError::VmDir)?;
            Ok((binary, groups, files))
        })
        .await
        .map_err(|reason| op("prepare", reason))?;
        let (binary, groups, files) = prepared.map_err(|e| match e {
            PrepareError::Binary(reason) => DriverError::Binary {
                vm: spec.name.clone(),
                binary: self.options.binary.display().to_string(),
                reason,
            },
            PrepareError::VmDir(reason) => op("prepare", reason),
        })?;
        let socket = qmp_socket_path(&spec.vm_dir);
        let marker = process::uid_marker(&spec.uid);
        let output_log = output_log_path(&spec.vm_dir);
        let confinement = &spec.confinement;
        let command = DetachedCommand {
            program: binary,
            args: qemu_argv(spec, &self.options, &files.numbers()),
            output_log: output_log.clone(),
            cwd: spec.vm_dir.clone(),
            marker: marker.clone(),
            credentials: Some(confinement.user.credentials(groups)),
            cgroup_join_files: confinement
                .cgroup
                .as_ref()
                .map(|c| c.join_files())
                .unwrap_or_default(),
        };
        let spawned = process::spawn_detached(&command, &files.inherited());
        // QEMU holds its own copies now (the QMP socket keeps listening in QEMU alone).
        drop(files);
        let identity = spawned.map_err(|e| op("spawn", e.to_string()))?;
        let tracked = match identity.attach(&marker) {
            Ok(Some(tracked)) => tracked,
            Ok(None) => {
                return Err(op(
                    "spawn",
                    format!("QEMU exited at once; {}", log_tail_async(&output_log).await),
                ))
            }
            Err(e) => return Err(op("spawn", e.to_string())),
        };
        match self.wait_running(&tracked, &socket, &output_log).await {
            Ok(()) => Ok(VmmProcess {
                hypervisor: HypervisorKind::Qemu.as_str().to_owned(),
                pid: identity.pid,
                start_time: identity.start_time,
                control_socket: socket,
            }),
            Err(reason) => {
                // Leave nothing behind: a failed launch is not a VM.
                let stop = process::terminate_tracked(
                    &tracked,
                    self.options.term_grace,
                    self.options.kill_grace,
                )
                .await;
                let stop_note = match stop {
                    Ok(_) => String::new(),
                    Err(e) => format!(" (and stopping it failed: {e})"),
                };
                Err(op("start", format!("{reason}{stop_note}")))
            }
        }
    }

    /// Polls QMP until the guest runs, QEMU exits, or the launch timeout passes.
    async fn wait_running(
        &self,
        tracked: &TrackedProcess,
        socket: &Path,
        output_log: &Path,
    ) -> Result<(), String> {
        let deadline = Instant::now() + self.options.launch_timeout;
        let mut last_error = String::from("QMP socket not created yet");
        while Instant::now() < deadline {
            if tracked.has_exited() {
                return Err(format!(
                    "QEMU exited during launch; {}",
                    log_tail_async(output_log).await
                ));
            }
            if tokio::fs::try_exists(socket).await.unwrap_or(false) {
                match QmpClient::connect(socket, self.options.qmp_timeout).await {
                    Ok(mut qmp) => match qmp.query_status().await {
                        Ok(status) if status.running => return Ok(()),
                        Ok(status) => last_error = format!("guest status {}", status.status),
                        Err(e) => last_error = e.to_string(),
                    },
                    Err(e) => last_error = e.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "guest not running within {:?}: {last_error}",
            self.options.launch_timeout
        ))
    }

    async fn shutdown_inner(
        &self,
        vmm: &VmmProcess,
        uid: &str,
        grace: Duration,
    ) -> Result<(), DriverError> {
        let op = |operation: &str, reason: String| DriverError::Operation {
            vm: uid.to_owned(),
            operation: operation.to_owned(),
            reason,
        };
        let identity = ProcessIdentity {
            pid: vmm.pid,
            start_time: vmm.start_time,
        };
        let marker = process::uid_marker(uid);
        let tracked = identity
            .attach(&marker)
            .map_err(|e| op("shutdown", e.to_string()))?;
        if let Some(tracked) = tracked {
            self.stop_tracked(&tracked, &vmm.control_socket, grace)
                .await
                .map_err(|e| op("shutdown", e))?;
        }
        let socket = vmm.control_socket.clone();
        if let Err(e) = off_worker(move || remove_leftovers(&socket)).await {
            tracing::debug!(vm = uid, error = %e, "could not remove QEMU leftovers");
        }
        Ok(())
    }

    async fn stop_tracked(
        &self,
        tracked: &TrackedProcess,
        socket: &Path,
        grace: Duration,
    ) -> Result<(), String> {
        let wait = |timeout: Duration| async move {
            tracked.wait_exit(timeout).await.map_err(|e| e.to_string())
        };
        // 1. The ACPI power button: a guest with acpid powers off cleanly.
        match QmpClient::connect(socket, self.options.qmp_timeout).await {
            Ok(mut qmp) => {
                if let Err(e) = qmp.system_powerdown().await {
                    tracing::debug!(socket = %socket.display(), error = %e, "system_powerdown failed");
                }
            }
            Err(e) => {
                tracing::debug!(socket = %socket.display(), error = %e, "QMP unreachable for powerdown")
            }
        }
        if wait(grace).await? {
            return Ok(());
        }
        // 2. QMP quit: QEMU exits at once (the guest gets no say).
        match QmpClient::connect(socket, self.options.qmp_timeout).await {
            Ok(qmp) => {
                if let Err(e) = qmp.quit().await {
                    tracing::debug!(socket = %socket.display(), error = %e, "QMP quit failed");
                }
            }
            Err(e) => {
                tracing::debug!(socket = %socket.display(), error = %e, "QMP unreachable for quit")
            }
        }
        if wait(self.options.quit_grace).await? {
            return Ok(());
        }
        // 3. Signals.
        process::terminate_tracked(tracked, self.options.term_grace, self.options.kill_grace)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    async fn probe_inner(&self, vmm: &VmmProcess, uid: &str) -> Liveness {
        let identity = ProcessIdentity {
            pid: vmm.pid,
            start_time: vmm.start_time,
        };
        match identity.check_async(&process::uid_marker(uid)).await {
            Ok(IdentityCheck::Ours) => {}
            Ok(IdentityCheck::Exited | IdentityCheck::Reused { .. }) => return Liveness::Exited,
            Err(e) => {
                return Liveness::Unresponsive {
                    reason: e.to_string(),
                }
            }
        }
        let status = async {
            let mut qmp = QmpClient::connect(&vmm.control_socket, self.options.qmp_timeout).await?;
            qmp.query_status().await
        };
        match status.await {
            Ok(status) => liveness_of_status(&status.status),
            Err(e) => {
                // QEMU may have exited while we asked.
                if matches!(
                    identity.check_async(&process::uid_marker(uid)).await,
                    Ok(IdentityCheck::Exited | IdentityCheck::Reused { .. })
                ) {
                    return Liveness::Exited;
                }
                Liveness::Unresponsive {
                    reason: e.to_string(),
                }
            }
        }
    }
}

/// Maps a QMP run state to [`Liveness`] (for a process already known to be ours).
pub fn liveness_of_status(status: &str) -> Liveness {
    match status {
        "running" => Liveness::Running,
        // The guest powered off, panicked or hit an internal error while QEMU lives on.
        "shutdown" | "guest-panicked" | "internal-error" => Liveness::GuestHalted,
        other => Liveness::Unresponsive {
            reason: format!("guest is not running (QEMU status {other})"),
        },
    }
}

impl Hypervisor for QemuDriver {
    fn kind(&self) -> HypervisorKind {
        HypervisorKind::Qemu
    }

    fn binary(&self) -> &Path {
        &self.options.binary
    }

    /// None: microvm's virtio-mmio devices are found through the command line QEMU
    /// builds itself.
    fn kernel_args(&self) -> &'static [&'static str] {
        &[]
    }

    fn vm_files(&self, vm_dir: &Path, _uid: &str) -> VmmFiles {
        VmmFiles {
            log: output_log_path(vm_dir),
            pid_file: None,
            control_socket: qmp_socket_path(vm_dir),
        }
    }

    /// With `-no-reboot` QEMU exits when the guest powers off or resets; the guest
    /// kernel's halt and panic lines tell that apart from a crash.
    fn console_shows_halt(&self, console: &str) -> bool {
        shows_linux_halt(console)
    }

    /// Runs `--version`, then `-help` to check that this QEMU has the options the
    /// driver relies on (`-sandbox`, `-add-fd`).
    fn check_binary(&self) -> Result<String, String> {
        let path = find_executable(&self.options.binary)
            .ok_or_else(|| format!("{} not found", self.options.binary.display()))?;
        let version = run_bounded(&path, &["--version"], VERSION_TIMEOUT)
            .map_err(|reason| format!("{}: {reason}", path.display()))?;
        let help = run_bounded(&path, &["-help"], VERSION_TIMEOUT)
            .map_err(|reason| format!("{} -help: {reason}", path.display()))?;
        check_help_text(&help).map_err(|reason| format!("{}: {reason}", path.display()))?;
        Ok(crate::host::which::first_line(&version))
    }

    /// Nothing: without KVM for stock guests QEMU runs them under TCG.
    fn host_requirement(&self, _kvm: &KvmStatus) -> Result<(), String> {
        Ok(())
    }

    /// 1: QEMU runs everywhere, but Firecracker is preferred where it can run.
    fn auto_rank(&self) -> u8 {
        1
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<VmmProcess, DriverError> {
        let started = Instant::now();
        let result = self.launch_inner(spec).await;
        match &result {
            Ok(vmm) => {
                tracing::info!(vm = %spec.name, pid = vmm.pid, elapsed_ms = started.elapsed().as_millis(), "QEMU guest running")
            }
            Err(e) => tracing::warn!(vm = %spec.name, error = %e, "QEMU launch failed"),
        }
        result
    }

    async fn probe(&self, process: &VmmProcess, uid: &str) -> Liveness {
        self.probe_inner(process, uid).await
    }

    async fn shutdown(
        &self,
        process: &VmmProcess,
        uid: &str,
        grace: Duration,
    ) -> Result<(), DriverError> {
        self.shutdown_inner(process, uid, grace).await
    }
}

/// Finds the binary: a path must exist and be executable; a bare name is looked up in
/// `PATH`.
pub fn resolve_binary(binary: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if binary.components().count() > 1 || binary.is_absolute() {
        return if executable(binary) {
            Ok(binary.to_path_buf())
        } else {
            Err("not an executable file".to_owned())
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|candidate| executable(candidate))
        .ok_or_else(|| "not found in PATH".to_owned())
}

/// Why a launch could not be prepared (see [`prepare_vm_dir`]).
enum PrepareError {
    /// The binary is missing or not executable.
    Binary(String),
    /// The VM directory is not ready for a new QEMU.
    VmDir(String),
}

/// Readies the VM directory for a new QEMU (blocking): it exists, the QMP socket path
/// fits a Unix socket address, no QEMU still serves that socket, and a stale socket (or
/// the pid file earlier versions had QEMU write) is removed.
fn prepare_vm_dir(vm_dir: &Path) -> Result<(), String> {
    if !vm_dir.is_dir() {
        return Err(format!("vm directory {} does not exist", vm_dir.display()));
    }
    let socket = qmp_socket_path(vm_dir);
    // sun_path holds 108 bytes including the terminating NUL.
    if socket.as_os_str().len() >= 108 {
        return Err(format!(
            "QMP socket path {} is longer than 107 bytes",
            socket.display()
        ));
    }
    // A QEMU still serving this VM's socket (say, one the store lost track of) must not
    // get a twin writing to the same disk.
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        return Err(format!(
            "a QEMU already serves {}; refusing to start a second one",
            socket.display()
        ));
    }
    for stale in [socket, vm_dir.join(LEGACY_PID_FILE)] {
        match std::fs::remove_file(&stale) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("remove stale {}: {e}", stale.display())),
        }
    }
    Ok(())
}

/// [`log_tail`] on the blocking pool.
async fn log_tail_async(path: &Path) -> String {
    let owned = path.to_path_buf();
    off_worker(move || log_tail(&owned))
        .await
        .unwrap_or_else(|e| format!("{}: {e}", path.display()))
}

/// The last lines of QEMU's output log, for error messages. Blocking.
fn log_tail(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
            if tail.is_empty() {
                format!("{} is empty", path.display())
            } else {
                format!("{}: {tail}", path.display())
            }
        }
        Err(e) => format!("{}: {e}", path.display()),
    }
}

/// Removes the QMP socket of a QEMU that is gone (blocking), only when nobody listens on
/// it: a live QEMU's socket (say, of a newer launch than the record we were given) is
/// never touched. (The daemon binds the socket, so QEMU cannot remove it itself.)
fn remove_leftovers(socket: &Path) {
    if let Err(e) = std::os::unix::net::UnixStream::connect(socket) {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            if let Err(e) = std::fs::remove_file(socket) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::debug!(path = %socket.display(), error = %e, "could not remove QEMU leftover");
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec() -> LaunchSpec {
        LaunchSpec {
            uid: "6f1d".to_owned(),
            name: "web".to_owned(),
            vcpus: 2,
            memory_mib: 512,
            kernel: "/img/vmlinuz".into(),
            initrd: Some("/img/initrd.img".into()),
            cmdline: "console=ttyS0 root=/dev/vda rw".to_owned(),
            root_disk: "/state/vms/6f1d/root,disk.ext4".into(),
            tap: Some("bgt6f1d".to_owned()),
            mac: "02:00:00:00:00:01".to_owned(),
            vm_dir: "/state/vms/6f1d".into(),
            console_log: "/state/vms/6f1d/console.log".into(),
            confinement: crate::testutil::test_confinement(),
        }
    }

    fn fds() -> QemuFds {
        QemuFds {
            kernel: 10,
            initrd: Some(11),
            disk: 12,
            disk_read_only: 13,
            console: 14,
            tap: Some(15),
            qmp: 16,
        }
    }

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_str().unwrap().to_owned())
            .collect()
    }

    fn value_after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn builds_tcg_argv() {
        let mut options = QemuOptions::new("qemu-system-x86_64", ResolvedAccel::Tcg);
        options.tsc_khz = Some(2_596_102);
        let args = strings(&qemu_argv(&spec(), &options, &fds()));
        assert_eq!(value_after(&args, "-name"), ["banger-6f1d"]);
        assert_eq!(value_after(&args, "-M"), ["microvm,x-option-roms=off"]);
        assert_eq!(value_after(&args, "-accel"), ["tcg,tb-size=256"]);
        assert_eq!(value_after(&args, "-cpu"), ["max"]);
        assert_eq!(value_after(&args, "-smp"), ["2"]);
        assert_eq!(value_after(&args, "-m"), ["512M"]);
        for flag in ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"] {
            assert!(args.iter().any(|a| a == flag), "{flag} missing");
        }
        assert_eq!(
            value_after(&args, "-sandbox"),
            ["on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"]
        );
        // Files come as inherited descriptors; QEMU never opens a path of the state dir.
        assert_eq!(value_after(&args, "-kernel"), ["/proc/self/fd/10"]);
        assert_eq!(value_after(&args, "-initrd"), ["/proc/self/fd/11"]);
        assert_eq!(
            value_after(&args, "-append"),
            ["console=ttyS0 root=/dev/vda rw tsc_early_khz=2596102"]
        );
        // The comma inside the disk path is doubled for QEMU's option parser.
        assert_eq!(
            value_after(&args, "-add-fd"),
            [
                "fd=12,set=1,opaque=/state/vms/6f1d/root,,disk.ext4",
                "fd=13,set=1,opaque=/state/vms/6f1d/root,,disk.ext4",
                "fd=14,set=2,opaque=/state/vms/6f1d/console.log",
            ]
        );
        assert_eq!(
            value_after(&args, "-drive"),
            ["id=root,file=/dev/fdset/1,format=raw,if=none,cache=writeback"]
        );
        assert_eq!(
            value_after(&args, "-device"),
            [
                "virtio-blk-device,drive=root",
                "virtio-net-device,netdev=net0,mac=02:00:00:00:00:01"
            ]
        );
        assert_eq!(value_after(&args, "-netdev"), ["tap,id=net0,fd=15"]);
        assert_eq!(
            value_after(&args, "-chardev"),
            [
                "file,id=console,path=/dev/fdset/2,append=on",
                "socket,id=qmp,fd=16,server=on,wait=off"
            ]
        );
        assert_eq!(value_after(&args, "-serial"), ["chardev:console"]);
        assert_eq!(value_after(&args, "-mon"), ["chardev=qmp,mode=control"]);
        for dropped in ["-runas", "-run-with", "-pidfile", "-daemonize"] {
            assert!(!args.iter().any(|a| a == dropped), "{dropped} present");
        }
        // The state directory stays on the command line (garbage collection's rule).
        assert!(crate::host::garbage::mentions_dir(
            &qemu_argv(&spec(), &options, &fds()),
            Path::new("/state")
        ));
    }

    #[test]
    fn builds_kvm_argv_without_network() {
        let mut s = spec();
        s.tap = None;
        s.initrd = None;
        s.vcpus = 0;
        let options = QemuOptions {
            tsc_khz: Some(1),
            ..QemuOptions::new("qemu", ResolvedAccel::Kvm)
        };
        let no_net = QemuFds {
            tap: None,
            initrd: None,
            ..fds()
        };
        let args = strings(&qemu_argv(&s, &options, &no_net));
        assert_eq!(value_after(&args, "-accel"), ["kvm"]);
        assert_eq!(value_after(&args, "-cpu"), ["host"]);
        assert_eq!(value_after(&args, "-smp"), ["1"], "at least one vCPU");
        assert!(!args.iter().any(|a| a == "-netdev" || a == "-initrd"));
        assert_eq!(
            value_after(&args, "-device"),
            ["virtio-blk-device,drive=root"]
        );
        // No TSC hint under KVM.
        assert_eq!(
            value_after(&args, "-append"),
            ["console=ttyS0 root=/dev/vda rw"]
        );
    }

    #[test]
    fn keeps_an_explicit_tsc_hint() {
        let mut s = spec();
        s.cmdline = "console=ttyS0 tsc_early_khz=1000000".to_owned();
        let options = QemuOptions {
            tsc_khz: Some(2_000_000),
            ..QemuOptions::new("qemu", ResolvedAccel::Tcg)
        };
        assert_eq!(
            kernel_cmdline(&s, &options),
            "console=ttyS0 tsc_early_khz=1000000"
        );
        s.cmdline = String::new();
        assert_eq!(kernel_cmdline(&s, &options), "tsc_early_khz=2000000");
        let no_hint = QemuOptions::new("qemu", ResolvedAccel::Tcg);
        assert_eq!(kernel_cmdline(&s, &no_hint), "");
    }

    #[test]
    fn cgroup_limits_count_the_translation_cache_under_tcg() {
        let tcg = QemuDriver::new(QemuOptions::new("qemu", ResolvedAccel::Tcg));
        let kvm = QemuDriver::new(QemuOptions::new("qemu", ResolvedAccel::Kvm));
        let overhead = crate::host::cgroup::MEMORY_OVERHEAD_MIB;
        assert_eq!(
            tcg.cgroup_limits(&spec()).memory_bytes,
            (512 + overhead + TCG_TB_SIZE_MIB) << 20
        );
        assert_eq!(
            kvm.cgroup_limits(&spec()).memory_bytes,
            (512 + overhead) << 20
        );
        assert_eq!(
            tcg.cgroup_limits(&spec()).pids,
            crate::host::cgroup::PIDS_BASE + 2
        );
    }

    #[test]
    fn requires_sandbox_and_add_fd_in_help() {
        let help = "-add-fd fd=fd,set=set[,opaque=opaque]\n-sandbox on[,obsolete=allow|deny]\n";
        assert!(check_help_text(help).is_ok());
        let without = "-add-fd fd=fd,set=set\n-runas user     change to user id\n";
        let err = check_help_text(without).unwrap_err();
        assert!(
            err.contains("-sandbox") && !err.contains("-add-fd"),
            "{err}"
        );
        // A mention inside another option's text does not count.
        assert!(check_help_text("-foo see -sandbox and -add-fd\n").is_err());
    }

    #[test]
    fn escapes_commas() {
        assert_eq!(
            escape_option_value(OsStr::new("a,b,,c")),
            OsString::from("a,,b,,,,c")
        );
        assert_eq!(
            escape_option_value(OsStr::new("plain")),
            OsString::from("plain")
        );
    }

    #[test]
    fn maps_status_to_liveness() {
        assert_eq!(liveness_of_status("running"), Liveness::Running);
        assert_eq!(liveness_of_status("shutdown"), Liveness::GuestHalted);
        assert_eq!(liveness_of_status("guest-panicked"), Liveness::GuestHalted);
        assert!(matches!(
            liveness_of_status("paused"),
            Liveness::Unresponsive { .. }
        ));
    }

    #[test]
    fn resolves_binaries() {
        assert!(resolve_binary(Path::new("sh")).unwrap().is_absolute());
        assert_eq!(
            resolve_binary(Path::new("no-such-qemu-binary")).unwrap_err(),
            "not found in PATH"
        );
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("qemu");
        std::fs::write(&plain, b"").unwrap();
        assert_eq!(
            resolve_binary(&plain).unwrap_err(),
            "not an executable file"
        );
        assert_eq!(
            resolve_binary(&dir.path().join("missing")).unwrap_err(),
            "not an executable file"
        );
    }

    #[test]
    fn measures_a_plausible_tsc() {
        if let Some(khz) = measure_tsc_khz() {
            // Between 100 MHz and 10 GHz.
            assert!((100_000..10_000_000).contains(&khz), "{khz} kHz");
        }
    }
}
