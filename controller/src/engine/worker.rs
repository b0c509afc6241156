//! The worker loop: take a key from the queue, reconcile that object, report the
//! outcome. A failed reconcile is recorded on the object (`Ready=False` with the
//! error's reason, `Reconciling=True`, and `Stalled=True` after
//! [`crate::config::DaemonConfig::stall_after`] failures in a row) and retried by the
//! queue's backoff.

use banger_specs::{ObjectKey, Resource};

use super::{Engine, ReconcileError};
use crate::clock::now_rfc3339;
use crate::queue::Outcome;
use crate::runtime::VmRuntime;
use crate::status::{self, ConditionStatus, ConditionType, ConditionUpdate, Reason};

impl<R: VmRuntime> Engine<R> {
    /// Runs one worker: takes keys from the queue until it is closed.
    pub async fn run_worker(&self) {
        while let Some(key) = self.ctl.queue.next().await {
            let ticket = self.resyncs.ticket();
            let outcome = match self.reconcile(&key).await {
                Ok(o) => o,
                Err(e) => {
                    self.record_failure(&key, &e).await;
                    Outcome::Failed
                }
            };
            self.resyncs.finished(&key, ticket);
            self.ctl.changed();
            self.ctl.queue.done(&key, outcome);
        }
    }

    /// Reconciles one object, level-triggered.
    pub async fn reconcile(&self, key: &ObjectKey) -> Result<Outcome, ReconcileError> {
        let Some(obj) = self.ctl.store.get_object(key.kind, &key.name).await? else {
            return Ok(Outcome::Done);
        };
        match &obj.resource {
            Resource::Image(_) => self.reconcile_image(&obj).await,
            Resource::Vm(vm) => {
                let spec = vm.spec.clone();
                self.reconcile_vm(&obj, &spec).await
            }
            Resource::Workspace(_) => self.reconcile_workspace(&obj).await,
        }
    }

    async fn record_failure(&self, key: &ObjectKey, err: &ReconcileError) {
        let failures = self.ctl.queue.failures(key) + 1;
        tracing::warn!(object = %key, failures, error = %err, "reconcile failed");
        let msg = err.to_string();
        self.ctl
            .events
            .warning(key.kind, &key.name, Reason::ReconcileFailed, msg.clone())
            .await;
        let store = &self.ctl.store;
        let Ok(Some(obj)) = store.get_object(key.kind, &key.name).await else {
            return;
        };
        let Ok((mut status, internal)) = store.get_status(key.kind, &key.name).await else {
            return;
        };
        let now = now_rfc3339();
        let g = obj.generation;
        let stalled = failures >= self.config.stall_after;
        let updates = [
            ConditionUpdate::new(
                ConditionType::Ready,
                ConditionStatus::False,
                err.reason(),
                msg.clone(),
            ),
            ConditionUpdate::new(
                ConditionType::Reconciling,
                ConditionStatus::True,
                Reason::Retrying,
                format!("{failures} failure(s) in a row; retrying with backoff"),
            ),
            if stalled {
                ConditionUpdate::new(
                    ConditionType::Stalled,
                    ConditionStatus::True,
                    Reason::RepeatedFailures,
                    format!("{failures} failures in a row; last: {msg}"),
                )
            } else {
                ConditionUpdate::new(
                    ConditionType::Stalled,
                    ConditionStatus::False,
                    Reason::Retrying,
                    "",
                )
            },
        ];
        for update in updates {
            status::set_condition(&mut status.conditions, update, g, &now);
        }
        if let Err(e) = store
            .put_status(key.kind, &key.name, status, internal)
            .await
        {
            tracing::warn!(error = %e, "writing status");
        }
    }
}
