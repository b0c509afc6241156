//! Garbage collection: removing host objects that carry banger's naming but belong to
//! no object the store knows (`banger gc`, `POST /v1/gc`, and once at daemon start).
//!
//! The runtime lists and removes ([`VmRuntime::find_garbage`],
//! [`VmRuntime::remove_garbage`]); the engine decides what is known. Every object in
//! the store counts as known, including those being deleted (their own cleanup removes
//! their host objects). So does an orphaned VM (forgotten with
//! `banger.dev/on-remove: Orphan`: no object, but its lease row stays), unless
//! [`GcOptions::include_orphans`] asks to collect orphans too (their lease is then
//! released once all their host objects are gone).
//!
//! The shared image store (`<state>/images/store`) is collected too
//! ([`VmRuntime::prune_images`]): root filesystems that no Image's current resolution
//! uses, and the blobs only they listed. A build in progress is skipped, and so is an
//! entry published less than [`STORE_GRACE`] ago (its Image may not have recorded it
//! yet). So are the prepared disks (`<state>/disk-bases`,
//! [`VmRuntime::prune_prepared_disks`]) of Images the store no longer has (deleted
//! while the daemon was down) and their builds' leftover temporary files, with the
//! same grace.
//!
//! Race with VMs created meanwhile: a VM's host objects are only made after its object
//! is in the store. So the store is read once before listing and once after; anything
//! owned by a uid of the second read is dropped from the list. A uid missing from the
//! second read had no host object yet when the host was listed.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use banger_specs::Kind;

use crate::host::names::{self, ObjectUid};
use crate::runtime::{Garbage, GarbageKind, VmRuntime};
use crate::store::{Store, StoreError};

/// How recent a store entry may be and still be collected (see the module docs).
pub const STORE_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// The answer of a garbage collection (`POST /v1/gc`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    /// Every garbage item found, in removal order.
    pub items: Vec<Garbage>,
    /// Whether removal was attempted (`false` for a dry run). Items not in `failed`
    /// are gone.
    pub removed: bool,
    /// Items whose removal failed, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<GcFailure>,
    /// With `includeOrphans`: uids of orphaned VMs (forgotten with
    /// `banger.dev/on-remove: Orphan`) whose IP lease is released (or, in a dry run,
    /// would be). An orphan whose host objects could not all be removed keeps it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub released_leases: Vec<String>,
    /// Image store content no Image uses: root filesystems and blobs, and prepared
    /// disks of no Image (kind `prepared-disk`), removed (or, in a dry run, that would
    /// be).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<crate::host::oci::store::StoreItem>,
}

/// One item [`GcReport::items`] could not remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcFailure {
    /// `KIND/NAME` of the item.
    pub item: String,
    /// Why it could not be removed.
    pub error: String,
}

/// What a collection may remove.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcOptions {
    /// Only list; remove nothing.
    pub dry_run: bool,
    /// Also collect orphaned VMs (objects forgotten with `banger.dev/on-remove:
    /// Orphan`, known only by their lease row): their host objects and their lease.
    /// Off by default and at daemon start, so an orphaned VM keeps running.
    pub include_orphans: bool,
}

/// Pure: whether `item` belongs to one of `uids` (a tap by its derived name).
fn owned_by(item: &Garbage, uids: &BTreeSet<String>, taps: &BTreeSet<String>) -> bool {
    item.uid.as_ref().is_some_and(|u| uids.contains(u))
        || (item.kind == GarbageKind::Tap && taps.contains(&item.name))
}

fn tap_names(uids: &BTreeSet<String>) -> BTreeSet<String> {
    uids.iter()
        .filter_map(|u| ObjectUid::parse(u).ok())
        .map(|u| names::tap_name(&u))
        .collect()
}

/// Pure: drops the items owned by one of `known` uids (taps by their derived name).
pub fn without_known(items: Vec<Garbage>, known: &BTreeSet<String>) -> Vec<Garbage> {
    let known_taps = tap_names(known);
    items
        .into_iter()
        .filter(|item| !owned_by(item, known, &known_taps))
        .collect()
}

/// Garbage collection over the store (what is known) and the runtime (what is on the
/// host). Cheap to clone.
pub struct GarbageCollector<R: VmRuntime> {
    store: Store,
    runtime: Arc<R>,
}

impl<R: VmRuntime> Clone for GarbageCollector<R> {
    fn clone(&self) -> Self {
        GarbageCollector {
            store: self.store.clone(),
            runtime: self.runtime.clone(),
        }
    }
}

impl<R: VmRuntime> GarbageCollector<R> {
    /// A collector over this store and runtime.
    pub fn new(store: Store, runtime: Arc<R>) -> Self {
        GarbageCollector { store, runtime }
    }

    /// Uids of every object in the store (all kinds, deleting ones included) and,
    /// separately, of orphaned VMs (a lease row without an object).
    pub async fn known_uids(&self) -> Result<(BTreeSet<String>, BTreeSet<String>), StoreError> {
        let objects: BTreeSet<String> = self
            .store
            .list_objects(None)
            .await?
            .into_iter()
            .map(|o| o.uid)
            .collect();
        let orphans = self
            .store
            .leased_uids()
            .await?
            .into_iter()
            .filter(|u| !objects.contains(u))
            .collect();
        Ok((objects, orphans))
    }

    async fn protected_uids(&self, options: GcOptions) -> Result<BTreeSet<String>, StoreError> {
        let (mut known, orphans) = self.known_uids().await?;
        if !options.include_orphans {
            known.extend(orphans);
        }
        Ok(known)
    }

    /// The Images' names (deleting ones included) and the root filesystems their
    /// current resolutions use.
    async fn images_in_use(
        &self,
    ) -> Result<(BTreeSet<String>, BTreeSet<std::path::PathBuf>), StoreError> {
        let (mut names, mut rootfs) = (BTreeSet::new(), BTreeSet::new());
        for image in self.store.list_objects(Some(Kind::Image)).await? {
            let name = image.resource.name();
            let (_, internal) = self.store.get_status(Kind::Image, name).await?;
            if let Some(r) = internal.resolved {
                rootfs.insert(r.rootfs);
            }
            names.insert(name.to_string());
        }
        Ok((names, rootfs))
    }

    /// Lists the host's garbage and, unless `dry_run`, removes it (each removal is
    /// logged; a failed one is reported in [`GcReport::failed`] and does not stop the
    /// others).
    pub async fn collect_garbage(&self, options: GcOptions) -> Result<GcReport, StoreError> {
        let before = self.protected_uids(options).await?;
        let found = self.runtime.find_garbage(&before).await;
        let after = self.protected_uids(options).await?;
        let mut items = without_known(found, &after);
        items.sort();
        let orphans: BTreeSet<String> = if options.include_orphans {
            self.known_uids().await?.1
        } else {
            BTreeSet::new()
        };
        let mut report = GcReport {
            items,
            removed: !options.dry_run,
            failed: Vec::new(),
            released_leases: Vec::new(),
            images: Vec::new(),
        };
        let (names, keep) = self.images_in_use().await?;
        match self.runtime.prune_images(&keep, options.dry_run).await {
            Ok(items) => {
                for i in &items {
                    tracing::info!(path = %i.path.display(), bytes = i.bytes, dry_run = options.dry_run,
                        "gc: image store content no Image uses");
                }
                report.images = items;
            }
            Err(e) => report.failed.push(GcFailure {
                item: "image-store".into(),
                error: e.to_string(),
            }),
        }
        match self
            .runtime
            .prune_prepared_disks(&names, options.dry_run)
            .await
        {
            Ok(items) => {
                for i in &items {
                    tracing::info!(path = %i.path.display(), bytes = i.bytes, dry_run = options.dry_run,
                        "gc: a prepared disk of no Image");
                }
                report.images.extend(items);
            }
            Err(e) => report.failed.push(GcFailure {
                item: "prepared-disks".into(),
                error: e.to_string(),
            }),
        }
        if options.dry_run {
            report.released_leases = orphans.into_iter().collect();
            return Ok(report);
        }
        let mut failed_items = Vec::new();
        for item in &report.items {
            match self.runtime.remove_garbage(item).await {
                Ok(()) => tracing::info!(
                    item = %item,
                    uid = item.uid.as_deref().unwrap_or("-"),
                    detail = %item.detail,
                    "gc: removed a host object of no known VM"
                ),
                Err(e) => {
                    tracing::warn!(item = %item, error = %e, "gc: cannot remove");
                    report.failed.push(GcFailure {
                        item: item.to_string(),
                        error: e.to_string(),
                    });
                    failed_items.push(item.clone());
                }
            }
        }
        for orphan in orphans {
            let one: BTreeSet<String> = [orphan.clone()].into_iter().collect();
            let taps = tap_names(&one);
            if failed_items.iter().any(|i| owned_by(i, &one, &taps)) {
                continue;
            }
            self.store.release_lease(&orphan).await?;
            tracing::info!(uid = %orphan, "gc: released the lease of an orphaned VM");
            report.released_leases.push(orphan);
        }
        Ok(report)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn items_of_uids_known_later_are_dropped() {
        let a = ObjectUid::parse("aaaa").unwrap();
        let item = |kind, name: &str, uid: Option<&str>| Garbage {
            kind,
            name: name.into(),
            uid: uid.map(str::to_string),
            detail: String::new(),
        };
        let items = vec![
            item(GarbageKind::Process, "10", Some("aaaa")),
            item(GarbageKind::Process, "11", Some("bbbb")),
            item(GarbageKind::Tap, &names::tap_name(&a), None),
            item(GarbageKind::Tap, "bgt000000000000", None),
            item(GarbageKind::VmDir, "aaaa", Some("aaaa")),
        ];
        let known: BTreeSet<String> = ["aaaa".to_string()].into_iter().collect();
        let kept = without_known(items, &known);
        assert_eq!(
            kept.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
            ["11", "bgt000000000000"]
        );
    }
}
