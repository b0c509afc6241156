//! Resync passes, counted for `/v1/healthz`.
//!
//! A pass is one [`super::Engine::enqueue_all`]: every object is queued (at start-up,
//! then every `--resync` period). It is complete once each of those objects has
//! finished a reconcile that started after the pass began — so after a daemon restart,
//! the first completed pass means every object was observed again. An object waiting
//! out a failure's backoff keeps it: the pass completes when that reconcile has run. A
//! pass that begins before the previous one completed replaces it (the previous one is
//! never counted as completed).
//!
//! The counts are for people and benchmarks, never for the engine's own decisions.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

use banger_specs::ObjectKey;

use crate::clock::now_rfc3339;

/// The counts `/v1/healthz` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResyncCounts {
    /// Passes begun since the daemon started.
    pub started: u64,
    /// Passes completed (every object of the pass reconciled).
    pub completed: u64,
    /// When the last completed pass completed (RFC 3339).
    pub last_completed: Option<String>,
    /// Reconciles finished since the daemon started (any trigger, failed ones too).
    pub reconciles: u64,
}

#[derive(Default)]
struct Passes {
    counts: ResyncCounts,
    /// Objects of the current pass not reconciled since it began.
    pending: HashSet<ObjectKey>,
    /// The current pass is still open.
    open: bool,
}

/// The engine's resync passes (see the module docs).
#[derive(Default)]
pub struct ResyncPasses {
    inner: Mutex<Passes>,
}

/// The pass a reconcile started in: [`ResyncPasses::finished`] counts the reconcile
/// for that pass only if no newer one began meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassTicket(u64);

impl ResyncPasses {
    fn inner(&self) -> MutexGuard<'_, Passes> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Begins a pass over these objects (call before queueing them).
    pub fn begin(&self, keys: impl IntoIterator<Item = ObjectKey>) {
        let mut p = self.inner();
        p.counts.started += 1;
        p.pending = keys.into_iter().collect();
        p.open = true;
        Self::complete_if_done(&mut p);
    }

    /// Notes that a reconcile is starting.
    pub fn ticket(&self) -> PassTicket {
        PassTicket(self.inner().counts.started)
    }

    /// Notes that the reconcile of `key` that got `ticket` finished (whatever its
    /// outcome).
    pub fn finished(&self, key: &ObjectKey, ticket: PassTicket) {
        let mut p = self.inner();
        p.counts.reconciles += 1;
        if p.open && ticket.0 == p.counts.started {
            p.pending.remove(key);
            Self::complete_if_done(&mut p);
        }
    }

    fn complete_if_done(p: &mut Passes) {
        if p.open && p.pending.is_empty() {
            p.open = false;
            p.counts.completed += 1;
            p.counts.last_completed = Some(now_rfc3339());
        }
    }

    /// The counts now.
    pub fn counts(&self) -> ResyncCounts {
        self.inner().counts.clone()
    }
}

#[cfg(test)]
mod tests {
    use banger_specs::Kind;

    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            kind: Kind::Vm,
            name: name.into(),
        }
    }

    #[test]
    fn a_pass_completes_once_every_object_was_reconciled_after_it_began() {
        let passes = ResyncPasses::default();
        let early = passes.ticket();
        passes.begin([key("a"), key("b")]);
        // A reconcile that started before the pass does not count for it.
        passes.finished(&key("a"), early);
        assert_eq!(passes.counts().completed, 0);
        let t = passes.ticket();
        passes.finished(&key("a"), t);
        assert_eq!(passes.counts().completed, 0);
        passes.finished(&key("b"), t);
        let counts = passes.counts();
        assert_eq!(
            (counts.started, counts.completed, counts.reconciles),
            (1, 1, 3)
        );
        assert!(counts.last_completed.is_some());
        // Reconciles after completion are counted, passes are not.
        passes.finished(&key("b"), passes.ticket());
        assert_eq!(
            (passes.counts().completed, passes.counts().reconciles),
            (1, 4)
        );
    }

    #[test]
    fn a_new_pass_replaces_an_unfinished_one_and_an_empty_pass_completes_at_once() {
        let passes = ResyncPasses::default();
        passes.begin([key("a")]);
        let old = passes.ticket();
        passes.begin([key("b")]);
        passes.finished(&key("a"), old);
        passes.finished(&key("b"), old);
        assert_eq!(passes.counts().completed, 0);
        passes.finished(&key("b"), passes.ticket());
        assert_eq!(passes.counts().completed, 1);
        passes.begin([]);
        assert_eq!((passes.counts().started, passes.counts().completed), (3, 2));
    }
}
