//! Checkpoints of the write-ahead log, on a thread of their own.
//!
//! In WAL mode SQLite appends each commit to `banger.db-wal`; a checkpoint copies those
//! pages back into the database file and syncs both files to disk (two `fsync`s). By
//! default the connection that commits runs one every 1,000 pages, so the store's thread
//! stopped for them several times a second under load: applying 1,000 VMs made 66
//! `fsync`s on it, 0.46 s of the ~1.3 s the apply took on this machine's ext4.
//!
//! Here the thread `banger-ckpt`, with a connection of its own, runs them instead: once
//! the store's thread wrote [`ROWS_PER_CHECKPOINT`] rows since the last one
//! ([`Checkpointer::written`]), at most once per [`MIN_INTERVAL`]. So a burst is
//! checkpointed as it goes, while a single apply (a few dozen rows) is not made to wait
//! behind an `fsync` on its way to a running VM. Its checkpoints are PASSIVE: they
//! copy what they can without waiting for the store's writes or making them wait. The
//! store's own connection keeps SQLite's automatic checkpoint, every
//! [`AUTOCHECKPOINT_PAGES`], only as a bound on the log should this thread fall behind
//! (while this thread checkpoints, SQLite skips it), and truncates a longer log to
//! [`LOG_SIZE_LIMIT`] when it starts over.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::StoreError;

/// The shortest time between two checkpoints of this thread.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Rows written (about as many log pages) that make this thread checkpoint.
pub const ROWS_PER_CHECKPOINT: u64 = 500;

/// Pages in the log after which the store's connection checkpoints by itself.
pub const AUTOCHECKPOINT_PAGES: i64 = 2_000;

/// The size a longer log is truncated to when it starts over (bytes).
pub const LOG_SIZE_LIMIT: i64 = 4 * 1024 * 1024;

/// The checkpointing thread; dropping this stops it (after the checkpoint it is
/// running, if any).
pub struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// Rows written since the last checkpoint began.
    rows: u64,
    /// Stop the thread.
    stop: bool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Checkpointer {
    /// Opens a connection to the database at `path` and starts the thread.
    pub fn start(path: &Path) -> Result<Checkpointer, StoreError> {
        let failed = |message: String| StoreError::Task {
            path: path.to_path_buf(),
            operation: "start the checkpoint thread",
            message,
        };
        let conn = Connection::open(path).map_err(|e| failed(e.to_string()))?;
        let shared = Arc::new(Shared::default());
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("banger-ckpt".into())
            .spawn(move || run(&conn, &thread_shared))
            .map_err(|e| failed(e.to_string()))?;
        Ok(Checkpointer {
            shared,
            thread: Some(thread),
        })
    }

    /// Tells the thread that the store's connection committed `rows` more rows.
    pub fn written(&self, rows: u64) {
        let mut state = self.shared.state();
        let before = state.rows;
        state.rows = state.rows.saturating_add(rows);
        if before < ROWS_PER_CHECKPOINT && state.rows >= ROWS_PER_CHECKPOINT {
            self.shared.wake.notify_one();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.shared.state().stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread: waits for [`ROWS_PER_CHECKPOINT`] rows, keeps [`MIN_INTERVAL`] since its
/// last checkpoint, checkpoints.
fn run(conn: &Connection, shared: &Shared) {
    let mut last: Option<Instant> = None;
    loop {
        {
            let mut state = shared.state();
            loop {
                if state.stop {
                    return;
                }
                let due = last.map_or(Duration::ZERO, |at| {
                    MIN_INTERVAL.saturating_sub(at.elapsed())
                });
                let enough = state.rows >= ROWS_PER_CHECKPOINT;
                if enough && due.is_zero() {
                    break;
                }
                state = if enough {
                    shared
                        .wake
                        .wait_timeout(state, due)
                        .map(|(s, _)| s)
                        .unwrap_or_else(|p| p.into_inner().0)
                } else {
                    shared.wake.wait(state).unwrap_or_else(|p| p.into_inner())
                };
            }
            state.rows = 0;
        }
        checkpoint(conn);
        last = Some(Instant::now());
    }
}

/// One PASSIVE checkpoint; its outcome is logged (the next one tries again).
fn checkpoint(conn: &Connection) {
    let outcome = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
    match outcome {
        Ok((busy, log, copied)) => {
            tracing::trace!(busy, log, copied, "checkpoint");
        }
        Err(e) => tracing::debug!(error = %e, "checkpoint"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After enough writes, the thread copies the log back into the database file,
    /// which grows by the pages written (the writer's own checkpoints are off); fewer
    /// rows are left in the log.
    #[test]
    fn written_pages_are_checkpointed_by_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn.execute_batch("CREATE TABLE t (x TEXT)").unwrap();
        let checkpointer = Checkpointer::start(&path).unwrap();
        let row = "x".repeat(1000);
        for _ in 0..200 {
            conn.execute("INSERT INTO t (x) VALUES (?1)", [&row])
                .unwrap();
        }
        let size = || std::fs::metadata(&path).unwrap().len();
        let before = size();
        assert!(before < 50_000, "nothing checkpointed yet: {before} bytes");
        checkpointer.written(ROWS_PER_CHECKPOINT - 1);
        std::thread::sleep(MIN_INTERVAL * 3);
        assert_eq!(size(), before, "checkpointed before enough rows");
        checkpointer.written(1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while size() < 200_000 {
            assert!(
                Instant::now() < deadline,
                "not checkpointed: {} bytes",
                size()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(checkpointer);
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 200);
    }
}
