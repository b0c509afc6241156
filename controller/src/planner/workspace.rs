//! Planning one Workspace: copy its files into its VM's guest once per (generation,
//! root disk), and only while the VM runs with its guest ready.
//!
//! The guest copy is the user's work: it is counted against the VM's root disk, not
//! its VMM, so a VMM restart, a stop/start or a daemon restart never copies again
//! (the files are still on the disk); a rebuilt disk (a recreate, a new VM) gets them.
//!
//! A copy onto a guest that already had one (a new generation, or a `banger workspace
//! sync` request) is checked first: when the guest changed what the last copy wrote,
//! the engine refuses it and records a [`Refusal`]; the plan then stays blocked
//! ([`Blocker::GuestChanged`]) for that generation, guest and request, until a forced
//! request ([`SyncRequest::force`]) or another disk.

use super::{Action, Blocker, ChangeClass, Plan, PlannedStep};

/// The guest a Workspace is copied into: a VM, and the root disk its guest runs from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyTarget {
    /// The VM's uid.
    pub vm_uid: String,
    /// The root disk's identity ([`crate::runtime::ObservedDisk::id`]); `None` for a
    /// disk made before disks had ids.
    pub disk_id: Option<String>,
}

/// A `banger workspace sync` request: numbered in order, per Workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncRequest {
    /// Its number (1, 2, …).
    pub serial: u64,
    /// Copy even onto a guest that changed (`--force`).
    pub force: bool,
}

/// A copy the engine refused because the guest changed, and for what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The Workspace generation it was for.
    pub generation: i64,
    /// The guest.
    pub target: CopyTarget,
    /// The latest sync request then (0: none).
    pub request: u64,
    /// What changed, one line.
    pub changes: String,
}

/// What is known of one Workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceFacts {
    /// The object is being deleted.
    pub deleting: bool,
    /// Its name.
    pub name: String,
    /// Its VM's name.
    pub vm: String,
    /// The Workspace's generation.
    pub generation: i64,
    /// Its VM, when it runs (phase Running, a VMM handle) with its guest ready
    /// (`GuestReady=True`); `None` otherwise.
    pub target: Option<CopyTarget>,
    /// What the last successful copy was for: the generation and the guest (VM and
    /// root disk).
    pub copied: Option<(i64, CopyTarget)>,
    /// The latest sync request the last successful copy served (0: none).
    pub served_request: u64,
    /// The latest sync request made, if any.
    pub request: Option<SyncRequest>,
    /// The last refused copy, if the last attempt was refused.
    pub refused: Option<Refusal>,
}

impl WorkspaceFacts {
    /// The sync request not served yet, if any.
    pub fn pending_request(&self) -> Option<SyncRequest> {
        self.request.filter(|r| r.serial > self.served_request)
    }

    /// The copy would go onto the guest the last copy went to (so it is checked for
    /// changes first, unless forced).
    pub fn onto_same_guest(&self) -> bool {
        matches!((&self.copied, &self.target), (Some((_, copied)), Some(target)) if copied == target)
    }

    /// The copy overwrites whatever the guest changed (a forced request).
    pub fn forced(&self) -> bool {
        self.pending_request().is_some_and(|r| r.force)
    }
}

/// Plans one Workspace: nothing when the VM's current root disk has the current
/// generation's files and no sync request waits; else a `sync-workspace` step, blocked
/// while the VM is not running with its guest ready ([`Blocker::WaitingForVm`]) or
/// when this very copy was refused because the guest changed
/// ([`Blocker::GuestChanged`]).
pub fn plan_workspace(f: &WorkspaceFacts) -> Plan {
    if f.deleting {
        return Plan {
            steps: vec![PlannedStep {
                action: Action::UnbindWorkspace,
                class: ChangeClass::Delete,
                reason: "workspace deleted (the host checkout is not touched)".into(),
            }],
            blocked: None,
        };
    }
    let Some(target) = &f.target else {
        return Plan {
            steps: vec![PlannedStep {
                action: Action::SyncWorkspace,
                class: ChangeClass::Create,
                reason: format!("copy into vm {} once it runs with its guest ready", f.vm),
            }],
            blocked: Some(Blocker::WaitingForVm { vm: f.vm.clone() }),
        };
    };
    let same_guest = f.onto_same_guest();
    let pending = f.pending_request();
    let (class, reason) = match (&f.copied, pending) {
        (Some((g, _)), None) if same_guest && *g == f.generation => return Plan::default(),
        (_, Some(r)) => (
            if f.copied.is_some() {
                ChangeClass::Live
            } else {
                ChangeClass::Create
            },
            format!(
                "banger workspace sync{} (request {})",
                if r.force { " --force" } else { "" },
                r.serial
            ),
        ),
        (Some((g, _)), None) if same_guest => (
            ChangeClass::Live,
            format!("spec changed (generation {g} -> {})", f.generation),
        ),
        (Some(_), None) => (
            ChangeClass::Create,
            format!("vm {} has a new root disk: copy again", f.vm),
        ),
        (None, None) => (ChangeClass::Create, format!("copy into vm {}", f.vm)),
    };
    let request = f.request.map_or(0, |r| r.serial);
    let blocked = f
        .refused
        .as_ref()
        .filter(|r| {
            same_guest
                && !f.forced()
                && r.generation == f.generation
                && &r.target == target
                && r.request == request
        })
        .map(|r| Blocker::GuestChanged {
            workspace: f.name.clone(),
            changes: r.changes.clone(),
        });
    Plan {
        steps: vec![PlannedStep {
            action: Action::SyncWorkspace,
            class,
            reason,
        }],
        blocked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(disk: &str) -> CopyTarget {
        CopyTarget {
            vm_uid: "u".into(),
            disk_id: Some(disk.into()),
        }
    }

    fn facts() -> WorkspaceFacts {
        WorkspaceFacts {
            deleting: false,
            name: "code".into(),
            vm: "a".into(),
            generation: 1,
            target: None,
            copied: None,
            served_request: 0,
            request: None,
            refused: None,
        }
    }

    fn copied() -> WorkspaceFacts {
        WorkspaceFacts {
            target: Some(target("d1")),
            copied: Some((1, target("d1"))),
            ..facts()
        }
    }

    fn names(plan: &Plan) -> Vec<(&'static str, ChangeClass)> {
        plan.steps
            .iter()
            .map(|s| (s.action.name(), s.class))
            .collect()
    }

    #[test]
    fn a_workspace_waits_for_a_ready_guest() {
        let plan = plan_workspace(&facts());
        assert_eq!(plan.blocked, Some(Blocker::WaitingForVm { vm: "a".into() }));
        assert_eq!(names(&plan), [("sync-workspace", ChangeClass::Create)]);
        // A copy for an earlier guest does not count while the VM is down.
        let stopped = WorkspaceFacts {
            copied: Some((1, target("d1"))),
            ..facts()
        };
        assert!(plan_workspace(&stopped).blocked.is_some());
    }

    #[test]
    fn copied_once_per_generation_and_root_disk() {
        let first = WorkspaceFacts {
            target: Some(target("d1")),
            ..facts()
        };
        assert_eq!(
            names(&plan_workspace(&first)),
            [("sync-workspace", ChangeClass::Create)]
        );
        let done = copied();
        assert!(plan_workspace(&done).is_converged());
        let new_spec = WorkspaceFacts {
            generation: 2,
            ..done.clone()
        };
        assert_eq!(
            names(&plan_workspace(&new_spec)),
            [("sync-workspace", ChangeClass::Live)]
        );
        let new_disk = WorkspaceFacts {
            target: Some(target("d2")),
            ..done.clone()
        };
        let plan = plan_workspace(&new_disk);
        assert_eq!(names(&plan), [("sync-workspace", ChangeClass::Create)]);
        assert!(plan.steps[0].reason.contains("new root disk"), "{plan:?}");
        assert!(!new_disk.onto_same_guest());
        let recreated_vm = WorkspaceFacts {
            target: Some(CopyTarget {
                vm_uid: "other".into(),
                ..target("d1")
            }),
            ..done
        };
        assert!(!plan_workspace(&recreated_vm).is_converged());
    }

    #[test]
    fn a_sync_request_is_planned_until_served() {
        let asked = WorkspaceFacts {
            request: Some(SyncRequest {
                serial: 3,
                force: false,
            }),
            served_request: 2,
            ..copied()
        };
        let plan = plan_workspace(&asked);
        assert_eq!(names(&plan), [("sync-workspace", ChangeClass::Live)]);
        assert_eq!(plan.steps[0].reason, "banger workspace sync (request 3)");
        assert!(plan.blocked.is_none());
        assert!(!asked.forced());
        let served = WorkspaceFacts {
            served_request: 3,
            ..asked
        };
        assert!(plan_workspace(&served).is_converged());
        assert_eq!(served.pending_request(), None);
    }

    #[test]
    fn a_refused_copy_stays_blocked_until_forced_or_another_disk() {
        let refusal = Refusal {
            generation: 2,
            target: target("d1"),
            request: 0,
            changes: "1 path changed in the guest since the last copy: a (modified)".into(),
        };
        let refused = WorkspaceFacts {
            generation: 2,
            refused: Some(refusal.clone()),
            ..copied()
        };
        let plan = plan_workspace(&refused);
        assert_eq!(names(&plan), [("sync-workspace", ChangeClass::Live)]);
        let blocker = plan.blocked.clone().unwrap();
        assert_eq!(blocker.reason(), crate::status::Reason::GuestChanged);
        assert!(
            blocker.message().ends_with(
                "`banger workspace export code` saves them, `banger workspace sync code --force` overwrites them"
            ),
            "{}",
            blocker.message()
        );
        // A new (unforced) request is tried again: the guest may have been put back.
        let asked_again = WorkspaceFacts {
            request: Some(SyncRequest {
                serial: 1,
                force: false,
            }),
            ..refused.clone()
        };
        assert!(plan_workspace(&asked_again).blocked.is_none());
        // A refusal of that request blocks it in turn…
        let refused_again = WorkspaceFacts {
            refused: Some(Refusal {
                request: 1,
                ..refusal
            }),
            ..asked_again.clone()
        };
        assert!(plan_workspace(&refused_again).blocked.is_some());
        // …and a forced one runs.
        let forced = WorkspaceFacts {
            request: Some(SyncRequest {
                serial: 2,
                force: true,
            }),
            ..refused_again
        };
        assert!(forced.forced());
        let plan = plan_workspace(&forced);
        assert!(plan.blocked.is_none(), "{plan:?}");
        assert_eq!(
            plan.steps[0].reason,
            "banger workspace sync --force (request 2)"
        );
        // Another disk is a fresh guest: nothing to refuse.
        let new_disk = WorkspaceFacts {
            target: Some(target("d2")),
            ..refused
        };
        assert!(plan_workspace(&new_disk).blocked.is_none());
    }

    #[test]
    fn deleting_unbinds() {
        let plan = plan_workspace(&WorkspaceFacts {
            deleting: true,
            ..facts()
        });
        assert_eq!(names(&plan), [("unbind-workspace", ChangeClass::Delete)]);
    }
}
