//! An Image's reconcile: resolve (check or pull) it when planned, remove its cached
//! content once no VM uses it.

use std::time::Duration;

use banger_specs::{Kind, Resource};

use super::vm::set_success_conditions;
use super::{Engine, ReconcileError};
use crate::clock::now_rfc3339;
use crate::journal::JournalOutcome;
use crate::planner::{self, Action};
use crate::queue::Outcome;
use crate::runtime::{ImageContext, VmRuntime};
use crate::status::{self, ConditionStatus, ConditionType, ConditionUpdate, Phase, Reason};
use crate::store::StoredObject;

/// How soon an Image whose deletion waits for its VMs is looked at again.
const IN_USE_POLL: Duration = Duration::from_secs(5);

impl<R: VmRuntime> Engine<R> {
    /// Reconciles one Image.
    pub(super) async fn reconcile_image(
        &self,
        obj: &StoredObject,
    ) -> Result<Outcome, ReconcileError> {
        let Resource::Image(image) = &obj.resource else {
            return Ok(Outcome::Done);
        };
        let name = obj.resource.name().to_string();
        let ctx = ImageContext {
            uid: obj.uid.clone(),
            name: name.clone(),
            spec: image.spec.clone(),
            image_dir: self.config.image_dir(&obj.uid),
        };
        let store = &self.ctl.store;
        let (facts, stored) = self.facts.image(obj).await?;
        let (old_status, old_internal) = (stored.status.clone(), stored.internal.clone());
        let (mut status, mut internal) = (stored.status, stored.internal);
        let plan = planner::plan_image(&facts);
        let now = now_rfc3339();
        let g = obj.generation;
        if facts.deleting {
            status.phase = Phase::Deleting;
            if let Some(b) = &plan.blocked {
                let ready = ConditionUpdate::new(
                    ConditionType::Ready,
                    ConditionStatus::False,
                    b.reason(),
                    b.message(),
                );
                status::set_condition(&mut status.conditions, ready, g, &now);
                if status != old_status {
                    store
                        .put_status(Kind::Image, &name, status, internal)
                        .await?;
                }
                return Ok(Outcome::RequeueAfter(IN_USE_POLL));
            }
            let id = store
                .journal_begin(&obj.uid, Kind::Image, &name, Action::RemoveImage.name())
                .await?;
            if let Err(e) = self.runtime.remove_image(&ctx).await {
                store
                    .journal_finish(id, JournalOutcome::Failed, Some(e.to_string()))
                    .await?;
                return Err(e.into());
            }
            store.journal_finish(id, JournalOutcome::Done, None).await?;
            store.remove_object(Kind::Image, &name, &obj.uid).await?;
            self.ctl
                .events
                .normal(Kind::Image, &name, Reason::Deleted, "image deleted")
                .await;
            return Ok(Outcome::Done);
        }
        if !plan.steps.is_empty() {
            let _permit = self.heavy.acquire().await;
            let id = store
                .journal_begin(&obj.uid, Kind::Image, &name, Action::ResolveImage.name())
                .await?;
            match self.runtime.resolve_image(&ctx).await {
                Ok(resolved) => {
                    store.journal_finish(id, JournalOutcome::Done, None).await?;
                    internal.resolved = Some(resolved);
                    internal.resolved_generation = Some(g);
                    self.ctl
                        .events
                        .normal(Kind::Image, &name, Reason::Resolved, "image files ready")
                        .await;
                }
                Err(e) => {
                    store
                        .journal_finish(id, JournalOutcome::Failed, Some(e.to_string()))
                        .await?;
                    return Err(e.into());
                }
            }
        }
        status.phase = Phase::Ready;
        status.observed_generation = g;
        let ready = ConditionUpdate::new(
            ConditionType::Ready,
            ConditionStatus::True,
            Reason::Resolved,
            "image files ready",
        );
        status::set_condition(&mut status.conditions, ready, g, &now);
        set_success_conditions(&mut status, &internal, g, &now);
        if status != old_status || internal != old_internal {
            store
                .put_status(Kind::Image, &name, status, internal)
                .await?;
        }
        if !plan.steps.is_empty() {
            self.enqueue_referrers(Kind::Image, &name).await;
        }
        Ok(Outcome::Done)
    }
}
