//! Desired state comes from two sources: the watched specs directory ([`dir`]) and
//! `banger apply`/`delete` through the API ([`apply`]).
//!
//! Every object records its owner ([`Owner`]). A source never overwrites an object the
//! other owns: the CLI gets a conflict (409) unless it passes `--force`, the directory
//! records a `SourceConflict` warning event. Both sources write through `upsert`,
//! which moves `metadata.generation` only when the canonical spec hash changes, and
//! both queue the objects they touch; neither waits for a reconcile.

use banger_specs::{Kind, Resource};

use crate::api::types::ApplyAction;
use crate::clock::now_rfc3339;
use crate::control::Control;
use crate::ids::new_uid;
use crate::objects::{self, Owner};
use crate::status::{EventType, Reason};
use crate::store::{NewEvent, StoreError, StoredObject};

pub mod apply;
pub mod dir;
pub mod dir_trust;
pub mod host_paths;

/// An error of a source operation, mapped to an HTTP status by the API.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The files are invalid (422): nothing changed.
    #[error("{message}")]
    Invalid {
        /// One-line summary.
        message: String,
        /// Every problem.
        problems: Vec<banger_specs::Problem>,
    },
    /// Another source owns an object, or it is being deleted (409): nothing changed.
    #[error("{0}")]
    Conflict(String),
    /// The client may not do this: a host path it names is one it may not read itself
    /// (403). Nothing changed.
    #[error("{0}")]
    Forbidden(String),
    /// The store failed (500).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Inserts or updates an object from a source. Returns what happened and the field
/// changes. The caller has checked ownership. Queues the object.
pub(crate) async fn upsert(
    ctl: &Control,
    resource: &Resource,
    owner: Owner,
    allow_recreate: bool,
) -> Result<(ApplyAction, Vec<String>), StoreError> {
    let key = resource.key();
    let existing = ctl.store.get_object(key.kind, &key.name).await?;
    let mut done = upsert_all(ctl, vec![(resource, existing)], owner, allow_recreate).await?;
    Ok(done.pop().unwrap_or((ApplyAction::Unchanged, Vec::new())))
}

/// [`upsert`] of many objects, each with what is stored under its key now (read by the
/// caller under [`Control::sources_lock`]): every write and its event in one store
/// transaction, then the written objects are queued. Returns what happened to each,
/// in order.
pub(crate) async fn upsert_all(
    ctl: &Control,
    items: Vec<(&Resource, Option<StoredObject>)>,
    owner: Owner,
    allow_recreate: bool,
) -> Result<Vec<(ApplyAction, Vec<String>)>, StoreError> {
    let mut results = Vec::with_capacity(items.len());
    let mut writes = Vec::new();
    let mut events = Vec::new();
    for (resource, existing) in items {
        let change = prepare_upsert(resource, existing, owner.clone(), allow_recreate);
        results.push((change.action, change.changes));
        if let Some(stored) = change.write {
            events.extend(change.event);
            writes.push(stored);
        }
    }
    if writes.is_empty() {
        return Ok(results);
    }
    let keys: Vec<_> = writes.iter().map(|o| o.resource.key()).collect();
    let last_event = ctl
        .store
        .put_objects(writes, events, ctl.events.caps())
        .await?;
    if let Some(id) = last_event {
        ctl.events.announce(id);
    }
    // New desired state: retry at once, whatever the backoff of earlier failures.
    for key in keys {
        ctl.queue.retry_now(key);
    }
    Ok(results)
}

/// What an upsert does to one object.
struct Upsert {
    action: ApplyAction,
    changes: Vec<String>,
    /// The object to write (`None`: nothing changed at all).
    write: Option<StoredObject>,
    event: Option<NewEvent>,
}

/// Decides an upsert: moves the generation only when the canonical spec hash changes;
/// nothing is written when spec, metadata, owner and `allow_recreate` are the same.
fn prepare_upsert(
    resource: &Resource,
    existing: Option<StoredObject>,
    owner: Owner,
    allow_recreate: bool,
) -> Upsert {
    let key = resource.key();
    let hash = objects::spec_hash(resource);
    let (action, changes, stored) = match existing {
        None => (
            ApplyAction::Created,
            Vec::new(),
            StoredObject {
                uid: new_uid(),
                generation: 1,
                resource: resource.clone(),
                hash,
                owner,
                allow_recreate,
                created: now_rfc3339(),
                deleting: None,
            },
        ),
        Some(old) => {
            let changed = old.hash != hash;
            let changes = if changed {
                objects::spec_changes(&old.resource, resource)
            } else {
                Vec::new()
            };
            let same_meta = old.resource.metadata() == resource.metadata();
            if !changed && same_meta && old.owner == owner && old.allow_recreate == allow_recreate {
                return Upsert {
                    action: ApplyAction::Unchanged,
                    changes: Vec::new(),
                    write: None,
                    event: None,
                };
            }
            let action = if changed {
                ApplyAction::Configured
            } else {
                ApplyAction::Unchanged
            };
            (
                action,
                changes,
                StoredObject {
                    generation: old.generation + i64::from(changed),
                    resource: resource.clone(),
                    hash,
                    owner,
                    allow_recreate,
                    ..old
                },
            )
        }
    };
    let by = stored.owner.describe();
    let event = |reason, message| NewEvent {
        kind: key.kind,
        name: key.name.clone(),
        type_: EventType::Normal,
        reason,
        message,
    };
    let event = match action {
        ApplyAction::Created => Some(event(Reason::Created, format!("created by {by}"))),
        ApplyAction::Configured => Some(event(
            Reason::SpecChanged,
            format!(
                "generation {} by {by}: {}",
                stored.generation,
                changes.join("; ")
            ),
        )),
        ApplyAction::Unchanged | ApplyAction::Pruned => None,
    };
    Upsert {
        action,
        changes,
        write: Some(stored),
        event,
    }
}

/// Marks an object deleting and queues it. Returns false when it does not exist.
pub(crate) async fn delete(
    ctl: &Control,
    kind: Kind,
    name: &str,
    why: &str,
) -> Result<bool, StoreError> {
    let Some(obj) = ctl.store.get_object(kind, name).await? else {
        return Ok(false);
    };
    if obj.deleting.is_none() {
        ctl.store.mark_deleting(kind, name).await?;
        ctl.events.normal(kind, name, Reason::Deleting, why).await;
    }
    ctl.queue.add(obj.resource.key());
    Ok(true)
}
