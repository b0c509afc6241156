//! A network namespace the harness creates for its real guests, and removes with
//! everything in it.
//!
//! The daemon runs inside it (bridge, taps and NAT rules never touch the host's own
//! namespace), and so do the bare QEMU runs and the TCP probes: [`NetNs::thread`] runs
//! a closure on a thread that joined the namespace (`setns` affects only the calling
//! thread, and processes it spawns are born in the namespace). On drop every process
//! in the namespace is killed and the namespace deleted; the devices go with it.

use std::process::Command;
use std::thread::JoinHandle;

use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::{BenchError, Result};
use crate::run::run_ok;

/// A network namespace made by the harness.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `bgbench-<pid>-<tag>` with its loopback up.
    pub fn create(tag: &str) -> Result<NetNs> {
        let name = format!("bgbench-{}-{tag}", std::process::id());
        run_ok(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = NetNs { name };
        run_ok(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    /// Its name (under `/run/netns`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS…`: changes the namespace's links and addresses.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        run_ok(Command::new("ip").args(["-n", &self.name]).args(args)).map(|_| ())
    }

    /// Runs `f` on a new thread that joined the namespace.
    pub fn thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<JoinHandle<Result<T>>> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::Builder::new()
            .name(format!("netns {}", self.name))
            .spawn(move || {
                let file = std::fs::File::open(&path).map_err(BenchError::io("open", &path))?;
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| BenchError::Unexpected(format!("setns into {path}: {e}")))?;
                f()
            })
            .map_err(|source| BenchError::Spawn {
                program: "netns thread".into(),
                source,
            })
    }

    /// Runs `f` inside the namespace and waits for it.
    pub fn run_inside<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        join(self.thread(f)?)
    }

    fn pids(&self) -> Vec<i32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|s| s.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Waits for a namespace thread; a panic in it becomes an error.
pub fn join<T>(handle: JoinHandle<Result<T>>) -> Result<T> {
    handle
        .join()
        .map_err(|_| BenchError::Unexpected("a namespace thread panicked".into()))?
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // A few rounds: a dying daemon may still start a process.
        for _ in 0..5 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}
