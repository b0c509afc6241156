//! The work queue: which object to reconcile next.
//!
//! Guarantees (the reasons this type exists):
//! - **Deduplicated**: a key is queued at most once; adding a queued key is a no-op
//!   (an earlier due time wins).
//! - **Never two at once**: a key handed out by [`WorkQueue::next`] is not handed out
//!   again until [`WorkQueue::done`] is called for it. Adds during that time mark it
//!   dirty, and it is queued again when done: no update is lost.
//! - **Bounded concurrency** comes from the number of workers calling `next`; the
//!   separate heavy bound is a semaphore held by the engine around heavy work.
//! - **Delays and backoff**: [`WorkQueue::add_after`] queues for later; a failed
//!   reconcile is retried after an exponential delay with jitter
//!   (`backoff_min * 2^(n-1)`, ±20%, capped at `backoff_max`), reset by a success;
//!   [`WorkQueue::retry_now`] resets it and queues at once.
//! - **Closing**: after [`WorkQueue::close`], `next` returns `None` to every worker.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use banger_specs::ObjectKey;
use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Default)]
struct State {
    /// Due time of each queued key.
    due: HashMap<ObjectKey, Instant>,
    /// Queued keys ordered by due time (ties by insertion sequence).
    order: BTreeMap<(Instant, u64), ObjectKey>,
    /// Keys handed out and not yet done.
    active: HashSet<ObjectKey>,
    /// Active keys added again meanwhile, with the earliest due time asked for.
    dirty: HashMap<ObjectKey, Instant>,
    /// Consecutive failures per key.
    failures: HashMap<ObjectKey, u32>,
    seq: u64,
    closed: bool,
}

impl State {
    fn insert(&mut self, key: ObjectKey, at: Instant) {
        if self.active.contains(&key) {
            let e = self.dirty.entry(key).or_insert(at);
            *e = (*e).min(at);
            return;
        }
        if let Some(&old) = self.due.get(&key) {
            if old <= at {
                return;
            }
            self.order.retain(|_, k| *k != key);
        }
        self.seq += 1;
        self.order.insert((at, self.seq), key.clone());
        self.due.insert(key, at);
    }
}

/// What a reconcile reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Converged (or nothing more to do now).
    Done,
    /// Fine so far; look again after this delay (booting guest, waiting on another
    /// object, crash-loop backoff).
    RequeueAfter(Duration),
    /// Failed: retry with backoff.
    Failed,
}

/// The keyed work queue.
pub struct WorkQueue {
    state: Mutex<State>,
    notify: Notify,
    backoff_min: Duration,
    backoff_max: Duration,
}

impl WorkQueue {
    /// A new queue with the given backoff bounds.
    pub fn new(backoff_min: Duration, backoff_max: Duration) -> Self {
        WorkQueue {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            backoff_min,
            backoff_max,
        }
    }

    fn s(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a key now.
    pub fn add(&self, key: ObjectKey) {
        self.add_at(key, Instant::now());
    }

    /// Queues a key now unless it is already queued (at whatever time) or active: a
    /// periodic resync uses this so that it never cuts a failure's backoff short.
    pub fn add_unless_queued(&self, key: ObjectKey) {
        {
            let mut s = self.s();
            if s.closed || s.due.contains_key(&key) || s.active.contains(&key) {
                return;
            }
            s.insert(key, Instant::now());
        }
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    /// [`WorkQueue::add_unless_queued`] of many keys, in order, waking the workers
    /// once (a resync pass).
    pub fn add_all_unless_queued(&self, keys: impl IntoIterator<Item = ObjectKey>) {
        {
            let mut s = self.s();
            if s.closed {
                return;
            }
            let now = Instant::now();
            for key in keys {
                if !(s.due.contains_key(&key) || s.active.contains(&key)) {
                    s.insert(key, now);
                }
            }
        }
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    /// Queues a key after a delay.
    pub fn add_after(&self, key: ObjectKey, delay: Duration) {
        self.add_at(key, Instant::now() + delay);
    }

    fn add_at(&self, key: ObjectKey, at: Instant) {
        {
            let mut s = self.s();
            if s.closed {
                return;
            }
            s.insert(key, at);
        }
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    /// Resets a key's failures and queues it now.
    pub fn retry_now(&self, key: ObjectKey) {
        self.s().failures.remove(&key);
        self.add(key);
    }

    /// Consecutive failures of a key.
    pub fn failures(&self, key: &ObjectKey) -> u32 {
        self.s().failures.get(key).copied().unwrap_or(0)
    }

    /// Number of keys queued (not active).
    pub fn len(&self) -> usize {
        self.s().due.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of keys being worked on.
    pub fn active(&self) -> usize {
        self.s().active.len()
    }

    /// Stops handing out work; wakes every waiting worker.
    pub fn close(&self) {
        self.s().closed = true;
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    /// The next due key that is not active. Waits until one is due; `None` once closed.
    pub async fn next(&self) -> Option<ObjectKey> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait_until = {
                let mut s = self.s();
                if s.closed {
                    return None;
                }
                let now = Instant::now();
                match s.order.first_key_value().map(|(k, v)| (*k, v.clone())) {
                    Some(((at, seq), key)) if at <= now => {
                        s.order.remove(&(at, seq));
                        s.due.remove(&key);
                        s.active.insert(key.clone());
                        return Some(key);
                    }
                    Some(((at, _), _)) => Some(at),
                    None => None,
                }
            };
            match wait_until {
                Some(at) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Reports a key's reconcile finished. Returns the key's consecutive failures after
    /// this outcome (0 after a success).
    pub fn done(&self, key: &ObjectKey, outcome: Outcome) -> u32 {
        let failures = {
            let mut s = self.s();
            s.active.remove(key);
            let dirty = s.dirty.remove(key);
            let failures = match outcome {
                Outcome::Done | Outcome::RequeueAfter(_) => {
                    s.failures.remove(key);
                    0
                }
                Outcome::Failed => {
                    let n = s.failures.entry(key.clone()).or_default();
                    *n += 1;
                    *n
                }
            };
            let now = Instant::now();
            let mut due: Option<Instant> = dirty;
            let mut want = |at: Instant| due = Some(due.map_or(at, |d: Instant| d.min(at)));
            match outcome {
                Outcome::Done => {}
                Outcome::RequeueAfter(d) => want(now + d),
                Outcome::Failed => {
                    // A dirty mark (new desired state) does not skip the backoff.
                    let at = now + self.backoff(failures);
                    due = Some(at);
                }
            }
            if let Some(at) = due {
                if !s.closed {
                    s.insert(key.clone(), at);
                }
            }
            failures
        };
        self.notify.notify_waiters();
        self.notify.notify_one();
        failures
    }

    /// The delay before retry number `failures` (1-based): exponential with ±20%
    /// jitter, within the bounds.
    pub fn backoff(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        let base = self
            .backoff_min
            .saturating_mul(1u32 << exp)
            .min(self.backoff_max);
        let jitter: f64 = 0.8 + rand::random::<f64>() * 0.4;
        base.mul_f64(jitter)
            .clamp(self.backoff_min.mul_f64(0.8), self.backoff_max)
    }
}

#[cfg(test)]
mod tests {
    //! On paused tokio time: the runtime jumps the clock to the next timer whenever it
    //! is idle, so every delay, backoff and timeout below is exact and takes no wall
    //! time.
    use super::*;
    use banger_specs::Kind;

    fn k(n: &str) -> ObjectKey {
        ObjectKey {
            kind: Kind::Vm,
            name: n.into(),
        }
    }

    async fn next_within(q: &WorkQueue, d: Duration) -> Option<ObjectKey> {
        tokio::time::timeout(d, q.next()).await.ok().flatten()
    }

    #[tokio::test(start_paused = true)]
    async fn dedups_and_never_hands_out_an_active_key() {
        let q = WorkQueue::new(Duration::from_millis(10), Duration::from_millis(100));
        q.add(k("a"));
        q.add(k("a"));
        q.add(k("b"));
        assert_eq!(q.len(), 2);
        let first = next_within(&q, Duration::from_secs(1)).await.unwrap();
        assert_eq!(first, k("a"));
        q.add(k("a")); // while active: dirty, not queued
        let second = next_within(&q, Duration::from_secs(1)).await.unwrap();
        assert_eq!(second, k("b"));
        assert!(
            next_within(&q, Duration::from_millis(50)).await.is_none(),
            "a is active"
        );
        q.done(&k("a"), Outcome::Done);
        assert_eq!(
            next_within(&q, Duration::from_secs(1)).await,
            Some(k("a")),
            "dirty key requeued"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_and_reset_on_success() {
        let q = WorkQueue::new(Duration::from_millis(20), Duration::from_millis(200));
        for n in 1..=6 {
            let d = q.backoff(n);
            assert!(
                d >= Duration::from_millis(16) && d <= Duration::from_millis(200),
                "{n}: {d:?}"
            );
        }
        assert!(q.backoff(10) >= Duration::from_millis(160));
        q.add(k("a"));
        let key = next_within(&q, Duration::from_secs(1)).await.unwrap();
        assert_eq!(q.done(&key, Outcome::Failed), 1);
        let key = next_within(&q, Duration::from_secs(2)).await.unwrap();
        assert_eq!(q.done(&key, Outcome::Failed), 2);
        assert_eq!(q.failures(&key), 2);
        let key = next_within(&q, Duration::from_secs(2)).await.unwrap();
        assert_eq!(q.done(&key, Outcome::Done), 0);
        assert_eq!(q.failures(&key), 0);
        assert!(q.is_empty());
        q.add_after(k("b"), Duration::from_secs(3600));
        q.add_unless_queued(k("b"));
        assert!(
            next_within(&q, Duration::from_millis(50)).await.is_none(),
            "a resync keeps the delay"
        );
        q.retry_now(k("b"));
        assert_eq!(
            next_within(&q, Duration::from_secs(1)).await,
            Some(k("b")),
            "retry-now overrides a delay"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn close_wakes_waiters() {
        let q = std::sync::Arc::new(WorkQueue::new(
            Duration::from_millis(10),
            Duration::from_millis(100),
        ));
        let q2 = q.clone();
        let h = tokio::spawn(async move { q2.next().await });
        tokio::task::yield_now().await;
        q.close();
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(2), h)
                .await
                .unwrap()
                .unwrap(),
            None
        );
    }
}
