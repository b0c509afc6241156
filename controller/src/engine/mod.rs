//! The engine: level-triggered reconciles of one object at a time.
//!
//! A reconcile never learns why it was triggered (file event, API call, VMM exit,
//! resync): it reads the desired object from the store, gathers the planner's facts
//! ([`facts`]: the same function serves `diff`, `apply --dry-run` and `describe`),
//! plans ([`crate::planner`]), runs the planned steps and writes the status.
//!
//! | file | job |
//! |------|-----|
//! | [`worker`] | the worker loop: take a key, reconcile, report the outcome to the queue; failures become `Ready=False`/`Stalled` |
//! | [`facts`] | the planner's inputs for one object, from the store and the runtime |
//! | `image.rs` | an Image's reconcile: resolve (pull) it, remove it once unused |
//! | `vm.rs` | a VM's reconcile: journaled steps, rounds of observe → plan → act |
//! | [`vm_status`] | pure: a VM's phase and conditions from what was planned and observed |
//! | `workspace.rs` | a Workspace's reconcile: copy it into its VM's guest when planned |
//! | `recovery.rs` | journal rows a dead daemon left `running`: roll back or resume |
//! | [`observations`] | each VM's last observation: a failed probe below the threshold never restarts a VM; previews read it instead of probing |
//! | [`resync`] | resync passes: when every object queued by a pass was reconciled (for `/v1/healthz`) |
//! | `handles.rs` | a VM's handles: the store's record (written with the step's journal row) and an in-memory cache |
//!
//! Guarantees:
//! - one reconcile per object at a time (the [`WorkQueue`] never hands out an active
//!   key), so the per-object lock is the queue itself and no lock is held across
//!   runtime calls;
//! - a journal row is written before each side-effecting step and completed after it;
//!   [`Engine::recover_journal`] handles the rows a dead daemon left `running`;
//! - deletion is finalizer-style: the object is marked deleting, cleanup steps run to
//!   completion (retried with backoff on failure), then the rows go;
//! - a Workspace copy runs under its VM's workspace lock (two copies into one VM never
//!   interleave); a VM's own steps never take that lock;
//! - status rows are written only when they change;
//! - after shutdown is requested no new step starts; the step in flight finishes and
//!   is journaled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use banger_specs::{Kind, ObjectKey};
use tokio::sync::Semaphore;

use crate::config::DaemonConfig;
use crate::control::Control;
use crate::events::EventRecorder;
use crate::gc::GarbageCollector;
use crate::planner;
use crate::queue::WorkQueue;
use crate::runtime::{ImageFailure, RuntimeError, VmHandles, VmRuntime};
use crate::status::Reason;
use crate::store::{EventCaps, Store, StoreError};

pub mod facts;
pub mod fault;
mod handles;
mod image;
pub mod observations;
mod recovery;
pub mod resync;
mod vm;
pub mod vm_status;
pub mod worker;
mod workspace;

pub use facts::Facts;

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
}

impl ReconcileError {
    /// The condition reason reported for it.
    pub fn reason(&self) -> Reason {
        match self {
            ReconcileError::Store(
                StoreError::LeaseConflict { .. } | StoreError::LeasesExhausted { .. },
            ) => Reason::IpConflict,
            ReconcileError::Store(
                StoreError::Sqlite { .. }
                | StoreError::Corrupt { .. }
                | StoreError::Task { .. }
                | StoreError::RolledBack { .. },
            ) => Reason::StoreError,
            ReconcileError::Runtime(RuntimeError::Image { cause, .. }) => match cause {
                ImageFailure::Unavailable => Reason::ImageUnavailable,
                ImageFailure::Unsupported => Reason::UnsupportedImage,
                ImageFailure::Unauthorized => Reason::RegistryAuthFailed,
            },
            ReconcileError::Runtime(RuntimeError::Step { .. }) => Reason::StepFailed,
            ReconcileError::Runtime(RuntimeError::Sync { .. }) => Reason::SyncFailed,
            ReconcileError::NoProgress { .. } => Reason::NoProgress,
        }
    }
}

/// The engine: the reconcile logic over the store, the runtime and the queue. Shared by
/// the workers behind an `Arc`; the sources and the API see only its [`Control`].
pub struct Engine<R: VmRuntime> {
    /// Configuration.
    pub config: Arc<DaemonConfig>,
    /// Store, queue and event recorder (what the sources and the API share).
    pub ctl: Control,
    /// The runtime port.
    pub runtime: Arc<R>,
    /// The planner's facts, as the engine and the previews gather them.
    pub facts: Facts<R>,
    /// Resync passes and reconciles, counted (see [`resync`]).
    pub resyncs: Arc<resync::ResyncPasses>,
    /// Bounds heavy work (image pulls, disk copies).
    heavy: Semaphore,
    shutting_down: AtomicBool,
    /// Per-VM workspace locks (by VM uid), never held with anything else.
    pub workspace_locks: Arc<WorkspaceLocks>,
    /// TEST ONLY: the armed crash point ([`fault`]).
    fault: Option<fault::FaultPoint>,
}

/// The per-VM workspace locks: a copy into a VM's guest and an export from it never
/// interleave with another copy or export of the same VM; a VM's own steps never take
/// them, so stop, delete and restart never wait behind guest I/O. Shared by the
/// engine's workers and the API's export handler.
#[derive(Default)]
pub struct WorkspaceLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl WorkspaceLocks {
    /// The lock of the VM `vm_uid` (made on first use; unused ones are dropped).
    pub fn of(&self, vm_uid: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(vm_uid.to_string()).or_default().clone()
    }
}

impl<R: VmRuntime> Engine<R> {
    /// Opens the store under `config.state_dir` and builds the engine. Blocks (opens the
    /// database): call it before serving.
    pub fn new(config: DaemonConfig, runtime: R) -> Result<Self, StoreError> {
        let config = Arc::new(config);
        let store = Store::open(&config.db_path())?;
        let ctl = Control {
            events: EventRecorder::new(
                store.clone(),
                EventCaps {
                    per_object: config.events_per_object,
                    total: config.events_total,
                },
            )?,
            queue: Arc::new(WorkQueue::new(config.backoff_min, config.backoff_max)),
            sources_lock: Arc::new(tokio::sync::Mutex::new(())),
            changes: Control::change_counter(),
            image_refresh: Arc::default(),
            store,
        };
        let runtime = Arc::new(runtime);
        let fault = config
            .crash_at
            .map(|at| fault::FaultPoint::new(at, Arc::new(fault::sigkill_self)));
        Ok(Engine {
            fault,
            facts: Facts::new(ctl.store.clone(), runtime.clone(), config.clone()),
            resyncs: Arc::default(),
            heavy: Semaphore::new(config.max_heavy.max(1)),
            shutting_down: AtomicBool::new(false),
            workspace_locks: Arc::new(WorkspaceLocks::default()),
            runtime,
            ctl,
            config,
        })
    }

    /// TEST ONLY: what the armed crash point does instead of killing the process (for
    /// in-process tests); no effect without [`DaemonConfig::crash_at`].
    pub fn with_crash_hook(mut self, hook: fault::CrashHook) -> Self {
        if let Some(at) = self.config.crash_at {
            self.fault = Some(fault::FaultPoint::new(at, hook));
        }
        self
    }

    /// A VM's handles as the engine last recorded them.
    pub async fn load_handles(&self, uid: &str) -> Result<VmHandles, StoreError> {
        self.facts.handles.load(&self.ctl.store, uid).await
    }

    /// Garbage collection over the same store and runtime.
    pub fn garbage_collector(&self) -> GarbageCollector<R> {
        GarbageCollector::new(self.ctl.store.clone(), self.runtime.clone())
    }

    /// Stops starting new steps (the step in flight finishes).
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.ctl.queue.close();
    }

    /// Whether shutdown was requested.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Queues every object (start and resync) as a new resync pass; objects waiting
    /// out a backoff keep it.
    pub async fn enqueue_all(&self) -> Result<usize, StoreError> {
        let mut all = self.ctl.store.object_keys().await?;
        all.sort_by_key(|(key, deleting)| planner::kind_order(key.kind, *deleting));
        let keys: Vec<ObjectKey> = all.into_iter().map(|(key, _)| key).collect();
        self.resyncs.begin(keys.iter().cloned());
        let n = keys.len();
        self.ctl.queue.add_all_unless_queued(keys);
        Ok(n)
    }

    /// Queues the objects that reference `target` (VMs of an Image, Workspaces of a VM).
    async fn enqueue_referrers(&self, target: Kind, name: &str) {
        let kind = match target {
            Kind::Image => Kind::Vm,
            Kind::Vm => Kind::Workspace,
            Kind::Workspace => return,
        };
        match self.ctl.store.referrers(kind, name).await {
            Ok(names) => names
                .into_iter()
                .for_each(|n| self.ctl.queue.add(ObjectKey { kind, name: n })),
            Err(e) => tracing::warn!(error = %e, "listing referrers"),
        }
    }

    /// The per-VM workspace lock (see [`WorkspaceLocks`]).
    fn workspace_lock(&self, vm_uid: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.workspace_locks.of(vm_uid)
    }
}
