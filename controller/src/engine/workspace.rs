//! A Workspace's reconcile: run the copy the planner asks for (under the VM's
//! workspace lock, journaled as `sync-workspace`), then say where the files are.

use banger_specs::{Kind, Resource};

use super::facts::WorkspaceInputs;
use super::vm::set_success_conditions;
use super::{Engine, ReconcileError};
use crate::clock::now_rfc3339;
use crate::journal::JournalOutcome;
use crate::planner::{self, Action};
use crate::queue::Outcome;
use crate::runtime::{SyncRecord, VmRuntime, WorkspaceContext};
use crate::status::{self, ConditionStatus, ConditionType, ConditionUpdate, Phase, Reason};
use crate::store::{StoredObject, WorkspaceSynced};

/// `N files (commit abc123) copied to PATH`.
fn sync_message(r: &SyncRecord, path: &str) -> String {
    let commit = match &r.commit {
        Some(c) => format!("commit {}", &c[..c.len().min(12)]),
        None => "no commit".into(),
    };
    format!("{} files ({commit}) copied to {path}", r.files)
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
        status.observed_generation = g;
        if let Some(blocker) = &plan.blocked {
            let message = blocker.message();
            status.phase = Phase::Pending;
            for type_ in [ConditionType::Ready, ConditionType::Synced] {
                let update = ConditionUpdate::new(
                    type_,
                    ConditionStatus::False,
                    blocker.reason(),
                    message.clone(),
                );
                status::set_condition(&mut status.conditions, update, g, &now);
            }
        } else {
            let copy_planned = plan.steps.iter().any(|s| s.action == Action::SyncWorkspace);
            if let (true, Some(vm_ctx), Some(target)) = (copy_planned, vm_ctx, facts.target) {
                let ctx = WorkspaceContext {
                    name: name.clone(),
                    uid: obj.uid.clone(),
                    spec: ws.spec.clone(),
                    vm: vm_ctx,
                };
                let record = match self.sync_workspace(&ctx).await {
                    Ok(r) => r,
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
                let message = sync_message(&record, &ws.spec.path);
                self.ctl
                    .events
                    .normal(Kind::Workspace, &name, Reason::Copied, message)
                    .await;
                internal.synced = Some(WorkspaceSynced {
                    generation: g,
                    vm_uid: target.vm_uid,
                    disk_id: target.disk_id,
                    record,
                    at: now.clone(),
                });
            }
            let message = internal
                .synced
                .as_ref()
                .map(|s| sync_message(&s.record, &ws.spec.path))
                .unwrap_or_default();
            let synced = ConditionUpdate::new(
                ConditionType::Synced,
                ConditionStatus::True,
                Reason::Copied,
                message,
            );
            status::set_condition(&mut status.conditions, synced, g, &now);
            status.phase = Phase::Ready;
            let ready = ConditionUpdate::new(
                ConditionType::Ready,
                ConditionStatus::True,
                Reason::Synced,
                format!("copied into vm {vm}, which is running"),
            );
            status::set_condition(&mut status.conditions, ready, g, &now);
        }
        let reconciling = ConditionUpdate::new(
            ConditionType::Reconciling,
            ConditionStatus::False,
            Reason::Converged,
            "",
        );
        status::set_condition(&mut status.conditions, reconciling, g, &now);
        set_success_conditions(&mut status, &internal, g, &now);
        if status != old_status || internal != old_internal {
            store
                .put_status(Kind::Workspace, &name, status, internal)
                .await?;
        }
        Ok(Outcome::Done)
    }

    /// Runs one copy under the VM's workspace lock, journaled as `sync-workspace`.
    async fn sync_workspace(&self, ctx: &WorkspaceContext) -> Result<SyncRecord, ReconcileError> {
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
            Ok(r) => {
                store.journal_finish(id, JournalOutcome::Done, None).await?;
                Ok(r)
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
