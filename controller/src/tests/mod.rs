//! Engine tests on the simulated runtime with a real SQLite file in a temp dir.
//!
//! Waits are bounded polls with a deadline; nothing asserts on timing.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use banger_specs::{Kind, ObjectKey};
use tokio::task::JoinHandle;

use crate::api::types::{ApplyAction, ApplyRequest, DeleteRequest, ObjectRef, SourceFile};
use crate::config::DaemonConfig;
use crate::engine::Engine;
pub(crate) use crate::journal::JournalOutcome;
use crate::runtime::simulated::SimulatedRuntime;
use crate::runtime::VmRuntime;
use crate::sources::{apply, SourceError};
pub(crate) use crate::status::ConditionStatus::{False as FALSE, True as TRUE};
pub(crate) use crate::status::ConditionType::{
    GuestReady as GUEST_READY, Ready as READY, Reconciling as RECONCILING, SpecValid as SPEC_VALID,
    Stalled as STALLED, Synced as SYNCED,
};
pub(crate) use crate::status::{self, ConditionStatus, ConditionType, ObjectStatus, Phase, Reason};
use crate::store::StoredObject;

mod api;
mod api_limits;
mod concurrency;
mod directory;
mod faults;
mod gc;
mod lifecycle;
mod long_poll;
mod resync;
mod scale;
mod updates;
mod workspace;

pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

pub(crate) fn test_config(dir: &Path) -> DaemonConfig {
    let mut c = DaemonConfig::new(None, dir.join("state"), dir.join("banger.sock"));
    c.backoff_min = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c.stall_after = 3;
    c.debounce = Duration::from_millis(100);
    c.resync = Duration::from_secs(3600);
    c.max_concurrent = 8;
    c
}

/// An engine with its workers and exit listener, as the daemon wires them.
pub(crate) struct Harness {
    pub engine: Arc<Engine<SimulatedRuntime>>,
    pub sim: SimulatedRuntime,
    tasks: Vec<JoinHandle<()>>,
}

impl Harness {
    pub fn start(config: DaemonConfig, sim: SimulatedRuntime) -> Harness {
        std::fs::create_dir_all(&config.state_dir).unwrap();
        let engine = Arc::new(Engine::new(config, sim.clone()).unwrap());
        Self::with_engine(engine, sim)
    }

    pub fn with_engine(engine: Arc<Engine<SimulatedRuntime>>, sim: SimulatedRuntime) -> Harness {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        sim.set_exit_notifier(tx);
        let mut tasks = Vec::new();
        let e = engine.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(n) = rx.recv().await {
                if let Some(vm) = e.ctl.store.object_by_uid(&n.uid).await.unwrap() {
                    e.ctl.queue.add(vm.resource.key());
                }
            }
        }));
        for _ in 0..engine.config.max_concurrent {
            let e = engine.clone();
            tasks.push(tokio::spawn(async move { e.run_worker().await }));
        }
        Harness { engine, sim, tasks }
    }

    /// Kills every task at once, like a daemon crash: nothing is finished or journaled.
    pub fn crash(self) {
        for t in &self.tasks {
            t.abort();
        }
    }

    pub async fn apply(
        &self,
        files: &[(&str, &str)],
        flags: impl FnOnce(&mut ApplyRequest),
    ) -> Result<crate::api::types::ApplyResponse, SourceError> {
        let mut req = ApplyRequest {
            files: files
                .iter()
                .map(|(path, content)| SourceFile {
                    path: path.to_string(),
                    base_dir: "/specs".into(),
                    content: content.to_string(),
                })
                .collect(),
            dry_run: false,
            prune: false,
            force: false,
            allow_recreate: false,
            path_set: vec![],
        };
        flags(&mut req);
        apply::apply(&self.engine.ctl, &self.engine.facts, &req, None).await
    }

    /// Applies `/s/a.yaml`: [`IMAGE`] and the VM `a` of 512Mi using it.
    pub async fn apply_image_and_vm_a(&self) {
        self.apply(
            &[(
                "/s/a.yaml",
                &format!("{IMAGE}---\n{}", vm_yaml("a", "base", "512Mi", "")),
            )],
            |_| {},
        )
        .await
        .unwrap();
    }

    pub async fn delete(&self, kind: Kind, name: &str) {
        let req = DeleteRequest {
            objects: vec![ObjectRef {
                kind,
                name: name.into(),
            }],
            files: vec![],
        };
        apply::delete(&self.engine.ctl, &req).await.unwrap();
    }

    /// The store, read synchronously: the polls below run in plain closures.
    pub fn db(&self) -> &crate::store::Database {
        self.engine.ctl.store.database()
    }

    pub fn status(&self, kind: Kind, name: &str) -> ObjectStatus {
        self.db().get_status(kind, name).unwrap().0
    }

    /// The stored object; panics when it does not exist.
    pub fn object(&self, kind: Kind, name: &str) -> StoredObject {
        self.db().get_object(kind, name).unwrap().unwrap()
    }

    /// The first 100 events of `kind/name`, oldest first.
    pub fn events(&self, kind: Kind, name: &str) -> Vec<crate::store::Event> {
        let filter = crate::store::EventFilter {
            kind: Some(kind),
            name: Some(name.into()),
        };
        self.db().list_events(&filter, 0, 100).unwrap()
    }

    /// How many VMs the store has in phase Running.
    pub fn running_vms(&self) -> usize {
        self.db()
            .list_with_status(Some(Kind::Vm))
            .unwrap()
            .iter()
            .filter(|(_, s)| s.phase == Phase::Running)
            .count()
    }

    pub fn uid(&self, kind: Kind, name: &str) -> String {
        self.object(kind, name).uid
    }

    pub fn exists(&self, kind: Kind, name: &str) -> bool {
        self.db().get_object(kind, name).unwrap().is_some()
    }

    /// Polls `check` until it holds or the deadline passes (then panics with `what`).
    pub async fn until(&self, what: &str, mut check: impl FnMut(&Harness) -> bool) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !check(self) {
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting for: {what}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for a condition; `reason` is the reason's name, as users see it.
    pub async fn until_condition(
        &self,
        kind: Kind,
        name: &str,
        type_: ConditionType,
        status_: ConditionStatus,
        reason: &str,
    ) {
        let what = format!("{kind}/{name} {type_}={status_} ({reason})");
        self.until(&what, |h| {
            let s = h.status(kind, name);
            status::condition(&s.conditions, type_)
                .is_some_and(|c| c.status == status_ && c.reason.to_string() == reason)
        })
        .await;
    }

    /// Waits until the journal holds a `running` row of `step`.
    pub async fn until_journaled_running(&self, step: &str) {
        self.until(&format!("{step} journaled as running"), |h| {
            h.db()
                .journal_unfinished()
                .unwrap()
                .iter()
                .any(|r| r.step == step)
        })
        .await;
    }

    pub async fn until_phase(&self, kind: Kind, name: &str, phase: Phase) {
        self.until(&format!("{kind}/{name} phase {phase}"), |h| {
            h.status(kind, name).phase == phase
        })
        .await;
    }

    pub async fn until_gone(&self, kind: Kind, name: &str) {
        self.until(&format!("{kind}/{name} gone"), |h| !h.exists(kind, name))
            .await;
    }
}

pub(crate) fn key(kind: Kind, name: &str) -> ObjectKey {
    ObjectKey {
        kind,
        name: name.into(),
    }
}

pub(crate) const IMAGE: &str = "apiVersion: banger.dev/v1alpha1
kind: Image
metadata:
  name: base
spec:
  kernel: /images/vmlinuz
  rootfs: /images/rootfs.ext4
";

pub(crate) fn vm_yaml(name: &str, image: &str, memory: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: banger.dev/v1alpha1
kind: VM
metadata:
  name: {name}
spec:
  image: {image}
  memory: {memory}
{extra_spec}"
    )
}

/// Runs a future with a bound, failing the test instead of hanging.
pub(crate) async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

pub(crate) fn action_of(resp: &crate::api::types::ApplyResponse, name: &str) -> ApplyAction {
    resp.items.iter().find(|i| i.name == name).unwrap().action
}
