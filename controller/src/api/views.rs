//! The engine's typed values as the API's wire views ([`super::types`]): the only place
//! that turns phases, conditions, reasons, event types and journal outcomes into text.

use std::collections::BTreeMap;

use banger_specs::API_VERSION;

use super::types::{
    Condition as ConditionView, EventView, ImageStatusView, LayerProgressView, ObjectMetaView,
    ObjectView, PlannedStepView, StatusView, StepRecordView,
};
use crate::journal::JournalEntry;
use crate::objects::{self, ANNOTATION_OWNER};
use crate::planner::Plan;
use crate::status::{Condition, HandlesJson, ObjectStatus};
use crate::store::{Event, StoredObject};

/// A condition on the wire.
pub fn condition_view(c: &Condition) -> ConditionView {
    ConditionView {
        type_: c.type_.to_string(),
        status: c.status.to_string(),
        reason: c.reason.to_string(),
        message: c.message.clone(),
        last_transition_time: c.last_transition_time.clone(),
        observed_generation: c.observed_generation,
    }
}

/// A status on the wire.
pub fn status_view(s: &ObjectStatus) -> StatusView {
    StatusView {
        phase: s.phase.to_string(),
        observed_generation: s.observed_generation,
        conditions: s.conditions.iter().map(condition_view).collect(),
        ip: s.ip.map(|ip| ip.to_string()),
        pid: s.pid,
        hypervisor: s.hypervisor.clone(),
        handles: s.handles.as_ref().map(HandlesJson::to_value),
        image: s.image.as_ref().map(|i| ImageStatusView {
            digest: i.digest.clone(),
            rootfs: i.rootfs.clone(),
            rootfs_bytes: i.rootfs_bytes,
            kernel: i.kernel.clone(),
            default_kernel: i.default_kernel,
            guest: i.guest.clone(),
            checked_at: i.checked_at.clone(),
            latest_digest: i.latest_digest.clone(),
        }),
        pull: s
            .pull
            .iter()
            .map(|l| LayerProgressView {
                digest: l.digest.clone(),
                bytes: l.bytes,
                total: l.total,
                done: l.done,
            })
            .collect(),
        base_commit: s.base_commit.clone(),
        copied_at: s.copied_at.clone(),
        last_sync_request: s.last_sync_request,
    }
}

/// An object with its status, as `get -o json` prints it.
pub fn object_view(o: &StoredObject, status: &ObjectStatus) -> ObjectView {
    let meta = o.resource.metadata();
    let mut annotations: BTreeMap<String, String> = meta.annotations.clone();
    annotations.insert(ANNOTATION_OWNER.into(), o.owner.label().into());
    ObjectView {
        api_version: API_VERSION.into(),
        kind: o.resource.kind(),
        metadata: ObjectMetaView {
            name: meta.name.clone(),
            uid: o.uid.clone(),
            generation: o.generation,
            creation_timestamp: o.created.clone(),
            deletion_timestamp: o.deleting.clone(),
            labels: meta.labels.clone(),
            annotations,
        },
        spec: objects::spec_json(&o.resource),
        status: status_view(status),
    }
}

/// An event on the wire.
pub fn event_view(e: &Event) -> EventView {
    EventView {
        id: e.id,
        time: e.time.clone(),
        kind: e.kind,
        name: e.name.clone(),
        type_: e.type_.to_string(),
        reason: e.reason.to_string(),
        message: e.message.clone(),
    }
}

/// A journaled step on the wire.
pub fn step_view(j: &JournalEntry) -> StepRecordView {
    StepRecordView {
        step: j.step.clone(),
        started: j.started.clone(),
        duration_ms: j.duration_ms,
        outcome: j.outcome.to_string(),
        error: j.error.clone(),
    }
}

/// A plan as the API shows it; a blocked plan ends with a `blocked` pseudo-step whose
/// reason is `Reason: message`.
pub fn plan_view(plan: &Plan) -> Vec<PlannedStepView> {
    plan.steps
        .iter()
        .map(|s| PlannedStepView {
            step: s.action.name().into(),
            change_class: s.class.as_str().into(),
            reason: s.reason.clone(),
        })
        .chain(plan.blocked.iter().map(|b| PlannedStepView {
            step: "blocked".into(),
            change_class: "none".into(),
            reason: format!("{}: {}", b.reason(), b.message()),
        }))
        .collect()
}
