//! A Workspace's reconcile: run the copy the planner asks for (under the VM's
//! workspace lock, journaled as `sync-workspace`), then say where the files are.
//!
//! A copy onto the guest the last copy went to (same VM, same root disk) is guarded:
//! the runtime first compares what the guest holds at the paths that copy wrote with
//! what it wrote, and a guest that changed any of them is not overwritten
//! (`Synced=False, reason: GuestChanged`, naming the paths; the refusal is recorded so
//! the plan stays blocked until `banger workspace sync --force`). Not guarded: a forced
//! request, a new disk, and the copy after one a daemon stop interrupted (that copy
//! only started once the guest had passed the check; what it left half-written is
//! banger's, not the user's).

use banger_specs::{Kind, Resource};

use super::facts::WorkspaceInputs;
use super::vm::set_success_conditions;
use super::{Engine, ReconcileError};
use crate::clock::now_rfc3339;
use crate::journal::JournalOutcome;
use crate::planner::{self, Action, Blocker, WorkspaceFacts};
use crate::queue::Outcome;
use crate::runtime::{
    describe_changes, CopyManifest, PreviousCopy, SyncOutcome, SyncRecord, VmRuntime,
    WorkspaceContext,
};
use crate::status::{
    self, ConditionStatus, ConditionType, ConditionUpdate, ObjectStatus, Phase, Reason,
};
use crate::store::{InternalState, StoredObject, WorkspaceRefused, WorkspaceSynced};

/// `N files (commit abc123) copied to PATH`.
fn sync_message(r: &SyncRecord, path: &str) -> String {
    let commit = match &r.commit {
        Some(c) => format!("commit {}", &c[..c.len().min(12)]),
        None => "no commit".into(),
    };
    format!("{} files ({commit}) copied to {path}", r.files)
}

/// Which Workspace a status is written for, and when.
struct Written<'a> {
    name: &'a str,
    uid: &'a str,
    generation: i64,
    now: &'a str,
}

/// Sets `Ready` and `Synced` to `False` with the same reason and message.
fn set_not_synced(status: &mut ObjectStatus, reason: Reason, message: &str, w: &Written<'_>) {
    status.phase = Phase::Pending;
    for type_ in [ConditionType::Ready, ConditionType::Synced] {
        let update = ConditionUpdate::new(type_, ConditionStatus::False, reason, message);
        status::set_condition(&mut status.conditions, update, w.generation, w.now);
    }
}

/// Sets `Synced=True` (what the last copy brought to `path`) and `Ready=True`.
fn set_synced(
    status: &mut ObjectStatus,
    internal: &InternalState,
    path: &str,
    vm: &str,
    w: &Written<'_>,
) {
    let message = internal
        .synced
        .as_ref()
        .map(|s| sync_message(&s.record, path))
        .unwrap_or_default();
    let synced = ConditionUpdate::new(
        ConditionType::Synced,
        ConditionStatus::True,
        Reason::Copied,
        message,
    );
    status::set_condition(&mut status.conditions, synced, w.generation, w.now);
    status.phase = Phase::Ready;
    let ready = ConditionUpdate::new(
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::Synced,
        format!("copied into vm {vm}, which is running"),
    );
    status::set_condition(&mut status.conditions, ready, w.generation, w.now);
}

impl<R: VmRuntime> Engine<R> {
    /// Reconciles one Workspace.
    pub(super) async fn reconcile_workspace(
        &self,
        obj: &StoredObject,
    ) -> Result<Outcome, ReconcileError> {
        let Resource::Workspace(ws) = &obj.resource else {
            return Ok(Outcome::Done);
        };
        let name = obj.resource.name().to_string();
        let vm = ws.spec.vm.clone();
        let store = &self.ctl.store;
        let (WorkspaceInputs { facts, vm: vm_ctx }, stored) =
            self.facts.workspace(obj, &vm).await?;
        let (old_status, old_internal) = (stored.status.clone(), stored.internal.clone());
        let (mut status, mut internal) = (stored.status, stored.internal);
        let plan = planner::plan_workspace(&facts);
        if facts.deleting {
            // Unbinding forgets the Workspace; the host checkout and the guest's files
            // are never touched.
            store
                .remove_object(Kind::Workspace, &name, &obj.uid)
                .await?;
            self.ctl
                .events
                .normal(Kind::Workspace, &name, Reason::Deleted, "workspace deleted")
                .await;
            return Ok(Outcome::Done);
        }
        let g = obj.generation;
        let now = now_rfc3339();
        let written = Written {
            name: &name,
            uid: &obj.uid,
            generation: g,
            now: &now,
        };
        status.observed_generation = g;
        let copy_planned = plan.steps.iter().any(|s| s.action == Action::SyncWorkspace);
        let mut manifest = None;
        match (&plan.blocked, copy_planned, vm_ctx, &facts.target) {
            (Some(blocker), ..) => {
                set_not_synced(&mut status, blocker.reason(), &blocker.message(), &written);
            }
            (None, true, Some(vm_ctx), Some(target)) => {
                let ctx = WorkspaceContext {
                    name: name.clone(),
                    uid: obj.uid.clone(),
                    spec: ws.spec.clone(),
                    vm: vm_ctx,
                    previous: self.previous_copy(obj, &facts).await?,
                };
                let outcome = match self.sync_workspace(&ctx).await {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        status.phase = Phase::Pending;
                        let synced = ConditionUpdate::new(
                            ConditionType::Synced,
                            ConditionStatus::False,
                            Reason::SyncFailed,
                            e.to_string(),
                        );
                        status::set_condition(&mut status.conditions, synced, g, &now);
                        store
                            .put_status(Kind::Workspace, &name, status, internal)
                            .await?;
                        return Err(e);
                    }
                };
                let request = facts.request.map_or(0, |r| r.serial);
                if request > 0 {
                    status.last_sync_request = Some(request);
                }
                match outcome {
                    SyncOutcome::Copied {
                        record,
                        manifest: sent,
                    } => {
                        let message = sync_message(&record, &ws.spec.path);
                        self.ctl
                            .events
                            .normal(Kind::Workspace, &name, Reason::Copied, message)
                            .await;
                        status.base_commit = record.commit.clone();
                        status.copied_at = Some(now.clone());
                        internal.refused = None;
                        internal.synced = Some(WorkspaceSynced {
                            generation: g,
                            vm_uid: target.vm_uid.clone(),
                            disk_id: target.disk_id.clone(),
                            record,
                            at: now.clone(),
                            request,
                        });
                        manifest = Some(sent);
                        set_synced(&mut status, &internal, &ws.spec.path, &vm, &written);
                    }
                    SyncOutcome::GuestChanged(changes) => {
                        let changes = describe_changes(&changes);
                        let blocker = Blocker::GuestChanged {
                            workspace: name.clone(),
                            changes: changes.clone(),
                        };
                        let message = blocker.message();
                        self.ctl
                            .events
                            .warning(Kind::Workspace, &name, Reason::GuestChanged, &message)
                            .await;
                        internal.refused = Some(WorkspaceRefused {
                            generation: g,
                            vm_uid: target.vm_uid.clone(),
                            disk_id: target.disk_id.clone(),
                            request,
                            changes,
                        });
                        set_not_synced(&mut status, Reason::GuestChanged, &message, &written);
                    }
                }
            }
            // Nothing to copy: the guest has this generation's files.
            (None, ..) => set_synced(&mut status, &internal, &ws.spec.path, &vm, &written),
        }
        self.finish_workspace(
            &written,
            (old_status, old_internal),
            status,
            internal,
            manifest,
        )
        .await
    }

    /// Writes the status after settling `Reconciling` and `Stalled`: only when it
    /// changed from `old`, or together with a new copy's manifest (one transaction).
    async fn finish_workspace(
        &self,
        w: &Written<'_>,
        old: (ObjectStatus, InternalState),
        mut status: ObjectStatus,
        internal: InternalState,
        manifest: Option<CopyManifest>,
    ) -> Result<Outcome, ReconcileError> {
        let store = &self.ctl.store;
        let reconciling = ConditionUpdate::new(
            ConditionType::Reconciling,
            ConditionStatus::False,
            Reason::Converged,
            "",
        );
        status::set_condition(&mut status.conditions, reconciling, w.generation, w.now);
        set_success_conditions(&mut status, &internal, w.generation, w.now);
        match manifest {
            Some(manifest) => {
                store
                    .put_copy(w.name, w.uid, status, internal, manifest)
                    .await?
            }
            None if status != old.0 || internal != old.1 => {
                store
                    .put_status(Kind::Workspace, w.name, status, internal)
                    .await?
            }
            None => {}
        }
        Ok(Outcome::Done)
    }

    /// What the copy must know of the last copy into the same guest: its manifest
    /// (paths the checkout no longer has are removed), and whether to refuse when the
    /// guest changed it (not for a forced request, nor after an interrupted copy).
    async fn previous_copy(
        &self,
        obj: &StoredObject,
        facts: &WorkspaceFacts,
    ) -> Result<Option<PreviousCopy>, ReconcileError> {
        if !facts.onto_same_guest() {
            return Ok(None);
        }
        let store = &self.ctl.store;
        let Some(manifest) = store.copy_manifest(&obj.uid).await? else {
            return Ok(None);
        };
        let interrupted = store.journal_for(&obj.uid, 1).await?.iter().any(|row| {
            row.step == Action::SyncWorkspace.name() && row.outcome == JournalOutcome::Resumed
        });
        Ok(Some(PreviousCopy {
            manifest,
            guard: !facts.forced() && !interrupted,
        }))
    }

    /// Runs one copy under the VM's workspace lock, journaled as `sync-workspace` (a
    /// refusal is journaled `failed`, with what changed).
    async fn sync_workspace(&self, ctx: &WorkspaceContext) -> Result<SyncOutcome, ReconcileError> {
        let lock = self.workspace_lock(&ctx.vm.uid);
        let _held = lock.lock().await;
        let store = &self.ctl.store;
        let id = store
            .journal_begin(
                &ctx.uid,
                Kind::Workspace,
                &ctx.name,
                Action::SyncWorkspace.name(),
            )
            .await?;
        match self.runtime.sync_workspace(ctx).await {
            Ok(outcome) => {
                let (result, error) = match &outcome {
                    SyncOutcome::Copied { .. } => (JournalOutcome::Done, None),
                    SyncOutcome::GuestChanged(changes) => (
                        JournalOutcome::Failed,
                        Some(format!("refused: {}", describe_changes(changes))),
                    ),
                };
                store.journal_finish(id, result, error).await?;
                Ok(outcome)
            }
            Err(e) => {
                store
                    .journal_finish(id, JournalOutcome::Failed, Some(e.to_string()))
                    .await?;
                Err(e.into())
            }
        }
    }
}
