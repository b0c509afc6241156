//! `banger image refresh NAME [--apply]`: requests to check an Image's tag now (and
//! apply a new digest), handed from the API to the Image's next reconcile.
//!
//! The API records the request and queues the Image; the reconcile takes every request
//! pending for it ([`ImageRefreshRequests::take`]), checks the tag whatever the interval
//! says, applies a new digest when any request asked for it, and answers each waiter
//! with the [`RefreshOutcome`]. Requests live in memory: a daemon restart drops them
//! (the waiting client is told the daemon went away) and the regular interval check
//! goes on.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// What a refresh found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshOutcome {
    /// The digest the Image uses after the refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The digest its tag names now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<String>,
    /// The Image moved to the new digest.
    pub applied: bool,
    /// The reference names a digest: nothing to check.
    pub pinned: bool,
    /// Why the check or the pull failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Requests pending for one Image.
#[derive(Debug, Default)]
pub struct PendingRefresh {
    /// Whether any request asked to apply a new digest.
    pub apply: bool,
    /// Who waits for the outcome.
    pub waiters: Vec<oneshot::Sender<RefreshOutcome>>,
}

impl PendingRefresh {
    /// Answers every waiter.
    pub fn answer(self, outcome: &RefreshOutcome) {
        for w in self.waiters {
            let _ = w.send(outcome.clone());
        }
    }
}

/// Pending refresh requests by Image name.
#[derive(Debug, Default)]
pub struct ImageRefreshRequests {
    pending: Mutex<HashMap<String, PendingRefresh>>,
}

impl ImageRefreshRequests {
    /// Records a request for Image `name`; the receiver gets the outcome.
    pub fn request(&self, name: &str, apply: bool) -> oneshot::Receiver<RefreshOutcome> {
        let (tx, rx) = oneshot::channel();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let entry = pending.entry(name.to_string()).or_default();
        entry.apply |= apply;
        entry.waiters.push(tx);
        rx
    }

    /// Takes every request pending for Image `name`.
    pub fn take(&self, name: &str) -> Option<PendingRefresh> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_merge_and_every_waiter_is_answered() {
        let r = ImageRefreshRequests::default();
        let a = r.request("deb", false);
        let b = r.request("deb", true);
        assert!(r.take("other").is_none());
        let pending = r.take("deb").unwrap();
        assert!(pending.apply, "one --apply is enough");
        assert!(r.take("deb").is_none());
        let outcome = RefreshOutcome {
            applied: true,
            ..RefreshOutcome::default()
        };
        pending.answer(&outcome);
        assert_eq!(a.await.unwrap(), outcome);
        assert_eq!(b.await.unwrap(), outcome);
    }
}
