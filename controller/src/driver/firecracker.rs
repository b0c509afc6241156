//! Firecracker driver: one `firecracker` process per VM, configured over its HTTP API.
//!
//! Launch: spawn `firecracker --api-sock <vm_dir>/firecracker.sock --id banger-<uid>`
//! detached (stdout and stderr appended to the VM's console log: Firecracker writes the
//! guest's serial console to its stdout), wait (bounded) for the API socket, then send
//! the calls of [`boot::boot_sequence`] in order — logger, machine config, boot source,
//! root drive, network interface, `InstanceStart`. A refusal stops the launch, kills
//! the half-configured process and surfaces Firecracker's `fault_message`.
//!
//! Probe: identity (pid + start time + the `banger-<uid>` marker on the command line),
//! then `GET /` (the instance's `state` and `id`), then the console log since this
//! launch: a guest that powered off or panicked while Firecracker stays alive (what
//! Firecracker does on x86 without a reset) is reported as [`Liveness::GuestHalted`].
//!
//! Shutdown: `SendCtrlAltDel` (Firecracker exits when the guest resets), a bounded wait,
//! then SIGTERM and SIGKILL. Succeeds if the process is already gone.
//!
//! Detection ([`detect_version`], [`kvm_requirement`]) tells whether this host can run
//! Firecracker: what `hypervisor: auto` ([`crate::driver::Hypervisors`]) and
//! `banger doctor` ask.

pub mod api;
pub mod boot;
pub mod jail;

use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use self::api::{ActionType, ApiCall, ApiClient, ApiError, InstanceState};
use self::jail::{Jail, Jailer};
use super::{
    off_worker, shows_linux_halt, DriverError, Hypervisor, HypervisorKind, LaunchSpec, Liveness,
    VmmFiles, VmmProcess,
};
use crate::host::cgroup::CgroupLimits;
use crate::host::kvm::KvmStatus;
use crate::host::process::{
    spawn_detached, terminate_tracked, uid_marker, DetachedCommand, IdentityCheck, ProcessIdentity,
    TrackedProcess,
};

/// The binary used when none is configured (looked up on `PATH`).
pub const DEFAULT_BINARY: &str = "firecracker";
/// File name of the API socket inside the VM's directory.
pub const API_SOCKET_FILE: &str = "firecracker.sock";
/// File name of Firecracker's own log inside the VM's directory.
pub const LOG_FILE: &str = "firecracker.log";

/// File name of the launch record inside the VM's directory (see [`LaunchRecord`]).
pub const LAUNCH_RECORD_FILE: &str = "firecracker.launch.json";

/// Kernel arguments every Firecracker guest needs: Firecracker has no PCI bus.
pub const KERNEL_ARGS: &[&str] = &["pci=off"];

/// How long `firecracker --version` may take when the host is probed.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `calls` in order, stopping at the first refusal.
pub async fn configure_and_start(client: &ApiClient, calls: &[ApiCall]) -> Result<(), ApiError> {
    for call in calls {
        client.send(call).await?;
    }
    Ok(())
}

/// Why Firecracker could not be detected.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// Not found on `PATH`, or the path does not exist / is not executable.
    #[error("{binary}: not found or not executable")]
    NotFound {
        /// Binary as configured.
        binary: PathBuf,
    },
    /// `--version` could not be run or did not finish in time.
    #[error("{binary} --version: {reason}")]
    Run {
        /// Binary as resolved.
        binary: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// `--version` printed something that is not Firecracker's version line.
    #[error("{binary} --version printed {output:?}, not `Firecracker vX.Y.Z`")]
    NotFirecracker {
        /// Binary as resolved.
        binary: PathBuf,
        /// First line of the output.
        output: String,
    },
}

/// Resolves `binary` the way `exec` does: a name without `/` is looked up on `PATH`;
/// the result must be an executable regular file.
pub fn resolve_binary(binary: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |path: &Path| {
        std::fs::metadata(path)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if binary.as_os_str().is_empty() {
        return None;
    }
    if binary.components().count() > 1 || binary.is_absolute() {
        return executable(binary).then(|| binary.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|candidate| executable(candidate))
}

/// Extracts `X.Y.Z` from Firecracker's `--version` output (`Firecracker vX.Y.Z`).
pub fn parse_version(output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next()? != "Firecracker" {
            return None;
        }
        let version = words.next()?.strip_prefix('v')?;
        version
            .chars()
            .next()
            .filter(char::is_ascii_digit)
            .map(|_| version.to_owned())
    })
}

/// Runs `binary --version` (bounded by `timeout`) and returns the version, e.g.
/// `1.9.0`.
pub fn detect_version(binary: &Path, timeout: Duration) -> Result<String, DetectError> {
    let resolved = resolve_binary(binary).ok_or_else(|| DetectError::NotFound {
        binary: binary.to_path_buf(),
    })?;
    let run_error = |reason: String| DetectError::Run {
        binary: resolved.clone(),
        reason,
    };
    let mut child = Command::new(&resolved)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| run_error(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(run_error(format!("no answer within {timeout:?}")));
            }
            Err(e) => return Err(run_error(e.to_string())),
        }
    };
    let mut output = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        // The version line is short; cap what we read from an unexpected binary.
        let _ = stdout.by_ref().take(64 * 1024).read_to_string(&mut output);
    }
    if !status.success() {
        return Err(run_error(format!("exited with {status}")));
    }
    parse_version(&output).ok_or_else(|| DetectError::NotFirecracker {
        binary: resolved.clone(),
        output: output.lines().next().unwrap_or("").to_owned(),
    })
}

/// Why this host's KVM cannot run Firecracker's guests: Firecracker has no emulation,
/// it needs KVM that runs stock guest kernels.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("firecracker needs KVM for stock guests: {0}")]
pub struct KvmUnsuitable(pub KvmStatus);

/// What Firecracker needs of the host's KVM (its [`Hypervisor::host_requirement`]):
/// that it runs stock guest kernels.
pub fn kvm_requirement(kvm: &KvmStatus) -> Result<(), KvmUnsuitable> {
    if kvm.stock_guests_can_run() {
        Ok(())
    } else {
        Err(KvmUnsuitable(kvm.clone()))
    }
}

/// How long each bounded step of the driver may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirecrackerTimeouts {
    /// From spawn until the API socket accepts connections.
    pub api_socket: Duration,
    /// One API request (connect, send, answer).
    pub request: Duration,
    /// After SIGTERM, before SIGKILL.
    pub term_grace: Duration,
    /// After SIGKILL, before giving up.
    pub kill_grace: Duration,
}

impl Default for FirecrackerTimeouts {
    fn default() -> Self {
        Self {
            api_socket: Duration::from_secs(5),
            request: Duration::from_secs(5),
            term_grace: Duration::from_secs(5),
            kill_grace: Duration::from_secs(5),
        }
    }
}

/// What the driver notes in the VM's directory at launch, for later probes: where the
/// console log is and how long it was before this launch (the log is appended to
/// across launches, so only the part after `console_offset` belongs to this guest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchRecord {
    /// The VM's console log.
    pub console_log: PathBuf,
    /// Its length in bytes when this launch began.
    pub console_offset: u64,
}

/// The Firecracker adapter of [`Hypervisor`].
#[derive(Debug, Clone)]
pub struct FirecrackerDriver {
    binary: PathBuf,
    timeouts: FirecrackerTimeouts,
    /// Run through this jailer ([`jail`]); `None` runs Firecracker directly.
    jailer: Option<Jailer>,
    /// `banger daemon --firecracker-skip-kvm-check`: launch even where the KVM probe says
    /// stock guests cannot run (a `/dev/kvm` is still required).
    skip_kvm_check: bool,
}

impl Default for FirecrackerDriver {
    fn default() -> Self {
        Self::new(DEFAULT_BINARY)
    }
}

/// The value of Firecracker's `--id` for a VM: the uid marker (`banger-<uid>`), which
/// also identifies the process on its command line. Firecracker accepts 1 to 64
/// ASCII letters, digits and `-`.
pub fn instance_id(uid: &str) -> Result<String, String> {
    let id = uid_marker(uid);
    let valid = id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if valid {
        Ok(id)
    } else {
        Err(format!(
            "instance id {id:?} is not accepted by Firecracker (1-64 ASCII letters, digits, '-')"
        ))
    }
}

/// Longest path a Unix socket address holds (`sun_path` is 108 bytes with the NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// The API socket of a VM directory, if its path fits a Unix socket address.
pub fn api_socket_path(vm_dir: &Path) -> Result<PathBuf, String> {
    let socket = vm_dir.join(API_SOCKET_FILE);
    let len = socket.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(format!(
            "API socket path {} is {len} bytes; a Unix socket path holds at most {MAX_SOCKET_PATH}",
            socket.display()
        ));
    }
    Ok(socket)
}

/// The command line of one VM's Firecracker (after the program name).
pub fn command_args(api_socket: &Path, instance_id: &str) -> Vec<OsString> {
    vec![
        OsString::from("--api-sock"),
        api_socket.as_os_str().to_owned(),
        OsString::from("--id"),
        OsString::from(instance_id),
    ]
}

impl FirecrackerDriver {
    /// A driver running `binary` (a path, or a name looked up on `PATH`).
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            timeouts: FirecrackerTimeouts::default(),
            jailer: None,
            skip_kvm_check: false,
        }
    }

    /// The same driver running Firecracker through `jailer`.
    pub fn with_jailer(mut self, jailer: Jailer) -> Self {
        self.jailer = Some(jailer);
        self
    }

    /// The same driver, launching even where the KVM probe says stock guests cannot run
    /// (`banger daemon --firecracker-skip-kvm-check`).
    pub fn skipping_kvm_check(mut self, skip: bool) -> Self {
        self.skip_kvm_check = skip;
        self
    }

    /// The jailer it runs Firecracker through, if any.
    pub fn jailer(&self) -> Option<&Jailer> {
        self.jailer.as_ref()
    }

    /// The same driver with other timeouts.
    pub fn with_timeouts(mut self, timeouts: FirecrackerTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The configured binary.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    fn client(&self, socket: &Path) -> ApiClient {
        ApiClient::new(socket, self.timeouts.request)
    }

    /// Waits (bounded) until the API socket accepts a connection, failing early when
    /// the process exits.
    async fn wait_for_socket(&self, process: &TrackedProcess, socket: &Path) -> Result<(), String> {
        let deadline = Instant::now() + self.timeouts.api_socket;
        loop {
            if process.has_exited() {
                return Err("firecracker exited before its API socket appeared".to_owned());
            }
            if tokio::net::UnixStream::connect(socket).await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "API socket {} did not accept connections within {:?}",
                    socket.display(),
                    self.timeouts.api_socket
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Kills a process whose launch failed; the launch error stays the one reported.
    async fn kill_failed_launch(&self, process: &TrackedProcess, vm: &str) {
        let short = Duration::from_millis(500);
        if let Err(e) = terminate_tracked(process, short, self.timeouts.kill_grace).await {
            tracing::warn!(vm, error = %e, "could not stop firecracker after a failed launch");
        }
    }

    /// Waits up to `grace` for the process to exit; returns early (false) when the
    /// console shows the guest halted, since then it will not exit by itself.
    async fn wait_exit_or_halt(
        &self,
        process: &TrackedProcess,
        vm_dir: Option<&Path>,
        grace: Duration,
    ) -> Result<bool, String> {
        let deadline = Instant::now() + grace;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let step = remaining.min(Duration::from_millis(100));
            if process.wait_exit(step).await.map_err(|e| e.to_string())? {
                return Ok(true);
            }
            if remaining.is_zero() {
                return Ok(false);
            }
            if let Some(dir) = vm_dir {
                if guest_halted_async(dir).await {
                    return Ok(false);
                }
            }
        }
    }
}

fn operation_error(vm: &str, operation: &str, reason: impl Into<String>) -> DriverError {
    DriverError::Operation {
        vm: vm.to_owned(),
        operation: operation.to_owned(),
        reason: reason.into(),
    }
}

/// Removes a socket left by an earlier Firecracker (it refuses to bind over one). A
/// socket something still listens on, or any other kind of file at that path, is an
/// error: banger does not delete what is in use or what it did not make.
fn remove_stale_socket(socket: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(socket) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                return Err(format!(
                    "{} is served by a live process; refusing to replace it",
                    socket.display()
                ));
            }
            std::fs::remove_file(socket)
                .map_err(|e| format!("remove stale API socket {}: {e}", socket.display()))
        }
        Ok(_) => Err(format!(
            "{} exists and is not a socket; refusing to replace it",
            socket.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("inspect {}: {e}", socket.display())),
    }
}

fn write_launch_record(vm_dir: &Path, record: &LaunchRecord) -> Result<(), String> {
    let path = vm_dir.join(LAUNCH_RECORD_FILE);
    let text = serde_json::to_vec(record).map_err(|e| format!("encode launch record: {e}"))?;
    std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))
}

fn read_launch_record(vm_dir: &Path) -> Option<LaunchRecord> {
    let text = std::fs::read(vm_dir.join(LAUNCH_RECORD_FILE)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// At most this much of the console's end is read by a probe.
const CONSOLE_SCAN_BYTES: u64 = 64 * 1024;

/// The console output of the current launch (its last [`CONSOLE_SCAN_BYTES`] at most).
fn console_since_launch(vm_dir: &Path) -> Option<String> {
    let record = read_launch_record(vm_dir)?;
    let mut file = std::fs::File::open(&record.console_log).ok()?;
    let len = file.metadata().ok()?.len();
    let start = record
        .console_offset
        .max(len.saturating_sub(CONSOLE_SCAN_BYTES));
    if start >= len {
        return Some(String::new());
    }
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut bytes = Vec::new();
    file.take(len - start).read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Why a launch could not be prepared (see [`prepare_direct`], [`prepare_jailed`]).
enum PrepareError {
    /// The binary is missing or not executable.
    Binary,
    /// The VM directory or the jail is not ready for a new Firecracker.
    VmDir(String),
}

/// Notes in `record_dir` where the console log ends now (blocking).
fn record_launch(record_dir: &Path, console_log: PathBuf) -> Result<(), String> {
    let console_offset = std::fs::metadata(&console_log).map_or(0, |m| m.len());
    write_launch_record(
        record_dir,
        &LaunchRecord {
            console_log,
            console_offset,
        },
    )
}

/// Where the launch record of the instance serving `socket` is: the VM directory for a
/// direct launch, the jail's instance directory (outside the chroot) for a jailed one.
fn record_dir(socket: &Path) -> Option<PathBuf> {
    match Jail::of_api_socket(socket) {
        Some(jail) => Some(jail.instance_dir),
        None => socket.parent().map(Path::to_path_buf),
    }
}

/// How one launch runs: what is spawned, where its API socket is, the calls that
/// configure it, and where its launch record lives.
struct LaunchPlan {
    program: PathBuf,
    args: Vec<OsString>,
    socket: PathBuf,
    calls: Vec<ApiCall>,
    cgroup_join_files: Vec<PathBuf>,
    record_dir: PathBuf,
}

/// Readies a direct launch (blocking): a stale API socket is removed, the log file
/// exists, the VM's cgroup is made, the launch record is written.
fn prepare_direct(spec: &LaunchSpec, binary: PathBuf, id: &str) -> Result<LaunchPlan, String> {
    let socket = api_socket_path(&spec.vm_dir)?;
    let log = spec.vm_dir.join(LOG_FILE);
    let calls = boot::boot_sequence(spec, &log).map_err(|e| e.to_string())?;
    remove_stale_socket(&socket)?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| format!("create {}: {e}", log.display()))?;
    let cgroup_join_files = match &spec.confinement.cgroup {
        Some(cgroup) => {
            cgroup
                .ensure(&CgroupLimits::for_vm(spec.memory_mib, spec.vcpus, 0))
                .map_err(|e| e.to_string())?;
            cgroup.join_files()
        }
        None => Vec::new(),
    };
    record_launch(&spec.vm_dir, spec.console_log.clone())?;
    Ok(LaunchPlan {
        program: binary,
        args: command_args(&socket, id),
        socket,
        calls,
        cgroup_join_files,
        record_dir: spec.vm_dir.clone(),
    })
}

/// Readies a jailed launch (blocking): the jail ([`jail::prepare_jail`]) once no
/// Firecracker serves its socket, the VM's cgroup (the jailer writes the limits again
/// and joins it), the launch record in the jail's instance directory.
fn prepare_jailed(
    spec: &LaunchSpec,
    binary: PathBuf,
    id: &str,
    jailer: &Jailer,
) -> Result<LaunchPlan, String> {
    let jail = Jail::new(&jailer.chroot_base, &binary, id)?;
    let socket = jail.api_socket();
    let len = socket.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(format!(
            "the jailed API socket {} is {len} bytes; a Unix socket path holds at most {MAX_SOCKET_PATH} (use a shorter state directory)",
            socket.display()
        ));
    }
    remove_stale_socket(&socket)?;
    let user = &spec.confinement.user;
    let limits = CgroupLimits::for_vm(spec.memory_mib, spec.vcpus, 0);
    let cgroup_args = match &spec.confinement.cgroup {
        Some(cgroup) => {
            cgroup.ensure(&limits).map_err(|e| e.to_string())?;
            cgroup.jailer_args(&limits)
        }
        None => Vec::new(),
    };
    jail::prepare_jail(&jail, spec, user)?;
    record_launch(&jail.instance_dir, spec.console_log.clone())?;
    let calls = boot::boot_sequence(&jail::jailed_spec(spec), &jail::jailed_log())
        .map_err(|e| e.to_string())?;
    Ok(LaunchPlan {
        program: jailer.binary.clone(),
        args: jail::jailer_argv(id, &binary, user, &jailer.chroot_base, &cgroup_args),
        socket,
        calls,
        cgroup_join_files: Vec::new(),
        record_dir: jail.instance_dir,
    })
}

/// [`guest_halted`] on the blocking pool.
async fn guest_halted_async(vm_dir: &Path) -> bool {
    let vm_dir = vm_dir.to_path_buf();
    off_worker(move || guest_halted(&vm_dir))
        .await
        .unwrap_or(false)
}

/// [`console_tail`] on the blocking pool.
async fn console_tail_async(vm_dir: &Path) -> String {
    let vm_dir = vm_dir.to_path_buf();
    off_worker(move || console_tail(&vm_dir))
        .await
        .unwrap_or_else(|e| format!("console log unreadable: {e}"))
}

/// Whether the console of the current launch shows the guest halted or panicked.
/// Blocking.
fn guest_halted(vm_dir: &Path) -> bool {
    console_since_launch(vm_dir).is_some_and(|text| shows_linux_halt(&text))
}

/// The last lines of this launch's console, for error messages. Blocking.
fn console_tail(vm_dir: &Path) -> String {
    let text = console_since_launch(vm_dir).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
    if tail.is_empty() {
        "console log is empty".to_owned()
    } else {
        format!("console: {tail}")
    }
}

impl Hypervisor for FirecrackerDriver {
    fn kind(&self) -> HypervisorKind {
        HypervisorKind::Firecracker
    }

    fn binary(&self) -> &Path {
        &self.binary
    }

    fn kernel_args(&self) -> &'static [&'static str] {
        KERNEL_ARGS
    }

    /// In the VM directory, or in the VM's jail when Firecracker runs through a jailer
    /// (the jail is named after the binary found on `PATH`, or as configured).
    fn vm_files(&self, vm_dir: &Path, uid: &str) -> VmmFiles {
        let jail = self.jailer.as_ref().and_then(|jailer| {
            let exec = resolve_binary(&self.binary).unwrap_or_else(|| self.binary.clone());
            Jail::new(&jailer.chroot_base, &exec, &instance_id(uid).ok()?).ok()
        });
        match jail {
            Some(jail) => VmmFiles {
                log: jail.log(),
                pid_file: None,
                control_socket: jail.api_socket(),
            },
            None => VmmFiles {
                log: vm_dir.join(LOG_FILE),
                pid_file: None,
                control_socket: vm_dir.join(API_SOCKET_FILE),
            },
        }
    }

    /// On x86 Firecracker does not exit when the guest powers off; the guest kernel's
    /// halt and panic lines on the console are how a halt shows (see [`Hypervisor::probe`]
    /// here, which reports them as [`Liveness::GuestHalted`]).
    fn console_shows_halt(&self, console: &str) -> bool {
        shows_linux_halt(console)
    }

    fn check_binary(&self) -> Result<String, String> {
        detect_version(&self.binary, VERSION_TIMEOUT).map_err(|e| e.to_string())
    }

    /// KVM that runs stock guests; with `--firecracker-skip-kvm-check`, any `/dev/kvm`
    /// that opens (the probe's verdict on stock guests is ignored).
    fn host_requirement(&self, kvm: &KvmStatus) -> Result<(), String> {
        if self.skip_kvm_check {
            return if kvm.device_usable() {
                Ok(())
            } else {
                Err(format!(
                    "firecracker needs /dev/kvm, even with --firecracker-skip-kvm-check: {kvm}"
                ))
            };
        }
        kvm_requirement(kvm).map_err(|e| e.to_string())
    }

    /// 2: where it can run, Firecracker is preferred (a smaller VMM, faster boots).
    fn auto_rank(&self) -> u8 {
        2
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<VmmProcess, DriverError> {
        let vm = spec.name.as_str();
        let id = instance_id(&spec.uid).map_err(|e| operation_error(vm, "spawn", e))?;
        let prepared = {
            let (binary, owned, jailer, id) = (
                self.binary.clone(),
                spec.clone(),
                self.jailer.clone(),
                id.clone(),
            );
            off_worker(move || {
                let binary = resolve_binary(&binary).ok_or(PrepareError::Binary)?;
                match &jailer {
                    Some(jailer) => prepare_jailed(&owned, binary, &id, jailer),
                    None => prepare_direct(&owned, binary, &id),
                }
                .map_err(PrepareError::VmDir)
            })
            .await
            .map_err(|e| operation_error(vm, "spawn", e))?
        };
        let plan = prepared.map_err(|e| match e {
            PrepareError::Binary => DriverError::Binary {
                vm: vm.to_owned(),
                binary: self.binary.display().to_string(),
                reason: "not found on PATH or not executable".to_owned(),
            },
            PrepareError::VmDir(reason) => operation_error(vm, "spawn", reason),
        })?;
        let (socket, calls, record) = (plan.socket.clone(), plan.calls, plan.record_dir);

        // The jailer, or Firecracker, runs as root: the jailer drops to the VMM user
        // itself; a direct Firecracker has only its own seccomp filters.
        let identity = spawn_detached(
            &DetachedCommand {
                program: plan.program,
                args: plan.args,
                output_log: spec.console_log.clone(),
                cwd: spec.vm_dir.clone(),
                marker: id.clone(),
                credentials: None,
                cgroup_join_files: plan.cgroup_join_files,
            },
            &[],
        )
        .map_err(|e| operation_error(vm, "spawn", e.to_string()))?;
        let process = VmmProcess {
            hypervisor: HypervisorKind::Firecracker.as_str().to_owned(),
            pid: identity.pid,
            start_time: identity.start_time,
            control_socket: socket.clone(),
        };
        let tracked = match identity.attach(&id) {
            Ok(Some(tracked)) => tracked,
            Ok(None) => {
                let tail = console_tail_async(&record).await;
                return Err(operation_error(
                    vm,
                    "spawn",
                    format!("firecracker exited right after spawn; {tail}"),
                ));
            }
            Err(e) => return Err(operation_error(vm, "spawn", e.to_string())),
        };

        if let Err(reason) = self.wait_for_socket(&tracked, &socket).await {
            self.kill_failed_launch(&tracked, vm).await;
            return Err(operation_error(
                vm,
                "spawn",
                format!("{reason}; {}", console_tail_async(&record).await),
            ));
        }
        let client = self.client(&socket);
        if let Err(e) = configure_and_start(&client, &calls).await {
            self.kill_failed_launch(&tracked, vm).await;
            let step = match &e {
                ApiError::Fault { path, .. }
                | ApiError::Http { path, .. }
                | ApiError::Timeout { path, .. }
                    if path == "/actions" =>
                {
                    "start"
                }
                _ => "configure",
            };
            return Err(operation_error(vm, step, e.to_string()));
        }
        tracing::info!(vm, pid = process.pid, "firecracker guest started");
        Ok(process)
    }

    async fn probe(&self, process: &VmmProcess, uid: &str) -> Liveness {
        let Ok(id) = instance_id(uid) else {
            return Liveness::Exited;
        };
        let identity = ProcessIdentity {
            pid: process.pid,
            start_time: process.start_time,
        };
        match identity.check_async(&id).await {
            Ok(IdentityCheck::Ours) => {}
            Ok(IdentityCheck::Exited | IdentityCheck::Reused { .. }) => return Liveness::Exited,
            Err(e) => {
                return Liveness::Unresponsive {
                    reason: format!("identity check: {e}"),
                }
            }
        }
        let info = match self.client(&process.control_socket).instance_info().await {
            Ok(info) => info,
            Err(e) => {
                return Liveness::Unresponsive {
                    reason: e.to_string(),
                }
            }
        };
        if info.id != id {
            return Liveness::Unresponsive {
                reason: format!(
                    "API socket {} answers for instance {:?}, not {id:?}",
                    process.control_socket.display(),
                    info.id
                ),
            };
        }
        match info.state {
            InstanceState::Running => {
                let halted = match record_dir(&process.control_socket) {
                    Some(dir) => guest_halted_async(&dir).await,
                    None => false,
                };
                if halted {
                    Liveness::GuestHalted
                } else {
                    Liveness::Running
                }
            }
            InstanceState::Paused => Liveness::Unresponsive {
                reason: "firecracker reports the guest Paused".to_owned(),
            },
            InstanceState::NotStarted => Liveness::Unresponsive {
                reason: "firecracker reports the guest Not started (launch did not finish)"
                    .to_owned(),
            },
        }
    }

    async fn shutdown(
        &self,
        process: &VmmProcess,
        uid: &str,
        grace: Duration,
    ) -> Result<(), DriverError> {
        let id = instance_id(uid).map_err(|e| operation_error(uid, "shutdown", e))?;
        let identity = ProcessIdentity {
            pid: process.pid,
            start_time: process.start_time,
        };
        let record = record_dir(&process.control_socket);
        let tracked = identity
            .attach(&id)
            .map_err(|e| operation_error(uid, "shutdown", e.to_string()))?;
        // Not our process (gone, or the pid was reused): nothing to stop. Its socket is
        // left alone too: it may belong to a newer launch; the next launch replaces a
        // stale one.
        let Some(tracked) = tracked else {
            return Ok(());
        };
        {
            let graceful = match self
                .client(&process.control_socket)
                .action(ActionType::SendCtrlAltDel)
                .await
            {
                Ok(()) => self
                    .wait_exit_or_halt(&tracked, record.as_deref(), grace)
                    .await
                    .map_err(|e| operation_error(uid, "shutdown", e))?,
                Err(e) => {
                    tracing::info!(vm = uid, error = %e, "SendCtrlAltDel failed; stopping with signals");
                    false
                }
            };
            if !graceful {
                terminate_tracked(&tracked, self.timeouts.term_grace, self.timeouts.kill_grace)
                    .await
                    .map_err(|e| operation_error(uid, "shutdown", e.to_string()))?;
            }
        }
        // Our process is gone. Firecracker leaves its socket behind (and a jailed one its
        // jail); remove them.
        let socket = process.control_socket.clone();
        off_worker(move || {
            remove_stale_socket(&socket)?;
            match Jail::of_api_socket(&socket) {
                Some(jail) => jail::remove_jail(&jail),
                None => Ok(()),
            }
        })
        .await
        .and_then(|removed| removed)
        .map_err(|e| operation_error(uid, "shutdown", e))?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_firecrackers_version_line() {
        assert_eq!(
            parse_version("Firecracker v1.9.0\n").as_deref(),
            Some("1.9.0")
        );
        assert_eq!(
            parse_version("\nFirecracker v1.10.1-dev\n\nmore\n").as_deref(),
            Some("1.10.1-dev")
        );
        assert_eq!(parse_version("QEMU emulator version 7.2.0"), None);
        assert_eq!(parse_version("Firecracker vx"), None);
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn instance_id_is_the_uid_marker_within_firecrackers_rules() {
        let uid = "7d1e0c52-1f0a-4c57-9a51-2b8f0e6f7a10";
        assert_eq!(instance_id(uid).unwrap(), format!("banger-{uid}"));
        assert!(instance_id("has space").is_err());
        assert!(instance_id("under_score").is_err());
        assert!(instance_id(&"a".repeat(58)).is_err(), "banger- + 58 > 64");
        assert!(instance_id(&"a".repeat(57)).is_ok());
    }

    #[test]
    fn api_socket_path_must_fit_a_unix_socket_address() {
        let fits = api_socket_path(Path::new("/var/lib/banger/vms/web")).unwrap();
        assert_eq!(fits, Path::new("/var/lib/banger/vms/web/firecracker.sock"));
        let deep = format!("/{}", "d".repeat(90));
        let err = api_socket_path(Path::new(&deep)).unwrap_err();
        assert!(err.contains("at most 107"), "{err}");
    }

    #[test]
    fn command_line_carries_socket_and_marker() {
        let args = command_args(Path::new("/vms/a/firecracker.sock"), "banger-x");
        assert_eq!(
            args,
            ["--api-sock", "/vms/a/firecracker.sock", "--id", "banger-x"]
                .map(OsString::from)
                .to_vec()
        );
    }

    #[test]
    fn only_this_launchs_console_counts_for_halt() {
        let dir = tempfile::tempdir().unwrap();
        let console = dir.path().join("console.log");
        std::fs::write(&console, "old boot\nreboot: Power down\n").unwrap();
        let offset = std::fs::metadata(&console).unwrap().len();
        assert!(
            !guest_halted(dir.path()),
            "no launch record: unknown, not halted"
        );
        write_launch_record(
            dir.path(),
            &LaunchRecord {
                console_log: console.clone(),
                console_offset: offset,
            },
        )
        .unwrap();
        assert!(!guest_halted(dir.path()));
        std::fs::write(&console, "old boot\nreboot: Power down\nnew boot\nlogin:\n").unwrap();
        assert!(!guest_halted(dir.path()));
        assert_eq!(console_tail(dir.path()), "console: new boot | login:");
        let mut text = std::fs::read_to_string(&console).unwrap();
        text.push_str("reboot: System halted\n");
        std::fs::write(&console, text).unwrap();
        assert!(guest_halted(dir.path()));
    }

    #[test]
    fn firecracker_is_unsuitable_without_kvm_for_stock_guests() {
        let missing = FirecrackerDriver::new("banger-no-such-binary").check_binary();
        assert!(missing.unwrap_err().contains("not found"));
        assert_eq!(kvm_requirement(&KvmStatus::Usable), Ok(()));
        assert_eq!(
            kvm_requirement(&KvmStatus::Missing),
            Err(KvmUnsuitable(KvmStatus::Missing))
        );
        // The version path with a real binary is tested with the test stand-in in
        // tests/firecracker_api.rs.
    }

    #[test]
    fn skipping_the_kvm_check_still_needs_a_kvm_device() {
        let strict = FirecrackerDriver::default();
        assert!(strict.host_requirement(&KvmStatus::ParavirtOnly).is_err());
        let skip = FirecrackerDriver::default().skipping_kvm_check(true);
        assert_eq!(skip.host_requirement(&KvmStatus::ParavirtOnly), Ok(()));
        assert_eq!(skip.host_requirement(&KvmStatus::Usable), Ok(()));
        let missing = skip.host_requirement(&KvmStatus::Missing).unwrap_err();
        assert!(missing.contains("needs /dev/kvm"), "{missing}");
    }

    #[test]
    fn jailed_files_are_in_the_jail() {
        let driver = FirecrackerDriver::new("/opt/fc/firecracker").with_jailer(Jailer {
            binary: "/opt/fc/jailer".into(),
            chroot_base: "/var/lib/banger/jail".into(),
        });
        let files = driver.vm_files(Path::new("/var/lib/banger/vms/ab"), "ab");
        let root = Path::new("/var/lib/banger/jail/firecracker/banger-ab/root");
        assert_eq!(files.control_socket, root.join("api.sock"));
        assert_eq!(files.log, root.join("firecracker.log"));
        // The launch record of a jailed instance is outside its chroot.
        assert_eq!(
            record_dir(&files.control_socket).unwrap(),
            Path::new("/var/lib/banger/jail/firecracker/banger-ab")
        );
        assert_eq!(
            record_dir(Path::new("/vms/ab/firecracker.sock")).unwrap(),
            Path::new("/vms/ab")
        );
    }

    #[test]
    fn halt_markers_are_recognised() {
        let driver = FirecrackerDriver::default();
        assert!(driver.console_shows_halt("[   3.2] reboot: Power down\n"));
        assert!(driver.console_shows_halt("Kernel panic - not syncing: VFS"));
        assert!(!driver.console_shows_halt("reboot: Restarting system\nlogin:"));
    }

    #[test]
    fn guests_get_pci_off_and_the_files_are_in_the_vm_dir() {
        let driver = FirecrackerDriver::default();
        assert_eq!(driver.kernel_args(), ["pci=off"]);
        let files = driver.vm_files(Path::new("/vms/a"), "ab");
        assert_eq!(files.log, Path::new("/vms/a/firecracker.log"));
        assert_eq!(files.pid_file, None);
        assert_eq!(files.control_socket, Path::new("/vms/a/firecracker.sock"));
    }

    #[test]
    fn resolve_binary_checks_path_and_executability() {
        assert!(resolve_binary(Path::new("sh")).is_some());
        assert!(resolve_binary(Path::new("/bin/sh")).is_some());
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("not-executable");
        std::fs::write(&plain, b"#!/bin/sh\n").unwrap();
        assert!(resolve_binary(&plain).is_none());
        assert!(resolve_binary(dir.path()).is_none());
        assert!(resolve_binary(Path::new("banger-no-such-binary")).is_none());
        assert!(resolve_binary(Path::new("")).is_none());
    }

    #[test]
    fn detection_rejects_missing_and_foreign_binaries() {
        let missing = detect_version(Path::new("banger-no-such-binary"), Duration::from_secs(5));
        assert!(
            matches!(missing, Err(DetectError::NotFound { .. })),
            "{missing:?}"
        );
        // `true --version` exits 0 and prints nothing: not Firecracker.
        let foreign = detect_version(Path::new("true"), Duration::from_secs(5));
        assert!(
            matches!(foreign, Err(DetectError::NotFirecracker { .. })),
            "{foreign:?}"
        );
        assert!(FirecrackerDriver::new("banger-no-such-binary")
            .check_binary()
            .is_err());
    }
}
