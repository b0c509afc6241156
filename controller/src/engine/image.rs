//! An Image's reconcile: resolve (check, or pull and build) it when planned, check its
//! tag for a new digest when due, move to that digest only when the user applies it,
//! remove its own content once no VM uses it.
//!
//! While a pull runs, its progress (bytes of each layer) is written to `status.pull`
//! about once a second and each finished layer gets a `Pulled` event. `banger image
//! refresh` requests ([`crate::refresh`]) are taken at the start of the reconcile:
//! they make the check due now (and, with `--apply`, apply what it finds) and are
//! answered at the end.

use std::time::{Duration, Instant};

use banger_specs::{Kind, Resource};

use super::vm::set_success_conditions;
use super::{Engine, ReconcileError};
use crate::clock::{now_rfc3339, unix_now};
use crate::host::oci::{is_pinned_by_digest, PullProgress};
use crate::journal::JournalOutcome;
use crate::planner::{self, Action, ImageFacts};
use crate::queue::Outcome;
use crate::refresh::RefreshOutcome;
use crate::runtime::{ImageContext, ImageResolution, PullReporter, VmRuntime};
use crate::status::{
    self, ConditionStatus, ConditionType, ConditionUpdate, ImageStatus, LayerProgress,
    ObjectStatus, Phase, Reason,
};
use crate::store::{ImageRecord, InternalState, StoredObject};

/// How soon an Image whose deletion waits for its VMs is looked at again.
const IN_USE_POLL: Duration = Duration::from_secs(5);
/// How often pull progress is written to the status.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Most steps one reconcile runs (a check, then the update it applies).
const MAX_ROUNDS: usize = 3;

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
        let refresh = self.ctl.image_refresh.take(&name);
        let result = self
            .reconcile_image_inner(
                obj,
                &name,
                image.spec.oci.as_ref().map(|o| o.reference.clone()),
                refresh.as_ref().map(|r| r.apply),
            )
            .await;
        if let Some(pending) = refresh {
            let outcome = match &result {
                Ok((_, outcome)) => outcome.clone(),
                Err(e) => RefreshOutcome {
                    error: Some(e.to_string()),
                    ..RefreshOutcome::default()
                },
            };
            pending.answer(&outcome);
        }
        result.map(|(o, _)| o)
    }

    async fn reconcile_image_inner(
        &self,
        obj: &StoredObject,
        name: &str,
        reference: Option<String>,
        refresh: Option<bool>,
    ) -> Result<(Outcome, RefreshOutcome), ReconcileError> {
        let Resource::Image(image) = &obj.resource else {
            return Ok((Outcome::Done, RefreshOutcome::default()));
        };
        let mut ctx = ImageContext {
            uid: obj.uid.clone(),
            name: name.to_string(),
            spec: image.spec.clone(),
            image_dir: self.config.image_dir(&obj.uid),
            pin: None,
            progress: PullReporter::default(),
        };
        let store = &self.ctl.store;
        let (mut facts, stored) = self.facts.image(obj).await?;
        let (old_status, old_internal) = (stored.status.clone(), stored.internal.clone());
        let (mut status, mut internal) = (stored.status, stored.internal);
        let g = obj.generation;
        if facts.deleting {
            let plan = planner::plan_image(&facts);
            let now = now_rfc3339();
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
                        .put_status(Kind::Image, name, status, internal)
                        .await?;
                }
                return Ok((
                    Outcome::RequeueAfter(IN_USE_POLL),
                    RefreshOutcome::default(),
                ));
            }
            let id = store
                .journal_begin(&obj.uid, Kind::Image, name, Action::RemoveImage.name())
                .await?;
            if let Err(e) = self.runtime.remove_image(&ctx).await {
                store
                    .journal_finish(id, JournalOutcome::Failed, Some(e.to_string()))
                    .await?;
                return Err(e.into());
            }
            store.journal_finish(id, JournalOutcome::Done, None).await?;
            store.remove_object(Kind::Image, name, &obj.uid).await?;
            self.ctl
                .events
                .normal(Kind::Image, name, Reason::Deleted, "image deleted")
                .await;
            return Ok((Outcome::Done, RefreshOutcome::default()));
        }
        if let Some(apply) = refresh {
            facts.check_due = facts.follows_tag && facts.resolved_generation.is_some();
            facts.apply_updates |= apply;
        }
        let mut resolved_now = false;
        for _ in 0..MAX_ROUNDS {
            let plan = planner::plan_image(&facts);
            let Some(step) = plan.steps.first() else {
                break;
            };
            match step.action {
                Action::ResolveImage => {
                    let applying = facts.newer.clone().filter(|_| facts.apply_updates);
                    ctx.pin = applying
                        .clone()
                        .or_else(|| pin_of(&internal, reference.as_deref()));
                    let _permit = self.heavy.acquire().await;
                    let id = store
                        .journal_begin(&obj.uid, Kind::Image, name, Action::ResolveImage.name())
                        .await?;
                    let resolved = self
                        .resolve_with_progress(&mut ctx, name, &status, &internal)
                        .await;
                    match resolved {
                        Ok(resolution) => {
                            store.journal_finish(id, JournalOutcome::Done, None).await?;
                            let message = match (&applying, resolution.reused) {
                                (Some(d), _) => format!("update applied: now {d}"),
                                (None, true) => format!(
                                    "image files ready ({}, from the store)",
                                    resolution.digest
                                ),
                                (None, false) => {
                                    format!("image files ready ({})", resolution.digest)
                                }
                            };
                            let reason = if applying.is_some() {
                                Reason::UpdateApplied
                            } else {
                                Reason::Resolved
                            };
                            self.ctl
                                .events
                                .normal(Kind::Image, name, reason, message)
                                .await;
                            let previous =
                                internal.image.take().filter(|r| r.reference == reference);
                            internal.resolved = Some(resolution.boot.clone());
                            internal.resolved_generation = Some(g);
                            internal.image = Some(ImageRecord {
                                resolution,
                                reference: reference.clone(),
                                checked_at: previous.as_ref().and_then(|p| p.checked_at),
                                latest: previous.as_ref().and_then(|p| p.latest.clone()),
                                check_error: None,
                            });
                            resolved_now = true;
                        }
                        Err(e) => {
                            // The progress of the failed pull goes (it was written as
                            // the pull ran); the failure itself is recorded next.
                            status.pull.clear();
                            if let Err(w) = store
                                .put_status(Kind::Image, name, status.clone(), old_internal.clone())
                                .await
                            {
                                tracing::warn!(image = %name, error = %w, "clearing pull progress");
                            }
                            store
                                .journal_finish(id, JournalOutcome::Failed, Some(e.to_string()))
                                .await?;
                            return Err(e.into());
                        }
                    }
                }
                Action::CheckImageUpdate => {
                    let checked = self.runtime.latest_image_digest(&ctx).await;
                    if let Some(record) = internal.image.as_mut() {
                        record.checked_at = Some(unix_now());
                        match checked {
                            Ok(latest) => {
                                if record.latest.as_deref() != Some(&latest)
                                    && latest != record.resolution.digest
                                {
                                    self.ctl
                                        .events
                                        .normal(
                                            Kind::Image,
                                            name,
                                            Reason::NewDigest,
                                            format!(
                                                "{} names {latest}; this Image uses {}",
                                                reference.as_deref().unwrap_or("the tag"),
                                                record.resolution.digest
                                            ),
                                        )
                                        .await;
                                }
                                record.latest = Some(latest);
                                record.check_error = None;
                            }
                            Err(e) => {
                                self.ctl
                                    .events
                                    .warning(Kind::Image, name, Reason::CheckFailed, e.to_string())
                                    .await;
                                record.check_error = Some(e.to_string());
                            }
                        }
                    }
                }
                Action::RemoveImage
                | Action::Vm(_)
                | Action::SyncWorkspace
                | Action::UnbindWorkspace => break,
            }
            refresh_facts(&mut facts, &internal, g);
        }
        let now = now_rfc3339();
        status.phase = Phase::Ready;
        status.observed_generation = g;
        status.pull.clear();
        let ready = ConditionUpdate::new(
            ConditionType::Ready,
            ConditionStatus::True,
            Reason::Resolved,
            "image files ready",
        );
        status::set_condition(&mut status.conditions, ready, g, &now);
        set_success_conditions(&mut status, &internal, g, &now);
        status.image = internal.image.as_ref().map(image_status);
        match update_condition(name, reference.as_deref(), internal.image.as_ref()) {
            Some(update) => {
                status::set_condition(&mut status.conditions, update, g, &now);
            }
            None => {
                status::remove_condition(&mut status.conditions, ConditionType::UpdateAvailable);
            }
        }
        if status != old_status || internal != old_internal {
            store
                .put_status(Kind::Image, name, status, internal.clone())
                .await?;
        }
        if resolved_now {
            self.enqueue_referrers(Kind::Image, name).await;
        }
        let record = internal.image.as_ref();
        let outcome = RefreshOutcome {
            digest: record.map(|r| r.resolution.digest.clone()),
            latest: record.and_then(|r| r.latest.clone()),
            applied: resolved_now && refresh == Some(true),
            pinned: reference.as_deref().is_some_and(is_pinned_by_digest),
            error: record.and_then(|r| r.check_error.clone()),
        };
        Ok((Outcome::Done, outcome))
    }

    /// Runs the resolution, writing the pull's progress to the status about once a
    /// second and an event per finished layer.
    async fn resolve_with_progress(
        &self,
        ctx: &mut ImageContext,
        name: &str,
        status: &ObjectStatus,
        internal: &InternalState,
    ) -> Result<ImageResolution, crate::runtime::RuntimeError> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PullProgress>();
        ctx.progress = PullReporter::new(move |p| {
            let _ = tx.send(p);
        });
        let resolve = self.runtime.resolve_image(ctx);
        tokio::pin!(resolve);
        let mut shown = status.clone();
        let mut last_write = Instant::now();
        loop {
            tokio::select! {
                result = &mut resolve => return result,
                Some(p) = rx.recv() => {
                    if shown.pull.len() < p.layers {
                        shown.pull.resize(p.layers, LayerProgress::default());
                    }
                    let Some(slot) = shown.pull.get_mut(p.layer.saturating_sub(1)) else { continue };
                    let finished = p.done && !slot.done;
                    *slot = LayerProgress { digest: p.digest.clone(), bytes: p.bytes, total: p.total, done: p.done };
                    if finished {
                        self.ctl.events.normal(Kind::Image, name, Reason::Pulled, format!(
                            "layer {}/{} {}: {} bytes", p.layer, p.layers, p.digest, p.total
                        )).await;
                    }
                    if finished || last_write.elapsed() >= PROGRESS_EVERY {
                        last_write = Instant::now();
                        if let Err(e) = self.ctl.store.put_status(Kind::Image, name, shown.clone(), internal.clone()).await {
                            tracing::debug!(error = %e, "writing pull progress");
                        }
                        // Long-polls of the Image (`apply --wait`'s progress) see it now.
                        self.ctl.changed();
                    }
                }
            }
        }
    }
}

/// The digest an Image keeps while its spec names the reference it was resolved for.
fn pin_of(internal: &InternalState, reference: Option<&str>) -> Option<String> {
    let record = internal.image.as_ref()?;
    (reference.is_some() && record.reference.as_deref() == reference)
        .then(|| record.resolution.digest.clone())
}

/// Updates the facts after a step, without asking the store or the runtime again.
fn refresh_facts(facts: &mut ImageFacts, internal: &InternalState, generation: i64) {
    facts.resolved_generation = internal.resolved_generation;
    facts.files_present = true;
    facts.check_due = false;
    facts.newer = internal
        .image
        .as_ref()
        .and_then(|r| r.latest.clone().filter(|l| *l != r.resolution.digest));
    if facts.resolved_generation != Some(generation) {
        facts.resolved_generation = None;
    }
}

/// The status view of an Image's record.
fn image_status(r: &ImageRecord) -> ImageStatus {
    ImageStatus {
        digest: r.resolution.digest.clone(),
        rootfs: r.resolution.boot.rootfs.clone(),
        rootfs_bytes: r.resolution.rootfs_bytes,
        kernel: r.resolution.boot.kernel.clone(),
        default_kernel: r.resolution.default_kernel,
        guest: r.resolution.guest.as_ref().map(|g| g.summary()),
        checked_at: r.checked_at.and_then(crate::clock::rfc3339_of_unix),
        latest_digest: r.latest.clone(),
    }
}

/// `UpdateAvailable` of an OCI Image (`None` for local images).
fn update_condition(
    name: &str,
    reference: Option<&str>,
    record: Option<&ImageRecord>,
) -> Option<ConditionUpdate> {
    let reference = reference?;
    if is_pinned_by_digest(reference) {
        return Some(ConditionUpdate::new(
            ConditionType::UpdateAvailable,
            ConditionStatus::False,
            Reason::PinnedByDigest,
            format!("{reference} names a digest, which never changes"),
        ));
    }
    let record = record?;
    if let Some(e) = &record.check_error {
        return Some(ConditionUpdate::new(
            ConditionType::UpdateAvailable,
            ConditionStatus::Unknown,
            Reason::CheckFailed,
            format!("the last check failed: {e}"),
        ));
    }
    let Some(latest) = &record.latest else {
        return Some(ConditionUpdate::new(
            ConditionType::UpdateAvailable,
            ConditionStatus::Unknown,
            Reason::UpToDate,
            format!(
                "{reference} not checked since it was resolved to {}",
                record.resolution.digest
            ),
        ));
    };
    Some(if *latest == record.resolution.digest {
        ConditionUpdate::new(
            ConditionType::UpdateAvailable,
            ConditionStatus::False,
            Reason::UpToDate,
            format!("{reference} names {latest}, the digest this Image uses"),
        )
    } else {
        ConditionUpdate::new(
            ConditionType::UpdateAvailable,
            ConditionStatus::True,
            Reason::NewDigest,
            format!(
                "{reference} names {latest}; this Image uses {}. Apply it with `banger image refresh {name} --apply` (or annotate banger.dev/auto-update: \"true\"); its VMs then follow the recreate rule",
                record.resolution.digest
            ),
        )
    })
}
