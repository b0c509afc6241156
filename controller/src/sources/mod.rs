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
use crate::status::Reason;
use crate::store::{StoreError, StoredObject};

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
    let hash = objects::spec_hash(resource);
    let existing = ctl.store.get_object(key.kind, &key.name).await?;
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
                return Ok((ApplyAction::Unchanged, Vec::new()));
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
    let (generation, owner) = (stored.generation, stored.owner.describe());
    ctl.store.put_object(stored).await?;
    match action {
        ApplyAction::Created => {
            ctl.events
                .normal(
                    key.kind,
                    &key.name,
                    Reason::Created,
                    format!("created by {owner}"),
                )
                .await
        }
        ApplyAction::Configured => {
            ctl.events
                .normal(
                    key.kind,
                    &key.name,
                    Reason::SpecChanged,
                    format!("generation {generation} by {owner}: {}", changes.join("; ")),
                )
                .await
        }
        ApplyAction::Unchanged | ApplyAction::Pruned => {}
    }
    // New desired state: retry at once, whatever the backoff of earlier failures.
    ctl.queue.retry_now(key);
    Ok((action, changes))
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
