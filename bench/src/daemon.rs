//! One `banger daemon` the harness started, on its own directories and socket.
//!
//! The daemon is the real binary (`banger daemon`, with `--simulate` for the figures
//! that need 1,000 VMs), run in its own process group (a Ctrl-C reaches only the
//! harness, which then stops it) and, for real guests, inside the harness's network
//! namespace. The harness talks to it the way a user does: the `banger` CLI
//! ([`BenchDaemon::cli`]) and the documented API ([`BenchDaemon::api`]). Dropping it
//! kills the process.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::api::ApiClient;
use crate::error::{BenchError, Result};
use crate::netns::NetNs;
use crate::poll;
use crate::run::{check, describe};

/// How long a daemon may take to answer after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `banger daemon`.
#[derive(Debug)]
pub struct BenchDaemon {
    banger: PathBuf,
    child: Option<Child>,
    /// Its API socket.
    pub socket: PathBuf,
    /// Its state directory.
    pub state_dir: PathBuf,
    /// Its specs directory (watched).
    pub specs_dir: PathBuf,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
    netns: Option<String>,
}

impl BenchDaemon {
    /// Starts `banger daemon ARGS` with its directories under `root` (inside `netns`
    /// when given) and waits until its API answers.
    pub fn start(
        banger: &Path,
        root: &Path,
        args: &[&str],
        netns: Option<&NetNs>,
    ) -> Result<BenchDaemon> {
        let mut d = BenchDaemon {
            banger: banger.to_path_buf(),
            child: None,
            socket: root.join("banger.sock"),
            state_dir: root.join("state"),
            specs_dir: root.join("specs"),
            log: root.join("daemon.log"),
            netns: netns.map(|n| n.name().to_string()),
        };
        fs::create_dir_all(&d.specs_dir).map_err(BenchError::io("create", &d.specs_dir))?;
        d.spawn(args)?;
        d.wait_answering()?;
        Ok(d)
    }

    /// Starts the process (same directories) with `args`; returns when it was spawned.
    pub fn spawn(&mut self, args: &[&str]) -> Result<SystemTime> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(BenchError::io("open", &self.log))?;
        let log2 = log.try_clone().map_err(BenchError::io("open", &self.log))?;
        let mut cmd = match &self.netns {
            // Only the network namespace (`nsenter --net`): `ip netns exec` would also
            // give the daemon a fresh `/sys` without the cgroup hierarchies it confines
            // its VMMs in.
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg("--")
                    .arg(&self.banger);
                c
            }
            None => Command::new(&self.banger),
        };
        cmd.arg("--socket")
            .arg(&self.socket)
            .arg("daemon")
            .arg("--specs-dir")
            .arg(&self.specs_dir)
            .arg("--state-dir")
            .arg(&self.state_dir);
        if nix::unistd::geteuid().is_root() {
            // The harness is the socket's only client: no `banger` group needed.
            cmd.args(["--socket-group", "root"]);
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0);
        let started = SystemTime::now();
        let child = cmd.spawn().map_err(|source| BenchError::Spawn {
            program: describe(&cmd),
            source,
        })?;
        self.child = Some(child);
        Ok(started)
    }

    /// Waits (bounded) until `GET /v1/healthz` answers; fails early if the daemon exits.
    pub fn wait_answering(&mut self) -> Result<()> {
        let api = self.api();
        let what = format!("daemon at {} to answer", self.socket.display());
        let mut exited = None;
        let waited = poll::until(&what, START_TIMEOUT, Duration::from_millis(5), || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                exited = Some(status);
                return Ok(Some(()));
            }
            Ok(api.healthy().then_some(()))
        });
        if let Some(status) = exited {
            return Err(BenchError::Unexpected(format!(
                "banger daemon exited ({status}) before answering; log: {}",
                self.log_tail(20)
            )));
        }
        waited.map_err(|e| BenchError::Unexpected(format!("{e}; log: {}", self.log_tail(20))))
    }

    /// The daemon's pid (`nsenter` execs it, so it is the child's).
    pub fn pid(&self) -> Result<u32> {
        self.child
            .as_ref()
            .map(Child::id)
            .ok_or_else(|| BenchError::Unexpected("the daemon is not running".into()))
    }

    /// A client of its API.
    pub fn api(&self) -> ApiClient {
        ApiClient::new(&self.socket)
    }

    /// `banger --socket SOCKET`, ready for more arguments.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(&self.banger);
        c.arg("--socket").arg(&self.socket);
        c
    }

    /// Runs `banger --socket SOCKET ARGS…`; an error (with the daemon's log tail) unless
    /// it exits 0.
    pub fn cli_ok(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = self.cli();
        cmd.args(args);
        let out = cmd.output().map_err(|source| BenchError::Spawn {
            program: describe(&cmd),
            source,
        })?;
        check(&cmd, out)
            .map_err(|e| BenchError::Unexpected(format!("{e}; daemon log: {}", self.log_tail(10))))
    }

    /// Stops the daemon with SIGTERM and waits (bounded) for it to exit.
    pub fn terminate(&mut self, timeout: Duration) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let _ = kill(pid, Signal::SIGTERM);
        let end = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return if status.success() {
                    Ok(())
                } else {
                    Err(BenchError::Unexpected(format!(
                        "banger daemon exited {status} on SIGTERM; log: {}",
                        self.log_tail(10)
                    )))
                };
            }
            if Instant::now() >= end {
                let _ = child.kill();
                let _ = child.wait();
                return Err(BenchError::Timeout {
                    what: "banger daemon to stop on SIGTERM".into(),
                    waited: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The last `n` lines of the daemon's log, on one line.
    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join(" | ")
    }
}

impl Drop for BenchDaemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
