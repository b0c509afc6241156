//! Host checks behind `banger doctor`: one [`CheckResult`] per thing banger needs.
//!
//! Each check measures the real host (devices, binaries, netlink, the state directory,
//! the daemon's socket); the decisions are kept in small pure functions so they can be
//! tested on their own. [`format_report`] renders the `PASS`/`WARN`/`FAIL` lines and
//! [`has_failures`] decides the exit code (non-zero on any `FAIL`).
//!
//! The hypervisor checks go through the driver port ([`crate::driver`]): one check per
//! [`HypervisorKind`], asking its driver for its binary and what it needs of the host
//! ([`Hypervisor::host_requirement`]); this module names no hypervisor.
//!
//! Severity: what makes banger unable to run VMs at all is `FAIL` (no usable
//! hypervisor, no `/dev/net/tun`, no cgroup hierarchy with the memory and pids
//! controllers, an unusable VMM user name, no nft or e2fsprogs, an unreadable state
//! directory);
//! what only narrows its options is `WARN` (no KVM for stock guests means QEMU under TCG;
//! a hypervisor this host cannot run while another one works; a daemon not running
//! yet, or the VMM user it creates at start not made yet).
//!
//! The checks that block (device opens, `--version` runs, statvfs) run on a blocking
//! thread, never on an async worker.

use std::fmt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::driver::{choose_auto, Driver, DriverConfig, Hypervisor, HypervisorKind};
use crate::host::cgroup::{CgroupError, CgroupLayout};
use crate::host::kvm::{self, Accel, KvmPaths, KvmStatus};
use crate::host::net::bridge::probe_bridge;
use crate::host::net::{BridgeConfig, Netlink};
use crate::host::vmm_user::{self, VmmUser, VmmUserError, DEFAULT_VMM_USER};
use crate::host::which::{find_executable, first_line, run_bounded, run_bounded_output};
pub use crate::host::which::{probe_binary, BinaryProbe};

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CheckStatus {
    /// All good.
    Pass,
    /// Works, with a limitation the user should know about.
    Warn,
    /// banger cannot work as configured.
    Fail,
}

impl fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckStatus::Pass => "PASS",
            CheckStatus::Warn => "WARN",
            CheckStatus::Fail => "FAIL",
        })
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// Short name, e.g. `kvm`, `qemu`, `tun`.
    pub name: String,
    /// Pass, warn or fail.
    pub status: CheckStatus,
    /// What was found (a version, a path, a reason).
    pub detail: String,
}

impl CheckResult {
    fn new(name: &str, status: CheckStatus, detail: impl Into<String>) -> Self {
        CheckResult {
            name: name.to_string(),
            status,
            detail: detail.into(),
        }
    }
}

/// What to check, and where.
#[derive(Debug, Clone)]
pub struct DoctorConfig {
    /// banger's state directory.
    pub state_dir: PathBuf,
    /// The daemon's API socket.
    pub socket: PathBuf,
    /// The Firecracker binary (a name looked up in `PATH`, or a path).
    pub firecracker_bin: PathBuf,
    /// The QEMU binary (a name looked up in `PATH`, or a path).
    pub qemu_bin: PathBuf,
    /// The nft binary.
    pub nft_bin: PathBuf,
    /// The VM bridge.
    pub bridge: BridgeConfig,
    /// The tun device.
    pub tun_device: PathBuf,
    /// Where KVM is probed.
    pub kvm: KvmPaths,
    /// Free space in the state directory below which the check warns.
    pub min_free_bytes: u64,
    /// How long a `--version` run may take.
    pub version_timeout: Duration,
    /// The daemon's guest directory: default kernel, initrd and guest bits
    /// (`banger daemon --guest-dir`).
    pub guest_dir: PathBuf,
    /// The user the VMMs run as.
    pub vmm_user: String,
}

impl DoctorConfig {
    /// Defaults for the given state directory and socket.
    pub fn new(state_dir: impl Into<PathBuf>, socket: impl Into<PathBuf>) -> Self {
        let state_dir = state_dir.into();
        DoctorConfig {
            guest_dir: state_dir.join("guest"),
            state_dir,
            socket: socket.into(),
            firecracker_bin: PathBuf::from("firecracker"),
            qemu_bin: PathBuf::from("qemu-system-x86_64"),
            nft_bin: PathBuf::from("nft"),
            bridge: BridgeConfig::default(),
            tun_device: PathBuf::from("/dev/net/tun"),
            kvm: KvmPaths::default(),
            min_free_bytes: 4 << 30,
            version_timeout: Duration::from_secs(5),
            vmm_user: DEFAULT_VMM_USER.to_owned(),
        }
    }
}

/// Runs every check, in a stable order. Must be called inside a tokio runtime (the
/// bridge check uses netlink) and acts on the calling thread's network namespace (the
/// blocking checks run on a thread of the runtime's blocking pool, which a runtime
/// started inside a namespace spawns inside it).
pub async fn run_checks(cfg: &DoctorConfig) -> Vec<CheckResult> {
    let blocking = cfg.clone();
    let checks = tokio::task::spawn_blocking(move || blocking_checks(&blocking)).await;
    let (mut results, rest) = match checks {
        Ok(checks) => checks,
        Err(e) => (
            vec![CheckResult::new(
                "doctor",
                CheckStatus::Fail,
                format!("the host checks did not finish: {e}"),
            )],
            Vec::new(),
        ),
    };
    results.push(check_bridge(cfg).await);
    results.extend(rest);
    results
}

/// Every check but the bridge's: those before it and those after it in the report.
fn blocking_checks(cfg: &DoctorConfig) -> (Vec<CheckResult>, Vec<CheckResult>) {
    let kvm_status = kvm::detect_at(&cfg.kvm);
    let mut before = vec![check_kvm(&kvm_status)];
    before.extend(judge_hypervisors(&probe_hypervisors(cfg, &kvm_status)));
    before.push(check_tun(&cfg.tun_device));
    before.push(judge_vmm_user(
        &cfg.vmm_user,
        vmm_user::lookup(&cfg.vmm_user),
    ));
    before.push(judge_cgroups(&CgroupLayout::detect()));
    let mut after = vec![check_nft(&cfg.nft_bin, cfg.version_timeout)];
    for tool in ["mkfs.ext4", "e2fsck", "resize2fs"] {
        after.push(check_tool(tool, cfg.version_timeout));
    }
    after.push(check_default_kernel(&cfg.guest_dir));
    after.push(check_free_space(&cfg.state_dir, cfg.min_free_bytes));
    after.push(check_socket(&cfg.socket));
    (before, after)
}

/// The PASS/WARN/FAIL report, one line per check: `PASS  name  detail`.
pub fn format_report(results: &[CheckResult]) -> String {
    let width = results.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for r in results {
        out.push_str(&format!(
            "{}  {:<width$}  {}\n",
            r.status,
            r.name,
            r.detail,
            width = width
        ));
    }
    out
}

/// Whether any check failed (`banger doctor` then exits non-zero).
pub fn has_failures(results: &[CheckResult]) -> bool {
    results.iter().any(|r| r.status == CheckStatus::Fail)
}

/// The KVM check: PASS when stock guests can use `/dev/kvm`, else WARN (TCG is used).
pub fn check_kvm(status: &KvmStatus) -> CheckResult {
    let level = if status.stock_guests_can_run() {
        CheckStatus::Pass
    } else {
        CheckStatus::Warn
    };
    CheckResult::new("kvm", level, status.to_string())
}

/// What the doctor found about one hypervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HypervisorProbe {
    /// Which hypervisor.
    pub kind: HypervisorKind,
    /// Its binary's `--version`.
    pub binary: BinaryProbe,
    /// What it needs of the host besides its binary
    /// ([`Hypervisor::host_requirement`]): `Ok`, or why this host cannot run it.
    pub host: Result<(), String>,
    /// Its rank for `hypervisor: auto` ([`Hypervisor::auto_rank`]).
    pub auto_rank: u8,
}

impl HypervisorProbe {
    /// Whether this host can run it: the binary answers and the host meets its needs.
    pub fn suitable(&self) -> bool {
        matches!(self.binary, BinaryProbe::Found { .. }) && self.host.is_ok()
    }
}

/// Probes every hypervisor's binary and requirement through its driver. Blocking.
pub fn probe_hypervisors(cfg: &DoctorConfig, kvm_status: &KvmStatus) -> Vec<HypervisorProbe> {
    let config = DriverConfig {
        qemu_bin: Some(cfg.qemu_bin.clone()),
        firecracker_bin: Some(cfg.firecracker_bin.clone()),
        accel: Accel::Auto,
        ..DriverConfig::default()
    };
    HypervisorKind::ALL
        .into_iter()
        .map(|kind| {
            let (driver, _accel) = Driver::configure(kind, &config, kvm_status);
            // `--version` first; then the driver's own check (QEMU's options, say).
            let binary = match probe_binary(driver.binary(), "--version", cfg.version_timeout) {
                BinaryProbe::Found { path, version } => match driver.check_binary() {
                    Ok(_) => BinaryProbe::Found { path, version },
                    Err(reason) => BinaryProbe::Broken { path, reason },
                },
                other => other,
            };
            HypervisorProbe {
                kind,
                binary,
                host: driver.host_requirement(kvm_status),
                auto_rank: driver.auto_rank(),
            }
        })
        .collect()
}

/// Decides the hypervisor checks together, one per probe: PASS when this host can run
/// it; WARN when its binary works but the host cannot run it (say, Firecracker without
/// KVM for stock guests), or when it is missing or broken while another hypervisor
/// works; FAIL when it is missing or broken and no hypervisor works. The detail names
/// the hypervisor `auto` uses instead.
pub fn judge_hypervisors(probes: &[HypervisorProbe]) -> Vec<CheckResult> {
    let any_suitable = probes.iter().any(HypervisorProbe::suitable);
    let auto = choose_auto(probes.iter().map(|p| (p.kind, p.auto_rank, p.suitable())))
        .filter(|_| any_suitable);
    let missing_level = if any_suitable {
        CheckStatus::Warn
    } else {
        CheckStatus::Fail
    };
    probes
        .iter()
        .map(|p| {
            let name = p.kind.as_str();
            let instead = auto
                .filter(|other| *other != p.kind)
                .map(|other| format!(": {other} is used"))
                .unwrap_or_default();
            match (&p.binary, &p.host) {
                (BinaryProbe::Found { path, version }, Ok(())) => CheckResult::new(
                    name,
                    CheckStatus::Pass,
                    format!("{version} ({})", path.display()),
                ),
                (BinaryProbe::Found { path, version }, Err(reason)) => CheckResult::new(
                    name,
                    CheckStatus::Warn,
                    format!("{version} ({}), but {reason}{instead}", path.display()),
                ),
                (BinaryProbe::Missing { requested }, _) => CheckResult::new(
                    name,
                    missing_level,
                    format!("{} not found{instead}", requested.display()),
                ),
                (BinaryProbe::Broken { path, reason }, _) => CheckResult::new(
                    name,
                    missing_level,
                    format!("{}: {reason}{instead}", path.display()),
                ),
            }
        })
        .collect()
}

/// The VMM user check, from what the user database said: PASS when it exists, WARN when
/// it does not yet (the daemon creates it at start), FAIL when the name cannot be used.
pub fn judge_vmm_user(name: &str, lookup: Result<Option<VmmUser>, VmmUserError>) -> CheckResult {
    let check = "vmm-user";
    match lookup {
        Ok(Some(user)) => CheckResult::new(
            check,
            CheckStatus::Pass,
            format!(
                "{} (uid {}, gid {}) runs the VMMs",
                user.name, user.uid, user.gid
            ),
        ),
        Ok(None) => CheckResult::new(
            check,
            CheckStatus::Warn,
            format!("{name} does not exist yet: the daemon creates it at start (useradd --system)"),
        ),
        Err(e) => CheckResult::new(check, CheckStatus::Fail, e.to_string()),
    }
}

/// The cgroups check, from the detected layout: PASS with where VM cgroups go, FAIL
/// when no hierarchy offers the memory and pids controllers (VMMs cannot be confined,
/// so the daemon starts none).
pub fn judge_cgroups(layout: &Result<CgroupLayout, CgroupError>) -> CheckResult {
    let check = "cgroups";
    match layout {
        Ok(CgroupLayout::V2 { root }) => CheckResult::new(
            check,
            CheckStatus::Pass,
            format!("v2 at {} (memory, pids)", root.display()),
        ),
        Ok(CgroupLayout::V1 { memory, pids }) => CheckResult::new(
            check,
            CheckStatus::Pass,
            format!(
                "v1: memory at {}, pids at {}",
                memory.display(),
                pids.display()
            ),
        ),
        Err(e) => CheckResult::new(check, CheckStatus::Fail, e.to_string()),
    }
}

/// The tun check: the device exists, is a character device and opens read-write.
pub fn check_tun(device: &Path) -> CheckResult {
    let name = "tun";
    match std::fs::metadata(device) {
        Err(err) => CheckResult::new(
            name,
            CheckStatus::Fail,
            format!("{}: {err}", device.display()),
        ),
        Ok(meta) if !meta.file_type().is_char_device() => CheckResult::new(
            name,
            CheckStatus::Fail,
            format!("{} is not a character device", device.display()),
        ),
        Ok(_) => match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(device)
        {
            Ok(_) => CheckResult::new(
                name,
                CheckStatus::Pass,
                format!("{} opens", device.display()),
            ),
            Err(err) => CheckResult::new(
                name,
                CheckStatus::Fail,
                format!("{}: {err}", device.display()),
            ),
        },
    }
}

/// The bridge check: netlink works, and the configured bridge is healthy, or absent
/// (the daemon creates it) with the kernel's bridge support present.
async fn check_bridge(cfg: &DoctorConfig) -> CheckResult {
    let name = "bridge";
    let nl = match Netlink::connect() {
        Ok(nl) => nl,
        Err(err) => return CheckResult::new(name, CheckStatus::Fail, err.to_string()),
    };
    let bridge_module = Path::new("/sys/module/bridge").exists();
    match probe_bridge(&nl, &cfg.bridge).await {
        Err(err) => CheckResult::new(name, CheckStatus::Fail, err.to_string()),
        Ok(probe) => {
            let (status, detail) = judge_bridge(&cfg.bridge, &probe, bridge_module);
            CheckResult::new(name, status, detail)
        }
    }
}

/// Pure decision of the bridge check.
pub fn judge_bridge(
    cfg: &BridgeConfig,
    probe: &crate::host::net::bridge::BridgeProbe,
    bridge_module_loaded: bool,
) -> (CheckStatus, String) {
    let addr = format!("{}/{}", cfg.cidr().gateway(), cfg.cidr().prefix());
    if probe.is_healthy() {
        return (
            CheckStatus::Pass,
            format!("{} is up with {addr}", cfg.name()),
        );
    }
    match probe.index {
        None if bridge_module_loaded => (
            CheckStatus::Pass,
            format!("netlink works; {} does not exist yet (the daemon creates it with {addr})", cfg.name()),
        ),
        None => (
            CheckStatus::Warn,
            format!(
                "netlink works; {} does not exist and the bridge module is not loaded yet (it loads on first use)",
                cfg.name()
            ),
        ),
        Some(_) if !probe.is_bridge => (
            CheckStatus::Fail,
            format!("{} exists but is not a bridge", cfg.name()),
        ),
        Some(_) => (
            CheckStatus::Warn,
            format!(
                "{} exists but is not as wanted (address {addr}: {}, up: {}); the daemon repairs it",
                cfg.name(),
                probe.has_address,
                probe.up
            ),
        ),
    }
}

/// The nft check: the binary runs and can list the ruleset (needs CAP_NET_ADMIN).
pub fn check_nft(bin: &Path, timeout: Duration) -> CheckResult {
    let name = "nft";
    match probe_binary(bin, "--version", timeout) {
        BinaryProbe::Missing { .. } => {
            CheckResult::new(name, CheckStatus::Fail, "not found (install nftables)")
        }
        BinaryProbe::Broken { path, reason } => CheckResult::new(
            name,
            CheckStatus::Fail,
            format!("{}: {reason}", path.display()),
        ),
        BinaryProbe::Found { path, version } => {
            match run_bounded(&path, &["list", "tables"], timeout) {
                Ok(_) => CheckResult::new(
                    name,
                    CheckStatus::Pass,
                    format!("{version} ({})", path.display()),
                ),
                Err(reason) => CheckResult::new(
                    name,
                    CheckStatus::Fail,
                    format!("{version}, but `nft list tables` failed: {reason}"),
                ),
            }
        }
    }
}

/// A required e2fsprogs tool: present and runs. `mkfs.ext4` and `e2fsck` print their
/// version with `-V`; `resize2fs` has no version flag and prints it (then its usage,
/// exiting 1) when run without arguments, which is accepted when that first line
/// names the tool.
pub fn check_tool(tool: &str, timeout: Duration) -> CheckResult {
    let Some(path) = find_executable(Path::new(tool)) else {
        return CheckResult::new(tool, CheckStatus::Fail, "not found (install e2fsprogs)");
    };
    let outcome = if tool == "resize2fs" {
        run_bounded_output(&path, &[], timeout).and_then(|(_, out)| {
            let line = first_line(&out);
            if line.starts_with("resize2fs ") {
                Ok(line)
            } else {
                Err(format!("unexpected output: {line}"))
            }
        })
    } else {
        run_bounded(&path, &["-V"], timeout).map(|out| first_line(&out))
    };
    match outcome {
        Ok(version) => CheckResult::new(
            tool,
            CheckStatus::Pass,
            format!("{version} ({})", path.display()),
        ),
        Err(reason) => CheckResult::new(
            tool,
            CheckStatus::Fail,
            format!("{}: {reason}", path.display()),
        ),
    }
}

/// The default kernel that Images without `kernel` boot (check `kernel`): which one (path and release),
/// with its initrd and the guest bits; WARN when it is not installed.
pub fn check_default_kernel(guest_dir: &Path) -> CheckResult {
    use crate::runtime::linux::{DEFAULT_INITRD, DEFAULT_KERNEL, GUEST_BITS_DIR, KERNEL_RELEASE};
    let name = "kernel";
    let kernel = guest_dir.join(DEFAULT_KERNEL);
    let initrd = guest_dir.join(DEFAULT_INITRD);
    let missing: Vec<String> = [&kernel, &initrd]
        .iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if !missing.is_empty() {
        return CheckResult::new(
            name,
            CheckStatus::Warn,
            format!(
                "{} missing: Images without `kernel` cannot boot (scripts/up.sh installs the guest kit's; or pass --guest-dir)",
                missing.join(", ")
            ),
        );
    }
    let release = std::fs::read_to_string(guest_dir.join(KERNEL_RELEASE))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "release unknown".into());
    let bits = crate::host::guest_bits::GuestBits::at(guest_dir.join(GUEST_BITS_DIR));
    match bits.identity() {
        Ok(id) => CheckResult::new(
            name,
            CheckStatus::Pass,
            format!(
                "{} ({release}) with {}; guest bits {id}",
                kernel.display(),
                initrd.display()
            ),
        ),
        Err(e) => CheckResult::new(
            name,
            CheckStatus::Warn,
            format!("{} ({release}); but {e}", kernel.display()),
        ),
    }
}

/// Free space in the state directory (or its nearest existing ancestor).
pub fn check_free_space(state_dir: &Path, min_free: u64) -> CheckResult {
    let name = "disk space";
    let mut probe = state_dir.to_path_buf();
    // Bounded by the number of components in the path.
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    match nix::sys::statvfs::statvfs(&probe) {
        Err(err) => CheckResult::new(
            name,
            CheckStatus::Fail,
            format!("statvfs {}: {err}", probe.display()),
        ),
        Ok(st) => {
            let free = st.blocks_available().saturating_mul(st.fragment_size());
            let (status, detail) = judge_free_space(state_dir, free, min_free);
            CheckResult::new(name, status, detail)
        }
    }
}

/// Pure decision of the free-space check.
pub fn judge_free_space(state_dir: &Path, free: u64, min_free: u64) -> (CheckStatus, String) {
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    let detail = format!("{:.1} GiB free in {}", gib(free), state_dir.display());
    if free >= min_free {
        (CheckStatus::Pass, detail)
    } else {
        (
            CheckStatus::Warn,
            format!("{detail} (less than {:.1} GiB)", gib(min_free)),
        )
    }
}

/// The daemon socket: listening (PASS), missing or stale (WARN: the daemon is not running).
pub fn check_socket(socket: &Path) -> CheckResult {
    let name = "socket";
    match std::fs::symlink_metadata(socket) {
        Err(_) => CheckResult::new(
            name,
            CheckStatus::Warn,
            format!(
                "{} does not exist: the daemon is not running",
                socket.display()
            ),
        ),
        Ok(meta) if !meta.file_type().is_socket() => CheckResult::new(
            name,
            CheckStatus::Fail,
            format!("{} exists but is not a socket", socket.display()),
        ),
        Ok(_) => match std::os::unix::net::UnixStream::connect(socket) {
            Ok(_) => CheckResult::new(
                name,
                CheckStatus::Pass,
                format!("daemon listening on {}", socket.display()),
            ),
            Err(err) => CheckResult::new(
                name,
                CheckStatus::Warn,
                format!(
                    "{} is not accepting connections ({err}): stale socket?",
                    socket.display()
                ),
            ),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::host::net::bridge::BridgeProbe;

    #[test]
    fn the_default_kernel_is_named_or_missing() {
        let dir = tempfile::tempdir().unwrap();
        let r = check_default_kernel(dir.path());
        assert_eq!(r.status, CheckStatus::Warn);
        assert!(
            r.detail.contains("vmlinux") && r.detail.contains("cannot boot"),
            "{}",
            r.detail
        );
        std::fs::write(dir.path().join("vmlinux"), b"k").unwrap();
        std::fs::write(dir.path().join("initrd.img"), b"i").unwrap();
        std::fs::write(dir.path().join("kernel.release"), "6.1.0-57-cloud-amd64\n").unwrap();
        for f in [
            "init",
            "bin/busybox",
            "sbin/dropbear",
            "lib/ld-linux-x86-64.so.2",
        ] {
            let p = dir.path().join("guest-bits").join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        let r = check_default_kernel(dir.path());
        assert_eq!(r.status, CheckStatus::Pass, "{}", r.detail);
        assert!(
            r.detail.contains("6.1.0-57-cloud-amd64") && r.detail.contains("vmlinux"),
            "{}",
            r.detail
        );
    }

    fn found(v: &str) -> BinaryProbe {
        BinaryProbe::Found {
            path: PathBuf::from("/usr/bin/x"),
            version: v.to_string(),
        }
    }

    #[test]
    fn vmm_user_levels() {
        let user = VmmUser {
            name: "banger-vmm".into(),
            uid: 998,
            gid: 997,
        };
        let pass = judge_vmm_user("banger-vmm", Ok(Some(user)));
        assert_eq!(pass.status, CheckStatus::Pass);
        assert!(pass.detail.contains("uid 998"), "{}", pass.detail);
        let missing = judge_vmm_user("banger-vmm", Ok(None));
        assert_eq!(missing.status, CheckStatus::Warn);
        assert!(missing.detail.contains("creates it"), "{}", missing.detail);
        let root = judge_vmm_user("root", vmm_user::lookup("root"));
        assert_eq!(root.status, CheckStatus::Fail);
        assert!(root.detail.contains("unprivileged"), "{}", root.detail);
    }

    #[test]
    fn cgroup_levels() {
        let v1 = judge_cgroups(&Ok(CgroupLayout::V1 {
            memory: "/sys/fs/cgroup/memory".into(),
            pids: "/sys/fs/cgroup/pids".into(),
        }));
        assert_eq!(v1.status, CheckStatus::Pass);
        assert!(
            v1.detail.starts_with("v1: memory at /sys/fs/cgroup/memory"),
            "{}",
            v1.detail
        );
        let none = judge_cgroups(&CgroupLayout::choose(&[], |_| None));
        assert_eq!(none.status, CheckStatus::Fail);
        assert!(
            none.detail.contains("cannot be confined"),
            "{}",
            none.detail
        );
    }

    #[test]
    fn kvm_levels() {
        assert_eq!(check_kvm(&KvmStatus::Usable).status, CheckStatus::Pass);
        let pvm = check_kvm(&KvmStatus::ParavirtOnly);
        assert_eq!(pvm.status, CheckStatus::Warn);
        assert!(pvm.detail.contains("kvm_pvm"), "{}", pvm.detail);
        assert_eq!(check_kvm(&KvmStatus::Missing).status, CheckStatus::Warn);
    }

    /// The doctor's probes of Firecracker and QEMU with these binaries on a host
    /// whose KVM is `kvm`, judged.
    fn judge(fc: BinaryProbe, qm: BinaryProbe, kvm: &KvmStatus) -> (CheckResult, CheckResult) {
        let probe = |kind, binary| {
            let (driver, _) = Driver::configure(kind, &DriverConfig::default(), kvm);
            HypervisorProbe {
                kind,
                binary,
                host: driver.host_requirement(kvm),
                auto_rank: driver.auto_rank(),
            }
        };
        let results = judge_hypervisors(&[
            probe(HypervisorKind::Firecracker, fc),
            probe(HypervisorKind::Qemu, qm),
        ]);
        assert_eq!(results[0].name, "firecracker");
        assert_eq!(results[1].name, "qemu");
        (results[0].clone(), results[1].clone())
    }

    #[test]
    fn hypervisor_judgement() {
        let missing = || BinaryProbe::Missing {
            requested: "x".into(),
        };
        // This host: no firecracker, qemu present, kvm_pvm.
        let (f, q) = judge(missing(), found("QEMU 7.2"), &KvmStatus::ParavirtOnly);
        assert_eq!((f.status, q.status), (CheckStatus::Warn, CheckStatus::Pass));
        assert_eq!(f.detail, "x not found: qemu is used");
        // Nothing at all.
        let (f, q) = judge(missing(), missing(), &KvmStatus::Usable);
        assert_eq!((f.status, q.status), (CheckStatus::Fail, CheckStatus::Fail));
        // Firecracker with real KVM, no qemu.
        let (f, q) = judge(found("Firecracker v1.7.0"), missing(), &KvmStatus::Usable);
        assert_eq!((f.status, q.status), (CheckStatus::Pass, CheckStatus::Warn));
        assert!(f.detail.starts_with("Firecracker v1.7.0"));
        // Firecracker without usable KVM and no qemu: nothing can run.
        let (f, q) = judge(
            found("Firecracker v1.7.0"),
            missing(),
            &KvmStatus::ParavirtOnly,
        );
        assert_eq!((f.status, q.status), (CheckStatus::Warn, CheckStatus::Fail));
        assert!(f.detail.contains("kvm_pvm"), "{}", f.detail);
    }

    #[test]
    fn bridge_judgement() {
        let cfg = BridgeConfig::default();
        let probe = |index, is_bridge, has_address, up| BridgeProbe {
            index,
            is_bridge,
            has_address,
            up,
        };
        assert_eq!(
            judge_bridge(&cfg, &probe(Some(3), true, true, true), true).0,
            CheckStatus::Pass
        );
        assert_eq!(
            judge_bridge(&cfg, &probe(None, false, false, false), true).0,
            CheckStatus::Pass
        );
        assert_eq!(
            judge_bridge(&cfg, &probe(None, false, false, false), false).0,
            CheckStatus::Warn
        );
        assert_eq!(
            judge_bridge(&cfg, &probe(Some(3), false, false, true), true).0,
            CheckStatus::Fail
        );
        let (status, detail) = judge_bridge(&cfg, &probe(Some(3), true, false, true), true);
        assert_eq!(status, CheckStatus::Warn);
        assert!(detail.contains("172.30.0.1/24"), "{detail}");
    }

    #[test]
    fn free_space_judgement() {
        let dir = Path::new("/var/lib/banger");
        assert_eq!(
            judge_free_space(dir, 10 << 30, 4 << 30).0,
            CheckStatus::Pass
        );
        let (status, detail) = judge_free_space(dir, 1 << 30, 4 << 30);
        assert_eq!(status, CheckStatus::Warn);
        assert!(
            detail.contains("1.0 GiB free in /var/lib/banger"),
            "{detail}"
        );
    }

    #[test]
    fn report_lines_and_exit_decision() {
        let results = vec![
            CheckResult::new("kvm", CheckStatus::Warn, "kvm_pvm"),
            CheckResult::new("qemu", CheckStatus::Pass, "QEMU emulator version 7.2.0"),
            CheckResult::new("tun", CheckStatus::Fail, "/dev/net/tun: No such file"),
        ];
        assert_eq!(
            format_report(&results),
            "WARN  kvm   kvm_pvm\nPASS  qemu  QEMU emulator version 7.2.0\nFAIL  tun   /dev/net/tun: No such file\n"
        );
        assert!(has_failures(&results));
        assert!(!has_failures(&results[..2]));
    }
}
