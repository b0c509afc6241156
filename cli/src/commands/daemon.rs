//! `banger daemon`: run the controller in the foreground.
//!
//! Parses the flags into the controller's configuration, logs with `tracing` on stderr
//! (text or JSON), turns SIGTERM/SIGINT into a shutdown future and runs the daemon until
//! it returns.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use banger_controller::config::{CrashAt, DaemonConfig};
use banger_controller::driver::DriverConfig;
use banger_controller::host::kvm::Accel;
use banger_controller::host::names;
use banger_controller::host::net::cidr::Ipv4Cidr;
use banger_controller::host::net::BridgeConfig;
use banger_controller::host::oci::auth::RegistryCredentials;
use banger_controller::host::oci::OciLimits;
use banger_controller::host::vmm_user::{self, DEFAULT_VMM_USER};
use banger_controller::runtime::linux::{ImageConfig, LinuxRuntime, LinuxRuntimeConfig};

use crate::duration::parse_duration;
use crate::error::CliError;
use crate::paths::DefaultPaths;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Arguments of `banger daemon` (the socket is the global `--socket`).
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
The daemon runs in the foreground and logs on stderr. It watches the specs directory
(every *.yaml/*.yml below it), accepts `banger apply`, and keeps the host matching.
SIGTERM or SIGINT stops it; running VMs keep running and are adopted by the next start.

Defaults as root: --socket /run/banger/banger.sock, --specs-dir /etc/banger/specs,
--state-dir /var/lib/banger. Otherwise: $XDG_RUNTIME_DIR/banger.sock (without
XDG_RUNTIME_DIR: $XDG_STATE_HOME/banger/banger.sock, never /tmp),
$XDG_CONFIG_HOME/banger/specs, $XDG_STATE_HOME/banger.

Access: as root, the socket is 0660 root:GROUP (--socket-group, default banger; the
daemon refuses to start if the group does not exist: `groupadd --system banger`).
Root may do everything; members of the group may apply, delete and read, with host
paths (Image files, Workspace sources) only where they could read them themselves,
but not `gc --include-orphans`; everyone else is refused. Run as another user, the
daemon serves only that user. The state dir must be 0700, and the specs dir, with
everything in it, writable only by its owner and root (README: Security model).
Images: an Image without `kernel` boots the default kernel of --guest-dir; OCI images
are pulled into <state-dir>/images/store (shared by all Images) with banger's guest
bits; a tag is re-checked every --image-check-interval and a new digest is only shown
(UpdateAvailable) until `banger image refresh NAME --apply`.

VMMs never run as root: each runs as --vmm-user (created with useradd --system when
missing), in a cgroup of its own (memory and pids limits), QEMU under a seccomp
sandbox, Firecracker through its jailer when one is found (--jailer-bin, or a `jailer`
beside the Firecracker binary; without one Firecracker runs as root, in its cgroup).
See docs/security.md.

--firecracker-skip-kvm-check makes Firecracker usable where /dev/kvm exists but the
KVM check says stock guest kernels cannot run on it (kvm_pvm hosts): for hosts that
check misjudges, and for testing the driver against a real binary. Off by default.

--simulate runs every VM on a simulated driver instead of a hypervisor. It exists for
tests and benchmarks of the engine; nothing boots. Its host (VMMs, taps, NAT rules,
disks) is recorded in STATE_DIR/simulated-host.jsonl and outlives the daemon, as a
real host's does: a restarted daemon adopts the VMs instead of launching them again.

Tests only: BANGER_TEST_CRASH_AT=before:K|after:K makes the daemon SIGKILL itself just
before (journaled, not acted) or just after (acted, not recorded) the K-th VM step it
starts (fault injection; see docs/engine.md). Never set it outside tests.

Examples:
  sudo banger daemon
  sudo banger daemon --specs-dir /srv/banger/specs --log-format json
  banger daemon --simulate --specs-dir ./specs --state-dir /tmp/banger --socket /tmp/banger.sock")]
pub struct DaemonArgs {
    /// Directory of spec files to watch.
    #[arg(long, value_name = "DIR")]
    pub specs_dir: Option<PathBuf>,
    /// Directory for the database and per-VM state.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Group whose members may use the socket (as root; must exist).
    #[arg(long, value_name = "NAME", default_value = "banger")]
    pub socket_group: String,
    /// Period of the full resync (re-probe everything).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub resync: Duration,
    /// Run VMs on the simulated driver (tests and benchmarks only).
    #[arg(long)]
    pub simulate: bool,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Reconciles running at once, all objects together (default 32; disk copies and
    /// image pulls are bounded apart, 2 at a time).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent: Option<u32>,
    /// Name of the bridge VMs attach to.
    #[arg(long, value_name = "NAME", value_parser = parse_bridge_name)]
    pub bridge: Option<String>,
    /// IPv4 network of the bridge (the bridge takes the first address).
    #[arg(long, value_name = "CIDR", value_parser = clap::value_parser!(Ipv4Cidr))]
    pub bridge_cidr: Option<Ipv4Cidr>,
    /// QEMU binary (default: qemu-system-x86_64 on PATH).
    #[arg(long, value_name = "PATH")]
    pub qemu_bin: Option<PathBuf>,
    /// Firecracker binary (default: firecracker on PATH).
    #[arg(long, value_name = "PATH")]
    pub firecracker_bin: Option<PathBuf>,
    /// Firecracker's jailer (default: a `jailer` beside the Firecracker binary, if any).
    #[arg(long, value_name = "PATH")]
    pub jailer_bin: Option<PathBuf>,
    /// Launch Firecracker even where the KVM check says stock guests cannot run on this
    /// host's /dev/kvm (for hosts that check misjudges, and for testing the driver
    /// against a real binary). Off by default.
    #[arg(long)]
    pub firecracker_skip_kvm_check: bool,
    /// QEMU acceleration: auto (KVM when stock guests can run on it, else TCG), kvm, tcg.
    #[arg(long, value_name = "auto|kvm|tcg", default_value = "auto", value_parser = clap::value_parser!(Accel))]
    pub accel: Accel,
    /// How long a guest gets to power off on stop before its VMM is stopped by force,
    /// for VMs whose spec sets no stopGracePeriodSeconds (a delete gives none).
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    pub stop_grace: Duration,
    /// TESTS ONLY (fault injection): SIGKILL the daemon before:K or after:K its K-th VM step.
    #[arg(
        long,
        env = "BANGER_TEST_CRASH_AT",
        value_name = "before:K|after:K",
        hide = true
    )]
    pub test_crash_at: Option<CrashAt>,
    /// The default kernel (vmlinux), its initrd (initrd.img) and banger's guest bits
    /// (guest-bits/) for Images without `kernel` [default: <state-dir>/guest, where
    /// scripts/up.sh installs the guest kit's].
    #[arg(long, value_name = "DIR")]
    pub guest_dir: Option<PathBuf>,
    /// Registry credentials: a docker-style config.json (`{"auths": {"host:port":
    /// {"auth": base64(user:password)}}}`), used for the registry each entry names.
    #[arg(long, value_name = "FILE")]
    pub registry_auth: Option<PathBuf>,
    /// How often an Image that follows an OCI tag checks whether the tag names a new
    /// digest (it is only shown, as UpdateAvailable, until applied).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub image_check_interval: Duration,
    /// Largest OCI layer blob (compressed) a pull accepts.
    #[arg(long, value_name = "SIZE", default_value = "2GiB", value_parser = parse_size)]
    pub oci_max_blob: u64,
    /// Largest sum of an OCI image's layer blobs.
    #[arg(long, value_name = "SIZE", default_value = "4GiB", value_parser = parse_size)]
    pub oci_max_total: u64,
    /// Largest sum of file content unpacked from an OCI image's layers.
    #[arg(long, value_name = "SIZE", default_value = "16GiB", value_parser = parse_size)]
    pub oci_max_unpacked: u64,
    /// Most layers an OCI image may have.
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub oci_max_layers: usize,
    /// Deadline of one whole pull (manifest, blobs, unpacking, mkfs).
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_duration)]
    pub oci_pull_timeout: Duration,
    /// The unprivileged user the VMMs run as (created at start when missing).
    #[arg(long, value_name = "NAME", default_value = DEFAULT_VMM_USER, value_parser = parse_vmm_user)]
    pub vmm_user: String,
}

/// Parses a size flag (`2GiB`, `512MiB`; sizes are binary).
fn parse_size(s: &str) -> Result<u64, String> {
    s.parse::<banger_specs::ByteSize>()
        .map(|b| b.bytes())
        .map_err(|e| e.to_string())
}

/// Parses `--vmm-user`: a portable user name (root is refused at start).
fn parse_vmm_user(s: &str) -> Result<String, String> {
    vmm_user::validate_name(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

/// Parses `--bridge`: a valid interface name.
fn parse_bridge_name(s: &str) -> Result<String, String> {
    names::validate_ifname(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

/// The daemon's locations after defaults are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonPaths {
    /// API socket.
    pub socket: PathBuf,
    /// Specs directory.
    pub specs_dir: PathBuf,
    /// State directory.
    pub state_dir: PathBuf,
}

impl DaemonArgs {
    /// Applies the defaults of [`DefaultPaths`] to unset locations.
    pub fn paths(&self, socket: Option<PathBuf>, defaults: &DefaultPaths) -> DaemonPaths {
        DaemonPaths {
            socket: socket.unwrap_or_else(|| defaults.socket.clone()),
            specs_dir: self
                .specs_dir
                .clone()
                .unwrap_or_else(|| defaults.specs_dir.clone()),
            state_dir: self
                .state_dir
                .clone()
                .unwrap_or_else(|| defaults.state_dir.clone()),
        }
    }
}

/// Sets up `tracing` on stderr; the filter comes from `BANGER_LOG` (default `info`, with
/// netlink-packet-route's attribute warnings muted).
fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BANGER_LOG")
        // netlink-packet-route warns at every link dump that the kernel sends attributes
        // newer than it knows; that is noise for banger's users.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,netlink_packet_route=error"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second init (only possible in tests) is harmless: keep the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!("cannot install signal handlers ({e}); stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs `banger daemon` until a signal stops it.
pub async fn run(args: &DaemonArgs, socket: Option<PathBuf>) -> Result<ExitCode, CliError> {
    init_tracing(args.log_format);
    let paths = args.paths(socket, &DefaultPaths::current());
    tracing::info!(socket = %paths.socket.display(), specs_dir = %paths.specs_dir.display(),
        state_dir = %paths.state_dir.display(), simulate = args.simulate, "starting banger daemon");
    engine::run(args, &paths, shutdown_signal()).await
}

/// The controller's configuration for these flags and paths.
pub fn daemon_config(args: &DaemonArgs, paths: &DaemonPaths) -> DaemonConfig {
    let mut config = DaemonConfig::new(
        Some(paths.specs_dir.clone()),
        paths.state_dir.clone(),
        paths.socket.clone(),
    );
    config.socket_group = Some(args.socket_group.clone());
    config.resync = args.resync;
    config.image_check_interval = args.image_check_interval;
    if let Some(n) = args.max_concurrent {
        config.max_concurrent = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if let Some(bridge) = &args.bridge {
        config.bridge_name = bridge.clone();
    }
    if let Some(cidr) = &args.bridge_cidr {
        config.bridge_network = cidr.network();
        config.bridge_prefix = cidr.prefix();
    }
    if let Some(at) = args.test_crash_at {
        tracing::warn!(
            ?at,
            "BANGER_TEST_CRASH_AT: this daemon will SIGKILL itself (fault injection, tests only)"
        );
        config.crash_at = Some(at);
    }
    config
}

/// How the Linux runtime resolves Images, from the flags (reads `--registry-auth`).
pub fn image_config(
    args: &DaemonArgs,
    state_dir: &std::path::Path,
) -> Result<ImageConfig, CliError> {
    let credentials = match &args.registry_auth {
        Some(path) => RegistryCredentials::load(path).map_err(|e| CliError::Daemon(Box::new(e)))?,
        None => RegistryCredentials::none(),
    };
    let defaults = ImageConfig::for_state_dir(state_dir);
    Ok(ImageConfig {
        guest_dir: args.guest_dir.clone().unwrap_or(defaults.guest_dir),
        credentials,
        limits: OciLimits {
            max_blob_bytes: args.oci_max_blob,
            max_total_bytes: args.oci_max_total,
            max_unpacked_bytes: args.oci_max_unpacked,
            max_layers: args.oci_max_layers,
            timeout: args.oci_pull_timeout,
            ..OciLimits::default()
        },
    })
}

/// The one place that picks the runtime and hands the configuration to the engine.
mod engine {
    use super::*;
    use banger_controller::runtime::simulated::SimulatedRuntime;

    /// Runs the engine until `shutdown` resolves.
    pub async fn run(
        args: &DaemonArgs,
        paths: &DaemonPaths,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<ExitCode, CliError> {
        let config = daemon_config(args, paths);
        if args.simulate {
            tracing::warn!("--simulate: VMs run on the simulated driver; nothing boots");
            let host = SimulatedRuntime::persistent(config.state_dir.join("simulated-host.jsonl"))
                .without_step_records();
            banger_controller::daemon::run(config, host, shutdown)
                .await
                .map_err(|e| CliError::Daemon(Box::new(e)))?;
            return Ok(ExitCode::SUCCESS);
        }
        let bridge_cidr = Ipv4Cidr::new(config.bridge_network, config.bridge_prefix)
            .map_err(|e| CliError::Daemon(Box::new(e)))?;
        let bridge = BridgeConfig::new(&config.bridge_name, bridge_cidr)
            .map_err(|e| CliError::Daemon(Box::new(e)))?;
        let runtime = LinuxRuntime::new(LinuxRuntimeConfig {
            state_dir: config.state_dir.clone(),
            bridge,
            drivers: DriverConfig {
                qemu_bin: args.qemu_bin.clone(),
                firecracker_bin: args.firecracker_bin.clone(),
                jailer_bin: args.jailer_bin.clone(),
                // The runtime puts the jails below the state directory.
                jail_dir: None,
                firecracker_skip_kvm_check: args.firecracker_skip_kvm_check,
                accel: args.accel,
            },
            stop_grace: args.stop_grace,
            images: image_config(args, &config.state_dir)?,
            vmm_user: args.vmm_user.clone(),
        })
        .map_err(|e| CliError::Daemon(Box::new(e)))?;
        tracing::info!(runtime = ?runtime, "linux runtime ready");
        banger_controller::daemon::run(config, runtime, shutdown)
            .await
            .map_err(|e| CliError::Daemon(Box::new(e)))?;
        Ok(ExitCode::SUCCESS)
    }
}
#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn paths_take_flags_over_defaults() {
        let defaults = DefaultPaths {
            socket: "/d/sock".into(),
            specs_dir: "/d/specs".into(),
            state_dir: "/d/state".into(),
        };
        let args = DaemonArgs {
            specs_dir: Some("/s".into()),
            state_dir: None,
            socket_group: "banger".into(),
            resync: Duration::from_secs(30),
            simulate: true,
            log_format: LogFormat::Text,
            max_concurrent: None,
            bridge: None,
            bridge_cidr: None,
            qemu_bin: None,
            firecracker_bin: None,
            jailer_bin: None,
            firecracker_skip_kvm_check: false,
            accel: Accel::Auto,
            stop_grace: Duration::from_secs(15),
            test_crash_at: None,
            guest_dir: None,
            registry_auth: None,
            image_check_interval: Duration::from_secs(3600),
            oci_max_blob: 2 << 30,
            oci_max_total: 4 << 30,
            oci_max_unpacked: 16 << 30,
            oci_max_layers: 128,
            oci_pull_timeout: Duration::from_secs(1800),
            vmm_user: DEFAULT_VMM_USER.into(),
        };
        let paths = args.paths(Some("/x.sock".into()), &defaults);
        let config = daemon_config(
            &DaemonArgs {
                max_concurrent: Some(3),
                bridge: Some("br-test".into()),
                bridge_cidr: Some("10.9.0.0/16".parse().expect("cidr")),
                resync: Duration::from_secs(2),
                ..args.clone()
            },
            &paths,
        );
        assert_eq!(config.specs_dir, Some(PathBuf::from("/s")));
        assert_eq!(config.socket, PathBuf::from("/x.sock"));
        assert_eq!(config.socket_group.as_deref(), Some("banger"));
        assert_eq!(config.resync, Duration::from_secs(2));
        assert_eq!(config.max_concurrent, 3);
        assert_eq!(config.bridge_name, "br-test");
        assert_eq!(
            (config.bridge_network, config.bridge_prefix),
            (Ipv4Addr::new(10, 9, 0, 0), 16)
        );
        assert_eq!(
            paths,
            DaemonPaths {
                socket: "/x.sock".into(),
                specs_dir: "/s".into(),
                state_dir: "/d/state".into()
            }
        );
    }
}
