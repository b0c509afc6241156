//! What the sources, the API and garbage collection share with the engine: the store,
//! the work queue and the event recorder — and nothing else of the engine.
//!
//! Writers of desired state (the specs directory and `banger apply`/`delete`) change
//! objects in the store and queue them; they never reconcile. Their check-then-write
//! sequences are serialised by [`Control::sources_lock`].
//!
//! [`Control::changes`] counts status changes (the end of every reconcile, and each
//! write of an Image pull's progress): whoever waits for an object's status to change
//! (the API's long-poll `GET`) subscribes to it instead of polling.

use std::sync::Arc;

use tokio::sync::watch;

use crate::events::EventRecorder;
use crate::queue::WorkQueue;
use crate::store::Store;

/// The narrow interface to the engine's state. Cheap to clone.
#[derive(Clone)]
pub struct Control {
    /// The store.
    pub store: Store,
    /// The work queue: adding a key makes the engine reconcile that object.
    pub queue: Arc<WorkQueue>,
    /// Where events are recorded.
    pub events: EventRecorder,
    /// Serialises the sources' check-then-write sequences (apply, delete, rescan).
    pub sources_lock: Arc<tokio::sync::Mutex<()>>,
    /// `banger image refresh` requests waiting for their Image's reconcile.
    pub image_refresh: Arc<crate::refresh::ImageRefreshRequests>,
    /// Counts reconciles that ended (each may have written a status or removed an
    /// object) and pull progress written; starts at 1. See [`Control::changed`].
    pub changes: Arc<watch::Sender<u64>>,
}

impl Control {
    /// The change counter's first value.
    pub const FIRST_CHANGE: u64 = 1;

    /// A new change counter for [`Control::changes`].
    pub fn change_counter() -> Arc<watch::Sender<u64>> {
        Arc::new(watch::channel(Self::FIRST_CHANGE).0)
    }

    /// Says that a reconcile ended or a status was written: wakes every waiter on
    /// [`Control::changes`].
    pub fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }
}
