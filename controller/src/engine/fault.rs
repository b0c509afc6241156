//! TEST ONLY: fault injection. With [`crate::config::DaemonConfig::crash_at`] set, the
//! engine kills the daemon just before or just after its k-th VM step (counting the VM
//! steps this daemon starts), so that tests can prove that every crash point converges
//! and leaks nothing. Never configured outside tests (`BANGER_TEST_CRASH_AT`).
//!
//! "Before" falls after the step's journal row is written (`running`) and before the
//! runtime acts; "after" falls after the runtime acted and before its result (handles,
//! journal `done`) is recorded: the two windows a real crash can hit.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::config::{CrashAt, CrashWhen};

/// What a crash does: in the daemon, SIGKILL to itself; in in-process tests, whatever
/// the test needs (it must never return control to the step).
pub type CrashHook = Arc<dyn Fn() + Send + Sync>;

/// The armed crash point and the count of VM steps started.
pub(super) struct FaultPoint {
    at: CrashAt,
    started: AtomicU32,
    hook: CrashHook,
}

/// SIGKILL to this process: the daemon dies as an OOM kill or a power cut would kill it.
pub fn sigkill_self() {
    tracing::warn!("fault injection: the daemon kills itself (SIGKILL)");
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
}

impl FaultPoint {
    pub(super) fn new(at: CrashAt, hook: CrashHook) -> Self {
        FaultPoint {
            at,
            started: AtomicU32::new(0),
            hook,
        }
    }

    /// Counts a VM step starting; returns its number (1-based).
    pub(super) fn start_step(&self) -> u32 {
        self.started.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Crashes if step `n` at `when` is the armed point. Never returns then.
    pub(super) async fn maybe_crash(&self, n: u32, when: CrashWhen) {
        if self.at.step == n && self.at.when == when {
            (self.hook)();
            std::future::pending::<()>().await;
        }
    }
}
