//! Reads of the NAT table that `observe` made, kept for the `ensure-nat` step of the
//! same reconcile, so that step writes the VM's rule without reading the table again
//! (one `nft` process, ~4 ms, less on the way to a VM's start).
//!
//! A read is kept only for a VM whose rule is missing or wrong (the read `ensure-nat`
//! would make), is taken once, and only while it is fresh ([`FRESH`]). It is good for
//! that long because it is about one VM's rules, and those are written only by that
//! VM's own steps, under its lock, which `observe` and the steps after it hold: another
//! VM's steps touch other rules; a shared chain that vanished since makes the write's
//! transaction fail whole, and the next reconcile reads again. A VM's remove steps
//! forget its read.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::host::net::nat::VmNatRead;

/// How long a kept read may be used: a reconcile goes from its observation to
/// `ensure-nat` in tens of milliseconds; anything older is read again.
pub(super) const FRESH: Duration = Duration::from_secs(2);

/// The kept reads, by VM uid.
#[derive(Debug, Default)]
pub(super) struct NatReads {
    reads: Mutex<HashMap<String, (Instant, VmNatRead)>>,
}

impl NatReads {
    fn reads(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, VmNatRead)>> {
        self.reads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `read`, made at `at`, for VM `uid` (replacing an older one).
    pub(super) fn keep(&self, uid: &str, read: VmNatRead, at: Instant) {
        self.reads().insert(uid.to_owned(), (at, read));
    }

    /// Drops VM `uid`'s read, if any.
    pub(super) fn forget(&self, uid: &str) {
        self.reads().remove(uid);
    }

    /// Takes VM `uid`'s read if it was made less than [`FRESH`] before `now`.
    pub(super) fn take_fresh(&self, uid: &str, now: Instant) -> Option<VmNatRead> {
        let (at, read) = self.reads().remove(uid)?;
        (now.saturating_duration_since(at) < FRESH).then_some(read)
    }

    /// How many reads are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.reads().len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::host::names::ObjectUid;
    use crate::host::net::nat::NatRule;

    fn read(handle: u64) -> VmNatRead {
        VmNatRead {
            base_ok: true,
            rules: vec![NatRule {
                uid: ObjectUid::parse("0b6d8f1e-4a2c-4f7e-9d51-3c2a1b0e9f88").unwrap(),
                ip: None,
                handle,
            }],
        }
    }

    #[test]
    fn a_fresh_read_is_taken_once() {
        let reads = NatReads::default();
        let t0 = Instant::now();
        reads.keep("a", read(1), t0);
        reads.keep("a", read(2), t0);
        reads.keep("b", read(3), t0);
        assert_eq!(reads.take_fresh("a", t0 + FRESH / 2), Some(read(2)));
        assert_eq!(reads.take_fresh("a", t0 + FRESH / 2), None, "taken twice");
        assert_eq!(reads.len(), 1);
    }

    #[test]
    fn a_stale_or_forgotten_read_is_not_used() {
        let reads = NatReads::default();
        let t0 = Instant::now();
        reads.keep("a", read(1), t0);
        assert_eq!(reads.take_fresh("a", t0 + FRESH), None);
        assert_eq!(reads.len(), 0, "a stale read is dropped too");
        reads.keep("b", read(2), t0);
        reads.forget("b");
        assert_eq!(reads.take_fresh("b", t0), None);
        reads.forget("c");
    }
}
