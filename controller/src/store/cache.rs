//! The daemon's memory of parsed rows: objects, statuses, Image resolutions and VMs'
//! addresses, as the database holds them now.
//!
//! Why: a periodic resync reconciles every object, and a converged object's reconcile
//! only reads (its document, its status, its Image's resolution, its lease). Parsing
//! those rows again each time was most of a resync's cost. With this cache, such a
//! reconcile reads from memory without a trip to the store's thread.
//!
//! How it stays true (the store remains the truth):
//! - **Write-through, under the connection's lock.** Every [`super::Database`] method
//!   that writes one of these rows updates or drops its entry while it still holds the
//!   connection, after its transaction (or its savepoint in the store thread's shared
//!   transaction) committed; every method that fills an entry does so from the row it
//!   read under the same lock. So an entry always equals its row, and a failed write
//!   leaves the cache as it was. A shared transaction that is not committed after all
//!   (SQLite rolled it back, or its `COMMIT` failed: a full disk, an I/O error) empties
//!   the whole cache, which then fills again from the database; between its writes and
//!   that moment a lookup could have seen what was then lost.
//! - **One writer.** Only the daemon's own connection has a cache
//!   ([`super::Database::open_cached`], used by [`super::Store::open`]); the daemon holds
//!   the state directory's lock, so no other process writes the database meanwhile.
//!   Connections opened by tests and tools ([`super::Database::open`]) have none.
//! - **Reads never block.** Lookups take only the cache's own mutex (never the
//!   connection's), so async code may call them directly ([`super::Store::cached`]).
//!
//! Memory: one parsed copy of each object and status (a status's handles are their
//! compact JSON text), a default internal state not kept at all, statuses boxed so the
//! table's empty slots stay small (about 1.5 KiB per VM in all).

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};

use banger_specs::Kind;

use super::{InternalState, LeaseGrant, StoredObject};
use crate::runtime::ResolvedImage;
use crate::status::ObjectStatus;

/// An object's key in the cache.
type Key = (Kind, String);

/// A VM's rows in the `leases` table, as known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LeaseRows {
    active: Option<Ipv4Addr>,
    reserved: Option<Ipv4Addr>,
}

/// A status as the cache keeps it: its internal state only when it is not the default
/// (a VM's usually is: ~700 bytes of empty fields saved per entry). Its handles are
/// their JSON text already ([`crate::status::HandlesJson`]: shared, not copied, when
/// read).
struct CachedStatus {
    /// The status.
    status: ObjectStatus,
    /// The internal state; `None` stands for [`InternalState::default`].
    internal: Option<Box<InternalState>>,
}

impl CachedStatus {
    fn new(status: &ObjectStatus, internal: &InternalState) -> Self {
        let internal = (*internal != InternalState::default()).then(|| Box::new(internal.clone()));
        Self {
            status: status.clone(),
            internal,
        }
    }

    /// The status and internal state as stored.
    fn get(&self) -> (ObjectStatus, InternalState) {
        let internal = self.internal.as_deref().cloned().unwrap_or_default();
        (self.status.clone(), internal)
    }
}

#[derive(Default)]
struct Rows {
    objects: HashMap<Key, Arc<StoredObject>>,
    /// Boxed: a hash table's empty slots are as wide as its values, and a status is a
    /// few hundred bytes (1,000 VMs: a 2.4 MB table inline, 0.1 MB boxed).
    statuses: HashMap<Key, Box<CachedStatus>>,
    /// Image name -> its resolution (`None`: the Image is missing or unresolved).
    resolutions: HashMap<String, Option<ResolvedImage>>,
    /// VM uid -> its lease rows.
    leases: HashMap<String, LeaseRows>,
    /// Every address in the `leases` table (active and reserved), once read whole:
    /// a new VM's address is the lowest one not here, found without reading every
    /// lease again (that scan made applying N VMs cost O(N²)).
    taken: Option<BTreeSet<u32>>,
}

/// Parsed rows of the daemon's connection (see the module docs).
#[derive(Default)]
pub struct RowCache {
    rows: Mutex<Rows>,
}

impl RowCache {
    fn rows(&self) -> MutexGuard<'_, Rows> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The object `kind/name`, if cached.
    pub fn object(&self, kind: Kind, name: &str) -> Option<StoredObject> {
        let rows = self.rows();
        rows.objects
            .get(&(kind, name.to_string()))
            .map(|o| StoredObject::clone(o))
    }

    /// The status of `kind/name`, if cached (the default status of an object whose
    /// status was never written counts as cached once read).
    pub fn status(&self, kind: Kind, name: &str) -> Option<(ObjectStatus, InternalState)> {
        let rows = self.rows();
        rows.statuses
            .get(&(kind, name.to_string()))
            .map(|c| c.get())
    }

    /// The Image `image`'s resolution, if cached (`Some(None)`: known to be missing or
    /// unresolved).
    pub fn image_resolution(&self, image: &str) -> Option<Option<ResolvedImage>> {
        self.rows().resolutions.get(image).cloned()
    }

    /// The address the VM `uid` holds (its active lease), if its leases are cached.
    pub fn active_lease(&self, uid: &str) -> Option<Option<Ipv4Addr>> {
        self.rows().leases.get(uid).map(|l| l.active)
    }

    /// What [`super::Database::lease`] would grant the VM `uid` asking for `want`,
    /// when that needs no write: its active lease matches (or nothing particular is
    /// asked for) and it holds no reservation. `None`: not known here.
    pub fn lease_grant(&self, uid: &str, want: Option<Ipv4Addr>) -> Option<LeaseGrant> {
        let rows = self.rows();
        let l = rows.leases.get(uid)?;
        match (l.active, l.reserved) {
            (Some(ip), None) if want.is_none() || want == Some(ip) => {
                Some(LeaseGrant { ip, pending: false })
            }
            _ => None,
        }
    }

    /// Records an object as read or written.
    pub(super) fn put_object(&self, o: &StoredObject) {
        let key = (o.resource.kind(), o.resource.name().to_string());
        let mut rows = self.rows();
        if key.0 == Kind::Image {
            rows.resolutions.remove(&key.1);
        }
        rows.objects.insert(key, Arc::new(o.clone()));
    }

    /// Records a status as read or written.
    pub(super) fn put_status(
        &self,
        kind: Kind,
        name: &str,
        status: &ObjectStatus,
        internal: &InternalState,
    ) {
        let mut rows = self.rows();
        if kind == Kind::Image {
            rows.resolutions.remove(name);
        }
        rows.statuses.insert(
            (kind, name.to_string()),
            Box::new(CachedStatus::new(status, internal)),
        );
    }

    /// Records an Image's resolution as read.
    pub(super) fn put_resolution(&self, image: &str, resolution: Option<&ResolvedImage>) {
        self.rows()
            .resolutions
            .insert(image.to_string(), resolution.cloned());
    }

    /// Records a VM's lease rows as read or written.
    pub(super) fn put_leases(
        &self,
        uid: &str,
        active: Option<Ipv4Addr>,
        reserved: Option<Ipv4Addr>,
    ) {
        self.rows()
            .leases
            .insert(uid.to_string(), LeaseRows { active, reserved });
    }

    /// Drops what is known of the object `kind/name` (and its status; an Image's
    /// resolution).
    pub(super) fn forget_object(&self, kind: Kind, name: &str) {
        let key = (kind, name.to_string());
        let mut rows = self.rows();
        rows.objects.remove(&key);
        rows.statuses.remove(&key);
        if kind == Kind::Image {
            rows.resolutions.remove(name);
        }
    }

    /// Drops the object `kind/name` only (its status stays valid).
    pub(super) fn forget_document(&self, kind: Kind, name: &str) {
        let mut rows = self.rows();
        rows.objects.remove(&(kind, name.to_string()));
        if kind == Kind::Image {
            rows.resolutions.remove(name);
        }
    }

    /// Drops every entry: after a shared transaction was not committed, the entries its
    /// writes put here are not the database's rows (see [`super::Database::end_batch`]).
    pub(super) fn clear(&self) {
        *self.rows() = Rows::default();
    }

    /// Drops what is known of the VM `uid`'s leases.
    pub(super) fn forget_leases(&self, uid: &str) {
        self.rows().leases.remove(uid);
    }

    /// The lowest address in `from..=to` that no lease holds, if every taken address
    /// is known here (`None`: not known; `Some(None)`: none is free).
    pub(super) fn lowest_free(&self, from: u32, to: u32) -> Option<Option<u32>> {
        let rows = self.rows();
        let taken = rows.taken.as_ref()?;
        Some(super::database::lowest_free(
            taken.range(from..).copied(),
            from,
            to,
        ))
    }

    /// Records every address the `leases` table holds, as read whole.
    pub(super) fn put_taken(&self, taken: &[u32]) {
        self.rows().taken = Some(taken.iter().copied().collect());
    }

    /// Records a lease row written (`taken`) and one deleted (`freed`), when the taken
    /// addresses are known.
    pub(super) fn update_taken(&self, taken: Option<Ipv4Addr>, freed: Option<Ipv4Addr>) {
        let mut rows = self.rows();
        if let Some(set) = rows.taken.as_mut() {
            if let Some(ip) = freed {
                set.remove(&u32::from(ip));
            }
            if let Some(ip) = taken {
                set.insert(u32::from(ip));
            }
        }
    }

    /// Drops the taken addresses (read whole again when next needed).
    pub(super) fn forget_taken(&self) {
        self.rows().taken = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Phase;

    #[test]
    fn a_status_reads_back_as_put_and_a_default_internal_state_is_not_kept() {
        let cache = RowCache::default();
        let status = ObjectStatus {
            phase: Phase::Running,
            observed_generation: 3,
            handles: crate::status::HandlesJson::of(
                &serde_json::json!({"tap": "bgt-x", "diskSize": 1024}),
            )
            .ok(),
            ..Default::default()
        };
        let plain = InternalState::default();
        let restarted = InternalState {
            restarts: vec![1, 2],
            ..Default::default()
        };
        cache.put_status(Kind::Vm, "a", &status, &plain);
        cache.put_status(Kind::Vm, "b", &status, &restarted);
        assert_eq!(cache.status(Kind::Vm, "a"), Some((status.clone(), plain)));
        assert_eq!(cache.status(Kind::Vm, "b"), Some((status, restarted)));
        let rows = cache.rows();
        assert!(rows.statuses[&(Kind::Vm, "a".to_string())]
            .internal
            .is_none());
        assert!(rows.statuses[&(Kind::Vm, "b".to_string())]
            .internal
            .is_some());
    }
}
