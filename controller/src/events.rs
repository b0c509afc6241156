//! Recording events: what happened to an object and why (`banger events`, `describe`).
//!
//! [`EventRecorder`] writes an event to the store (capped per object) and announces the
//! new id, so long polls (`GET /v1/events?waitSeconds=`) wake at once. A failure to
//! record is logged, never fatal: events are for people, the status is the truth.

use banger_specs::Kind;
use tokio::sync::watch;

use crate::status::{EventType, Reason};
use crate::store::{EventCaps, NewEvent, Store, StoreError};

/// Writes events and announces them. Cheap to clone.
#[derive(Clone)]
pub struct EventRecorder {
    store: Store,
    latest: watch::Sender<i64>,
    caps: EventCaps,
}

impl EventRecorder {
    /// A recorder on `store` that keeps events within `caps`. Reads the last event id
    /// (blocking: call before serving).
    pub fn new(store: Store, caps: EventCaps) -> Result<Self, StoreError> {
        let last = store.database().last_event_id()?;
        Ok(EventRecorder {
            store,
            latest: watch::channel(last).0,
            caps,
        })
    }

    /// Records an event on an object.
    pub async fn record(
        &self,
        kind: Kind,
        name: &str,
        type_: EventType,
        reason: Reason,
        message: impl Into<String>,
    ) {
        let event = NewEvent {
            kind,
            name: name.to_string(),
            type_,
            reason,
            message: message.into(),
        };
        match self.store.add_event(event, self.caps).await {
            Ok(id) => {
                self.latest.send_replace(id);
            }
            Err(e) => {
                tracing::warn!(error = %e, object = %format!("{kind}/{name}"), "recording event")
            }
        }
    }

    /// The caps events are kept within.
    pub fn caps(&self) -> EventCaps {
        self.caps
    }

    /// Announces events written directly through the store (several in one
    /// transaction, [`Store::put_objects`]): `id` is the last one's.
    pub fn announce(&self, id: i64) {
        self.latest.send_replace(id);
    }

    /// A `Normal` event.
    pub async fn normal(&self, kind: Kind, name: &str, reason: Reason, message: impl Into<String>) {
        self.record(kind, name, EventType::Normal, reason, message)
            .await;
    }

    /// A `Warning` event.
    pub async fn warning(
        &self,
        kind: Kind,
        name: &str,
        reason: Reason,
        message: impl Into<String>,
    ) {
        self.record(kind, name, EventType::Warning, reason, message)
            .await;
    }

    /// A receiver that changes whenever an event is recorded (for long polls).
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.latest.subscribe()
    }
}
