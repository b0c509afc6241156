//! `banger daemon`: run the controller in the foreground.
//!
//! Parses the flags into the controller's configuration, logs with `tracing` on stderr
//! (text or JSON), turns SIGTERM/SIGINT into a shutdown future and runs the daemon until
//! it returns.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use banger_controller::config::DaemonConfig;

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

/// `--accel`: how QEMU accelerates guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Accel {
    /// KVM when stock guests can run on it, else TCG (detected).
    #[default]
    Auto,
    /// Always KVM.
    Kvm,
    /// Always TCG (software emulation).
    Tcg,
}

/// Arguments of `banger daemon` (the socket is the global `--socket`).
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
The daemon runs in the foreground and logs on stderr. It watches the specs directory
(every *.yaml/*.yml below it), accepts `banger apply`, and keeps the host matching.
SIGTERM or SIGINT stops it; running VMs keep running and are adopted by the next start.

Defaults as root: --socket /run/banger/banger.sock, --specs-dir /etc/banger/specs,
--state-dir /var/lib/banger. Otherwise: $XDG_RUNTIME_DIR/banger.sock,
$XDG_CONFIG_HOME/banger/specs, $XDG_STATE_HOME/banger.

--simulate runs every VM on a simulated driver instead of a hypervisor. It exists for
tests and benchmarks of the engine; nothing boots.

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
    /// Period of the full resync (re-probe everything).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub resync: Duration,
    /// Run VMs on the simulated driver (tests and benchmarks only).
    #[arg(long)]
    pub simulate: bool,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Reconciles running at once.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent: Option<u32>,
    /// Name of the bridge VMs attach to.
    #[arg(long, value_name = "NAME")]
    pub bridge: Option<String>,
    /// IPv4 network of the bridge (the bridge takes the first address).
    #[arg(long, value_name = "CIDR", value_parser = parse_bridge_cidr)]
    pub bridge_cidr: Option<BridgeCidr>,
    /// QEMU binary (default: qemu-system-x86_64 on PATH).
    #[arg(long, value_name = "PATH")]
    pub qemu_bin: Option<PathBuf>,
    /// Firecracker binary (default: firecracker on PATH).
    #[arg(long, value_name = "PATH")]
    pub firecracker_bin: Option<PathBuf>,
    /// QEMU acceleration.
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    pub accel: Accel,
}

/// `--bridge-cidr`: an IPv4 network such as `172.30.0.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeCidr {
    /// The network address (host bits zero).
    pub network: Ipv4Addr,
    /// The prefix length, 8..=30 (room for the bridge and at least one VM).
    pub prefix: u8,
}

/// Parses `--bridge-cidr`.
pub fn parse_bridge_cidr(s: &str) -> Result<BridgeCidr, String> {
    let (addr, prefix) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not a CIDR such as 172.30.0.0/24"))?;
    let network: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IPv4 address (in {s:?})"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| (8..=30).contains(p))
        .ok_or_else(|| format!("prefix {prefix:?} must be a number from 8 to 30 (in {s:?})"))?;
    let host_bits = u32::MAX >> prefix;
    if u32::from(network) & host_bits != 0 {
        let base = Ipv4Addr::from(u32::from(network) & !host_bits);
        return Err(format!(
            "{s:?} has host bits set: did you mean {base}/{prefix}?"
        ));
    }
    Ok(BridgeCidr { network, prefix })
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

/// Sets up `tracing` on stderr; the filter comes from `BANGER_LOG` (default `info`).
fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BANGER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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
    config.resync = args.resync;
    if let Some(n) = args.max_concurrent {
        config.max_concurrent = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if let Some(bridge) = &args.bridge {
        config.bridge_name = bridge.clone();
    }
    if let Some(cidr) = args.bridge_cidr {
        config.bridge_network = cidr.network;
        config.bridge_prefix = cidr.prefix;
    }
    config
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
            banger_controller::daemon::run(config, SimulatedRuntime::new(), shutdown)
                .await
                .map_err(|e| CliError::Daemon(Box::new(e)))?;
            return Ok(ExitCode::SUCCESS);
        }
        // REAL RUNTIME (the lead replaces this block): build the host runtime from
        // `args.qemu_bin`, `args.firecracker_bin` and `args.accel`, then call
        // `banger_controller::daemon::run(config, runtime, shutdown)` as above.
        let _ = (
            config,
            shutdown,
            &args.qemu_bin,
            &args.firecracker_bin,
            args.accel,
        );
        eprintln!("error: the real runtime is not built yet: use --simulate");
        Ok(ExitCode::from(2))
    }
}
#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn bridge_cidr() {
        assert_eq!(
            parse_bridge_cidr("172.30.0.0/24"),
            Ok(BridgeCidr {
                network: Ipv4Addr::new(172, 30, 0, 0),
                prefix: 24
            })
        );
        assert_eq!(parse_bridge_cidr("10.0.0.0/8").map(|c| c.prefix), Ok(8));
        let err = parse_bridge_cidr("172.30.0.1/24").expect_err("host bits");
        assert!(err.contains("did you mean 172.30.0.0/24"), "{err}");
        for bad in [
            "172.30.0.0",
            "172.30.0/24",
            "172.30.0.0/31",
            "172.30.0.0/x",
            "::1/64",
        ] {
            assert!(parse_bridge_cidr(bad).is_err(), "{bad}");
        }
    }

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
            resync: Duration::from_secs(30),
            simulate: true,
            log_format: LogFormat::Text,
            max_concurrent: None,
            bridge: None,
            bridge_cidr: None,
            qemu_bin: None,
            firecracker_bin: None,
            accel: Accel::Auto,
        };
        let paths = args.paths(Some("/x.sock".into()), &defaults);
        let config = daemon_config(
            &DaemonArgs {
                max_concurrent: Some(3),
                bridge: Some("br-test".into()),
                bridge_cidr: Some(BridgeCidr {
                    network: Ipv4Addr::new(10, 9, 0, 0),
                    prefix: 16,
                }),
                resync: Duration::from_secs(2),
                ..args.clone()
            },
            &paths,
        );
        assert_eq!(config.specs_dir, Some(PathBuf::from("/s")));
        assert_eq!(config.socket, PathBuf::from("/x.sock"));
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
