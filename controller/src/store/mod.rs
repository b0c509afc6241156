//! The engine's durable state in SQLite (rusqlite, bundled): objects, status, events,
//! the step journal, IP leases and each VM's handles.
//!
//! Two layers:
//! - [`Database`]: one connection in WAL mode behind a mutex; every method is one short
//!   transaction and blocks its caller on the database (never on anything else).
//! - [`Store`]: what async code uses. Each call runs on the store's own thread
//!   (`banger-store`, [`Store::run`]), so SQLite never blocks an async worker; several
//!   reads that belong together can share one trip ([`Store::run`] with a closure).
//!   One connection serves one call at a time anyway, so one thread loses nothing and
//!   saves the hand-offs between pool threads: calls queued while it works run back to
//!   back, and no burst of calls grows a pool of threads (each with its own malloc
//!   arena).
//! - **Group commit.** Calls that queued up while the thread worked (up to
//!   [`MAX_BATCH`]) run in one shared transaction ([`Database::begin_batch`]): each
//!   call's writes still commit or roll back on their own (a savepoint), but SQLite
//!   writes the pages they share and takes its locks once for all of them. No call is
//!   answered before the transaction committed, so a caller never acts on a write that
//!   is not in the database; if the commit fails, every call in it gets the error.
//!   A call alone in the queue is its own transaction, as it would be without this.
//!
//! The daemon's connection keeps the rows a reconcile reads parsed in memory
//! ([`cache`], write-through): [`Store::get_object`], [`Store::get_status`] and
//! [`Store::cached`] answer from it without a trip when they can.
//!
//! API reads never wait for a reconcile in flight (a reconcile holds no store lock
//! across its steps). Schema changes are migrations numbered by SQLite's
//! `user_version` ([`schema::MIGRATIONS`]). The text of every typed value (phases,
//! reasons, event types, journal outcomes) is its name, so the database stays readable
//! with the `sqlite3` shell.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_specs::{Kind, Resource};
use serde::{Deserialize, Serialize};

use crate::journal::{JournalEntry, JournalOutcome, JournalRow};
use crate::objects::Owner;
use crate::runtime::{ResolvedImage, VmHandles};
use crate::status::{EventType, ObjectStatus, Reason};

pub mod cache;
pub mod checkpoint;
mod database;
pub mod schema;

pub use cache::RowCache;
pub use database::{gateway_of, Database};

/// A store error, with the operation it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A store call did not complete on the store's thread (it panicked, or the thread
    /// could not start or has stopped).
    #[error("store {path}: {operation}: the store thread failed: {message}")]
    Task {
        /// Database file.
        path: PathBuf,
        /// What was being done.
        operation: &'static str,
        /// What happened to the call.
        message: String,
    },
    /// SQLite failed.
    #[error("store {path}: {operation}: {source}")]
    Sqlite {
        /// Database file.
        path: PathBuf,
        /// What was being done.
        operation: &'static str,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// SQLite rolled a shared transaction back before its end (after an error such as a
    /// full disk): the writes made in it are lost.
    #[error("store {path}: SQLite rolled the shared transaction back")]
    RolledBack {
        /// Database file.
        path: PathBuf,
    },
    /// A stored row does not parse.
    #[error("store {path}: {operation}: corrupt row: {message}")]
    Corrupt {
        /// Database file.
        path: PathBuf,
        /// What was being done.
        operation: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No free address left in the bridge network.
    #[error("no free IP address left in {network}/{prefix}")]
    LeasesExhausted {
        /// Network.
        network: Ipv4Addr,
        /// Prefix length.
        prefix: u8,
    },
    /// A static address is taken or outside the network.
    #[error("static ip {ip}: {message}")]
    LeaseConflict {
        /// The address asked for.
        ip: Ipv4Addr,
        /// Why it cannot be had.
        message: String,
    },
}

/// An object as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// Its unique id.
    pub uid: String,
    /// Its generation.
    pub generation: i64,
    /// Its canonical document.
    pub resource: Resource,
    /// Hash of the canonical spec.
    pub hash: String,
    /// Who owns it.
    pub owner: Owner,
    /// The last apply passed `--allow-recreate`.
    pub allow_recreate: bool,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Deletion requested at (RFC 3339).
    pub deleting: Option<String>,
}

/// An object row and its status as stored, unparsed and borrowed from SQLite's row:
/// what the API's list writes out without a typed round trip
/// ([`Database::for_each_stored`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredRow<'a> {
    /// Its kind.
    pub kind: Kind,
    /// Its name.
    pub name: &'a str,
    /// Its unique id.
    pub uid: &'a str,
    /// Its generation.
    pub generation: i64,
    /// Its canonical document (JSON text, keys sorted: [`crate::objects::document_json`]).
    pub document: &'a str,
    /// Who owns it ([`Owner`] as JSON text).
    pub owner: &'a str,
    /// Creation time (RFC 3339).
    pub created: &'a str,
    /// Deletion requested at (RFC 3339).
    pub deleting: Option<&'a str>,
    /// Its status ([`ObjectStatus`] as JSON text), when one was written.
    pub status: Option<&'a str>,
    /// `status` is the API's text of the status as it is (nothing to reorder or lift).
    pub status_as_listed: bool,
}

/// Engine bookkeeping kept next to the status, never shown as is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InternalState {
    /// Image: the current resolution.
    #[serde(default)]
    pub resolved: Option<ResolvedImage>,
    /// Image: the generation `resolved` was made for.
    #[serde(default)]
    pub resolved_generation: Option<i64>,
    /// VM: unix seconds of recent restarts after exits (crash-loop detection).
    #[serde(default)]
    pub restarts: Vec<i64>,
    /// Spec file problem (invalid directory file): shown as `SpecValid=False`.
    #[serde(default)]
    pub invalid_spec: Option<String>,
    /// Image: what the current resolution is, what it was made for, and the last
    /// update check of its tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRecord>,
    /// Workspace: the last successful copy into the guest, and for what.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced: Option<WorkspaceSynced>,
    /// Workspace: the last copy refused because the guest changed (cleared by the next
    /// copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<WorkspaceRefused>,
}

/// An Image's resolution and update checks, as the engine keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    /// The current resolution.
    pub resolution: crate::runtime::ImageResolution,
    /// The `spec.oci.ref` it was made for: while the spec names the same reference the
    /// Image keeps the same digest (the pin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Unix seconds of the last update check of the tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<i64>,
    /// The digest the tag named at the last check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<String>,
    /// Why the last check failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_error: Option<String>,
}

/// A Workspace copy refused because the guest changed what the last copy wrote: for
/// which generation, guest and request (see [`crate::planner::Refusal`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceRefused {
    /// The Workspace's generation.
    pub generation: i64,
    /// The VM's uid.
    pub vm_uid: String,
    /// The root disk's identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_id: Option<String>,
    /// The latest sync request then (0: none).
    #[serde(default)]
    pub request: u64,
    /// What changed, one line.
    pub changes: String,
}

/// A `banger workspace sync` request as stored (one row per Workspace: the latest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSyncRequest {
    /// Its number: one more than the Workspace's previous request.
    pub serial: u64,
    /// `--force`.
    pub force: bool,
    /// When it was made (RFC 3339).
    pub at: String,
}

/// What a Workspace's last successful copy was for: a copy counts while the
/// Workspace's generation, the VM's uid and its root disk are the same (a VMM restart
/// keeps the disk, so it never copies again).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceSynced {
    /// The Workspace's generation.
    pub generation: i64,
    /// The VM's uid.
    pub vm_uid: String,
    /// The root disk's identity ([`crate::runtime::ObservedDisk::id`]). A row written
    /// before disks had ids has none, as do those disks: it keeps counting for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_id: Option<String>,
    /// What was copied.
    pub record: crate::runtime::SyncRecord,
    /// When (RFC 3339).
    pub at: String,
    /// The latest `banger workspace sync` request when the copy was planned: it and
    /// every earlier one are served (0: none).
    #[serde(default)]
    pub request: u64,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Monotonic id (for `--follow`).
    pub id: i64,
    /// RFC 3339 time.
    pub time: String,
    /// Kind of the object.
    pub kind: Kind,
    /// Name of the object.
    pub name: String,
    /// Normal or Warning.
    pub type_: EventType,
    /// Why.
    pub reason: Reason,
    /// For people.
    pub message: String,
}

/// The store as async code uses it: a cheap handle (clone it freely) whose calls run
/// on the store's thread. See the module docs.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    jobs: std::sync::mpsc::Sender<Job>,
    /// Calls sent to the store's thread since it started ([`Store::trips`]).
    trips: Arc<std::sync::atomic::AtomicU64>,
}

/// A call for the store's thread: it runs against the database and returns how to
/// answer its caller, once the transaction it ran in is committed (or is not).
type Job = Box<dyn FnOnce(&Database) -> Answer + Send>;

/// Answers a call: with its own result, or with the error that kept the shared
/// transaction it ran in from committing.
type Answer = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// The most calls that share one transaction. Enough for every reconcile worker's
/// next call to queue up behind one another; few enough that a call never waits long
/// behind the others for its commit.
pub const MAX_BATCH: usize = 64;

impl Store {
    /// Opens (creating if needed) the database file, enables WAL, migrates and starts
    /// the store's thread (it ends when the last handle is dropped). Blocks: call it
    /// before serving, or through `spawn_blocking`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = Arc::new(Database::open_cached(path)?);
        db.checkpoint_elsewhere(checkpoint::AUTOCHECKPOINT_PAGES, checkpoint::LOG_SIZE_LIMIT)?;
        let checkpointer = checkpoint::Checkpointer::start(path)?;
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let thread_db = Arc::clone(&db);
        std::thread::Builder::new()
            .name("banger-store".into())
            .spawn(move || serve(&thread_db, &queue, &checkpointer))
            .map_err(|e| StoreError::Task {
                path: path.to_path_buf(),
                operation: "start the store thread",
                message: e.to_string(),
            })?;
        Ok(Store {
            db,
            jobs,
            trips: Arc::default(),
        })
    }

    /// The synchronous database, for callers that are not async (tests, tools, code
    /// already on the blocking pool). Never call it from an async task of the daemon.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Runs `f` on the store's thread with the database: one trip for several calls. A
    /// panic in `f` fails this call only.
    pub async fn run<T, F>(&self, operation: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let path = self.db.path().to_path_buf();
        let job: Job = Box::new(move |db| {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(db)));
            Box::new(move |uncommitted: Option<&StoreError>| {
                let result = match (result, uncommitted) {
                    (Ok(Ok(_)), Some(e)) => Ok(Err(StoreError::Task {
                        path,
                        operation,
                        message: format!("not committed: {e}"),
                    })),
                    (result, _) => result,
                };
                let _ = reply.send(result);
            })
        });
        let failed = |message: String| StoreError::Task {
            path: self.db.path().to_path_buf(),
            operation,
            message,
        };
        self.trips
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::trace!(operation, "store trip");
        if self.jobs.send(job).is_err() {
            return Err(failed("the store thread has stopped".into()));
        }
        match answer.await {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => Err(failed(panic_message(panic.as_ref()))),
            Err(_) => Err(failed("the store thread dropped the call".into())),
        }
    }

    /// Calls sent to the store's thread so far (what a test checks to prove that a
    /// reconcile answered from the cache).
    pub fn trips(&self) -> u64 {
        self.trips.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The cache of parsed rows: lookups that never block (see [`cache`]).
    pub fn cached(&self) -> Option<&RowCache> {
        self.db.cache()
    }

    /// One object (from the cache when it holds it).
    pub async fn get_object(
        &self,
        kind: Kind,
        name: &str,
    ) -> Result<Option<StoredObject>, StoreError> {
        if let Some(o) = self.cached().and_then(|c| c.object(kind, name)) {
            return Ok(Some(o));
        }
        let name = name.to_owned();
        self.run("read object", move |db| db.get_object(kind, &name))
            .await
    }

    /// All objects (of one kind), by kind then name.
    pub async fn list_objects(&self, kind: Option<Kind>) -> Result<Vec<StoredObject>, StoreError> {
        self.run("list objects", move |db| db.list_objects(kind))
            .await
    }

    /// All objects (of one kind) with their status, by kind then name: one query each.
    pub async fn list_with_status(
        &self,
        kind: Option<Kind>,
    ) -> Result<Vec<(StoredObject, ObjectStatus)>, StoreError> {
        self.run("list objects", move |db| db.list_with_status(kind))
            .await
    }

    /// Every object's key and whether it is being deleted, by kind then name (no
    /// document is parsed: what a resync pass queues).
    pub async fn object_keys(&self) -> Result<Vec<(banger_specs::ObjectKey, bool)>, StoreError> {
        self.run("list object keys", |db| db.object_keys()).await
    }

    /// The object with this uid, if any.
    pub async fn object_by_uid(&self, uid: &str) -> Result<Option<StoredObject>, StoreError> {
        let uid = uid.to_owned();
        self.run("read object", move |db| db.object_by_uid(&uid))
            .await
    }

    /// Names of objects of `kind` that reference `target`, including those being deleted.
    pub async fn referrers(&self, kind: Kind, target: &str) -> Result<Vec<String>, StoreError> {
        let target = target.to_owned();
        self.run("list referrers", move |db| db.referrers(kind, &target))
            .await
    }

    /// Inserts or replaces an object (keyed by kind/name).
    pub async fn put_object(&self, o: StoredObject) -> Result<(), StoreError> {
        self.run("write object", move |db| db.put_object(&o)).await
    }

    /// Objects of these keys, in order (`None`: no such object), in one trip.
    pub async fn get_objects(
        &self,
        keys: Vec<banger_specs::ObjectKey>,
    ) -> Result<Vec<Option<StoredObject>>, StoreError> {
        self.run("read objects", move |db| db.get_objects(&keys))
            .await
    }

    /// Inserts or replaces objects and records events in one transaction; returns the
    /// last event's id.
    pub async fn put_objects(
        &self,
        objects: Vec<StoredObject>,
        events: Vec<NewEvent>,
        caps: EventCaps,
    ) -> Result<Option<i64>, StoreError> {
        self.run("write objects", move |db| {
            db.put_objects(&objects, &events, caps)
        })
        .await
    }

    /// Marks an object as being deleted (keeps the first mark). False when it is gone.
    pub async fn mark_deleting(&self, kind: Kind, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.run("mark deleting", move |db| db.mark_deleting(kind, &name))
            .await
    }

    /// Removes an object with its status, handles, events and journal rows.
    pub async fn remove_object(&self, kind: Kind, name: &str, uid: &str) -> Result<(), StoreError> {
        let (name, uid) = (name.to_owned(), uid.to_owned());
        self.run("remove object", move |db| {
            db.remove_object(kind, &name, &uid)
        })
        .await
    }

    /// Status of an object (default when never written; from the cache when it holds
    /// it).
    pub async fn get_status(
        &self,
        kind: Kind,
        name: &str,
    ) -> Result<(ObjectStatus, InternalState), StoreError> {
        if let Some(s) = self.cached().and_then(|c| c.status(kind, name)) {
            return Ok(s);
        }
        let name = name.to_owned();
        self.run("read status", move |db| db.get_status(kind, &name))
            .await
    }

    /// Writes the status of an object.
    pub async fn put_status(
        &self,
        kind: Kind,
        name: &str,
        status: ObjectStatus,
        internal: InternalState,
    ) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.run("write status", move |db| {
            db.put_status(kind, &name, &status, &internal)
        })
        .await
    }

    /// Records an event within the caps (see [`Database::add_event`]). Returns its id.
    pub async fn add_event(&self, event: NewEvent, caps: EventCaps) -> Result<i64, StoreError> {
        self.run("write event", move |db| db.add_event(&event, caps))
            .await
    }

    /// Events after `after`, optionally of one kind or one object, oldest first.
    pub async fn list_events(
        &self,
        filter: EventFilter,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.run("list events", move |db| {
            db.list_events(&filter, after, limit)
        })
        .await
    }

    /// The last `limit` events of an object, oldest first.
    pub async fn recent_events(
        &self,
        kind: Kind,
        name: &str,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let name = name.to_owned();
        self.run("list events", move |db| {
            db.recent_events(kind, &name, limit)
        })
        .await
    }

    /// Writes a `running` journal row before a side-effecting step. Returns its id.
    pub async fn journal_begin(
        &self,
        uid: &str,
        kind: Kind,
        name: &str,
        step: &'static str,
    ) -> Result<i64, StoreError> {
        let (uid, name) = (uid.to_owned(), name.to_owned());
        self.run("write journal", move |db| {
            db.journal_begin(&uid, kind, &name, step)
        })
        .await
    }

    /// Completes a journal row.
    pub async fn journal_finish(
        &self,
        id: i64,
        outcome: JournalOutcome,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        self.run("finish journal", move |db| {
            db.journal_finish(id, outcome, error.as_deref())
        })
        .await
    }

    /// Completes a step that succeeded: its handles, its journal row (`done`) and its
    /// event, if any, in one transaction. Returns the event's id.
    pub async fn finish_step(&self, finished: FinishedStep) -> Result<Option<i64>, StoreError> {
        self.run("finish step", move |db| finished.write(db)).await
    }

    /// Completes the VM's step that succeeded ([`Store::finish_step`]), then writes the
    /// `running` journal row of its next step ([`Store::journal_begin`]): one trip, each
    /// write its own transaction, the second only if the first was written. Returns the
    /// finished step's event id and the new row's id.
    pub async fn finish_and_begin(
        &self,
        finished: FinishedStep,
        kind: Kind,
        name: &str,
        step: &'static str,
    ) -> Result<(Option<i64>, i64), StoreError> {
        let name = name.to_owned();
        self.run("finish step, write journal", move |db| {
            let event_id = finished.write(db)?;
            let id = db.journal_begin(&finished.uid, kind, &name, step)?;
            Ok((event_id, id))
        })
        .await
    }

    /// Records a `banger workspace sync` request for the Workspace `uid` (numbered one
    /// more than its last) and returns it.
    pub async fn request_sync(
        &self,
        uid: &str,
        force: bool,
        at: String,
    ) -> Result<StoredSyncRequest, StoreError> {
        let uid = uid.to_owned();
        self.run("write sync request", move |db| {
            db.request_sync(&uid, force, &at)
        })
        .await
    }

    /// The Workspace `uid`'s latest sync request, if any.
    pub async fn sync_request(&self, uid: &str) -> Result<Option<StoredSyncRequest>, StoreError> {
        let uid = uid.to_owned();
        self.run("read sync request", move |db| db.sync_request(&uid))
            .await
    }

    /// What the Workspace `uid`'s last copy wrote into its guest, if recorded.
    pub async fn copy_manifest(
        &self,
        uid: &str,
    ) -> Result<Option<crate::runtime::CopyManifest>, StoreError> {
        let uid = uid.to_owned();
        self.run("read copy manifest", move |db| db.copy_manifest(&uid))
            .await
    }

    /// Writes a Workspace's status after a copy together with the copy's manifest, in
    /// one transaction: the manifest stored is always the one of the copy the status
    /// records.
    pub async fn put_copy(
        &self,
        name: &str,
        uid: &str,
        status: ObjectStatus,
        internal: InternalState,
        manifest: crate::runtime::CopyManifest,
    ) -> Result<(), StoreError> {
        let (name, uid) = (name.to_owned(), uid.to_owned());
        self.run("write copy", move |db| {
            db.put_copy(&name, &uid, &status, &internal, &manifest)
        })
        .await
    }

    /// Rows still `running`: steps a previous daemon did not finish.
    pub async fn journal_unfinished(&self) -> Result<Vec<JournalRow>, StoreError> {
        self.run("read journal", |db| db.journal_unfinished()).await
    }

    /// The last `limit` steps of an object, oldest first.
    pub async fn journal_for(
        &self,
        uid: &str,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let uid = uid.to_owned();
        self.run("read journal", move |db| db.journal_for(&uid, limit))
            .await
    }

    /// The lease of a VM, if any: `(ip, mac)`.
    pub async fn lease_of(&self, uid: &str) -> Result<Option<(Ipv4Addr, String)>, StoreError> {
        let uid = uid.to_owned();
        self.run("read lease", move |db| db.lease_of(&uid)).await
    }

    /// Leases an address for a VM (see [`Database::lease`]).
    pub async fn lease(
        &self,
        uid: &str,
        mac: &str,
        want: Option<Ipv4Addr>,
        network: Ipv4Addr,
        prefix: u8,
    ) -> Result<LeaseGrant, StoreError> {
        let (uid, mac) = (uid.to_owned(), mac.to_owned());
        self.run("write lease", move |db| {
            db.lease(&uid, &mac, want, network, prefix)
        })
        .await
    }

    /// Makes a VM's reservation its active lease (see [`Database::commit_lease`]).
    pub async fn commit_lease(&self, uid: &str) -> Result<bool, StoreError> {
        let uid = uid.to_owned();
        self.run("write lease", move |db| db.commit_lease(&uid))
            .await
    }

    /// Releases every address of a VM.
    pub async fn release_lease(&self, uid: &str) -> Result<(), StoreError> {
        let uid = uid.to_owned();
        self.run("release lease", move |db| db.release_lease(&uid))
            .await
    }

    /// Uids of every VM holding a lease (objects, and orphans whose lease row stays).
    pub async fn leased_uids(&self) -> Result<Vec<String>, StoreError> {
        self.run("list leases", |db| db.leased_uids()).await
    }
}

/// What a panic carried, as text.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => format!("panicked: {s}"),
        (_, Some(s)) => format!("panicked: {s}"),
        _ => "panicked".into(),
    }
}

/// The store thread's loop: runs the calls in the order they came, those that queued
/// up together in one shared transaction, until every [`Store`] handle is dropped.
fn serve(
    db: &Database,
    queue: &std::sync::mpsc::Receiver<Job>,
    checkpointer: &checkpoint::Checkpointer,
) {
    while let Ok(first) = queue.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let written = db.rows_written();
        run_batch(db, jobs);
        checkpointer.written(db.rows_written().saturating_sub(written));
    }
}

/// Runs `jobs` in one transaction (a lone job in its own) and then answers them.
fn run_batch(db: &Database, jobs: Vec<Job>) {
    let shared = jobs.len() > 1 && db.begin_batch().is_ok();
    if !shared {
        for job in jobs {
            job(db)(None);
        }
        return;
    }
    let mut answers = Vec::with_capacity(jobs.len());
    let mut jobs = jobs.into_iter();
    while let Some(job) = jobs.next() {
        answers.push(job(db));
        if !db.in_batch() {
            // SQLite rolled the transaction back (after an error): the calls so far
            // lost their writes. The rest run as a batch of their own.
            let lost = db.end_batch().err();
            for answer in answers.drain(..) {
                answer(lost.as_ref());
            }
            run_batch(db, jobs.collect());
            return;
        }
    }
    let outcome = db.end_batch().err();
    for answer in answers {
        answer(outcome.as_ref());
    }
}

/// The address a VM is to run with, from [`Database::lease`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The address.
    pub ip: Ipv4Addr,
    /// It is a reservation beside the VM's active lease (an address change): it becomes
    /// the active lease once a VMM runs with it ([`Store::commit_lease`]).
    pub pending: bool,
}

/// A VM's step that succeeded, whose journal row is still `running`: what completes
/// it. The engine writes it with the VM's next trip to the store (the next step's
/// journal row, or a trip of its own at the end of the round), so a step costs one
/// trip, not two; until then the handles are in the daemon's memory, and a crash leaves
/// the row `running`, as a crash right after the step's effect always could.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedStep {
    /// The step's journal row.
    pub journal_id: i64,
    /// The VM's uid.
    pub uid: String,
    /// The VM's handles after the step.
    pub handles: VmHandles,
    /// The step's event, if it has one.
    pub event: Option<(NewEvent, EventCaps)>,
}

impl FinishedStep {
    /// Writes it ([`Database::finish_step`]); returns its event's id.
    pub fn write(&self, db: &Database) -> Result<Option<i64>, StoreError> {
        db.finish_step(
            self.journal_id,
            &self.uid,
            &self.handles,
            self.event.as_ref().map(|(e, caps)| (e, *caps)),
        )
    }
}

/// An event to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Kind of the object.
    pub kind: Kind,
    /// Name of the object.
    pub name: String,
    /// Normal or Warning.
    pub type_: EventType,
    /// Why.
    pub reason: Reason,
    /// For people.
    pub message: String,
}

/// How many events are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventCaps {
    /// Per object; older ones are dropped.
    pub per_object: usize,
    /// In all; the oldest are dropped (bounds the history of deleted objects).
    pub total: usize,
}

/// Which events to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this kind.
    pub kind: Option<Kind>,
    /// Only this name (with `kind`).
    pub name: Option<String>,
}

#[cfg(test)]
mod tests;
