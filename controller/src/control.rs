//! What the sources, the API and garbage collection share with the engine: the store,
//! the work queue and the event recorder — and nothing else of the engine.
//!
//! Writers of desired state (the specs directory and `banger apply`/`delete`) change
//! objects in the store and queue them; they never reconcile. Their check-then-write
//! sequences are serialised by [`Control::sources_lock`].

use std::sync::Arc;

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
}
