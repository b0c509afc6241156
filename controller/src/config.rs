//! Daemon configuration: where specs, state and the socket live, and the engine's bounds.
//!
//! Plain data built by the CLI from flags (`banger daemon --specs-dir … --state-dir …`)
//! and handed to [`crate::daemon::run`]. Nothing here reads the environment except
//! [`DaemonConfig::default_paths`], which computes the documented defaults.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `banger daemon` needs to know before it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// The watched specs directory (`--specs-dir`). `None` disables the directory source.
    pub specs_dir: Option<PathBuf>,
    /// State directory (`--state-dir`): `banger.db`, `vms/<uid>/`, `images/<uid>/`.
    pub state_dir: PathBuf,
    /// The API's Unix socket (`--socket`): `0660 root:<socket_group>` for a daemon run
    /// as root with a group, otherwise 0600 (its user only).
    pub socket: PathBuf,
    /// The group whose members may use the socket (`--socket-group`, default `banger`):
    /// only for a daemon run as root, which refuses to start when it does not exist.
    /// `None`: the socket is root's (or the daemon user's) alone.
    pub socket_group: Option<String>,
    /// Bounds on the API's clients.
    pub api: ApiLimits,
    /// Period of the full resync (`--resync`, default 30 s).
    pub resync: Duration,
    /// How many reconciles may run at once, all objects together.
    pub max_concurrent: usize,
    /// How many heavy operations (image resolution and pulls) may run at once.
    pub max_heavy: usize,
    /// Consecutive failures after which an object is marked `Stalled=True`.
    pub stall_after: u32,
    /// Smallest backoff delay after a failure.
    pub backoff_min: Duration,
    /// Largest backoff delay after failures.
    pub backoff_max: Duration,
    /// Quiet time after a save in the specs directory before it is rescanned: saves
    /// closer together than this (an editor saving twice, a formatter after a save)
    /// make one rescan of the final content.
    pub debounce: Duration,
    /// Events kept per object; older ones are dropped.
    pub events_per_object: usize,
    /// Events kept in all (the last ones of deleted objects included); the oldest are
    /// dropped.
    pub events_total: usize,
    /// Bridge device name for VM networking.
    pub bridge_name: String,
    /// Bridge network: the bridge takes the first host address, VMs the rest.
    pub bridge_network: Ipv4Addr,
    /// Prefix length of [`Self::bridge_network`].
    pub bridge_prefix: u8,
    /// How long in-flight work may take to finish after shutdown is requested.
    pub shutdown_grace: Duration,
    /// Consecutive failed probes of a VMM (its control socket does not answer) before
    /// it counts as unresponsive and is restarted, like a Kubernetes liveness probe's
    /// `failureThreshold`. Below it the last good observation stands.
    pub probe_failure_threshold: u32,
    /// How soon a VM whose probe failed is probed again.
    pub probe_retry: Duration,
    /// How often an Image that follows an OCI tag checks whether the tag names a new
    /// digest (`--image-check-interval`, default 1 h).
    pub image_check_interval: Duration,
    /// TEST ONLY (fault injection): kill the daemon at this point of its k-th VM step.
    /// Never set outside tests (`BANGER_TEST_CRASH_AT`, see `docs/engine.md`).
    pub crash_at: Option<CrashAt>,
}

/// TEST ONLY: where fault injection kills the daemon ([`DaemonConfig::crash_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashAt {
    /// Which VM step, counting from 1 the VM steps this daemon starts.
    pub step: u32,
    /// Just before the step acts, or just after.
    pub when: CrashWhen,
}

/// Which side of a step the crash falls on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashWhen {
    /// The step's journal row is written (`running`); the runtime has not acted.
    Before,
    /// The runtime acted; its result (handles, journal `done`) is not recorded.
    After,
}

impl std::str::FromStr for CrashAt {
    type Err = String;

    /// `before:K` or `after:K`, K ≥ 1.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?}: expected before:K or after:K with K >= 1");
        let (when, k) = s.split_once(':').ok_or_else(bad)?;
        let when = match when {
            "before" => CrashWhen::Before,
            "after" => CrashWhen::After,
            _ => return Err(bad()),
        };
        let step: u32 = k.parse().map_err(|_| bad())?;
        if step == 0 {
            return Err(bad());
        }
        Ok(CrashAt { step, when })
    }
}

/// Bounds on the API's clients (see `controller/src/api/listener.rs` and `body.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// Longest a client may take to send a request's head (request line and
    /// headers), and longest a kept-alive connection may sit idle between requests.
    pub header_timeout: Duration,
    /// Longest a client may take to send a request's body.
    pub body_timeout: Duration,
    /// Most connections at once (connect streams included).
    pub max_connections: usize,
    /// Of those, how many only root (or the daemon's user) may take.
    pub root_reserve: usize,
    /// Most request bodies read at once (each at most the body limit, 4 MiB).
    pub bodies_in_flight: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 256,
            root_reserve: 32,
            bodies_in_flight: 8,
        }
    }
}

/// Default bridge device name.
pub const DEFAULT_BRIDGE: &str = "banger0";

impl DaemonConfig {
    /// A configuration with every default, rooted at the given directories.
    pub fn new(specs_dir: Option<PathBuf>, state_dir: PathBuf, socket: PathBuf) -> Self {
        DaemonConfig {
            specs_dir,
            state_dir,
            socket,
            socket_group: None,
            api: ApiLimits::default(),
            resync: Duration::from_secs(30),
            // Reconciles are mostly waits (store trips, the host): a fleet's group
            // commits grow with the reconciles in flight (BENCHMARKS.md, P3).
            max_concurrent: 32,
            max_heavy: 2,
            stall_after: 5,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            debounce: Duration::from_millis(15),
            events_per_object: 50,
            events_total: 10_000,
            bridge_name: DEFAULT_BRIDGE.to_string(),
            bridge_network: Ipv4Addr::new(172, 30, 0, 0),
            bridge_prefix: 24,
            shutdown_grace: Duration::from_secs(30),
            probe_failure_threshold: 3,
            probe_retry: Duration::from_secs(2),
            crash_at: None,
            image_check_interval: Duration::from_secs(3600),
        }
    }

    /// The documented default paths: as root `/etc/banger/specs`, `/var/lib/banger` and
    /// `/run/banger/banger.sock`; otherwise `$XDG_CONFIG_HOME/banger/specs`,
    /// `$XDG_STATE_HOME/banger` and `$XDG_RUNTIME_DIR/banger.sock` (with the usual
    /// `$HOME` fallbacks; an empty variable counts as unset). Without
    /// `$XDG_RUNTIME_DIR` the socket goes in the state directory
    /// (`$XDG_STATE_HOME/banger/banger.sock`), never in a shared temporary directory
    /// where another user could take the name first. The CLI's `paths` module computes
    /// the same. Returns `(specs_dir, state_dir, socket)`.
    pub fn default_paths(is_root: bool) -> (PathBuf, PathBuf, PathBuf) {
        Self::default_paths_from(is_root, |name| std::env::var_os(name))
    }

    /// [`Self::default_paths`] with the environment read through `env` (for tests).
    pub fn default_paths_from(
        is_root: bool,
        env: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> (PathBuf, PathBuf, PathBuf) {
        if is_root {
            return (
                PathBuf::from("/etc/banger/specs"),
                PathBuf::from("/var/lib/banger"),
                PathBuf::from("/run/banger/banger.sock"),
            );
        }
        let var = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let home = var("HOME").unwrap_or_else(|| PathBuf::from("."));
        let config = var("XDG_CONFIG_HOME").unwrap_or_else(|| home.join(".config"));
        let state = var("XDG_STATE_HOME")
            .unwrap_or_else(|| home.join(".local/state"))
            .join("banger");
        let socket = match var("XDG_RUNTIME_DIR") {
            Some(runtime) => runtime.join("banger.sock"),
            None => state.join("banger.sock"),
        };
        (config.join("banger/specs"), state, socket)
    }

    /// The SQLite database file.
    pub fn db_path(&self) -> PathBuf {
        self.state_dir.join("banger.db")
    }

    /// The state directory of one VM, named from its uid.
    pub fn vm_dir(&self, uid: &str) -> PathBuf {
        self.state_dir.join("vms").join(uid)
    }

    /// The cache directory of one Image, named from its uid.
    pub fn image_dir(&self, uid: &str) -> PathBuf {
        self.state_dir.join("images").join(uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_points_parse() {
        assert_eq!(
            "before:3".parse::<CrashAt>(),
            Ok(CrashAt {
                step: 3,
                when: CrashWhen::Before
            })
        );
        assert_eq!(
            "after:1".parse::<CrashAt>().map(|c| c.when),
            Ok(CrashWhen::After)
        );
        for bad in ["", "before", "during:1", "after:0", "after:x"] {
            assert!(bad.parse::<CrashAt>().is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_match_the_issue() {
        let c = DaemonConfig::new(None, PathBuf::from("/s"), PathBuf::from("/s.sock"));
        assert_eq!(c.resync, Duration::from_secs(30));
        assert_eq!(c.bridge_name, "banger0");
        assert_eq!(c.bridge_network, Ipv4Addr::new(172, 30, 0, 0));
        assert_eq!(c.bridge_prefix, 24);
        assert_eq!(c.vm_dir("abc"), PathBuf::from("/s/vms/abc"));
        let (specs, state, sock) = DaemonConfig::default_paths(true);
        assert_eq!(specs, PathBuf::from("/etc/banger/specs"));
        assert_eq!(state, PathBuf::from("/var/lib/banger"));
        assert_eq!(sock, PathBuf::from("/run/banger/banger.sock"));
    }

    #[test]
    fn a_user_without_runtime_dir_gets_no_temp_dir_socket() {
        let env = |name: &str| match name {
            "HOME" => Some("/home/ann".into()),
            "XDG_RUNTIME_DIR" => Some("".into()),
            _ => None,
        };
        let (specs, state, sock) = DaemonConfig::default_paths_from(false, env);
        assert_eq!(specs, PathBuf::from("/home/ann/.config/banger/specs"));
        assert_eq!(state, PathBuf::from("/home/ann/.local/state/banger"));
        assert_eq!(
            sock,
            PathBuf::from("/home/ann/.local/state/banger/banger.sock")
        );
        let with_runtime = |name: &str| (name == "XDG_RUNTIME_DIR").then(|| "/run/user/7".into());
        let (_, _, sock) = DaemonConfig::default_paths_from(false, with_runtime);
        assert_eq!(sock, PathBuf::from("/run/user/7/banger.sock"));
    }
}
