//! `banger doctor`: can this host run banger's VMs? PASS/WARN/FAIL lines, exit 1 on FAIL.
//!
//! Probing (files, `--version` runs, `statvfs`, the socket) is kept apart from judging:
//! each `judge_*` function is pure and turns what was measured into one [`Check`].

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use crate::client::DaemonClient;
use crate::error::{print_out, CliError};
use crate::paths::DefaultPaths;

/// How long a `--version` run may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);
/// Below this much free space in the state directory: FAIL.
const FREE_FAIL: u64 = 512 << 20;
/// Below this much free space in the state directory: WARN.
const FREE_WARN: u64 = 4 << 30;

/// Arguments of `banger doctor`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Checks /dev/kvm (and whether stock guest kernels can use it), the QEMU and Firecracker
binaries, /dev/net/tun, bridge support, nft, mkfs.ext4 and resize2fs, free space in the
state directory, and whether the daemon answers on its socket.
Exit status: 0 when nothing FAILs, 1 otherwise.

Examples:
  sudo banger doctor
  banger doctor --state-dir /srv/banger --qemu-bin /opt/qemu/bin/qemu-system-x86_64")]
pub struct DoctorArgs {
    /// The daemon's state directory (default as for `banger daemon`).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// QEMU binary (default: qemu-system-x86_64 on PATH).
    #[arg(long, value_name = "PATH")]
    pub qemu_bin: Option<PathBuf>,
    /// Firecracker binary (default: firecracker on PATH).
    #[arg(long, value_name = "PATH")]
    pub firecracker_bin: Option<PathBuf>,
}

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Fine.
    Pass,
    /// Works, with a limitation worth knowing.
    Warn,
    /// banger cannot work as intended.
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked (`kvm`, `qemu`, …).
    pub name: &'static str,
    /// The verdict.
    pub verdict: Verdict,
    /// What was found.
    pub detail: String,
}

impl Check {
    fn new(name: &'static str, verdict: Verdict, detail: impl Into<String>) -> Check {
        Check {
            name,
            verdict,
            detail: detail.into(),
        }
    }
}

/// What was measured about KVM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvmProbe {
    /// `/dev/kvm` exists.
    pub device: bool,
    /// `/dev/kvm` opens read-write.
    pub openable: bool,
    /// The KVM modules loaded (`kvm_intel`, `kvm_amd`, `kvm_pvm`).
    pub modules: Vec<String>,
}

/// Judges KVM. `kvm_pvm` runs no stock guest kernel: QEMU must use TCG and Firecracker
/// cannot boot them.
pub fn judge_kvm(probe: &KvmProbe) -> Check {
    if !probe.device {
        return Check::new(
            "kvm",
            Verdict::Warn,
            "no /dev/kvm: QEMU uses TCG (slow); Firecracker cannot run",
        );
    }
    if !probe.openable {
        return Check::new(
            "kvm",
            Verdict::Warn,
            "/dev/kvm is not readable and writable by this user",
        );
    }
    if probe.modules.iter().any(|m| m == "kvm_pvm") {
        return Check::new(
            "kvm",
            Verdict::Warn,
            "/dev/kvm is kvm_pvm: stock guest kernels do not run on it; QEMU uses TCG and Firecracker cannot boot them",
        );
    }
    let module = probe.modules.first().map_or("kvm", String::as_str);
    Check::new("kvm", Verdict::Pass, format!("/dev/kvm usable ({module})"))
}

/// Judges the hypervisor binaries: at least one must run.
pub fn judge_hypervisors(
    qemu: &Result<(PathBuf, String), String>,
    firecracker: &Result<(PathBuf, String), String>,
) -> Vec<Check> {
    let line = |name, found: &Result<(PathBuf, String), String>, missing: Verdict| match found {
        Ok((path, version)) => Check::new(
            name,
            Verdict::Pass,
            format!("{} ({version})", path.display()),
        ),
        Err(why) => Check::new(name, missing, why.clone()),
    };
    let none = qemu.is_err() && firecracker.is_err();
    let missing = if none { Verdict::Fail } else { Verdict::Warn };
    vec![
        line("qemu", qemu, missing),
        line("firecracker", firecracker, missing),
    ]
}

/// Judges a required tool.
pub fn judge_tool(
    name: &'static str,
    found: &Result<(PathBuf, String), String>,
    needed_for: &str,
) -> Check {
    match found {
        Ok((path, version)) => Check::new(
            name,
            Verdict::Pass,
            format!("{} ({version})", path.display()),
        ),
        Err(why) => Check::new(
            name,
            Verdict::Fail,
            format!("{why}: needed for {needed_for}"),
        ),
    }
}

/// Judges free space (bytes available to this user) in the state directory.
pub fn judge_free_space(dir: &Path, available: Result<u64, String>) -> Check {
    match available {
        Ok(bytes) => {
            let gib = bytes as f64 / f64::from(1u32 << 30);
            let shown = format!("{gib:.1}GiB free in {}", dir.display());
            if bytes < FREE_FAIL {
                Check::new("disk", Verdict::Fail, format!("only {shown}"))
            } else if bytes < FREE_WARN {
                Check::new(
                    "disk",
                    Verdict::Warn,
                    format!("only {shown}: every VM needs its own root disk"),
                )
            } else {
                Check::new("disk", Verdict::Pass, shown)
            }
        }
        Err(why) => Check::new("disk", Verdict::Fail, format!("{}: {why}", dir.display())),
    }
}

/// The report as text: one `PASS|WARN|FAIL  name  detail` line per check.
pub fn render(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    checks
        .iter()
        .map(|c| {
            let verdict = match c.verdict {
                Verdict::Pass => "PASS",
                Verdict::Warn => "WARN",
                Verdict::Fail => "FAIL",
            };
            format!("{verdict}  {:<width$}  {}\n", c.name, c.detail)
        })
        .collect()
}

/// Finds an executable: an explicit path, or a name on `$PATH`.
fn find_program(explicit: Option<&Path>, name: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if let Some(path) = explicit {
        return if executable(path) {
            Ok(path.to_path_buf())
        } else {
            Err(format!("{} is not an executable file", path.display()))
        };
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .map(|dir| dir.join(name))
        .find(|p| executable(p))
        .ok_or_else(|| format!("{name} not found on PATH"))
}

/// Runs `program ARGS` (bounded in time) and returns the first non-empty line it prints
/// on stdout or stderr.
fn first_output_line(program: &Path, args: &[&str]) -> Result<String, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    let deadline = Instant::now() + VERSION_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} {} did not finish within 5s",
                    program.display(),
                    args.join(" ")
                ));
            }
            Err(e) => return Err(format!("{}: {e}", program.display())),
        }
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
        .ok_or_else(|| format!("{} {} printed nothing", program.display(), args.join(" ")))
}

fn probe_program(
    explicit: Option<&Path>,
    name: &str,
    version_args: &[&str],
) -> Result<(PathBuf, String), String> {
    let path = find_program(explicit, name)?;
    let version = first_output_line(&path, version_args)?;
    Ok((path, version))
}

fn probe_kvm() -> KvmProbe {
    let device = Path::new("/dev/kvm").exists();
    let openable = device
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
    let modules = ["kvm_intel", "kvm_amd", "kvm_pvm"]
        .into_iter()
        .filter(|m| Path::new("/sys/module").join(m).exists())
        .map(str::to_string)
        .collect();
    KvmProbe {
        device,
        openable,
        modules,
    }
}

fn check_tun() -> Check {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        Ok(_) => Check::new("tun", Verdict::Pass, "/dev/net/tun opens"),
        Err(e) if Path::new("/dev/net/tun").exists() => Check::new(
            "tun",
            Verdict::Fail,
            format!("/dev/net/tun: {e} (taps need root or CAP_NET_ADMIN)"),
        ),
        Err(_) => Check::new(
            "tun",
            Verdict::Fail,
            "no /dev/net/tun: VMs cannot get a network (modprobe tun)",
        ),
    }
}

fn check_bridge() -> Check {
    if Path::new("/sys/module/bridge").exists() {
        return Check::new("bridge", Verdict::Pass, "bridge support loaded");
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let dir = Path::new("/lib/modules")
        .join(release.trim())
        .join("kernel/net/bridge");
    if std::fs::read_dir(&dir).is_ok_and(|mut d| {
        d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("bridge.ko")))
    }) {
        Check::new(
            "bridge",
            Verdict::Pass,
            format!("bridge module available in {}", dir.display()),
        )
    } else {
        Check::new(
            "bridge",
            Verdict::Warn,
            "no bridge support found (/sys/module/bridge absent, no bridge.ko)",
        )
    }
}

/// The nearest existing ancestor of `dir` (the state directory may not exist yet).
fn existing_ancestor(dir: &Path) -> &Path {
    dir.ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
}

// `fsblkcnt_t` and `c_ulong` are u64 on x86_64 but not on every target.
#[allow(clippy::useless_conversion)]
fn free_bytes(dir: &Path) -> Result<u64, String> {
    let stat = nix::sys::statvfs::statvfs(existing_ancestor(dir)).map_err(|e| e.to_string())?;
    Ok(u64::from(stat.blocks_available()).saturating_mul(u64::from(stat.fragment_size())))
}

async fn check_socket(client: &DaemonClient, socket: &Path) -> Check {
    match client.list(None).await {
        Ok(list) => Check::new(
            "daemon",
            Verdict::Pass,
            format!(
                "answers at {} ({} objects)",
                socket.display(),
                list.items.len()
            ),
        ),
        Err(crate::client::ClientError::Unreachable { source, .. }) => Check::new(
            "daemon",
            Verdict::Warn,
            format!(
                "not running at {} ({source}): start it with `banger daemon`",
                socket.display()
            ),
        ),
        Err(e) => Check::new("daemon", Verdict::Fail, e.to_string()),
    }
}

/// Runs `banger doctor`.
pub async fn run(socket: &Path, args: &DoctorArgs) -> Result<ExitCode, CliError> {
    let defaults = DefaultPaths::current();
    let state_dir = args.state_dir.clone().unwrap_or(defaults.state_dir);
    let mut checks = vec![judge_kvm(&probe_kvm())];
    checks.extend(judge_hypervisors(
        &probe_program(
            args.qemu_bin.as_deref(),
            "qemu-system-x86_64",
            &["--version"],
        ),
        &probe_program(
            args.firecracker_bin.as_deref(),
            "firecracker",
            &["--version"],
        ),
    ));
    checks.push(check_tun());
    checks.push(check_bridge());
    checks.push(judge_tool(
        "nft",
        &probe_program(None, "nft", &["--version"]),
        "NAT (network.nat)",
    ));
    checks.push(judge_tool(
        "mkfs.ext4",
        &probe_program(None, "mkfs.ext4", &["-V"]),
        "building root disks",
    ));
    checks.push(judge_tool(
        "resize2fs",
        &probe_program(None, "resize2fs", &[]),
        "growing root disks to spec.disk",
    ));
    checks.push(judge_free_space(&state_dir, free_bytes(&state_dir)));
    checks.push(check_socket(&DaemonClient::new(socket), socket).await);
    print_out(&render(&checks))?;
    let failed = checks.iter().any(|c| c.verdict == Verdict::Fail);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn kvm_pvm_is_a_warning() {
        let pvm = KvmProbe {
            device: true,
            openable: true,
            modules: vec!["kvm_pvm".into()],
        };
        let check = judge_kvm(&pvm);
        assert_eq!(check.verdict, Verdict::Warn);
        assert!(check.detail.contains("kvm_pvm"));
        let intel = KvmProbe {
            device: true,
            openable: true,
            modules: vec!["kvm_intel".into()],
        };
        assert_eq!(
            judge_kvm(&intel),
            Check::new("kvm", Verdict::Pass, "/dev/kvm usable (kvm_intel)")
        );
        assert_eq!(judge_kvm(&KvmProbe::default()).verdict, Verdict::Warn);
    }

    #[test]
    fn one_hypervisor_is_enough() {
        let qemu = Ok((
            PathBuf::from("/usr/bin/qemu-system-x86_64"),
            "QEMU emulator version 7.2".to_string(),
        ));
        let none: Result<(PathBuf, String), String> = Err("firecracker not found on PATH".into());
        let checks = judge_hypervisors(&qemu, &none);
        assert_eq!(checks[0].verdict, Verdict::Pass);
        assert_eq!(checks[1].verdict, Verdict::Warn);
        let checks = judge_hypervisors(&none, &none);
        assert!(checks.iter().all(|c| c.verdict == Verdict::Fail));
    }

    #[test]
    fn free_space_thresholds() {
        let dir = Path::new("/var/lib/banger");
        assert_eq!(judge_free_space(dir, Ok(100 << 30)).verdict, Verdict::Pass);
        assert_eq!(judge_free_space(dir, Ok(1 << 30)).verdict, Verdict::Warn);
        assert_eq!(judge_free_space(dir, Ok(100 << 20)).verdict, Verdict::Fail);
        assert_eq!(
            judge_free_space(dir, Err("EIO".into())).verdict,
            Verdict::Fail
        );
        assert_eq!(
            judge_free_space(dir, Ok(100 << 30)).detail,
            "100.0GiB free in /var/lib/banger"
        );
    }

    #[test]
    fn report_lines() {
        let text = render(&[
            Check::new("kvm", Verdict::Warn, "x"),
            Check::new("mkfs.ext4", Verdict::Fail, "y"),
        ]);
        assert_eq!(text, "WARN  kvm        x\nFAIL  mkfs.ext4  y\n");
    }

    #[test]
    fn missing_tools_fail_and_name_their_use() {
        let check = judge_tool(
            "nft",
            &Err("nft not found on PATH".into()),
            "NAT (network.nat)",
        );
        assert_eq!(check.verdict, Verdict::Fail);
        assert_eq!(
            check.detail,
            "nft not found on PATH: needed for NAT (network.nat)"
        );
    }

    #[test]
    fn programs_on_path_and_explicit() {
        let sh = find_program(None, "sh").expect("sh on PATH");
        assert!(sh.ends_with("sh"));
        assert!(find_program(Some(Path::new("/nonexistent/qemu")), "qemu").is_err());
        assert!(find_program(None, "surely-not-a-program-banger").is_err());
        assert!(!first_output_line(&sh, &["-c", "echo hello"])
            .expect("runs")
            .is_empty());
    }
}
