//! Garbage collection: removing host objects that carry banger's naming but belong to
//! no object the store knows (`banger gc`, `POST /v1/gc`, and once at daemon start).
//!
//! The runtime lists and removes ([`VmRuntime::find_garbage`],
//! [`VmRuntime::remove_garbage`]); the engine decides what is known. Every object in
//! the store counts as known, including those being deleted (their own cleanup removes
//! their host objects).
//!
//! Race with VMs created meanwhile: a VM's host objects are only made after its object
//! is in the store. So the store is read once before listing and once after; anything
//! owned by a uid of the second read is dropped from the list. A uid missing from the
//! second read had no host object yet when the host was listed.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::host::names::{self, ObjectUid};
use crate::reconciler::Engine;
use crate::runtime::{Garbage, GarbageKind, VmRuntime};
use crate::store::StoreError;

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

/// Pure: drops the items owned by one of `known` uids (taps by their derived name).
pub fn without_known(items: Vec<Garbage>, known: &BTreeSet<String>) -> Vec<Garbage> {
    let known_taps: BTreeSet<String> = known
        .iter()
        .filter_map(|u| ObjectUid::parse(u).ok())
        .map(|u| names::tap_name(&u))
        .collect();
    items
        .into_iter()
        .filter(|item| {
            let owned = item.uid.as_ref().is_some_and(|u| known.contains(u))
                || (item.kind == GarbageKind::Tap && known_taps.contains(&item.name));
            !owned
        })
        .collect()
}

impl<R: VmRuntime> Engine<R> {
    /// Uids of every object in the store (all kinds, deleting ones included).
    pub fn known_uids(&self) -> Result<BTreeSet<String>, StoreError> {
        Ok(self
            .store
            .list_objects(None)?
            .into_iter()
            .map(|o| o.uid)
            .collect())
    }

    /// Lists the host's garbage and, unless `dry_run`, removes it (each removal is
    /// logged; a failed one is reported in [`GcReport::failed`] and does not stop the
    /// others).
    pub async fn collect_garbage(&self, dry_run: bool) -> Result<GcReport, StoreError> {
        let before = self.known_uids()?;
        let found = self.runtime.find_garbage(&before).await;
        let after = self.known_uids()?;
        let mut items = without_known(found, &after);
        items.sort();
        let mut report = GcReport {
            items,
            removed: !dry_run,
            failed: Vec::new(),
        };
        if dry_run {
            return Ok(report);
        }
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
                }
            }
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
