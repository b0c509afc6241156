//! Host checks behind `banger doctor`: one [`CheckResult`] per thing banger needs.
//!
//! Each check measures the real host (devices, binaries, netlink, the state directory,
//! the daemon's socket); the decisions are kept in small pure functions so they can be
//! tested on their own. [`format_report`] renders the `PASS`/`WARN`/`FAIL` lines and
//! [`has_failures`] decides the exit code (non-zero on any `FAIL`).
//!
//! Severity: what makes banger unable to run VMs at all is `FAIL` (no usable
//! hypervisor, no `/dev/net/tun`, no nft or e2fsprogs, an unreadable state directory);
//! what only narrows its options is `WARN` (no KVM for stock guests means QEMU under TCG;
//! no Firecracker means QEMU; a daemon not running yet).

use std::fmt;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::host::kvm::{self, KvmPaths, KvmStatus};
use crate::host::net::bridge::probe_bridge;
use crate::host::net::{BridgeConfig, Netlink};
use crate::host::which::find_executable;

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
}

impl DoctorConfig {
    /// Defaults for the given state directory and socket.
    pub fn new(state_dir: impl Into<PathBuf>, socket: impl Into<PathBuf>) -> Self {
        DoctorConfig {
            state_dir: state_dir.into(),
            socket: socket.into(),
            firecracker_bin: PathBuf::from("firecracker"),
            qemu_bin: PathBuf::from("qemu-system-x86_64"),
            nft_bin: PathBuf::from("nft"),
            bridge: BridgeConfig::default(),
            tun_device: PathBuf::from("/dev/net/tun"),
            kvm: KvmPaths::default(),
            min_free_bytes: 4 << 30,
            version_timeout: Duration::from_secs(5),
        }
    }
}

/// Runs every check, in a stable order. Must be called inside a tokio runtime (the
/// bridge check uses netlink) and acts on the calling thread's network namespace.
pub async fn run_checks(cfg: &DoctorConfig) -> Vec<CheckResult> {
    let kvm_status = kvm::detect_at(&cfg.kvm);
    let firecracker = check_binary("firecracker", &cfg.firecracker_bin, cfg.version_timeout);
    let qemu = check_binary("qemu", &cfg.qemu_bin, cfg.version_timeout);
    let (firecracker, qemu) = judge_hypervisors(firecracker, qemu, &kvm_status);
    let mut results = vec![check_kvm(&kvm_status), firecracker, qemu];
    results.push(check_tun(&cfg.tun_device));
    results.push(check_bridge(cfg).await);
    results.push(check_nft(&cfg.nft_bin, cfg.version_timeout));
    for tool in ["mkfs.ext4", "e2fsck", "resize2fs"] {
        results.push(check_tool(tool, cfg.version_timeout));
    }
    results.push(check_free_space(&cfg.state_dir, cfg.min_free_bytes));
    results.push(check_socket(&cfg.socket));
    results
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

/// What running a binary's `--version` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinaryProbe {
    /// It ran; the first line of its output.
    Found {
        /// Resolved path.
        path: PathBuf,
        /// First non-empty output line.
        version: String,
    },
    /// Not found (in `PATH` or at the given path).
    Missing {
        /// The name or path that was looked for.
        requested: PathBuf,
    },
    /// Found but `--version` failed or timed out.
    Broken {
        /// Resolved path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn check_binary(name: &str, bin: &Path, timeout: Duration) -> (String, BinaryProbe) {
    (name.to_string(), probe_binary(bin, "--version", timeout))
}

/// Resolves `bin` (a path, or a name in `PATH`) and runs it with `arg`, bounded by
/// `timeout`.
pub fn probe_binary(bin: &Path, arg: &str, timeout: Duration) -> BinaryProbe {
    let Some(path) = find_executable(bin) else {
        return BinaryProbe::Missing {
            requested: bin.to_path_buf(),
        };
    };
    match run_bounded(&path, arg, timeout) {
        Ok(text) => BinaryProbe::Found {
            version: first_line(&text),
            path,
        },
        Err(reason) => BinaryProbe::Broken { path, reason },
    }
}

/// Decides the two hypervisor checks together: Firecracker missing or unusable
/// (no KVM for stock guests) is a WARN while QEMU works; no usable hypervisor is a FAIL.
pub fn judge_hypervisors(
    firecracker: (String, BinaryProbe),
    qemu: (String, BinaryProbe),
    kvm_status: &KvmStatus,
) -> (CheckResult, CheckResult) {
    let qemu_ok = matches!(qemu.1, BinaryProbe::Found { .. });
    let fc_ok =
        matches!(firecracker.1, BinaryProbe::Found { .. }) && kvm_status.stock_guests_can_run();
    let none_works = !qemu_ok && !fc_ok;
    let fc = match &firecracker.1 {
        BinaryProbe::Found { path, version } if kvm_status.stock_guests_can_run() => {
            CheckResult::new(
                &firecracker.0,
                CheckStatus::Pass,
                format!("{version} ({})", path.display()),
            )
        }
        BinaryProbe::Found { path, version } => CheckResult::new(
            &firecracker.0,
            CheckStatus::Warn,
            format!(
                "{version} ({}), but KVM cannot run stock guests here: QEMU is used",
                path.display()
            ),
        ),
        BinaryProbe::Missing { requested } => CheckResult::new(
            &firecracker.0,
            if none_works {
                CheckStatus::Fail
            } else {
                CheckStatus::Warn
            },
            format!("{} not found: QEMU is used", requested.display()),
        ),
        BinaryProbe::Broken { path, reason } => CheckResult::new(
            &firecracker.0,
            if none_works {
                CheckStatus::Fail
            } else {
                CheckStatus::Warn
            },
            format!("{}: {reason}", path.display()),
        ),
    };
    let qm = match &qemu.1 {
        BinaryProbe::Found { path, version } => CheckResult::new(
            &qemu.0,
            CheckStatus::Pass,
            format!("{version} ({})", path.display()),
        ),
        BinaryProbe::Missing { requested } => CheckResult::new(
            &qemu.0,
            if fc_ok {
                CheckStatus::Warn
            } else {
                CheckStatus::Fail
            },
            format!("{} not found", requested.display()),
        ),
        BinaryProbe::Broken { path, reason } => CheckResult::new(
            &qemu.0,
            if fc_ok {
                CheckStatus::Warn
            } else {
                CheckStatus::Fail
            },
            format!("{}: {reason}", path.display()),
        ),
    };
    (fc, qm)
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
            match run_bounded_args(&path, &["list", "tables"], timeout) {
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
        run_bounded(&path, "-V", timeout).map(|out| first_line(&out))
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

fn first_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("(no output)")
        .to_string()
}

fn run_bounded(path: &Path, arg: &str, timeout: Duration) -> Result<String, String> {
    run_bounded_args(path, &[arg], timeout)
}

/// Runs `path args…` with no stdin, waiting at most `timeout`; returns stdout+stderr
/// when it exits successfully.
fn run_bounded_args(path: &Path, args: &[&str], timeout: Duration) -> Result<String, String> {
    let (status, out) = run_bounded_output(path, args, timeout)?;
    if status.success() {
        Ok(out)
    } else {
        Err(format!("exited with {status}: {}", first_line(&out)))
    }
}

/// Runs `path args…` with no stdin, waiting at most `timeout` (then killing it);
/// returns its exit status and stdout+stderr.
fn run_bounded_output(
    path: &Path,
    args: &[&str],
    timeout: Duration,
) -> Result<(std::process::ExitStatus, String), String> {
    let mut child = Command::new(path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    // Bounded: ends by exit, error, or the timeout (polled every 20 ms).
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("timed out after {timeout:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(err) => return Err(err.to_string()),
        }
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut out);
    }
    Ok((status, out))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::host::net::bridge::BridgeProbe;

    fn found(v: &str) -> BinaryProbe {
        BinaryProbe::Found {
            path: PathBuf::from("/usr/bin/x"),
            version: v.to_string(),
        }
    }

    #[test]
    fn kvm_levels() {
        assert_eq!(check_kvm(&KvmStatus::Usable).status, CheckStatus::Pass);
        let pvm = check_kvm(&KvmStatus::ParavirtOnly);
        assert_eq!(pvm.status, CheckStatus::Warn);
        assert!(pvm.detail.contains("kvm_pvm"), "{}", pvm.detail);
        assert_eq!(check_kvm(&KvmStatus::Missing).status, CheckStatus::Warn);
    }

    #[test]
    fn hypervisor_judgement() {
        let fc = |p| ("firecracker".to_string(), p);
        let qm = |p| ("qemu".to_string(), p);
        // This host: no firecracker, qemu present, kvm_pvm.
        let (f, q) = judge_hypervisors(
            fc(BinaryProbe::Missing {
                requested: "x".into(),
            }),
            qm(found("QEMU 7.2")),
            &KvmStatus::ParavirtOnly,
        );
        assert_eq!((f.status, q.status), (CheckStatus::Warn, CheckStatus::Pass));
        // Nothing at all.
        let (f, q) = judge_hypervisors(
            fc(BinaryProbe::Missing {
                requested: "x".into(),
            }),
            qm(BinaryProbe::Missing {
                requested: "x".into(),
            }),
            &KvmStatus::Usable,
        );
        assert_eq!((f.status, q.status), (CheckStatus::Fail, CheckStatus::Fail));
        // Firecracker with real KVM, no qemu.
        let (f, q) = judge_hypervisors(
            fc(found("Firecracker v1.7.0")),
            qm(BinaryProbe::Missing {
                requested: "x".into(),
            }),
            &KvmStatus::Usable,
        );
        assert_eq!((f.status, q.status), (CheckStatus::Pass, CheckStatus::Warn));
        assert!(f.detail.starts_with("Firecracker v1.7.0"));
        // Firecracker without usable KVM and no qemu: nothing can run.
        let (f, q) = judge_hypervisors(
            fc(found("Firecracker v1.7.0")),
            qm(BinaryProbe::Missing {
                requested: "x".into(),
            }),
            &KvmStatus::ParavirtOnly,
        );
        assert_eq!((f.status, q.status), (CheckStatus::Warn, CheckStatus::Fail));
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

    #[test]
    fn first_line_skips_blank_lines() {
        assert_eq!(first_line("\n  QEMU 7.2\nCopyright"), "QEMU 7.2");
        assert_eq!(first_line(""), "(no output)");
    }
}
