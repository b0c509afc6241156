//! The executor: level-triggered reconciles of one object at a time.
//!
//! A reconcile never learns why it was triggered (file event, API call, VMM exit,
//! resync): it re-reads the desired object from the store, observes the host through
//! the [`VmRuntime`] port, plans ([`crate::planner`]) and runs the steps, then writes
//! status. Guarantees:
//! - one reconcile per object at a time (the [`WorkQueue`] never hands out an active
//!   key), so the per-object lock is the queue itself and no lock is held across
//!   runtime calls;
//! - a journal row is written before each side-effecting step and completed after it;
//!   [`Engine::recover_journal`] handles the rows a dead daemon left `running`;
//! - deletion is finalizer-style: the object is marked deleting, cleanup steps run to
//!   completion (retried with backoff on failure), then the rows go;
//! - after shutdown is requested no new step starts; the step in flight finishes and
//!   is journaled.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use banger_specs::{Kind, ObjectKey, PowerState, Resource, VmSpec};
use tokio::sync::{watch, Semaphore};

use crate::api::types::StatusView;
use crate::config::DaemonConfig;
use crate::objects;
use crate::planner::{
    self, Action, Blocker, ChangeClass, DesiredVm, ImageFacts, Plan, WorkspaceFacts,
};
use crate::queue::{Outcome, WorkQueue};
use crate::runtime::{
    ImageContext, Lease, ObservedVm, ProcessState, ResolvedImage, RuntimeError, SyncRecord,
    VmContext, VmHandles, VmRuntime, VmStep, WorkspaceContext,
};
use crate::status::{self, ConditionUpdate, Phase, FALSE, TRUE};
use crate::store::{self, InternalState, Store, StoreError, StoredObject, WorkspaceSynced};

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Steps succeeded but observation still wants them: the runtime's steps do not
    /// take effect. Treated as a failure (backoff, then Stalled) instead of a hot loop.
    #[error("vm {vm}: still needs {steps} after {rounds} rounds of steps")]
    NoProgress {
        /// VM name.
        vm: String,
        /// The steps still planned.
        steps: String,
        /// Rounds run.
        rounds: usize,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A runtime step failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Writing the handles file failed.
    #[error("vm {vm}: write {path}: {message}")]
    Handles {
        /// VM name.
        vm: String,
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

impl ReconcileError {
    /// The condition reason reported for it.
    pub fn reason(&self) -> &'static str {
        match self {
            ReconcileError::Store(
                StoreError::LeaseConflict { .. } | StoreError::LeasesExhausted { .. },
            ) => "IPConflict",
            ReconcileError::Store(_) => "StoreError",
            ReconcileError::Runtime(RuntimeError::Image { .. }) => "ImageUnavailable",
            ReconcileError::Runtime(RuntimeError::Step { .. }) => "StepFailed",
            ReconcileError::Runtime(RuntimeError::Sync { .. }) => "SyncFailed",
            ReconcileError::Handles { .. } => "HandlesNotSaved",
            ReconcileError::NoProgress { .. } => "NoProgress",
        }
    }
}

/// Restarts after exits counted for crash-loop detection within this window.
const CRASH_WINDOW_SECS: i64 = 600;
/// Restarts within the window before the crash-loop backoff starts.
const CRASH_FREE_RESTARTS: usize = 3;
/// Plan/execute rounds within one reconcile before requeueing.
const MAX_ROUNDS: usize = 4;
/// How soon a running VM whose guest is not ready yet is looked at again.
const GUEST_POLL: Duration = Duration::from_millis(500);
/// The journal name of a Workspace copy.
const SYNC_STEP: &str = "sync-workspace";

/// `N files (commit abc123) copied to PATH`.
fn sync_message(r: &SyncRecord, path: &str) -> String {
    let commit = match &r.commit {
        Some(c) => format!("commit {}", &c[..c.len().min(12)]),
        None => "no commit".into(),
    };
    format!("{} files ({commit}) copied to {path}", r.files)
}

/// The engine: store, runtime, queue and the reconcile logic. Shared by the workers,
/// the sources and the API (behind an `Arc`).
pub struct Engine<R: VmRuntime> {
    /// Configuration.
    pub config: DaemonConfig,
    /// The store.
    pub store: Store,
    /// The runtime port.
    pub runtime: R,
    /// The work queue.
    pub queue: WorkQueue,
    heavy: Semaphore,
    events: watch::Sender<i64>,
    shutting_down: AtomicBool,
    /// Serialises the sources' check-then-write sequences (apply, delete, rescan).
    pub(crate) source_lock: tokio::sync::Mutex<()>,
    /// Per-VM workspace locks (by VM uid), never held with anything else.
    workspace_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(0)
}

/// The key of a stored object.
pub fn key_of(o: &StoredObject) -> ObjectKey {
    o.resource.key()
}

impl<R: VmRuntime> Engine<R> {
    /// Opens the store under `config.state_dir` and builds the engine.
    pub fn new(config: DaemonConfig, runtime: R) -> Result<Self, StoreError> {
        let store = Store::open(&config.db_path())?;
        let last = store.last_event_id()?;
        Ok(Engine {
            queue: WorkQueue::new(config.backoff_min, config.backoff_max),
            heavy: Semaphore::new(config.max_heavy.max(1)),
            events: watch::channel(last).0,
            shutting_down: AtomicBool::new(false),
            source_lock: tokio::sync::Mutex::new(()),
            workspace_locks: Mutex::new(HashMap::new()),
            store,
            runtime,
            config,
        })
    }

    /// Stops starting new steps (the step in flight finishes).
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.queue.close();
    }

    /// Whether shutdown was requested.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// A receiver that changes whenever an event is recorded (for long polls).
    pub fn subscribe_events(&self) -> watch::Receiver<i64> {
        self.events.subscribe()
    }

    /// Records an event on an object. Failures to record are logged, never fatal.
    pub fn event(&self, kind: Kind, name: &str, type_: &str, reason: &str, message: &str) {
        match self.store.add_event(
            kind,
            name,
            type_,
            reason,
            message,
            self.config.events_per_object,
        ) {
            Ok(id) => {
                self.events.send_replace(id);
            }
            Err(e) => tracing::warn!(error = %e, "recording event"),
        }
    }

    /// Queues every object (start and resync); objects waiting out a backoff keep it.
    pub fn enqueue_all(&self) -> Result<usize, StoreError> {
        let mut all = self.store.list_objects(None)?;
        all.sort_by_key(|o| planner::kind_order(o.resource.kind(), o.deleting.is_some()));
        for o in &all {
            self.queue.add_unless_queued(key_of(o));
        }
        Ok(all.len())
    }

    /// Queues the objects that reference `target` (VMs of an Image, Workspaces of a VM).
    fn enqueue_referrers(&self, target: Kind, name: &str) {
        let kind = match target {
            Kind::Image => Kind::Vm,
            Kind::Vm => Kind::Workspace,
            Kind::Workspace => return,
        };
        match self.store.referrers(kind, name) {
            Ok(names) => names
                .into_iter()
                .for_each(|n| self.queue.add(ObjectKey { kind, name: n })),
            Err(e) => tracing::warn!(error = %e, "listing referrers"),
        }
    }

    /// Runs one worker: takes keys from the queue until it is closed.
    pub async fn run_worker(&self) {
        while let Some(key) = self.queue.next().await {
            let outcome = match self.reconcile(&key).await {
                Ok(o) => o,
                Err(e) => {
                    self.record_failure(&key, &e);
                    Outcome::Failed
                }
            };
            self.queue.done(&key, outcome);
        }
    }

    fn record_failure(&self, key: &ObjectKey, err: &ReconcileError) {
        let failures = self.queue.failures(key) + 1;
        tracing::warn!(object = %key, failures, error = %err, "reconcile failed");
        let msg = err.to_string();
        self.event(key.kind, &key.name, "Warning", "ReconcileFailed", &msg);
        let Ok(Some(obj)) = self.store.get_object(key.kind, &key.name) else {
            return;
        };
        let Ok((mut view, internal)) = self.store.get_status(key.kind, &key.name) else {
            return;
        };
        let now = status::now_rfc3339();
        let g = obj.generation;
        let stalled = failures >= self.config.stall_after;
        status::set_condition(
            &mut view.conditions,
            ConditionUpdate {
                type_: status::READY,
                status: FALSE,
                reason: err.reason(),
                message: msg.clone(),
            },
            g,
            &now,
        );
        status::set_condition(
            &mut view.conditions,
            ConditionUpdate {
                type_: status::RECONCILING,
                status: TRUE,
                reason: "Retrying",
                message: format!("{failures} failure(s) in a row; retrying with backoff"),
            },
            g,
            &now,
        );
        let (st, reason) = if stalled {
            (TRUE, "RepeatedFailures")
        } else {
            (FALSE, "Retrying")
        };
        let message = if stalled {
            format!("{failures} failures in a row; last: {msg}")
        } else {
            String::new()
        };
        status::set_condition(
            &mut view.conditions,
            ConditionUpdate {
                type_: status::STALLED,
                status: st,
                reason,
                message,
            },
            g,
            &now,
        );
        if let Err(e) = self.store.put_status(key.kind, &key.name, &view, &internal) {
            tracing::warn!(error = %e, "writing status");
        }
    }

    /// Reconciles one object, level-triggered.
    pub async fn reconcile(&self, key: &ObjectKey) -> Result<Outcome, ReconcileError> {
        let Some(obj) = self.store.get_object(key.kind, &key.name)? else {
            return Ok(Outcome::Done);
        };
        match &obj.resource {
            Resource::Image(_) => self.reconcile_image(&obj).await,
            Resource::Vm(vm) => {
                let spec = vm.spec.clone();
                self.reconcile_vm(&obj, &spec).await
            }
            Resource::Workspace(ws) => {
                let vm = ws.spec.vm.clone();
                self.reconcile_workspace(&obj, &vm).await
            }
        }
    }

    fn image_context(&self, obj: &StoredObject) -> Option<ImageContext> {
        match &obj.resource {
            Resource::Image(o) => Some(ImageContext {
                uid: obj.uid.clone(),
                name: o.metadata.name.clone(),
                spec: o.spec.clone(),
                image_dir: self.config.image_dir(&obj.uid),
            }),
            _ => None,
        }
    }

    async fn reconcile_image(&self, obj: &StoredObject) -> Result<Outcome, ReconcileError> {
        let name = obj.resource.name().to_string();
        let Some(ctx) = self.image_context(obj) else {
            return Ok(Outcome::Done);
        };
        let (mut view, mut internal) = self.store.get_status(Kind::Image, &name)?;
        let used_by: Vec<String> = if obj.deleting.is_some() {
            self.store.referrers(Kind::Vm, &name)?
        } else {
            Vec::new()
        };
        let facts = ImageFacts {
            deleting: obj.deleting.is_some(),
            resolved_generation: internal.resolved_generation,
            generation: obj.generation,
            used_by,
            files_present: match &internal.resolved {
                Some(r) if obj.deleting.is_none() => self.runtime.image_present(r).await,
                _ => false,
            },
        };
        let plan = planner::plan_image(&facts);
        let now = status::now_rfc3339();
        let g = obj.generation;
        if facts.deleting {
            view.phase = Phase::Deleting.as_str().into();
            if let Some(b) = &plan.blocked {
                status::set_condition(&mut view.conditions, blocked_ready(b), g, &now);
                self.store
                    .put_status(Kind::Image, &name, &view, &internal)?;
                return Ok(Outcome::RequeueAfter(Duration::from_secs(5)));
            }
            let id = self.store.journal_begin(
                &obj.uid,
                Kind::Image,
                &name,
                Action::RemoveImage.name(),
            )?;
            if let Err(e) = self.runtime.remove_image(&ctx).await {
                self.store
                    .journal_finish(id, "failed", Some(&e.to_string()))?;
                return Err(e.into());
            }
            self.store.journal_finish(id, "done", None)?;
            self.store.remove_object(Kind::Image, &name, &obj.uid)?;
            self.event(Kind::Image, &name, "Normal", "Deleted", "image deleted");
            return Ok(Outcome::Done);
        }
        if !plan.steps.is_empty() {
            let _permit = self.heavy.acquire().await;
            let id = self.store.journal_begin(
                &obj.uid,
                Kind::Image,
                &name,
                Action::ResolveImage.name(),
            )?;
            match self.runtime.resolve_image(&ctx).await {
                Ok(resolved) => {
                    self.store.journal_finish(id, "done", None)?;
                    internal.resolved = Some(resolved);
                    internal.resolved_generation = Some(g);
                    self.event(
                        Kind::Image,
                        &name,
                        "Normal",
                        "Resolved",
                        "image files ready",
                    );
                }
                Err(e) => {
                    self.store
                        .journal_finish(id, "failed", Some(&e.to_string()))?;
                    return Err(e.into());
                }
            }
        }
        view.phase = Phase::Ready.as_str().into();
        view.observed_generation = g;
        status::set_condition(
            &mut view.conditions,
            ConditionUpdate {
                type_: status::READY,
                status: TRUE,
                reason: "Resolved",
                message: "image files ready".into(),
            },
            g,
            &now,
        );
        self.common_success_conditions(&mut view, &internal, g, &now);
        self.store
            .put_status(Kind::Image, &name, &view, &internal)?;
        if !plan.steps.is_empty() {
            self.enqueue_referrers(Kind::Image, &name);
        }
        Ok(Outcome::Done)
    }

    fn common_success_conditions(
        &self,
        view: &mut StatusView,
        internal: &InternalState,
        g: i64,
        now: &str,
    ) {
        status::set_condition(
            &mut view.conditions,
            ConditionUpdate {
                type_: status::STALLED,
                status: FALSE,
                reason: "Reconciled",
                message: String::new(),
            },
            g,
            now,
        );
        match &internal.invalid_spec {
            Some(problem) => {
                status::set_condition(
                    &mut view.conditions,
                    ConditionUpdate {
                        type_: status::SPEC_VALID,
                        status: FALSE,
                        reason: "InvalidSpec",
                        message: problem.clone(),
                    },
                    g,
                    now,
                );
            }
            None => {
                status::remove_condition(&mut view.conditions, status::SPEC_VALID);
            }
        }
    }

    /// The per-VM workspace lock: two copies into one VM never interleave; VM steps
    /// never take it.
    fn workspace_lock(&self, vm_uid: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .workspace_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(vm_uid.to_string()).or_default().clone()
    }

    /// The VM a Workspace is copied into, when it runs with its guest ready: its
    /// context (lease and handles as its own reconcile recorded them, never leased here).
    fn ready_vm(&self, vm: &str) -> Result<Option<VmContext>, StoreError> {
        let Some(obj) = self.store.get_object(Kind::Vm, vm)? else {
            return Ok(None);
        };
        let Resource::Vm(v) = &obj.resource else {
            return Ok(None);
        };
        if obj.deleting.is_some() {
            return Ok(None);
        }
        let view = self.store.get_status(Kind::Vm, vm)?.0;
        if view.phase != Phase::Running.as_str()
            || !status::is_true(&view.conditions, status::GUEST_READY)
        {
            return Ok(None);
        }
        let spec = v.spec.clone();
        let ctx = self.vm_context_readonly(&obj, &spec)?;
        Ok(ctx.handles.process.is_some().then_some(ctx))
    }

    async fn reconcile_workspace(
        &self,
        obj: &StoredObject,
        vm: &str,
    ) -> Result<Outcome, ReconcileError> {
        let name = obj.resource.name().to_string();
        let Resource::Workspace(ws) = &obj.resource else {
            return Ok(Outcome::Done);
        };
        let (mut view, mut internal) = self.store.get_status(Kind::Workspace, &name)?;
        let g = obj.generation;
        let vm_ctx = if obj.deleting.is_some() {
            None
        } else {
            self.ready_vm(vm)?
        };
        let facts = WorkspaceFacts {
            deleting: obj.deleting.is_some(),
            vm: vm.to_string(),
            vm_running: vm_ctx.is_some(),
            bound: internal.bound_generation == Some(g),
        };
        let plan = planner::plan_workspace(&facts);
        if facts.deleting {
            self.store.remove_object(Kind::Workspace, &name, &obj.uid)?;
            self.event(
                Kind::Workspace,
                &name,
                "Normal",
                "Deleted",
                "workspace deleted",
            );
            return Ok(Outcome::Done);
        }
        let now = status::now_rfc3339();
        view.observed_generation = g;
        match vm_ctx.filter(|_| plan.blocked.is_none()) {
            None => {
                let message = format!("waiting for vm {vm} to run with its guest ready");
                internal.bound_generation = None;
                view.phase = Phase::Pending.as_str().into();
                let ready = ConditionUpdate {
                    type_: status::READY,
                    status: FALSE,
                    reason: "WaitingForVM",
                    message: message.clone(),
                };
                status::set_condition(&mut view.conditions, ready, g, &now);
                status::set_condition(
                    &mut view.conditions,
                    ConditionUpdate {
                        type_: status::SYNCED,
                        status: FALSE,
                        reason: "WaitingForVM",
                        message,
                    },
                    g,
                    &now,
                );
            }
            Some(vm_ctx) => {
                if !plan.steps.is_empty() {
                    internal.bound_generation = Some(g);
                    self.event(
                        Kind::Workspace,
                        &name,
                        "Normal",
                        "Bound",
                        &format!("bound to vm {vm}"),
                    );
                }
                let Some(process) = vm_ctx.handles.process.clone() else {
                    return Ok(Outcome::RequeueAfter(GUEST_POLL));
                };
                let wanted = WorkspaceSynced {
                    generation: g,
                    vm_uid: vm_ctx.uid.clone(),
                    vmm_pid: process.pid,
                    vmm_start_time: process.start_time,
                    record: Default::default(),
                    at: String::new(),
                };
                let current = internal.synced.as_ref().is_some_and(|s| {
                    (s.generation, &s.vm_uid, s.vmm_pid, s.vmm_start_time)
                        == (g, &wanted.vm_uid, wanted.vmm_pid, wanted.vmm_start_time)
                });
                if !current {
                    let ctx = WorkspaceContext {
                        name: name.clone(),
                        uid: obj.uid.clone(),
                        spec: ws.spec.clone(),
                        vm: vm_ctx,
                    };
                    let record = match self.sync_workspace(&ctx).await {
                        Ok(r) => r,
                        Err(e) => {
                            view.phase = Phase::Pending.as_str().into();
                            status::set_condition(
                                &mut view.conditions,
                                ConditionUpdate {
                                    type_: status::SYNCED,
                                    status: FALSE,
                                    reason: "SyncFailed",
                                    message: e.to_string(),
                                },
                                g,
                                &now,
                            );
                            self.store
                                .put_status(Kind::Workspace, &name, &view, &internal)?;
                            return Err(e);
                        }
                    };
                    let message = sync_message(&record, &ws.spec.path);
                    self.event(Kind::Workspace, &name, "Normal", "Copied", &message);
                    internal.synced = Some(WorkspaceSynced {
                        record,
                        at: now.clone(),
                        ..wanted
                    });
                }
                let message = internal
                    .synced
                    .as_ref()
                    .map(|s| sync_message(&s.record, &ws.spec.path))
                    .unwrap_or_default();
                status::set_condition(
                    &mut view.conditions,
                    ConditionUpdate {
                        type_: status::SYNCED,
                        status: TRUE,
                        reason: "Copied",
                        message,
                    },
                    g,
                    &now,
                );
                view.phase = Phase::Ready.as_str().into();
                status::set_condition(
                    &mut view.conditions,
                    ConditionUpdate {
                        type_: status::READY,
                        status: TRUE,
                        reason: "Synced",
                        message: format!("copied into vm {vm}, which is running"),
                    },
                    g,
                    &now,
                );
            }
        }
        status::set_condition(
            &mut view.conditions,
            ConditionUpdate {
                type_: status::RECONCILING,
                status: FALSE,
                reason: "Converged",
                message: String::new(),
            },
            g,
            &now,
        );
        self.common_success_conditions(&mut view, &internal, g, &now);
        self.store
            .put_status(Kind::Workspace, &name, &view, &internal)?;
        Ok(Outcome::Done)
    }

    /// Runs one copy under the VM's workspace lock, journaled as `sync-workspace`.
    async fn sync_workspace(&self, ctx: &WorkspaceContext) -> Result<SyncRecord, ReconcileError> {
        let lock = self.workspace_lock(&ctx.vm.uid);
        let _held = lock.lock().await;
        let id = self
            .store
            .journal_begin(&ctx.uid, Kind::Workspace, &ctx.name, SYNC_STEP)?;
        match self.runtime.sync_workspace(ctx).await {
            Ok(r) => {
                self.store.journal_finish(id, "done", None)?;
                Ok(r)
            }
            Err(e) => {
                self.store
                    .journal_finish(id, "failed", Some(&e.to_string()))?;
                Err(e.into())
            }
        }
    }

    /// The resolved image a VM boots, if its Image is Ready.
    pub fn resolved_image(&self, image: &str) -> Result<Option<ResolvedImage>, StoreError> {
        if self.store.get_object(Kind::Image, image)?.is_none() {
            return Ok(None);
        }
        Ok(self.store.get_status(Kind::Image, image)?.1.resolved)
    }

    /// Loads a VM's handles: `handles.json` if readable, else the store's mirror.
    pub fn load_handles(&self, uid: &str) -> Result<VmHandles, StoreError> {
        let path = self.config.vm_dir(uid).join("handles.json");
        if let Ok(text) = std::fs::read_to_string(&path) {
            if let Ok(h) = serde_json::from_str(&text) {
                return Ok(h);
            }
            tracing::warn!(path = %path.display(), "handles.json unreadable; using the store's copy");
        }
        Ok(self.store.get_handles(uid)?.unwrap_or_default())
    }

    fn save_handles(
        &self,
        name: &str,
        uid: &str,
        vm_dir: &Path,
        handles: &VmHandles,
    ) -> Result<(), ReconcileError> {
        self.store.put_handles(uid, handles)?;
        if vm_dir.is_dir() {
            let path = vm_dir.join("handles.json");
            let tmp = vm_dir.join(".handles.json.tmp");
            let err = |e: std::io::Error| ReconcileError::Handles {
                vm: name.to_string(),
                path: path.display().to_string(),
                message: e.to_string(),
            };
            let text = serde_json::to_vec_pretty(handles).unwrap_or_default();
            std::fs::write(&tmp, text).map_err(err)?;
            std::fs::rename(&tmp, &path).map_err(err)?;
        }
        Ok(())
    }

    /// Builds the context of a VM; leases an address unless `deleting`.
    pub fn vm_context(
        &self,
        obj: &StoredObject,
        spec: &VmSpec,
        deleting: bool,
    ) -> Result<VmContext, StoreError> {
        let gateway = store::gateway_of(self.config.bridge_network, self.config.bridge_prefix);
        let mac = crate::host::names::mac_address_of(&obj.uid);
        let ip = if deleting {
            self.store.lease_of(&obj.uid)?.map(|(ip, _)| ip)
        } else {
            Some(self.store.lease(
                &obj.uid,
                &mac,
                spec.network.ip,
                self.config.bridge_network,
                self.config.bridge_prefix,
            )?)
        };
        Ok(VmContext {
            uid: obj.uid.clone(),
            name: obj.resource.name().to_string(),
            spec: spec.clone(),
            image: self.resolved_image(&spec.image)?,
            vm_dir: self.config.vm_dir(&obj.uid),
            lease: ip.map(|ip| Lease {
                ip,
                mac,
                gateway,
                prefix: self.config.bridge_prefix,
            }),
            bridge: self.config.bridge_name.clone(),
            handles: self.load_handles(&obj.uid)?,
        })
    }

    /// Runs one step with its journal row; persists the handles it returns.
    pub async fn run_step(&self, ctx: &mut VmContext, step: VmStep) -> Result<(), ReconcileError> {
        // Copying or growing a root disk is heavy: bounded like image pulls.
        let _permit = match step {
            VmStep::PrepareDisk | VmStep::GrowDisk => Some(self.heavy.acquire().await),
            _ => None,
        };
        let id = self
            .store
            .journal_begin(&ctx.uid, Kind::Vm, &ctx.name, step.name())?;
        match self.runtime.execute(step, ctx).await {
            Ok(handles) => {
                self.save_handles(&ctx.name, &ctx.uid, &ctx.vm_dir, &handles)?;
                ctx.handles = handles;
                self.store.journal_finish(id, "done", None)?;
                Ok(())
            }
            Err(e) => {
                self.store
                    .journal_finish(id, "failed", Some(&e.to_string()))?;
                Err(e.into())
            }
        }
    }

    /// The context of a VM with the lease it holds, if any (never allocates one).
    fn vm_context_readonly(
        &self,
        obj: &StoredObject,
        spec: &VmSpec,
    ) -> Result<VmContext, StoreError> {
        Ok(VmContext {
            uid: obj.uid.clone(),
            name: obj.resource.name().to_string(),
            spec: spec.clone(),
            image: self.resolved_image(&spec.image)?,
            vm_dir: self.config.vm_dir(&obj.uid),
            lease: self.store.lease_of(&obj.uid)?.map(|(ip, mac)| Lease {
                ip,
                mac,
                gateway: store::gateway_of(self.config.bridge_network, self.config.bridge_prefix),
                prefix: self.config.bridge_prefix,
            }),
            bridge: self.config.bridge_name.clone(),
            handles: self.load_handles(&obj.uid)?,
        })
    }

    /// The VM plan as it would be now (for `describe`, `diff`, dry runs).
    pub async fn plan_vm_now(
        &self,
        obj: &StoredObject,
        spec: &VmSpec,
        allow_recreate: bool,
    ) -> Result<Plan, StoreError> {
        let ctx = self.vm_context_readonly(obj, spec)?;
        let observed = self.runtime.observe(&ctx).await;
        let (_, internal) = self.store.get_status(Kind::Vm, obj.resource.name())?;
        let desired = DesiredVm {
            spec,
            image: ctx.image.as_ref(),
            deleting: obj.deleting.is_some(),
            allow_recreate: allow_recreate
                || obj.allow_recreate
                || objects::allow_recreate_annotation(&obj.resource),
            crash_backoff: crash_backoff_remaining(&internal.restarts, unix_now()).is_some(),
            ip: spec
                .network
                .ip
                .or(self.store.lease_of(&obj.uid)?.map(|(ip, _)| ip)),
        };
        Ok(planner::plan_vm(&desired, &observed))
    }

    async fn reconcile_vm(
        &self,
        obj: &StoredObject,
        spec: &VmSpec,
    ) -> Result<Outcome, ReconcileError> {
        let name = obj.resource.name().to_string();
        let deleting = obj.deleting.is_some();
        let (mut view, mut internal) = self.store.get_status(Kind::Vm, &name)?;
        let old_phase = view.phase.clone();
        let mut ctx = self.vm_context(obj, spec, deleting)?;
        let allow_recreate =
            obj.allow_recreate || objects::allow_recreate_annotation(&obj.resource);
        let mut observed;
        let mut plan;
        let mut rounds = 0;
        loop {
            observed = self.runtime.observe(&ctx).await;
            let backoff = crash_backoff_remaining(&internal.restarts, unix_now());
            let desired = DesiredVm {
                spec,
                image: ctx.image.as_ref(),
                deleting,
                allow_recreate,
                crash_backoff: backoff.is_some(),
                ip: ctx.lease.as_ref().map(|l| l.ip),
            };
            plan = planner::plan_vm(&desired, &observed);
            if plan.steps.is_empty() || plan.blocked.is_some() || rounds >= MAX_ROUNDS {
                break;
            }
            rounds += 1;
            let after_exit = matches!(observed.process, ProcessState::Exited { .. });
            for planned in &plan.steps {
                let Action::Vm(step) = planned.action else {
                    continue;
                };
                if self.is_shutting_down() {
                    return Ok(Outcome::RequeueAfter(Duration::ZERO));
                }
                tracing::debug!(vm = %name, step = step.name(), class = planned.class.as_str(), reason = %planned.reason, "running step");
                self.run_step(&mut ctx, step).await?;
                if step == VmStep::Launch && after_exit {
                    internal.restarts.push(unix_now());
                    let cutoff = unix_now() - CRASH_WINDOW_SECS;
                    internal.restarts.retain(|t| *t >= cutoff);
                    self.event(Kind::Vm, &name, "Warning", "Restarted", &planned.reason);
                } else if matches!(
                    step,
                    VmStep::Launch
                        | VmStep::Shutdown
                        | VmStep::PrepareDisk
                        | VmStep::RemoveDisk
                        | VmStep::GrowDisk
                ) {
                    self.event(
                        Kind::Vm,
                        &name,
                        "Normal",
                        step_reason(step),
                        &format!(
                            "{} ({}): {}",
                            step.name(),
                            planned.class.as_str(),
                            planned.reason
                        ),
                    );
                }
            }
        }
        if rounds >= MAX_ROUNDS && !plan.steps.is_empty() && plan.blocked.is_none() {
            self.store.put_status(Kind::Vm, &name, &view, &internal)?;
            let steps: Vec<&str> = plan.steps.iter().map(|p| p.action.name()).collect();
            return Err(ReconcileError::NoProgress {
                vm: name,
                steps: steps.join(", "),
                rounds,
            });
        }
        if deleting && plan.steps.is_empty() {
            self.store.release_lease(&obj.uid)?;
            self.store.remove_object(Kind::Vm, &name, &obj.uid)?;
            self.event(
                Kind::Vm,
                &name,
                "Normal",
                "Deleted",
                "all host objects removed, lease released",
            );
            if let Some(image) = referenced_image(&obj.resource) {
                self.queue.add(ObjectKey {
                    kind: Kind::Image,
                    name: image,
                });
            }
            self.enqueue_referrers(Kind::Vm, &name);
            return Ok(Outcome::Done);
        }
        let old_guest = status::is_true(&view.conditions, status::GUEST_READY);
        let old_pid = view.pid;
        let outcome =
            self.write_vm_status(obj, spec, &ctx, &observed, &plan, &mut view, &mut internal)?;
        self.store.put_status(Kind::Vm, &name, &view, &internal)?;
        // Workspaces follow the guest: a new phase, guest readiness or VMM.
        let guest_changed = old_guest != status::is_true(&view.conditions, status::GUEST_READY)
            || old_pid != view.pid;
        if guest_changed && view.phase == old_phase {
            self.enqueue_referrers(Kind::Vm, &name);
        }
        if view.phase != old_phase {
            self.enqueue_referrers(Kind::Vm, &name);
            if old_phase != "Pending" || view.phase != "Creating" {
                self.event(
                    Kind::Vm,
                    &name,
                    "Normal",
                    "PhaseChanged",
                    &format!("{old_phase} -> {}", view.phase),
                );
            }
        }
        Ok(outcome)
    }

    #[allow(clippy::too_many_arguments)]
    fn write_vm_status(
        &self,
        obj: &StoredObject,
        spec: &VmSpec,
        ctx: &VmContext,
        observed: &ObservedVm,
        plan: &Plan,
        view: &mut StatusView,
        internal: &mut InternalState,
    ) -> Result<Outcome, ReconcileError> {
        let g = obj.generation;
        let now = status::now_rfc3339();
        let running = matches!(observed.process, ProcessState::Running { .. });
        let want_running = spec.state == PowerState::Running;
        let phase = if obj.deleting.is_some() {
            Phase::Deleting
        } else {
            match &observed.process {
                ProcessState::Running { .. } | ProcessState::Unresponsive { .. } => Phase::Running,
                ProcessState::Exited { clean }
                    if plan.steps.is_empty()
                        || matches!(plan.blocked, Some(Blocker::CrashLoopBackOff)) =>
                {
                    if *clean || !want_running {
                        Phase::Stopped
                    } else {
                        Phase::Failed
                    }
                }
                ProcessState::Absent if !want_running && observed.disk.is_some() => Phase::Stopped,
                _ if matches!(plan.blocked, Some(Blocker::WaitingForImage { .. })) => {
                    Phase::Pending
                }
                _ => Phase::Creating,
            }
        };
        view.phase = phase.as_str().into();
        view.observed_generation = g;
        view.ip = ctx.lease.as_ref().map(|l| l.ip.to_string());
        view.pid = if running {
            ctx.handles.process.as_ref().map(|p| p.pid)
        } else {
            None
        };
        view.hypervisor = ctx
            .handles
            .process
            .as_ref()
            .map(|p| p.hypervisor.as_str().to_string());
        let mut handles = serde_json::to_value(&ctx.handles).unwrap_or(serde_json::Value::Null);
        if let (Some(map), Some(lease)) = (handles.as_object_mut(), &ctx.lease) {
            map.insert(
                "lease".into(),
                serde_json::to_value(lease).unwrap_or_default(),
            );
            map.insert(
                "vmDir".into(),
                serde_json::Value::String(ctx.vm_dir.display().to_string()),
            );
            map.insert(
                "consoleLog".into(),
                serde_json::Value::String(ctx.console_log().display().to_string()),
            );
        }
        view.handles = Some(handles);

        let guest = if running && observed.guest_ready {
            (
                TRUE,
                "GuestUp",
                "the guest passed its readiness check".to_string(),
            )
        } else if running {
            (
                FALSE,
                "Booting",
                "waiting for the guest's readiness check".to_string(),
            )
        } else {
            (FALSE, "NotRunning", "no running VMM".to_string())
        };
        status::set_condition(
            &mut view.conditions,
            ConditionUpdate {
                type_: status::GUEST_READY,
                status: guest.0,
                reason: guest.1,
                message: guest.2,
            },
            g,
            &now,
        );

        let mut outcome = Outcome::Done;
        let converged = plan.steps.is_empty() && plan.blocked.is_none();
        let (ready, reason, message): (&str, &str, String) = if let Some(b) = &plan.blocked {
            if let Blocker::CrashLoopBackOff = b {
                let wait = crash_backoff_remaining(&internal.restarts, unix_now())
                    .unwrap_or(Duration::from_secs(1));
                outcome = Outcome::RequeueAfter(wait);
            }
            (FALSE, b.reason(), b.message())
        } else if !converged {
            outcome = Outcome::RequeueAfter(Duration::from_millis(200));
            (FALSE, "Progressing", "steps remain".into())
        } else {
            match (&observed.process, want_running) {
                (ProcessState::Running { .. }, true) if observed.guest_ready => {
                    (TRUE, "Running", "the VM runs and its guest is ready".into())
                }
                (ProcessState::Running { .. }, true) => {
                    outcome = Outcome::RequeueAfter(GUEST_POLL);
                    (
                        FALSE,
                        "Booting",
                        "waiting for the guest's readiness check".into(),
                    )
                }
                (ProcessState::Exited { clean }, true) => (
                    FALSE,
                    "Exited",
                    format!(
                        "the VMM exited ({}) and restartPolicy {:?} keeps it down",
                        if *clean { "clean" } else { "unclean" },
                        spec.restart_policy
                    ),
                ),
                (_, false) => (
                    TRUE,
                    "Stopped",
                    "the VM is stopped as desired; its disk is kept".into(),
                ),
                _ => (FALSE, "Progressing", "steps remain".into()),
            }
        };
        status::set_condition(
            &mut view.conditions,
            ConditionUpdate {
                type_: status::READY,
                status: ready,
                reason,
                message,
            },
            g,
            &now,
        );
        let reconciling =
            !converged && !matches!(plan.blocked, Some(Blocker::RecreateBlocked { .. }));
        let (rs, rr) = if reconciling || outcome != Outcome::Done {
            (TRUE, "Progressing")
        } else {
            (FALSE, "Converged")
        };
        status::set_condition(
            &mut view.conditions,
            ConditionUpdate {
                type_: status::RECONCILING,
                status: rs,
                reason: rr,
                message: String::new(),
            },
            g,
            &now,
        );
        self.common_success_conditions(view, internal, g, &now);
        Ok(outcome)
    }

    /// Handles the journal rows a previous daemon left `running`: rolls back an
    /// interrupted `prepare-disk` or `launch` (see [`VmStep::rollback`]), marks the
    /// others `resumed`, and queues their objects. Returns the rows handled.
    pub async fn recover_journal(&self) -> Result<usize, ReconcileError> {
        let rows = self.store.journal_unfinished()?;
        for row in &rows {
            let obj = self
                .store
                .get_object(row.kind, &row.name)?
                .filter(|o| o.uid == row.uid);
            let rollback = VmStep::from_name(&row.step).and_then(VmStep::rollback);
            match (obj, rollback) {
                (Some(obj), Some(undo)) => {
                    let undone = match &obj.resource {
                        Resource::Vm(vm) => {
                            let spec = vm.spec.clone();
                            tracing::info!(vm = %row.name, step = %row.step, undo = undo.name(), "rolling back an interrupted step");
                            match self.vm_context(&obj, &spec, true) {
                                Ok(mut ctx) => self.run_step(&mut ctx, undo).await,
                                Err(e) => Err(e.into()),
                            }
                        }
                        _ => Ok(()),
                    };
                    // A failed rollback never keeps the daemon from starting: the row
                    // says so, and the object's next reconcile plans from what is there.
                    let (outcome, note, reason) = match &undone {
                        Ok(()) => (
                            "rolled-back",
                            "interrupted by a daemon stop".to_string(),
                            "StepRolledBack",
                        ),
                        Err(e) => (
                            "failed",
                            format!("interrupted by a daemon stop; rollback failed: {e}"),
                            "RollbackFailed",
                        ),
                    };
                    self.store.journal_finish(row.id, outcome, Some(&note))?;
                    self.event(
                        row.kind,
                        &row.name,
                        "Warning",
                        reason,
                        &format!("interrupted step {}: {note}", row.step),
                    );
                    self.queue.add(ObjectKey {
                        kind: row.kind,
                        name: row.name.clone(),
                    });
                }
                (Some(_), None) => {
                    self.store.journal_finish(
                        row.id,
                        "resumed",
                        Some("interrupted by a daemon stop"),
                    )?;
                    self.queue.add(ObjectKey {
                        kind: row.kind,
                        name: row.name.clone(),
                    });
                }
                (None, _) => self
                    .store
                    .journal_finish(row.id, "abandoned", Some("object gone"))?,
            }
        }
        Ok(rows.len())
    }
}

/// `Ready=False` for an object whose plan is blocked: the blocker's reason and message.
fn blocked_ready(b: &Blocker) -> ConditionUpdate<'static> {
    ConditionUpdate {
        type_: status::READY,
        status: FALSE,
        reason: b.reason(),
        message: b.message(),
    }
}

fn referenced_image(r: &Resource) -> Option<String> {
    match r {
        Resource::Vm(o) => Some(o.spec.image.clone()),
        _ => None,
    }
}

fn step_reason(step: VmStep) -> &'static str {
    match step {
        VmStep::Launch => "Launched",
        VmStep::Shutdown => "ShutDown",
        VmStep::PrepareDisk => "DiskPrepared",
        VmStep::RemoveDisk => "DiskRemoved",
        VmStep::GrowDisk => "DiskGrown",
        _ => "Step",
    }
}

/// Crash-loop backoff: after [`CRASH_FREE_RESTARTS`] restarts within the window, the
/// next restart waits `5 s * 2^(extra)` (at most 5 min) after the last one. Returns the
/// time left to wait, if any.
pub fn crash_backoff_remaining(restarts: &[i64], now: i64) -> Option<Duration> {
    let recent: Vec<i64> = restarts
        .iter()
        .copied()
        .filter(|t| *t >= now - CRASH_WINDOW_SECS)
        .collect();
    if recent.len() < CRASH_FREE_RESTARTS {
        return None;
    }
    let extra = u32::try_from(recent.len() - CRASH_FREE_RESTARTS)
        .unwrap_or(u32::MAX)
        .min(6);
    let delay = (5i64 << extra).min(300);
    let last = recent.iter().copied().max().unwrap_or(now);
    let left = last + delay - now;
    (left > 0).then(|| Duration::from_secs(u64::try_from(left).unwrap_or(0)))
}

/// The change class shown for an apply: the worst class of a plan.
pub fn plan_class(plan: &Plan) -> Option<ChangeClass> {
    plan.worst_class()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_backoff_starts_after_free_restarts() {
        assert_eq!(crash_backoff_remaining(&[100, 101], 102), None);
        assert_eq!(
            crash_backoff_remaining(&[100, 101, 102], 103),
            Some(Duration::from_secs(4))
        );
        assert_eq!(
            crash_backoff_remaining(&[100, 101, 102, 103], 104),
            Some(Duration::from_secs(9))
        );
        assert_eq!(
            crash_backoff_remaining(&[100, 101, 102], 2000),
            None,
            "old restarts forgotten"
        );
    }
}
