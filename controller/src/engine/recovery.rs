//! Journal recovery at daemon start: the rows a previous daemon left `running`.
//!
//! An interrupted step whose retry cannot simply resume it is rolled back
//! ([`VmStep::rollback`]: `prepare-disk` by `remove-disk`, `launch` by `shutdown`);
//! every other row is marked `resumed` and its object queued, so the next reconcile
//! plans again from what is there. Rows of objects that are gone are `abandoned`.

use std::str::FromStr;

use banger_specs::{ObjectKey, Resource};

use super::facts::LeaseMode;
use super::{Engine, ReconcileError};
use crate::journal::{JournalOutcome, JournalRow};
use crate::runtime::{VmRuntime, VmStep};
use crate::status::Reason;

impl<R: VmRuntime> Engine<R> {
    /// Handles the journal rows a previous daemon left `running` (see the module docs).
    /// Returns the rows handled.
    pub async fn recover_journal(&self) -> Result<usize, ReconcileError> {
        let store = &self.ctl.store;
        let rows = store.journal_unfinished().await?;
        for row in &rows {
            let obj = store
                .get_object(row.kind, &row.name)
                .await?
                .filter(|o| o.uid == row.uid);
            let Some(obj) = obj else {
                store
                    .journal_finish(
                        row.id,
                        JournalOutcome::Abandoned,
                        Some("object gone".into()),
                    )
                    .await?;
                continue;
            };
            let rollback = VmStep::from_str(&row.step).ok().and_then(VmStep::rollback);
            match (&obj.resource, rollback) {
                (Resource::Vm(vm), Some(undo)) => {
                    tracing::info!(vm = %row.name, step = %row.step, undo = undo.name(), "rolling back an interrupted step");
                    let undone = match self
                        .facts
                        .vm_context(&obj, &vm.spec, LeaseMode::Existing)
                        .await
                    {
                        Ok(mut ctx) => self.run_step(&mut ctx, undo, None).await,
                        Err(e) => Err(e.into()),
                    };
                    self.finish_rollback(row, undone).await?;
                }
                (Resource::Vm(_) | Resource::Image(_) | Resource::Workspace(_), _) => {
                    store
                        .journal_finish(
                            row.id,
                            JournalOutcome::Resumed,
                            Some("interrupted by a daemon stop".into()),
                        )
                        .await?;
                }
            }
            self.ctl.queue.add(ObjectKey {
                kind: row.kind,
                name: row.name.clone(),
            });
        }
        Ok(rows.len())
    }

    /// Completes a rolled-back row. A failed rollback never keeps the daemon from
    /// starting: the row says so, and the object's next reconcile plans from what is
    /// there.
    async fn finish_rollback(
        &self,
        row: &JournalRow,
        undone: Result<(), ReconcileError>,
    ) -> Result<(), ReconcileError> {
        let (outcome, note, reason) = match &undone {
            Ok(()) => (
                JournalOutcome::RolledBack,
                "interrupted by a daemon stop".to_string(),
                Reason::StepRolledBack,
            ),
            Err(e) => (
                JournalOutcome::Failed,
                format!("interrupted by a daemon stop; rollback failed: {e}"),
                Reason::RollbackFailed,
            ),
        };
        self.ctl
            .store
            .journal_finish(row.id, outcome, Some(note.clone()))
            .await?;
        self.ctl
            .events
            .warning(
                row.kind,
                &row.name,
                reason,
                format!("interrupted step {}: {note}", row.step),
            )
            .await;
        Ok(())
    }
}
