//! The specs directory source: every `*.yaml`/`*.yml` below it is desired state.
//!
//! - A full rescan runs at start, at every resync, and right after a save: a file closed
//!   after writing, renamed, created or removed, once the directory has been quiet for
//!   the debounce (15 ms by default; a burst of saves makes one rescan, bounded to 5 s).
//!   Writes still in progress do not count, so a file written in several pieces is read
//!   once, complete.
//! - A valid file's objects are created or updated, owned by the directory (owner
//!   records the file, so renaming a file changes nothing else).
//! - An invalid file changes nothing: the objects it declared (known by the file they
//!   came from, or by the identities the parser still recognised) keep their last good
//!   spec and get `SpecValid=False, reason: InvalidSpec` with `file:line`.
//! - An object whose file is gone (and not declared elsewhere in the directory) is
//!   deleted, unless its annotation `banger.dev/on-remove` is `Orphan` (the object is
//!   forgotten; its VM, disk and lease stay) or `Stop` (the object stays, stopped).
//! - Objects owned by `banger apply` are never touched; a file declaring one gets a
//!   `SourceConflict` warning event (once per file and object).
//! - Only the directory's owner and root may write it ([`super::dir_trust`]): a spec
//!   file someone else could write is refused like an invalid file (its objects keep
//!   their last good spec), and below a directory someone else could write (the specs
//!   directory itself included) nothing is read, created or deleted: its objects keep
//!   their last good spec, with `SpecValid=False` saying why.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use banger_specs::load::{parse_document_set, read_spec_file, FileLoad, ReadError};
use banger_specs::{ObjectKey, PowerState, Problem, Resource, Severity};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::dir_trust::{self, Trusted};
use super::upsert;
use crate::control::Control;
use crate::objects::{self, OnRemove, Owner};
use crate::status::Reason;
use crate::store::StoreError;

/// Deepest directory level scanned.
const MAX_DEPTH: usize = 16;
/// Most files scanned.
const MAX_FILES: usize = 10_000;
/// Longest a burst of events may postpone a rescan.
const MAX_BURST: Duration = Duration::from_secs(5);

/// The result of reading the directory.
#[derive(Debug, Default)]
pub struct DirScan {
    /// Every spec file, parsed, by path. A refused file is here too, as a load with one
    /// file-level error and no object, so its objects keep their last good spec (and the
    /// sync logs the refusal as an invalid file).
    pub files: Vec<FileLoad>,
    /// Spec-named entries that were not read: not a regular file (FIFO, device node,
    /// socket, directory, or a symlink to one), a symlink loop, unreadable, or over the
    /// size cap. Never opened when the type is wrong, so none of them can block a
    /// rescan. For surfacing as events; the same refusals are in [`DirScan::files`].
    /// Spec files someone other than the directory's owner and root could write are
    /// refused here too.
    pub refused: Vec<RefusedFile>,
    /// The specs directory itself does not exist (removed, or not mounted): the sync
    /// then changes nothing — a missing directory is not "every file deleted".
    pub root_missing: bool,
    /// Directories below it that could not be listed: the objects of files below them
    /// keep their last good spec instead of being deleted.
    pub unreadable_dirs: Vec<PathBuf>,
    /// Directories (the specs directory itself, or one below it) someone other than
    /// its owner and root could write: nothing below them was read, and the objects of
    /// files below them keep their last good spec.
    pub untrusted: Vec<UntrustedDir>,
}

/// A directory the scan would not read below, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UntrustedDir {
    /// The directory.
    pub path: PathBuf,
    /// Why, as one line naming the offending path.
    pub reason: String,
}

/// A spec file the scan would not read, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedFile {
    /// The entry's path.
    pub path: PathBuf,
    /// Why, as one line (`not a regular file (it is a FIFO); …`).
    pub reason: String,
}

/// What a sync did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Objects created or updated.
    pub applied: usize,
    /// Objects whose file is invalid (kept at their last good spec).
    pub kept_invalid: usize,
    /// Objects marked for deletion.
    pub deleted: usize,
    /// Objects forgotten (`Orphan`).
    pub orphaned: usize,
    /// Objects stopped (`Stop`).
    pub stopped: usize,
    /// Declarations skipped because another source owns the object.
    pub conflicts: usize,
}

fn is_spec_file(p: &Path) -> bool {
    let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// Reads and parses every spec file below `dir`, sorted by path.
///
/// Directories are walked without following symlinks. A spec-named entry is read only
/// when it is a regular file or a symlink to one ([`read_spec_file`]: the type is
/// checked before opening, the open is non-blocking, the size capped); anything else
/// is refused and reported in [`DirScan::refused`]. An entry that vanished meanwhile
/// (or a dangling symlink) counts as absent. Who may write the directories and files
/// is checked first ([`dir_trust`]): what fails is refused, never read.
pub fn scan(dir: &Path) -> DirScan {
    let mut result = DirScan::default();
    if matches!(std::fs::symlink_metadata(dir), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
    {
        result.root_missing = true;
        return result;
    }
    let trusted: Trusted = match dir_trust::check_specs_dir(dir, nix::unistd::geteuid().as_raw()) {
        Ok(trusted) => trusted,
        Err(e) => {
            result.untrusted.push(UntrustedDir {
                path: dir.to_path_buf(),
                reason: dir_trust::refusal(dir, &e),
            });
            return result;
        }
    };
    let mut paths = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, depth)) = stack.pop() {
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if depth == 0 && e.kind() == std::io::ErrorKind::NotFound => {
                result.root_missing = true;
                return result;
            }
            Err(_) => {
                result.unreadable_dirs.push(d);
                continue;
            }
        };
        for entry in rd.flatten() {
            let p = entry.path();
            let Ok(ft) = entry.file_type() else { continue };
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if ft.is_dir() {
                if depth < MAX_DEPTH && !hidden {
                    let problem = entry
                        .metadata()
                        .ok()
                        .and_then(|m| dir_trust::subdir_problem(&m, &trusted));
                    match problem {
                        Some(problem) => result.untrusted.push(UntrustedDir {
                            reason: format!("{}: {problem}; {}", p.display(), dir_trust::WHY),
                            path: p,
                        }),
                        None => stack.push((p, depth + 1)),
                    }
                }
            } else if is_spec_file(&p) && paths.len() < MAX_FILES {
                paths.push(p);
            }
        }
    }
    paths.sort();
    result.untrusted.sort_by(|a, b| a.path.cmp(&b.path));
    for p in paths {
        let label = p.display().to_string();
        let untrusted = std::fs::metadata(&p)
            .ok()
            .filter(|m| m.is_file())
            .and_then(|m| dir_trust::file_problem(&p, &m, &trusted));
        if let Some(problem) = untrusted {
            let reason = format!("{problem}; {}", dir_trust::WHY);
            result.files.push(FileLoad {
                file: label.clone(),
                problems: vec![Problem::file_level(&label, reason.clone())],
                ..FileLoad::default()
            });
            result.refused.push(RefusedFile { path: p, reason });
            continue;
        }
        match read_spec_file(&p) {
            Ok(bytes) => {
                let base = p
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| dir.to_path_buf());
                result.files.push(parse_document_set(&bytes, &label, &base));
            }
            Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                let reason = e.to_string();
                result.files.push(FileLoad {
                    file: label.clone(),
                    problems: vec![Problem::file_level(&label, reason.clone())],
                    ..FileLoad::default()
                });
                result.refused.push(RefusedFile { path: p, reason });
            }
        }
    }
    result
}

/// The directory source's memory across rescans.
#[derive(Default)]
pub struct DirSource {
    reported_conflicts: Mutex<HashSet<(ObjectKey, String)>>,
    logged_problems: Mutex<HashSet<String>>,
    /// The directory was missing at the last rescan (so its absence is reported once).
    missing: std::sync::atomic::AtomicBool,
}

/// How often a missing specs directory is looked for again.
const REAPPEAR_POLL: Duration = Duration::from_secs(1);

impl DirSource {
    /// A fresh source.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the store match a scan of the directory.
    pub async fn sync(&self, ctl: &Control, scan: &DirScan) -> Result<SyncReport, StoreError> {
        let _guard = ctl.sources_lock.lock().await;
        let mut report = SyncReport::default();
        let mut claimed: BTreeMap<ObjectKey, String> = BTreeMap::new();
        let mut invalid: BTreeMap<ObjectKey, String> = BTreeMap::new();
        let all = ctl.store.list_objects(None).await?;
        let was_missing = self
            .missing
            .swap(scan.root_missing, std::sync::atomic::Ordering::SeqCst);
        if scan.root_missing {
            if !was_missing {
                tracing::warn!(
                    "the specs directory is missing; its objects are kept until it is back"
                );
                for o in &all {
                    if let Owner::SpecsDir { file } = &o.owner {
                        let key = o.resource.key();
                        let msg = format!("the specs directory of {file} is missing; this object is kept as it is until the directory is back");
                        ctl.events
                            .warning(key.kind, &key.name, Reason::SpecsDirMissing, msg)
                            .await;
                    }
                }
            }
            return Ok(report);
        }

        // Below a directory others could write, nothing is created or deleted.
        for dir in &scan.untrusted {
            self.log_once(&dir.reason);
            for o in &all {
                if let Owner::SpecsDir { file } = &o.owner {
                    if Path::new(file).starts_with(&dir.path) {
                        invalid
                            .entry(o.resource.key())
                            .or_insert_with(|| dir.reason.clone());
                    }
                }
            }
        }

        // The stored objects by key (a directory of n objects is matched in n log n).
        let stored: BTreeMap<ObjectKey, &crate::store::StoredObject> =
            all.iter().map(|o| (o.resource.key(), o)).collect();
        for file in &scan.files {
            let first_error = file.problems.iter().find(|p| p.severity == Severity::Error);
            if let Some(problem) = first_error {
                let mut logged = self
                    .logged_problems
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if logged.insert(problem.to_string()) {
                    tracing::warn!(file = %file.file, "invalid spec file, ignored (its objects keep their last good spec): {problem}");
                }
                drop(logged);
                // Objects of this file (by record or by recognised identity) keep their spec.
                let ids: BTreeSet<ObjectKey> = file.identities.iter().cloned().collect();
                for o in &all {
                    let key = o.resource.key();
                    let from_file =
                        matches!(&o.owner, Owner::SpecsDir { file: f } if *f == file.file);
                    let named = ids.contains(&key) && matches!(o.owner, Owner::SpecsDir { .. });
                    if from_file || named {
                        invalid.entry(key).or_insert_with(|| problem.to_string());
                    }
                }
                continue;
            }
            for lo in &file.objects {
                let key = lo.resource.key();
                if let Some(first) = claimed.get(&key) {
                    if self.first_report(&key, &file.file) {
                        let msg = format!(
                            "{key} is declared in both {first} and {}; the first wins",
                            file.file
                        );
                        ctl.events
                            .warning(key.kind, &key.name, Reason::DuplicateSpec, msg)
                            .await;
                    }
                    continue;
                }
                let existing = stored.get(&key);
                if let Some(e) = existing {
                    if let Owner::Cli { .. } = e.owner {
                        report.conflicts += 1;
                        if self.first_report(&key, &file.file) {
                            let msg = format!("{}:{} declares {key}, which banger apply owns; the file is ignored for it (apply --force from the file to move it, or delete it first)", lo.origin.file, lo.origin.line);
                            tracing::warn!("{msg}");
                            ctl.events
                                .warning(key.kind, &key.name, Reason::SourceConflict, msg)
                                .await;
                        }
                        continue;
                    }
                    if e.deleting.is_some() {
                        // Being deleted: the next rescan after it is gone creates it again.
                        claimed.insert(key, file.file.clone());
                        continue;
                    }
                }
                claimed.insert(key.clone(), file.file.clone());
                let (action, _) = upsert(
                    ctl,
                    &lo.resource,
                    Owner::SpecsDir {
                        file: file.file.clone(),
                    },
                    false,
                )
                .await?;
                if action != crate::api::types::ApplyAction::Unchanged {
                    report.applied += 1;
                }
                self.clear_invalid(ctl, &key).await?;
            }
        }

        for (key, problem) in &invalid {
            if claimed.contains_key(key) {
                continue;
            }
            report.kept_invalid += 1;
            let (status, mut internal) = ctl.store.get_status(key.kind, &key.name).await?;
            if internal.invalid_spec.as_deref() != Some(problem.as_str()) {
                internal.invalid_spec = Some(problem.clone());
                ctl.store
                    .put_status(key.kind, &key.name, status, internal)
                    .await?;
                ctl.events
                    .warning(
                        key.kind,
                        &key.name,
                        Reason::InvalidSpec,
                        format!("{problem}; keeping the last good spec"),
                    )
                    .await;
                ctl.queue.add(key.clone());
            }
        }

        for o in &all {
            let key = o.resource.key();
            let Owner::SpecsDir { file } = &o.owner else {
                continue;
            };
            if claimed.contains_key(&key) || invalid.contains_key(&key) || o.deleting.is_some() {
                continue;
            }
            if scan
                .unreadable_dirs
                .iter()
                .any(|d| Path::new(file.as_str()).starts_with(d))
            {
                // Its file may well be there: a directory that cannot be listed is not
                // a removal.
                continue;
            }
            match objects::on_remove(&o.resource) {
                OnRemove::Delete => {
                    super::delete(
                        ctl,
                        key.kind,
                        &key.name,
                        &format!("{file} no longer declares it"),
                    )
                    .await?;
                    report.deleted += 1;
                }
                OnRemove::Orphan => {
                    ctl.store.remove_object(key.kind, &key.name, &o.uid).await?;
                    ctl.events.normal(key.kind, &key.name, Reason::Orphaned, format!("{file} no longer declares it; forgotten, its host objects are left running (uid {})", o.uid)).await;
                    report.orphaned += 1;
                }
                OnRemove::Stop => {
                    if let Resource::Vm(vm) = &o.resource {
                        if vm.spec.state != PowerState::Stopped {
                            let mut stopped = vm.clone();
                            stopped.spec.state = PowerState::Stopped;
                            upsert(
                                ctl,
                                &Resource::Vm(stopped),
                                o.owner.clone(),
                                o.allow_recreate,
                            )
                            .await?;
                            ctl.events
                                .normal(
                                    key.kind,
                                    &key.name,
                                    Reason::SourceRemoved,
                                    format!(
                                        "{file} no longer declares it; stopping it (on-remove: Stop)"
                                    ),
                                )
                                .await;
                            report.stopped += 1;
                        }
                    }
                }
            }
        }
        Ok(report)
    }

    /// Logs a refusal the first time it is seen.
    fn log_once(&self, problem: &str) {
        let mut logged = self
            .logged_problems
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if logged.insert(problem.to_string()) {
            tracing::warn!("specs directory: {problem}; its objects keep their last good spec");
        }
    }

    fn first_report(&self, key: &ObjectKey, file: &str) -> bool {
        self.reported_conflicts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((key.clone(), file.to_string()))
    }

    async fn clear_invalid(&self, ctl: &Control, key: &ObjectKey) -> Result<(), StoreError> {
        let (status, mut internal) = ctl.store.get_status(key.kind, &key.name).await?;
        if internal.invalid_spec.take().is_some() {
            ctl.store
                .put_status(key.kind, &key.name, status, internal)
                .await?;
            ctl.events
                .normal(
                    key.kind,
                    &key.name,
                    Reason::SpecValid,
                    "the spec file is valid again",
                )
                .await;
            ctl.queue.add(key.clone());
        }
        Ok(())
    }

    /// Rescans and syncs, logging the outcome.
    pub async fn rescan(&self, ctl: &Control, dir: &Path) {
        let dir2 = dir.to_path_buf();
        let scan = match tokio::task::spawn_blocking(move || scan(&dir2)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "specs directory scan panicked");
                return;
            }
        };
        match self.sync(ctl, &scan).await {
            Ok(r) => tracing::debug!(?r, dir = %dir.display(), "specs directory synced"),
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "syncing the specs directory")
            }
        }
    }

    /// Watches `dir` until `stop` resolves: a rescan at start, then one after each
    /// debounced burst of file events. (Periodic resync rescans are the daemon's.) When
    /// the directory disappears, its objects are kept (see [`DirScan::root_missing`]);
    /// it is looked for every second and watched again once it is back.
    pub async fn watch(
        &self,
        ctl: &Control,
        dir: PathBuf,
        debounce: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), notify::Error> {
        tokio::pin!(stop);
        loop {
            while !is_dir(&dir).await {
                self.rescan(ctl, &dir).await;
                tokio::select! {
                    _ = &mut stop => return Ok(()),
                    _ = tokio::time::sleep(REAPPEAR_POLL) => {}
                }
            }
            let (tx, mut rx) = mpsc::unbounded_channel::<()>();
            let mut watcher =
                notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                    if let Ok(ev) = res {
                        if is_save(&ev.kind) {
                            let _ = tx.send(());
                        }
                    }
                })?;
            watcher.watch(&dir, RecursiveMode::Recursive)?;
            self.rescan(ctl, &dir).await;
            loop {
                tokio::select! {
                    _ = &mut stop => return Ok(()),
                    ev = rx.recv() => if ev.is_none() { return Ok(()) },
                }
                let burst_end = tokio::time::Instant::now() + MAX_BURST;
                loop {
                    match tokio::time::timeout(debounce, rx.recv()).await {
                        Ok(Some(())) if tokio::time::Instant::now() < burst_end => continue,
                        _ => break,
                    }
                }
                self.rescan(ctl, &dir).await;
                if !is_dir(&dir).await {
                    // The watch went with the directory: wait for it to come back.
                    break;
                }
            }
        }
    }
}

/// Whether a file event ends a save (or a removal): a file closed after writing, a
/// rename, a creation or removal. Writes still in progress (`IN_MODIFY`) and reads are
/// not: a file written in several pieces is rescanned once, when it is closed.
fn is_save(kind: &EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_)
        | EventKind::Create(_)
        | EventKind::Remove(_)
        | EventKind::Any
        | EventKind::Other => true,
    }
}

/// Whether `path` is a directory (off the async workers).
async fn is_dir(path: &Path) -> bool {
    tokio::fs::metadata(path).await.is_ok_and(|m| m.is_dir())
}
