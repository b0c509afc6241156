//! Ctrl-C and SIGTERM stop a run cleanly.
//!
//! [`install`] sets a handler for SIGINT and SIGTERM that only raises a flag. Every
//! wait of the harness checks the flag ([`check`]) and returns
//! [`BenchError::Interrupted`]; unwinding then runs the guards that stop daemons, kill
//! VMs and remove namespaces and temp dirs. A handler (not a blocked mask) keeps the
//! children clean: `exec` resets caught signals to their default, while a blocked mask
//! would be inherited and keep a daemon from seeing its SIGTERM. The daemons run in
//! their own process group, so a Ctrl-C at the terminal reaches only the harness.

use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use crate::error::{BenchError, Result};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static REPORTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Routes SIGINT and SIGTERM to the flag. Call first thing in `main`.
pub fn install() -> Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe,
        // and replaces no handler anything else in this program relies on.
        unsafe { sigaction(signal, &action) }
            .map_err(|e| BenchError::Unexpected(format!("handle {signal}: {e}")))?;
    }
    Ok(())
}

/// `Err(Interrupted)` once a signal arrived.
pub fn check() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        if !REPORTED.swap(true, Ordering::SeqCst) {
            eprintln!("banger-bench: interrupted: stopping and cleaning up");
        }
        Err(BenchError::Interrupted)
    } else {
        Ok(())
    }
}
