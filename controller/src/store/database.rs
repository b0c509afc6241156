//! The synchronous database: one SQLite connection in WAL mode behind a mutex. Every
//! method is one short transaction: a savepoint, so that it can also run inside the
//! store thread's shared transaction ([`Database::begin_batch`]), where it commits or
//! rolls back on its own just the same, and becomes durable with the batch. Async code
//! goes through [`super::Store`].

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};

use banger_specs::{Kind, ObjectKey};
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension};

use super::cache::RowCache;
use super::{
    schema, Event, EventCaps, EventFilter, InternalState, LeaseGrant, NewEvent, StoreError,
    StoredObject, StoredRow, StoredSyncRequest,
};
use crate::clock::{now_rfc3339, unix_ms};
use crate::journal::{JournalEntry, JournalOutcome, JournalRow};
use crate::objects::{self, Owner};
use crate::runtime::{CopyManifest, ResolvedImage, VmHandles};
use crate::status::{EventType, ObjectStatus, Reason};

/// The columns of an object row, in [`Database::map_row`]'s order (qualified, so that
/// a join with `status` can use them too).
macro_rules! object_columns {
    () => {
        "SELECT objects.kind, objects.name, uid, generation, document, hash, owner, allow_recreate, created, deleting"
    };
}

/// Statements kept prepared per connection: every statement this module runs (about
/// 60) stays parsed, so a reconcile never pays SQLite's parser.
const STATEMENT_CACHE: usize = 96;

/// SQLite's page cache for the connection, in KiB (SQLite's default is 2,000). The
/// kernel's page cache holds the file anyway: SQLite's own only saves a `pread` per
/// page, and at 2 MB it was the largest live item of a daemon with 1,000 VMs (heap
/// profile in BENCHMARKS.md, P5). 512 KiB keeps every table's inner pages and the
/// pages of the last few transactions.
const PAGE_CACHE_KIB: i64 = 512;

/// The unfinished journal rows, oldest first. The outcome is a literal (a parameter
/// would not match the partial index `journal_running`'s condition).
const JOURNAL_UNFINISHED: &str =
    "SELECT id, uid, kind, name, step, outcome FROM journal WHERE outcome = 'running' ORDER BY id";

/// How many objects missing from the row cache [`Database::list_objects`] reads one by
/// one; more are read with the whole list in one query.
const READ_ONE_BY_ONE: usize = 16;

/// Orders objects by kind (in [`Kind`]'s order, not its text's), then name.
fn sort_by_kind_then_name(objects: &mut [StoredObject]) {
    objects.sort_by(|a, b| {
        (a.resource.kind(), a.resource.name()).cmp(&(b.resource.kind(), b.resource.name()))
    });
}

/// Runs one statement through the connection's statement cache.
fn exec(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// Whether a status's JSON text is the API's view of it as it is (the `as_listed`
/// column): true unless it holds an Image resolution, which the view flattens
/// ([`crate::api::listing`] checks the two agree).
fn listed_as_is(status: &ObjectStatus) -> bool {
    status.image.is_none()
}

/// The lowest number in `from..=to` that `taken` (in ascending order) does not hold.
pub(super) fn lowest_free(taken: impl IntoIterator<Item = u32>, from: u32, to: u32) -> Option<u32> {
    let mut candidate = from;
    for n in taken {
        if n < candidate {
            continue;
        }
        if n > candidate {
            break;
        }
        candidate = candidate.checked_add(1)?;
    }
    (candidate <= to).then_some(candidate)
}

/// A text column of a row, borrowed from SQLite (`None` for NULL).
fn column_text<'r>(row: &'r rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<&'r str>> {
    match row.get_ref(i)? {
        ValueRef::Null => Ok(None),
        other => other.as_str().map(Some).map_err(rusqlite::Error::from),
    }
}

/// Reads one row through the connection's statement cache.
fn query_one<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row(params, f)
}

/// The database (see the module docs).
pub struct Database {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Parsed rows of the daemon's connection ([`Database::open_cached`]); none for
    /// other connections.
    cache: Option<RowCache>,
}

fn kind_str(kind: Kind) -> &'static str {
    kind.as_str()
}

fn kind_parse(s: &str) -> Option<Kind> {
    Kind::ALL.into_iter().find(|k| k.as_str() == s)
}

type Row = (
    String,
    String,
    String,
    i64,
    String,
    String,
    String,
    i64,
    String,
    Option<String>,
);

impl Database {
    /// Opens (creating if needed) the database file, enables WAL and migrates. Reads
    /// always go to SQLite: for tests and tools beside (or after) a daemon.
    pub fn open(path: &Path) -> Result<Database, StoreError> {
        Self::open_with(path, None)
    }

    /// [`Database::open`] with a cache of parsed rows ([`RowCache`]): only for the one
    /// connection that writes the database (the daemon's, which holds the state
    /// directory's lock): another connection's writes would not be seen by it.
    pub fn open_cached(path: &Path) -> Result<Database, StoreError> {
        Self::open_with(path, Some(RowCache::default()))
    }

    /// The cache of parsed rows, if this connection has one.
    pub fn cache(&self) -> Option<&RowCache> {
        self.cache.as_ref()
    }

    fn open_with(path: &Path, cache: Option<RowCache>) -> Result<Database, StoreError> {
        let err = |operation| {
            move |source| StoreError::Sqlite {
                path: path.to_path_buf(),
                operation,
                source,
            }
        };
        let conn = Connection::open(path).map_err(err("open"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err("enable WAL"))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err("set synchronous"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err("enable foreign keys"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err("set busy timeout"))?;
        // A negative cache_size is in KiB.
        conn.pragma_update(None, "cache_size", -PAGE_CACHE_KIB)
            .map_err(err("set the page cache size"))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let store = Database {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            cache,
        };
        store.migrate()?;
        Ok(store)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable: SQLite rolls back
        // an unfinished transaction when the Transaction is dropped.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sql(&self, operation: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sqlite {
            path: self.path.clone(),
            operation,
            source,
        }
    }

    fn corrupt(&self, operation: &'static str, message: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            operation,
            message,
        }
    }

    /// Opens a shared transaction: until [`Database::end_batch`], every method's writes
    /// join it (each method's own savepoint still commits or rolls back only its
    /// writes), and none is durable before the batch commits. The store's thread uses
    /// it to commit the calls queued together at once ([`super::Store`]).
    pub fn begin_batch(&self) -> Result<(), StoreError> {
        self.conn()
            .execute_batch("BEGIN")
            .map_err(self.sql("begin shared transaction"))
    }

    /// Whether the shared transaction of [`Database::begin_batch`] is still open: SQLite
    /// rolls a whole transaction back after some errors (a full disk, an I/O error).
    pub fn in_batch(&self) -> bool {
        !self.conn().is_autocommit()
    }

    /// Commits the shared transaction. When it cannot (it was rolled back, or `COMMIT`
    /// failed), nothing it held is in the database: the transaction is rolled back if
    /// still open, the row cache is emptied (its entries may hold what was lost), and
    /// the error is returned for the callers whose writes were in it.
    pub fn end_batch(&self) -> Result<(), StoreError> {
        let conn = self.conn();
        let outcome = if conn.is_autocommit() {
            Err(StoreError::RolledBack {
                path: self.path.clone(),
            })
        } else {
            conn.execute_batch("COMMIT")
                .map_err(self.sql("commit shared transaction"))
        };
        if outcome.is_err() {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            if let Some(cache) = &self.cache {
                cache.clear();
            }
        }
        outcome
    }

    /// Runs SQL as it is on the connection (tests that make SQLite misbehave).
    #[cfg(test)]
    pub(crate) fn execute_raw(&self, sql: &str) {
        let _ = self.conn().execute_batch(sql);
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        query_one(&self.conn(), "PRAGMA user_version", [], |r| r.get(0))
            .map_err(self.sql("read user_version"))
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let version: i64 = query_one(&conn, "PRAGMA user_version", [], |r| r.get(0))
            .map_err(self.sql("read user_version"))?;
        for (i, sql) in schema::MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(version).unwrap_or(0))
        {
            let tx = conn.transaction().map_err(self.sql("begin migration"))?;
            tx.execute_batch(sql).map_err(self.sql("migrate"))?;
            tx.pragma_update(None, "user_version", i + 1)
                .map_err(self.sql("set user_version"))?;
            tx.commit().map_err(self.sql("commit migration"))?;
        }
        Ok(())
    }

    fn row_to_object(&self, r: Row) -> Result<StoredObject, StoreError> {
        let (kind, _name, uid, generation, document, hash, owner, allow, created, deleting) = r;
        let kind = kind_parse(&kind)
            .ok_or_else(|| self.corrupt("read object", format!("unknown kind {kind}")))?;
        let resource = objects::document_from_json(kind, &document)
            .map_err(|e| self.corrupt("read object", e.to_string()))?;
        let owner: Owner =
            serde_json::from_str(&owner).map_err(|e| self.corrupt("read owner", e.to_string()))?;
        Ok(StoredObject {
            uid,
            generation,
            resource,
            hash,
            owner,
            allow_recreate: allow != 0,
            created,
            deleting,
        })
    }

    fn map_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
            r.get(9)?,
        ))
    }

    /// One object.
    pub fn get_object(&self, kind: Kind, name: &str) -> Result<Option<StoredObject>, StoreError> {
        let conn = self.conn();
        let row = query_one(
            &conn,
            concat!(
                object_columns!(),
                " FROM objects WHERE kind = ?1 AND name = ?2"
            ),
            params![kind_str(kind), name],
            Self::map_row,
        )
        .optional()
        .map_err(self.sql("read object"))?;
        let object = row.map(|r| self.row_to_object(r)).transpose()?;
        if let (Some(cache), Some(o)) = (&self.cache, &object) {
            cache.put_object(o);
        }
        Ok(object)
    }

    /// All objects (of one kind), by kind then name. With a row cache, objects it holds
    /// are not read again: one query lists the keys, and only the missing objects are
    /// read and parsed (a few one by one; many in one query, then cached).
    pub fn list_objects(&self, kind: Option<Kind>) -> Result<Vec<StoredObject>, StoreError> {
        let Some(cache) = &self.cache else {
            return self.read_objects(kind);
        };
        let keys: Vec<(String, String)> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare_cached("SELECT kind, name FROM objects WHERE (?1 IS NULL OR kind = ?1)")
                .map_err(self.sql("list objects"))?;
            let it = stmt
                .query_map(params![kind.map(kind_str)], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(self.sql("list objects"))?;
            it.collect::<Result<_, _>>()
                .map_err(self.sql("list objects"))?
        };
        let mut out = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        for (kind, name) in keys {
            let kind = kind_parse(&kind)
                .ok_or_else(|| self.corrupt("list objects", format!("unknown kind {kind}")))?;
            match cache.object(kind, &name) {
                Some(o) => out.push(o),
                None => missing.push((kind, name)),
            }
        }
        if missing.len() > READ_ONE_BY_ONE {
            return self.read_objects(kind);
        }
        for (kind, name) in missing {
            // Gone since the keys were listed: not listed.
            out.extend(self.get_object(kind, &name)?);
        }
        sort_by_kind_then_name(&mut out);
        Ok(out)
    }

    /// All objects (of one kind) read and parsed from their rows, by kind then name.
    /// With a row cache, every object read is cached (under the connection's lock, so an
    /// entry is the row as read).
    fn read_objects(&self, kind: Option<Kind>) -> Result<Vec<StoredObject>, StoreError> {
        let conn = self.conn();
        let rows: Vec<Row> = {
            let mut stmt = conn
                .prepare_cached(concat!(
                    object_columns!(),
                    " FROM objects WHERE (?1 IS NULL OR kind = ?1) ORDER BY kind, name"
                ))
                .map_err(self.sql("list objects"))?;
            let it = stmt
                .query_map(params![kind.map(kind_str)], Self::map_row)
                .map_err(self.sql("list objects"))?;
            it.collect::<Result<_, _>>()
                .map_err(self.sql("list objects"))?
        };
        let mut out: Vec<StoredObject> = rows
            .into_iter()
            .map(|r| self.row_to_object(r))
            .collect::<Result<_, _>>()?;
        if let Some(cache) = &self.cache {
            out.iter().for_each(|o| cache.put_object(o));
        }
        drop(conn);
        sort_by_kind_then_name(&mut out);
        Ok(out)
    }

    /// Every object's key and whether it is being deleted, by kind then name.
    pub fn object_keys(&self) -> Result<Vec<(ObjectKey, bool)>, StoreError> {
        let rows: Vec<(String, String, bool)> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare_cached(
                    "SELECT kind, name, deleting IS NOT NULL FROM objects ORDER BY kind, name",
                )
                .map_err(self.sql("list object keys"))?;
            let it = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(self.sql("list object keys"))?;
            it.collect::<Result<_, _>>()
                .map_err(self.sql("list object keys"))?
        };
        let mut out = Vec::with_capacity(rows.len());
        for (kind, name, deleting) in rows {
            let kind = kind_parse(&kind)
                .ok_or_else(|| self.corrupt("list object keys", format!("unknown kind {kind}")))?;
            out.push((ObjectKey { kind, name }, deleting));
        }
        out.sort_by(|(a, _), (b, _)| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        Ok(out)
    }

    /// The object with this uid, if any.
    pub fn object_by_uid(&self, uid: &str) -> Result<Option<StoredObject>, StoreError> {
        let row = query_one(
            &self.conn(),
            concat!(object_columns!(), " FROM objects WHERE uid = ?1"),
            params![uid],
            Self::map_row,
        )
        .optional()
        .map_err(self.sql("read object"))?;
        row.map(|r| self.row_to_object(r)).transpose()
    }

    /// Names of objects of `kind` that reference `target` (VMs of an Image, Workspaces
    /// of a VM), including those being deleted.
    pub fn referrers(&self, kind: Kind, target: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT name FROM objects WHERE kind = ?1 AND ref_name = ?2 ORDER BY name",
            )
            .map_err(self.sql("list referrers"))?;
        let it = stmt
            .query_map(params![kind_str(kind), target], |r| r.get(0))
            .map_err(self.sql("list referrers"))?;
        it.collect::<Result<_, _>>()
            .map_err(self.sql("list referrers"))
    }

    /// Inserts or replaces an object (keyed by kind/name). The caller computes uid and
    /// generation.
    pub fn put_object(&self, o: &StoredObject) -> Result<(), StoreError> {
        let conn = self.conn();
        self.write_object(&conn, o)?;
        if let Some(cache) = &self.cache {
            cache.put_object(o);
        }
        Ok(())
    }

    /// Objects of these keys, in order (`None`: no such object), in one read.
    pub fn get_objects(&self, keys: &[ObjectKey]) -> Result<Vec<Option<StoredObject>>, StoreError> {
        keys.iter()
            .map(|k| self.get_object(k.kind, &k.name))
            .collect()
    }

    /// Inserts or replaces objects and records events, all in one transaction (an
    /// apply's writes). Returns the id of the last event recorded, if any.
    pub fn put_objects(
        &self,
        objects: &[StoredObject],
        events: &[NewEvent],
        caps: EventCaps,
    ) -> Result<Option<i64>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.savepoint().map_err(self.sql("begin write objects"))?;
        for o in objects {
            self.write_object(&tx, o)?;
        }
        let mut last = None;
        for e in events {
            last = Some(self.insert_event(&tx, e, caps)?);
        }
        tx.commit().map_err(self.sql("commit write objects"))?;
        if let Some(cache) = &self.cache {
            objects.iter().for_each(|o| cache.put_object(o));
        }
        Ok(last)
    }

    fn write_object(&self, conn: &Connection, o: &StoredObject) -> Result<(), StoreError> {
        let document = objects::document_json(&o.resource);
        let owner = serde_json::to_string(&o.owner)
            .map_err(|e| self.corrupt("write owner", e.to_string()))?;
        let ref_name = objects::reference(&o.resource).map(|(_, n)| n);
        exec(
            conn,
            "INSERT INTO objects (kind, name, uid, generation, document, hash, owner, ref_name, allow_recreate, created, deleting)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (kind, name) DO UPDATE SET uid = ?3, generation = ?4, document = ?5, hash = ?6, owner = ?7,
               ref_name = ?8, allow_recreate = ?9, created = ?10, deleting = ?11",
            params![
                kind_str(o.resource.kind()),
                o.resource.name(),
                o.uid,
                o.generation,
                document,
                o.hash,
                owner,
                ref_name,
                i64::from(o.allow_recreate),
                o.created,
                o.deleting
            ],
        )
        .map_err(self.sql("write object"))?;
        Ok(())
    }

    /// Marks an object as being deleted (keeps the first mark). Returns false when the
    /// object does not exist.
    pub fn mark_deleting(&self, kind: Kind, name: &str) -> Result<bool, StoreError> {
        let conn = self.conn();
        let n = exec(
            &conn,
            "UPDATE objects SET deleting = COALESCE(deleting, ?3) WHERE kind = ?1 AND name = ?2",
            params![kind_str(kind), name, now_rfc3339()],
        )
        .map_err(self.sql("mark deleting"))?;
        if let Some(cache) = &self.cache {
            cache.forget_document(kind, name);
        }
        Ok(n > 0)
    }

    /// Removes an object with its status, handles, events and journal rows (the
    /// finalizer's last act). An event recorded after this (`Deleted`) stays until the
    /// global cap drops it.
    pub fn remove_object(&self, kind: Kind, name: &str, uid: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.savepoint().map_err(self.sql("begin remove"))?;
        exec(
            &tx,
            "DELETE FROM objects WHERE kind = ?1 AND name = ?2 AND uid = ?3",
            params![kind_str(kind), name, uid],
        )
        .map_err(self.sql("remove object"))?;
        exec(
            &tx,
            "DELETE FROM status WHERE kind = ?1 AND name = ?2",
            params![kind_str(kind), name],
        )
        .map_err(self.sql("remove status"))?;
        exec(&tx, "DELETE FROM handles WHERE vm_uid = ?1", params![uid])
            .map_err(self.sql("remove handles"))?;
        exec(
            &tx,
            "DELETE FROM events WHERE kind = ?1 AND name = ?2",
            params![kind_str(kind), name],
        )
        .map_err(self.sql("remove events"))?;
        exec(&tx, "DELETE FROM journal WHERE uid = ?1", params![uid])
            .map_err(self.sql("remove journal"))?;
        exec(
            &tx,
            "DELETE FROM workspace_sync_requests WHERE uid = ?1",
            params![uid],
        )
        .map_err(self.sql("remove sync requests"))?;
        exec(
            &tx,
            "DELETE FROM workspace_manifests WHERE uid = ?1",
            params![uid],
        )
        .map_err(self.sql("remove copy manifest"))?;
        tx.commit().map_err(self.sql("commit remove"))?;
        if let Some(cache) = &self.cache {
            cache.forget_object(kind, name);
        }
        Ok(())
    }

    /// Status of an object (default when never written).
    pub fn get_status(
        &self,
        kind: Kind,
        name: &str,
    ) -> Result<(ObjectStatus, InternalState), StoreError> {
        let conn = self.conn();
        let row: Option<(String, String)> = query_one(
            &conn,
            "SELECT view, internal FROM status WHERE kind = ?1 AND name = ?2",
            params![kind_str(kind), name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(self.sql("read status"))?;
        let (status, internal) = match row {
            None => (ObjectStatus::default(), InternalState::default()),
            Some((v, i)) => (self.parse_status(&v)?, self.parse_internal(&i)?),
        };
        if let Some(cache) = &self.cache {
            cache.put_status(kind, name, &status, &internal);
        }
        Ok((status, internal))
    }

    /// What an Image resolved to, if that Image exists and is resolved: the one part of
    /// an Image a VM's reconcile reads (without parsing the Image's document).
    pub fn image_resolution(&self, image: &str) -> Result<Option<ResolvedImage>, StoreError> {
        let conn = self.conn();
        let row: Option<Option<String>> = query_one(
            &conn,
            "SELECT status.internal FROM objects LEFT JOIN status USING (kind, name)
             WHERE objects.kind = ?1 AND objects.name = ?2",
            params![kind_str(Kind::Image), image],
            |r| r.get(0),
        )
        .optional()
        .map_err(self.sql("read image resolution"))?;
        let resolved = match row.flatten() {
            Some(internal) => self.parse_internal(&internal)?.resolved,
            None => None,
        };
        if let Some(cache) = &self.cache {
            cache.put_resolution(image, resolved.as_ref());
        }
        Ok(resolved)
    }

    fn parse_status(&self, text: &str) -> Result<ObjectStatus, StoreError> {
        serde_json::from_str(text).map_err(|e| self.corrupt("read status", e.to_string()))
    }

    fn parse_internal(&self, text: &str) -> Result<InternalState, StoreError> {
        serde_json::from_str(text).map_err(|e| self.corrupt("read status", e.to_string()))
    }

    /// All objects (of one kind) with their status, by kind then name, in one query.
    pub fn list_with_status(
        &self,
        kind: Option<Kind>,
    ) -> Result<Vec<(StoredObject, ObjectStatus)>, StoreError> {
        let rows: Vec<(Row, Option<String>)> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare_cached(concat!(
                    object_columns!(),
                    ", status.view FROM objects LEFT JOIN status USING (kind, name)
                     WHERE (?1 IS NULL OR kind = ?1) ORDER BY kind, name"
                ))
                .map_err(self.sql("list objects"))?;
            let it = stmt
                .query_map(params![kind.map(kind_str)], |r| {
                    Ok((Self::map_row(r)?, r.get(10)?))
                })
                .map_err(self.sql("list objects"))?;
            it.collect::<Result<_, _>>()
                .map_err(self.sql("list objects"))?
        };
        let mut out = Vec::with_capacity(rows.len());
        for (row, view) in rows {
            let status = match view {
                Some(v) => self.parse_status(&v)?,
                None => ObjectStatus::default(),
            };
            out.push((self.row_to_object(row)?, status));
        }
        out.sort_by(|(a, _), (b, _)| {
            (a.resource.kind(), a.resource.name()).cmp(&(b.resource.kind(), b.resource.name()))
        });
        Ok(out)
    }

    /// Hands every object (of one kind) as stored, with its status text, to `f`, by
    /// kind then name, in one query and without parsing or copying anything: each row
    /// is borrowed from SQLite while `f` looks at it (what the API's list writes out,
    /// [`crate::api::listing`]). Stops at `f`'s first error.
    pub fn for_each_stored<E: From<StoreError>>(
        &self,
        kind: Option<Kind>,
        mut f: impl FnMut(StoredRow<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let conn = self.conn();
        // Kinds' texts sort as the kinds do (`Image` < `VM` < `Workspace`), and SQLite
        // compares text bytewise as Rust does: the rows come in the typed order.
        let mut stmt = conn
            .prepare_cached(
                "SELECT objects.kind, objects.name, uid, generation, document, owner, created,
                        deleting, status.view, status.as_listed
                 FROM objects LEFT JOIN status USING (kind, name)
                 WHERE (?1 IS NULL OR kind = ?1) ORDER BY kind, name",
            )
            .map_err(self.sql("list objects"))?;
        let mut rows = stmt
            .query(params![kind.map(kind_str)])
            .map_err(self.sql("list objects"))?;
        while let Some(row) = rows.next().map_err(self.sql("list objects"))? {
            let read = || -> rusqlite::Result<_> {
                let kind = column_text(row, 0)?.unwrap_or_default();
                let required = |i| {
                    column_text(row, i)?.ok_or(rusqlite::Error::InvalidColumnType(
                        i,
                        "NULL".into(),
                        rusqlite::types::Type::Null,
                    ))
                };
                Ok((
                    kind,
                    StoredRow {
                        kind: Kind::Image,
                        name: required(1)?,
                        uid: required(2)?,
                        generation: row.get(3)?,
                        document: required(4)?,
                        owner: required(5)?,
                        created: required(6)?,
                        deleting: column_text(row, 7)?,
                        status: column_text(row, 8)?,
                        status_as_listed: row.get::<_, Option<bool>>(9)?.unwrap_or(false),
                    },
                ))
            };
            let (kind, mut stored) = read().map_err(self.sql("list objects"))?;
            stored.kind = kind_parse(kind)
                .ok_or_else(|| self.corrupt("read object", format!("unknown kind {kind}")))?;
            f(stored)?;
        }
        Ok(())
    }

    /// Writes the status of an object.
    pub fn put_status(
        &self,
        kind: Kind,
        name: &str,
        status: &ObjectStatus,
        internal: &InternalState,
    ) -> Result<(), StoreError> {
        let v = serde_json::to_string(status)
            .map_err(|e| self.corrupt("write status", e.to_string()))?;
        let i = serde_json::to_string(internal)
            .map_err(|e| self.corrupt("write status", e.to_string()))?;
        let conn = self.conn();
        exec(
            &conn,
            "INSERT INTO status (kind, name, view, internal, as_listed) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (kind, name) DO UPDATE SET view = ?3, internal = ?4, as_listed = ?5",
            params![kind_str(kind), name, v, i, listed_as_is(status)],
        )
        .map_err(self.sql("write status"))?;
        if let Some(cache) = &self.cache {
            cache.put_status(kind, name, status, internal);
        }
        Ok(())
    }

    /// Records an event, drops the object's events beyond `caps.per_object` and the
    /// oldest events of all beyond `caps.total`. Returns its id.
    pub fn add_event(&self, event: &NewEvent, caps: EventCaps) -> Result<i64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.savepoint().map_err(self.sql("begin event"))?;
        let id = self.insert_event(&tx, event, caps)?;
        tx.commit().map_err(self.sql("commit event"))?;
        Ok(id)
    }

    /// Inserts an event and applies the caps, inside the caller's transaction.
    fn insert_event(
        &self,
        tx: &Connection,
        event: &NewEvent,
        caps: EventCaps,
    ) -> Result<i64, StoreError> {
        let type_: &str = event.type_.into();
        let reason: &str = event.reason.into();
        exec(
            tx,
            "INSERT INTO events (time, kind, name, type, reason, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![now_rfc3339(), kind_str(event.kind), event.name, type_, reason, event.message],
        )
        .map_err(self.sql("write event"))?;
        let id = tx.last_insert_rowid();
        exec(
            tx,
            "DELETE FROM events WHERE kind = ?1 AND name = ?2 AND id <= (
               SELECT id FROM events WHERE kind = ?1 AND name = ?2 ORDER BY id DESC LIMIT 1 OFFSET ?3)",
            params![kind_str(event.kind), event.name, i64::try_from(caps.per_object).unwrap_or(i64::MAX)],
        )
        .map_err(self.sql("cap events"))?;
        exec(
            tx,
            "DELETE FROM events WHERE id <= ?1 - ?2",
            params![id, i64::try_from(caps.total).unwrap_or(i64::MAX)],
        )
        .map_err(self.sql("cap events"))?;
        Ok(id)
    }

    /// Events after `after` that match `filter`, oldest first, at most `limit`. A row
    /// whose type or reason this version does not know is skipped (and logged).
    pub fn list_events(
        &self,
        filter: &EventFilter,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, time, kind, name, type, reason, message FROM events
                 WHERE id > ?1 AND (?2 IS NULL OR kind = ?2) AND (?3 IS NULL OR name = ?3)
                 ORDER BY id LIMIT ?4",
            )
            .map_err(self.sql("list events"))?;
        let rows = stmt
            .query_map(
                params![
                    after,
                    filter.kind.map(kind_str),
                    filter.name,
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, String>(6)?,
                    ))
                },
            )
            .map_err(self.sql("list events"))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, time, kind, name, type_, reason, message) =
                row.map_err(self.sql("list events"))?;
            let parsed = (
                kind_parse(&kind),
                EventType::from_str(&type_).ok(),
                Reason::from_str(&reason).ok(),
            );
            let (Some(kind), Some(type_), Some(reason)) = parsed else {
                tracing::warn!(
                    id,
                    kind,
                    type_,
                    reason,
                    "skipping an event this version cannot read"
                );
                continue;
            };
            out.push(Event {
                id,
                time,
                kind,
                name,
                type_,
                reason,
                message,
            });
        }
        Ok(out)
    }

    /// The last `limit` events of an object, oldest first.
    pub fn recent_events(
        &self,
        kind: Kind,
        name: &str,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let filter = EventFilter {
            kind: Some(kind),
            name: Some(name.to_string()),
        };
        let all = self.list_events(&filter, 0, usize::MAX)?;
        let skip = all.len().saturating_sub(limit);
        Ok(all.into_iter().skip(skip).collect())
    }

    /// The highest event id (0 when none).
    pub fn last_event_id(&self) -> Result<i64, StoreError> {
        query_one(
            &self.conn(),
            "SELECT COALESCE(MAX(id), 0) FROM events",
            [],
            |r| r.get(0),
        )
        .map_err(self.sql("read last event"))
    }

    /// Writes a `running` journal row before a side-effecting step. Returns its id.
    pub fn journal_begin(
        &self,
        uid: &str,
        kind: Kind,
        name: &str,
        step: &str,
    ) -> Result<i64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.savepoint().map_err(self.sql("begin journal"))?;
        let running: &str = JournalOutcome::Running.into();
        exec(&tx,
            "INSERT INTO journal (uid, kind, name, step, started, started_ms, outcome) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![uid, kind_str(kind), name, step, now_rfc3339(), unix_ms(), running],
        )
        .map_err(self.sql("write journal"))?;
        let id = tx.last_insert_rowid();
        // Keep the last 100 rows per object; unfinished rows are never dropped.
        exec(
            &tx,
            "DELETE FROM journal WHERE uid = ?1 AND outcome != ?2 AND id <= (
               SELECT id FROM journal WHERE uid = ?1 ORDER BY id DESC LIMIT 1 OFFSET 100)",
            params![uid, running],
        )
        .map_err(self.sql("cap journal"))?;
        tx.commit().map_err(self.sql("commit journal"))?;
        Ok(id)
    }

    /// Completes a journal row.
    pub fn journal_finish(
        &self,
        id: i64,
        outcome: JournalOutcome,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let outcome: &str = outcome.into();
        exec(&self.conn(),
                "UPDATE journal SET outcome = ?2, error = ?3, duration_ms = ?4 - started_ms WHERE id = ?1",
                params![id, outcome, error, unix_ms()],
            )
            .map_err(self.sql("finish journal"))?;
        Ok(())
    }

    fn parse_outcome(&self, text: &str) -> Result<JournalOutcome, StoreError> {
        JournalOutcome::from_str(text)
            .map_err(|_| self.corrupt("read journal", format!("unknown outcome {text:?}")))
    }

    /// Rows still `running`: steps a previous daemon did not finish.
    pub fn journal_unfinished(&self) -> Result<Vec<JournalRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(JOURNAL_UNFINISHED)
            .map_err(self.sql("read journal"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })
            .map_err(self.sql("read journal"))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, uid, kind, name, step, outcome) = row.map_err(self.sql("read journal"))?;
            let Some(kind) = kind_parse(&kind) else {
                continue;
            };
            out.push(JournalRow {
                id,
                uid,
                kind,
                name,
                step,
                outcome: self.parse_outcome(&outcome)?,
            });
        }
        Ok(out)
    }

    /// The last `limit` steps of an object, oldest first.
    pub fn journal_for(&self, uid: &str, limit: usize) -> Result<Vec<JournalEntry>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT step, started, duration_ms, outcome, error FROM journal WHERE uid = ?1 ORDER BY id DESC LIMIT ?2")
            .map_err(self.sql("read journal"))?;
        let rows = stmt
            .query_map(
                params![uid, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Option<String>>(4)?,
                    ))
                },
            )
            .map_err(self.sql("read journal"))?;
        let mut out = Vec::new();
        for row in rows {
            let (step, started, duration_ms, outcome, error) =
                row.map_err(self.sql("read journal"))?;
            out.push(JournalEntry {
                step,
                started,
                duration_ms,
                outcome: self.parse_outcome(&outcome)?,
                error,
            });
        }
        out.reverse();
        Ok(out)
    }

    /// The lease a VM holds (its active one, not a reservation), if any: `(ip, mac)`.
    pub fn lease_of(&self, uid: &str) -> Result<Option<(Ipv4Addr, String)>, StoreError> {
        let row: Option<(String, String)> = query_one(
            &self.conn(),
            "SELECT ip, mac FROM leases WHERE vm_uid = ?1 AND pending = 0",
            params![uid],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(self.sql("read lease"))?;
        row.map(|(ip, mac)| {
            ip.parse()
                .map(|ip| (ip, mac))
                .map_err(|_| self.corrupt("read lease", format!("bad ip {ip}")))
        })
        .transpose()
    }

    /// Leases an address for a VM and returns the one it is to run with.
    ///
    /// A VM holds at most two rows: its active lease (the address its VMM runs with)
    /// and, when it asks for another address, a reservation (`pending`). The active
    /// lease is returned when it matches the static address asked for (or none is asked
    /// for; a reservation is then dropped). Otherwise the static address (if free and
    /// inside the network), else the lowest free address, is reserved — or becomes the
    /// active lease when the VM has none. A reservation turns into the active lease, and
    /// the old address is released, only by [`Database::commit_lease`] (once a VMM runs
    /// with it, or none runs with the old one): so a VM that keeps running on its old
    /// address (a blocked recreate, a failed shutdown) keeps that address from others.
    /// The network's first host address is the bridge's and is never leased.
    pub fn lease(
        &self,
        uid: &str,
        mac: &str,
        want: Option<Ipv4Addr>,
        network: Ipv4Addr,
        prefix: u8,
    ) -> Result<LeaseGrant, StoreError> {
        let mut conn = self.conn();
        if let Some(cache) = &self.cache {
            // Whatever happens below, what is known of this VM's leases is read again.
            cache.forget_leases(uid);
        }
        let tx = conn.savepoint().map_err(self.sql("begin lease"))?;
        let rows: Vec<(String, bool)> = {
            let mut stmt = tx
                .prepare_cached("SELECT ip, pending FROM leases WHERE vm_uid = ?1")
                .map_err(self.sql("read lease"))?;
            let it = stmt
                .query_map(params![uid], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(self.sql("read lease"))?;
            it.collect::<Result<_, _>>()
                .map_err(self.sql("read lease"))?
        };
        let parse = |pending: bool| {
            rows.iter()
                .find(|(_, p)| *p == pending)
                .and_then(|(ip, _)| ip.parse::<Ipv4Addr>().ok())
        };
        let (active, reserved) = (parse(false), parse(true));
        if let Some(ip) = active {
            if want.is_none() || want == Some(ip) {
                if reserved.is_some() {
                    exec(
                        &tx,
                        "DELETE FROM leases WHERE vm_uid = ?1 AND pending = 1",
                        params![uid],
                    )
                    .map_err(self.sql("write lease"))?;
                    tx.commit().map_err(self.sql("commit lease"))?;
                    if let Some(cache) = &self.cache {
                        cache.update_taken(None, reserved);
                    }
                }
                if let Some(cache) = &self.cache {
                    cache.put_leases(uid, Some(ip), None);
                }
                return Ok(LeaseGrant { ip, pending: false });
            }
        }
        if let Some(ip) = reserved.filter(|ip| want == Some(*ip)) {
            return Ok(LeaseGrant { ip, pending: true });
        }
        let (first, last) = host_range(network, prefix);
        let ip = match want {
            Some(ip) => {
                let n = u32::from(ip);
                if n <= first || n > last {
                    return Err(StoreError::LeaseConflict { ip, message: format!("outside the leasable range of {network}/{prefix} (the first address is the bridge)") });
                }
                let holder: Option<String> = query_one(
                    &tx,
                    "SELECT vm_uid FROM leases WHERE ip = ?1",
                    params![ip.to_string()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(self.sql("read lease"))?;
                if let Some(h) = holder.filter(|h| h != uid) {
                    return Err(StoreError::LeaseConflict {
                        ip,
                        message: format!("already leased to the VM with uid {h}"),
                    });
                }
                ip
            }
            None => {
                // The lowest address not taken: from the cache's set when it holds every
                // taken address, else from every lease row in order (and the cache keeps
                // them from now on).
                let cached = self
                    .cache
                    .as_ref()
                    .and_then(|c| c.lowest_free(first + 1, last));
                let free = match cached {
                    Some(free) => free,
                    None => {
                        let taken = self.taken_addresses(&tx)?;
                        if let Some(cache) = &self.cache {
                            cache.put_taken(&taken);
                        }
                        lowest_free(taken, first + 1, last)
                    }
                };
                Ipv4Addr::from(free.ok_or(StoreError::LeasesExhausted { network, prefix })?)
            }
        };
        let pending = active.is_some();
        exec(
            &tx,
            "DELETE FROM leases WHERE vm_uid = ?1 AND pending = ?2",
            params![uid, pending],
        )
        .map_err(self.sql("write lease"))?;
        exec(
            &tx,
            "INSERT INTO leases (ip, mac, vm_uid, pending) VALUES (?1, ?2, ?3, ?4)",
            params![ip.to_string(), mac, uid, pending],
        )
        .map_err(self.sql("write lease"))?;
        tx.commit().map_err(self.sql("commit lease"))?;
        if let Some(cache) = &self.cache {
            // The row inserted replaced the one of the same kind (active or reserved).
            cache.update_taken(Some(ip), if pending { reserved } else { active });
            let (active, reserved) = match pending {
                true => (active, Some(ip)),
                false => (Some(ip), reserved),
            };
            cache.put_leases(uid, active, reserved);
        }
        Ok(LeaseGrant { ip, pending })
    }

    /// Every address the `leases` table holds, in ascending order (a row whose address
    /// does not parse is skipped: it cannot be granted anyway).
    fn taken_addresses(&self, conn: &Connection) -> Result<Vec<u32>, StoreError> {
        let mut taken: Vec<u32> = Vec::new();
        let mut stmt = conn
            .prepare_cached("SELECT ip FROM leases")
            .map_err(self.sql("read leases"))?;
        let mut rows = stmt.query([]).map_err(self.sql("read leases"))?;
        while let Some(row) = rows.next().map_err(self.sql("read leases"))? {
            if let Some(ip) = column_text(row, 0)
                .ok()
                .flatten()
                .and_then(|t| t.parse::<Ipv4Addr>().ok())
            {
                taken.push(u32::from(ip));
            }
        }
        taken.sort_unstable();
        Ok(taken)
    }

    /// Every address the `leases` table holds, in ascending order.
    #[cfg(test)]
    pub(super) fn taken(&self) -> Vec<u32> {
        self.taken_addresses(&self.conn()).unwrap()
    }

    /// Makes a VM's reservation its active lease and releases the old address (no-op
    /// without a reservation). Returns whether anything changed.
    pub fn commit_lease(&self, uid: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        if let Some(cache) = &self.cache {
            cache.forget_leases(uid);
        }
        let tx = conn.savepoint().map_err(self.sql("begin lease"))?;
        let reserved: bool = query_one(
            &tx,
            "SELECT EXISTS (SELECT 1 FROM leases WHERE vm_uid = ?1 AND pending = 1)",
            params![uid],
            |r| r.get(0),
        )
        .map_err(self.sql("read lease"))?;
        if !reserved {
            return Ok(false);
        }
        exec(
            &tx,
            "DELETE FROM leases WHERE vm_uid = ?1 AND pending = 0",
            params![uid],
        )
        .map_err(self.sql("write lease"))?;
        exec(
            &tx,
            "UPDATE leases SET pending = 0 WHERE vm_uid = ?1",
            params![uid],
        )
        .map_err(self.sql("write lease"))?;
        tx.commit().map_err(self.sql("commit lease"))?;
        if let Some(cache) = &self.cache {
            // The old address is free: read the taken ones again when next needed.
            cache.forget_taken();
        }
        Ok(true)
    }

    /// Releases every address of a VM (its lease and any reservation).
    pub fn release_lease(&self, uid: &str) -> Result<(), StoreError> {
        let conn = self.conn();
        if let Some(cache) = &self.cache {
            cache.forget_leases(uid);
        }
        exec(&conn, "DELETE FROM leases WHERE vm_uid = ?1", params![uid])
            .map_err(self.sql("release lease"))?;
        if let Some(cache) = &self.cache {
            cache.forget_taken();
        }
        Ok(())
    }

    /// Uids of every VM holding a lease (objects in the store, and orphans: VMs
    /// forgotten with `banger.dev/on-remove: Orphan`, whose lease row stays).
    pub fn leased_uids(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT DISTINCT vm_uid FROM leases ORDER BY vm_uid")
            .map_err(self.sql("list leases"))?;
        let it = stmt
            .query_map([], |r| r.get(0))
            .map_err(self.sql("list leases"))?;
        it.collect::<Result<_, _>>()
            .map_err(self.sql("list leases"))
    }

    /// SQLite's `PRAGMA integrity_check`: `ok` for a consistent database, else the
    /// problems it found.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        query_one(&self.conn(), "PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(self.sql("check integrity"))
    }

    /// Rows in the events and journal tables: `(events, journal)`.
    pub fn history_rows(&self) -> Result<(i64, i64), StoreError> {
        let conn = self.conn();
        let count = |table: &str| -> Result<i64, StoreError> {
            conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .map_err(self.sql("count rows"))
        };
        Ok((count("events")?, count("journal")?))
    }

    /// Bytes the database's pages take as this connection sees them (`page_count` times
    /// `page_size`): the size the file has once every page in the log is checkpointed,
    /// whenever the checkpoint thread gets to it.
    #[cfg(test)]
    pub fn page_bytes(&self) -> u64 {
        let conn = self.conn();
        let pragma = |name: &str| -> u64 {
            conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0))
                .map_or(0, |n| u64::try_from(n).unwrap_or(0))
        };
        pragma("page_count") * pragma("page_size")
    }

    /// Leaves checkpoints to another connection ([`super::checkpoint`]): this one
    /// checkpoints by itself only once the log holds `pages` pages, and truncates a
    /// longer log to `limit` bytes when it starts over.
    pub fn checkpoint_elsewhere(&self, pages: i64, limit: i64) -> Result<(), StoreError> {
        let conn = self.conn();
        conn.pragma_update(None, "wal_autocheckpoint", pages)
            .map_err(self.sql("set the checkpoint bound"))?;
        conn.pragma_update(None, "journal_size_limit", limit)
            .map_err(self.sql("set the log size limit"))?;
        Ok(())
    }

    /// Rows inserted, updated or deleted through this connection since it opened (what a
    /// test checks to prove that something wrote nothing).
    pub fn rows_written(&self) -> u64 {
        self.conn().total_changes()
    }

    /// Number of leases held.
    pub fn lease_count(&self) -> Result<i64, StoreError> {
        query_one(
            &self.conn(),
            "SELECT COUNT(*) FROM leases WHERE pending = 0",
            [],
            |r| r.get(0),
        )
        .map_err(self.sql("count leases"))
    }

    /// Completes a step that succeeded: its handles and its journal row (`done`) in one
    /// transaction, so neither is ever recorded without the other; with the step's
    /// event, if it has one (its id is returned).
    pub fn finish_step(
        &self,
        journal_id: i64,
        uid: &str,
        handles: &VmHandles,
        event: Option<(&NewEvent, EventCaps)>,
    ) -> Result<Option<i64>, StoreError> {
        let json = serde_json::to_string(handles)
            .map_err(|e| self.corrupt("write handles", e.to_string()))?;
        let done: &str = JournalOutcome::Done.into();
        let mut conn = self.conn();
        let tx = conn.savepoint().map_err(self.sql("begin finish step"))?;
        exec(&tx,
            "INSERT INTO handles (vm_uid, handles) VALUES (?1, ?2) ON CONFLICT (vm_uid) DO UPDATE SET handles = ?2",
            params![uid, json],
        )
        .map_err(self.sql("write handles"))?;
        exec(&tx,
            "UPDATE journal SET outcome = ?2, error = NULL, duration_ms = ?3 - started_ms WHERE id = ?1",
            params![journal_id, done, unix_ms()],
        )
        .map_err(self.sql("finish journal"))?;
        let event_id = match event {
            Some((e, caps)) => Some(self.insert_event(&tx, e, caps)?),
            None => None,
        };
        tx.commit().map_err(self.sql("commit finish step"))?;
        Ok(event_id)
    }

    /// Records a sync request for the Workspace `uid`: numbered one more than its last.
    pub fn request_sync(
        &self,
        uid: &str,
        force: bool,
        at: &str,
    ) -> Result<StoredSyncRequest, StoreError> {
        let serial: i64 = query_one(
            &self.conn(),
            "INSERT INTO workspace_sync_requests (uid, serial, force, at) VALUES (?1, 1, ?2, ?3)
                 ON CONFLICT (uid) DO UPDATE SET serial = serial + 1, force = ?2, at = ?3
                 RETURNING serial",
            params![uid, force, at],
            |r| r.get(0),
        )
        .map_err(self.sql("write sync request"))?;
        Ok(StoredSyncRequest {
            serial: u64::try_from(serial).unwrap_or(0),
            force,
            at: at.to_string(),
        })
    }

    /// The Workspace `uid`'s latest sync request.
    pub fn sync_request(&self, uid: &str) -> Result<Option<StoredSyncRequest>, StoreError> {
        query_one(
            &self.conn(),
            "SELECT serial, force, at FROM workspace_sync_requests WHERE uid = ?1",
            params![uid],
            |r| {
                Ok(StoredSyncRequest {
                    serial: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                    force: r.get(1)?,
                    at: r.get(2)?,
                })
            },
        )
        .optional()
        .map_err(self.sql("read sync request"))
    }

    /// What the Workspace `uid`'s last copy wrote, if recorded.
    pub fn copy_manifest(&self, uid: &str) -> Result<Option<CopyManifest>, StoreError> {
        let row: Option<String> = query_one(
            &self.conn(),
            "SELECT manifest FROM workspace_manifests WHERE uid = ?1",
            params![uid],
            |r| r.get(0),
        )
        .optional()
        .map_err(self.sql("read copy manifest"))?;
        row.map(|s| {
            serde_json::from_str(&s).map_err(|e| self.corrupt("read copy manifest", e.to_string()))
        })
        .transpose()
    }

    /// A Workspace's status and its copy's manifest, in one transaction.
    pub fn put_copy(
        &self,
        name: &str,
        uid: &str,
        status: &ObjectStatus,
        internal: &InternalState,
        manifest: &CopyManifest,
    ) -> Result<(), StoreError> {
        let v = serde_json::to_string(status)
            .map_err(|e| self.corrupt("write status", e.to_string()))?;
        let i = serde_json::to_string(internal)
            .map_err(|e| self.corrupt("write status", e.to_string()))?;
        let m = serde_json::to_string(manifest)
            .map_err(|e| self.corrupt("write copy manifest", e.to_string()))?;
        let mut conn = self.conn();
        let tx = conn.savepoint().map_err(self.sql("begin write copy"))?;
        exec(
            &tx,
            "INSERT INTO status (kind, name, view, internal, as_listed) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (kind, name) DO UPDATE SET view = ?3, internal = ?4, as_listed = ?5",
            params![kind_str(Kind::Workspace), name, v, i, listed_as_is(status)],
        )
        .map_err(self.sql("write status"))?;
        exec(
            &tx,
            "INSERT INTO workspace_manifests (uid, manifest) VALUES (?1, ?2)
             ON CONFLICT (uid) DO UPDATE SET manifest = ?2",
            params![uid, m],
        )
        .map_err(self.sql("write copy manifest"))?;
        tx.commit().map_err(self.sql("commit write copy"))?;
        if let Some(cache) = &self.cache {
            cache.put_status(Kind::Workspace, name, status, internal);
        }
        Ok(())
    }

    /// Writes a VM's handles.
    pub fn put_handles(&self, uid: &str, handles: &VmHandles) -> Result<(), StoreError> {
        let json = serde_json::to_string(handles)
            .map_err(|e| self.corrupt("write handles", e.to_string()))?;
        exec(&self.conn(),
                "INSERT INTO handles (vm_uid, handles) VALUES (?1, ?2) ON CONFLICT (vm_uid) DO UPDATE SET handles = ?2",
                params![uid, json],
            )
            .map_err(self.sql("write handles"))?;
        Ok(())
    }

    /// The mirrored handles of a VM.
    pub fn get_handles(&self, uid: &str) -> Result<Option<VmHandles>, StoreError> {
        let row: Option<String> = query_one(
            &self.conn(),
            "SELECT handles FROM handles WHERE vm_uid = ?1",
            params![uid],
            |r| r.get(0),
        )
        .optional()
        .map_err(self.sql("read handles"))?;
        row.map(|s| {
            serde_json::from_str(&s).map_err(|e| self.corrupt("read handles", e.to_string()))
        })
        .transpose()
    }
}

/// `(network address, broadcast-or-last)` as integers: hosts are strictly between.
fn host_range(network: Ipv4Addr, prefix: u8) -> (u32, u32) {
    let bits = u32::from(prefix.min(30));
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    let net = u32::from(network) & mask;
    let last = (net | !mask).saturating_sub(1);
    // `first` is the bridge's address: net + 1.
    (net + 1, last)
}

/// The bridge (gateway) address of a network: its first host address.
pub fn gateway_of(network: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(host_range(network, prefix).0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_cache_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("banger.db")).unwrap();
        let kib: i64 = query_one(&db.conn(), "PRAGMA cache_size", [], |r| r.get(0)).unwrap();
        assert_eq!(kib, -PAGE_CACHE_KIB);
    }

    #[test]
    fn unfinished_journal_rows_are_read_through_their_partial_index() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("banger.db")).unwrap();
        let plan: Vec<String> = {
            let conn = db.conn();
            let mut stmt = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {JOURNAL_UNFINISHED}"))
                .unwrap();
            let rows = stmt.query_map([], |r| r.get::<_, String>(3)).unwrap();
            rows.map(Result::unwrap).collect()
        };
        assert!(
            plan.iter().any(|step| step.contains("journal_running")),
            "{plan:?}"
        );
        let begun = db.journal_begin("u1", Kind::Vm, "a", "launch").unwrap();
        let done = db.journal_begin("u1", Kind::Vm, "a", "ensure-tap").unwrap();
        db.journal_finish(done, JournalOutcome::Done, None).unwrap();
        let unfinished: Vec<i64> = db
            .journal_unfinished()
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(unfinished, vec![begun]);
    }

    #[test]
    fn the_lowest_free_address_is_the_first_gap() {
        assert_eq!(lowest_free([], 2, 9), Some(2));
        assert_eq!(lowest_free([2, 3, 4], 2, 9), Some(5));
        assert_eq!(lowest_free([2, 3, 5], 2, 9), Some(4));
        assert_eq!(lowest_free([1, 3, 4], 2, 9), Some(2), "below the range");
        assert_eq!(lowest_free([0, 1, 2, 3, 4], 2, 4), None, "all taken");
        assert_eq!(lowest_free([7, 8], 2, 9), Some(2));
        assert_eq!(
            lowest_free([u32::MAX - 1, u32::MAX], u32::MAX - 1, u32::MAX),
            None
        );
    }
}
