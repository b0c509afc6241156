//! A VM's reconcile: rounds of observe → plan → journaled steps, then the status.

use std::time::Duration;

use banger_specs::{Kind, ObjectKey, Resource, VmSpec};

use super::facts::{LeaseMode, VmFacts};
use super::vm_status::{self, VmStatusInputs};
use super::{Engine, ReconcileError};
use crate::clock::{now_rfc3339, unix_now};
use crate::config::CrashWhen;
use crate::journal::JournalOutcome;
use crate::planner::{crash_backoff_remaining, Action, Plan, CRASH_WINDOW_SECS};
use crate::queue::Outcome;
use crate::runtime::{ProcessState, VmContext, VmRuntime, VmStep};
use crate::status::{self, ConditionType, EventType, ObjectStatus, Phase, Reason};
use crate::store::{FinishedStep, InternalState, NewEvent, StoreError, StoredObject};

/// What a VM's reconcile ends with (see [`Engine::end_vm_reconcile`]).
struct ReconcileEnd {
    /// The status and bookkeeping to write, when they changed.
    status: Option<(ObjectStatus, InternalState)>,
    /// The phase's event, when it changed.
    event: Option<NewEvent>,
    /// Queue the VM's Workspaces.
    referrers: bool,
}

/// Plan/execute rounds within one reconcile before requeueing.
const MAX_ROUNDS: usize = 4;

/// The event reason of a step worth an event of its own (`None`: no event).
fn step_event(step: VmStep) -> Option<Reason> {
    match step {
        VmStep::Launch => Some(Reason::Launched),
        VmStep::Shutdown => Some(Reason::ShutDown),
        VmStep::PrepareDisk => Some(Reason::DiskPrepared),
        VmStep::RemoveDisk => Some(Reason::DiskRemoved),
        VmStep::GrowDisk => Some(Reason::DiskGrown),
        VmStep::EnsureVmDir
        | VmStep::EnsureTap
        | VmStep::EnsureNat
        | VmStep::RemoveNat
        | VmStep::RemoveTap
        | VmStep::RemoveVmDir => None,
    }
}

impl<R: VmRuntime> Engine<R> {
    /// Runs one step with its journal row; persists the handles it returns and, when it
    /// succeeded, records `event` with them.
    pub async fn run_step(
        &self,
        ctx: &mut VmContext,
        step: VmStep,
        event: Option<NewEvent>,
    ) -> Result<(), ReconcileError> {
        let mut finished = None;
        self.run_step_carried(ctx, step, event, &mut finished)
            .await?;
        self.write_finished(&mut finished).await?;
        Ok(())
    }

    /// Runs one step of a round: its journal row is written first — in the same trip
    /// as the completion of the round's step before it (`finished`), if any — then the
    /// step; when it succeeded, its handles are put in memory and its completion is
    /// left in `finished` for the round's next trip ([`FinishedStep`]). A failed step's
    /// row is completed at once. A heavy step waits for its permit after its journal
    /// row (and the completion before it) is written.
    async fn run_step_carried(
        &self,
        ctx: &mut VmContext,
        step: VmStep,
        event: Option<NewEvent>,
        finished: &mut Option<FinishedStep>,
    ) -> Result<(), ReconcileError> {
        let store = &self.ctl.store;
        let number = self.fault.as_ref().map(|f| f.start_step());
        let id = match finished.take() {
            Some(before) => {
                let (event_id, id) = store
                    .finish_and_begin(before, Kind::Vm, &ctx.name, step.name())
                    .await?;
                if let Some(event_id) = event_id {
                    self.ctl.events.announce(event_id);
                }
                id
            }
            None => {
                store
                    .journal_begin(&ctx.uid, Kind::Vm, &ctx.name, step.name())
                    .await?
            }
        };
        // Copying or growing a root disk is heavy: bounded like image pulls. The permit
        // is taken after the journal trip, so that it bounds the work, not its
        // bookkeeping (held across a store trip, two permits capped a fleet's
        // throughput at two trips at a time), and a long wait leaves nothing unwritten.
        let heavy = match step {
            VmStep::PrepareDisk | VmStep::GrowDisk => true,
            VmStep::EnsureVmDir
            | VmStep::EnsureTap
            | VmStep::EnsureNat
            | VmStep::Launch
            | VmStep::Shutdown
            | VmStep::RemoveNat
            | VmStep::RemoveTap
            | VmStep::RemoveDisk
            | VmStep::RemoveVmDir => false,
        };
        let _permit = match heavy {
            true => self.heavy.acquire().await.ok(),
            false => None,
        };
        if let (Some(fault), Some(n)) = (&self.fault, number) {
            fault.maybe_crash(n, CrashWhen::Before).await;
        }
        let result = self.runtime.execute(step, ctx).await;
        if let (Some(fault), Some(n)) = (&self.fault, number) {
            fault.maybe_crash(n, CrashWhen::After).await;
        }
        match result {
            Ok(new_handles) => {
                // Memory first: a store that fails later must not make this daemon
                // forget what the step made.
                self.facts.handles.put(&ctx.uid, &new_handles);
                ctx.handles = new_handles;
                *finished = Some(FinishedStep {
                    journal_id: id,
                    uid: ctx.uid.clone(),
                    handles: ctx.handles.clone(),
                    event: event.map(|e| (e, self.ctl.events.caps())),
                });
                Ok(())
            }
            Err(e) => {
                store
                    .journal_finish(id, JournalOutcome::Failed, Some(e.to_string()))
                    .await?;
                Err(e.into())
            }
        }
    }

    /// Writes a step's completion left for the next trip (one trip; none when there is
    /// none) and announces its event.
    async fn write_finished(&self, finished: &mut Option<FinishedStep>) -> Result<(), StoreError> {
        if let Some(done) = finished.take() {
            if let Some(event_id) = self.ctl.store.finish_step(done).await? {
                self.ctl.events.announce(event_id);
            }
        }
        Ok(())
    }

    /// Reconciles one VM.
    pub(super) async fn reconcile_vm(
        &self,
        obj: &StoredObject,
        spec: &VmSpec,
    ) -> Result<Outcome, ReconcileError> {
        let name = obj.resource.name().to_string();
        let deleting = obj.deleting.is_some();
        let store = &self.ctl.store;
        let mode = if deleting {
            LeaseMode::Existing
        } else {
            LeaseMode::Allocate
        };
        let mut facts = self.facts.vm(obj, spec, mode, false).await?;
        let old_status = facts.status.clone();
        let old_internal = facts.internal.clone();
        let mut plan;
        let mut rounds = 0;
        loop {
            plan = facts.plan();
            if plan.steps.is_empty() || plan.blocked.is_some() || rounds >= MAX_ROUNDS {
                break;
            }
            rounds += 1;
            if let Some(outcome) = self.run_round(&name, &mut facts, &plan).await? {
                return Ok(outcome);
            }
            self.facts.observe_again(&mut facts).await;
        }
        if rounds >= MAX_ROUNDS && !plan.steps.is_empty() && plan.blocked.is_none() {
            store
                .put_status(Kind::Vm, &name, old_status, facts.internal)
                .await?;
            let steps: Vec<&str> = plan.steps.iter().map(|p| p.action.name()).collect();
            return Err(ReconcileError::NoProgress {
                vm: name,
                steps: steps.join(", "),
                rounds,
            });
        }
        if deleting && plan.steps.is_empty() {
            return self.finish_vm_delete(obj).await;
        }
        let vmm_runs = matches!(
            facts.observed.process,
            ProcessState::Running { .. } | ProcessState::Unresponsive { .. }
        );
        if facts.lease_pending && !vmm_runs && !deleting {
            // No VMM runs with the old address: the reservation becomes the lease.
            store.commit_lease(&obj.uid).await?;
            facts.lease_pending = false;
        }
        let mut status = old_status.clone();
        let mut outcome = self.write_vm_status(obj, &facts, &plan, &mut status);
        if let (failed @ 1.., Some(error)) = &facts.probe {
            // Tolerated for now: look again soon, and say so.
            let threshold = self.config.probe_failure_threshold;
            self.ctl
                .events
                .warning(
                    Kind::Vm,
                    &name,
                    Reason::ProbeFailed,
                    format!("probe {failed}/{threshold} failed: {error}"),
                )
                .await;
            let retry = self.config.probe_retry;
            outcome = match outcome {
                Outcome::RequeueAfter(after) => Outcome::RequeueAfter(after.min(retry)),
                Outcome::Done | Outcome::Failed => Outcome::RequeueAfter(retry),
            };
        }
        // Workspaces follow the guest: a new phase, guest readiness or VMM.
        let guest_changed = old_status.is_true(ConditionType::GuestReady)
            != status.is_true(ConditionType::GuestReady)
            || old_status.pid != status.pid;
        let phase_changed = status.phase != old_status.phase;
        let phase_event = (phase_changed
            && (old_status.phase != Phase::Pending || status.phase != Phase::Creating))
            .then(|| NewEvent {
                kind: Kind::Vm,
                name: name.clone(),
                type_: EventType::Normal,
                reason: Reason::PhaseChanged,
                message: format!("{} -> {}", old_status.phase, status.phase),
            });
        let end = ReconcileEnd {
            status: (status != old_status || facts.internal != old_internal)
                .then_some((status, facts.internal)),
            event: phase_event,
            referrers: guest_changed || phase_changed,
        };
        self.end_vm_reconcile(&name, end).await?;
        Ok(outcome)
    }

    /// Writes what a VM's reconcile ends with — its status, its phase's event, and the
    /// list of Workspaces to queue — in one store trip (none when nothing changed).
    /// Like [`crate::events::EventRecorder`], a failure to record the event or to list
    /// the Workspaces is logged, never fatal.
    async fn end_vm_reconcile(&self, name: &str, end: ReconcileEnd) -> Result<(), StoreError> {
        if end.status.is_none() && end.event.is_none() && !end.referrers {
            return Ok(());
        }
        let caps = self.ctl.events.caps();
        let owned = name.to_string();
        let (event_id, referrers) = self
            .ctl
            .store
            .run("write status", move |db| {
                if let Some((status, internal)) = &end.status {
                    db.put_status(Kind::Vm, &owned, status, internal)?;
                }
                let event_id = end.event.as_ref().and_then(|e| {
                    db.add_event(e, caps)
                        .map_err(|err| tracing::warn!(error = %err, vm = %owned, "recording event"))
                        .ok()
                });
                let referrers = if end.referrers {
                    db.referrers(Kind::Workspace, &owned)
                        .map_err(|err| tracing::warn!(error = %err, "listing referrers"))
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                Ok((event_id, referrers))
            })
            .await?;
        if let Some(id) = event_id {
            self.ctl.events.announce(id);
        }
        for workspace in referrers {
            self.ctl.queue.add(ObjectKey {
                kind: Kind::Workspace,
                name: workspace,
            });
        }
        Ok(())
    }

    /// Runs the steps of one round. Returns an outcome when the reconcile must stop
    /// here (shutdown requested). Each step's completion is written with the next
    /// step's journal row, the last one's before the round returns.
    async fn run_round(
        &self,
        name: &str,
        facts: &mut VmFacts,
        plan: &Plan,
    ) -> Result<Option<Outcome>, ReconcileError> {
        let mut finished = None;
        let stop = self.run_round_steps(name, facts, plan, &mut finished).await;
        // Whatever `stop` is: a step that failed took the one before it along in its
        // own journal row's trip, so what is left here succeeded and was not written.
        self.write_finished(&mut finished).await?;
        stop
    }

    /// [`Self::run_round`]'s steps; the last completion is left in `finished`.
    async fn run_round_steps(
        &self,
        name: &str,
        facts: &mut VmFacts,
        plan: &Plan,
        finished: &mut Option<FinishedStep>,
    ) -> Result<Option<Outcome>, ReconcileError> {
        let after_exit = matches!(facts.observed.process, ProcessState::Exited { .. });
        for planned in &plan.steps {
            let step = match planned.action {
                Action::Vm(step) => step,
                Action::ResolveImage
                | Action::RemoveImage
                | Action::CheckImageUpdate
                | Action::SyncWorkspace
                | Action::UnbindWorkspace => continue,
            };
            if self.is_shutting_down() {
                return Ok(Some(Outcome::RequeueAfter(Duration::ZERO)));
            }
            tracing::debug!(vm = %name, step = step.name(), class = planned.class.as_str(), reason = %planned.reason, "running step");
            let restart = step == VmStep::Launch && after_exit;
            // The step's event is written with its journal row's completion.
            let event = if restart {
                Some((
                    EventType::Warning,
                    Reason::Restarted,
                    planned.reason.clone(),
                ))
            } else {
                step_event(step).map(|reason| {
                    let message = format!(
                        "{} ({}): {}",
                        step.name(),
                        planned.class.as_str(),
                        planned.reason
                    );
                    (EventType::Normal, reason, message)
                })
            }
            .map(|(type_, reason, message)| NewEvent {
                kind: Kind::Vm,
                name: name.to_string(),
                type_,
                reason,
                message,
            });
            self.run_step_carried(&mut facts.ctx, step, event, finished)
                .await?;
            if step == VmStep::Launch && facts.lease_pending {
                // The VMM runs with the new address: the old one is free now.
                self.write_finished(finished).await?;
                self.ctl.store.commit_lease(&facts.ctx.uid).await?;
                facts.lease_pending = false;
            }
            if restart {
                let now = unix_now();
                facts.internal.restarts.push(now);
                facts
                    .internal
                    .restarts
                    .retain(|t| *t >= now - CRASH_WINDOW_SECS);
            }
        }
        Ok(None)
    }

    /// The delete plan ran to its end: the lease and the rows go.
    async fn finish_vm_delete(&self, obj: &StoredObject) -> Result<Outcome, ReconcileError> {
        let name = obj.resource.name();
        let store = &self.ctl.store;
        store.release_lease(&obj.uid).await?;
        store.remove_object(Kind::Vm, name, &obj.uid).await?;
        self.facts.handles.forget(&obj.uid);
        self.facts.observations.forget(&obj.uid);
        self.ctl
            .events
            .normal(
                Kind::Vm,
                name,
                Reason::Deleted,
                "all host objects removed, lease released",
            )
            .await;
        if let Resource::Vm(vm) = &obj.resource {
            self.ctl.queue.add(ObjectKey {
                kind: Kind::Image,
                name: vm.spec.image.clone(),
            });
        }
        self.enqueue_referrers(Kind::Vm, name).await;
        Ok(Outcome::Done)
    }

    /// Stamps the derived phase and conditions onto `status`; returns when to look
    /// again.
    fn write_vm_status(
        &self,
        obj: &StoredObject,
        facts: &VmFacts,
        plan: &Plan,
        status: &mut ObjectStatus,
    ) -> Outcome {
        let derived = vm_status::derive(VmStatusInputs {
            ctx: &facts.ctx,
            deleting: obj.deleting.is_some(),
            observed: &facts.observed,
            plan,
            crash_wait: crash_backoff_remaining(&facts.internal.restarts, unix_now()),
        });
        let g = obj.generation;
        let now = now_rfc3339();
        status.phase = derived.phase;
        status.observed_generation = g;
        status.ip = derived.ip;
        status.pid = derived.pid;
        status.hypervisor = derived.hypervisor;
        status.handles = derived.handles;
        for update in derived.conditions {
            status::set_condition(&mut status.conditions, update, g, &now);
        }
        set_success_conditions(status, &facts.internal, g, &now);
        match derived.requeue {
            Some(after) => Outcome::RequeueAfter(after),
            None => Outcome::Done,
        }
    }
}

/// The conditions every successful reconcile sets: `Stalled=False`, and `SpecValid`
/// from the directory source's verdict on the object's file.
pub(super) fn set_success_conditions(
    status: &mut ObjectStatus,
    internal: &InternalState,
    generation: i64,
    now: &str,
) {
    use crate::status::{ConditionStatus, ConditionUpdate};
    status::set_condition(
        &mut status.conditions,
        ConditionUpdate::new(
            ConditionType::Stalled,
            ConditionStatus::False,
            Reason::Reconciled,
            "",
        ),
        generation,
        now,
    );
    match &internal.invalid_spec {
        Some(problem) => {
            status::set_condition(
                &mut status.conditions,
                ConditionUpdate::new(
                    ConditionType::SpecValid,
                    ConditionStatus::False,
                    Reason::InvalidSpec,
                    problem.clone(),
                ),
                generation,
                now,
            );
        }
        None => {
            status::remove_condition(&mut status.conditions, ConditionType::SpecValid);
        }
    }
}
