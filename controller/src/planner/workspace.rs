//! Planning one Workspace: copy its files into its VM's guest once per (generation,
//! root disk), and only while the VM runs with its guest ready.
//!
//! The guest copy is the user's work: it is counted against the VM's root disk, not
//! its VMM, so a VMM restart, a stop/start or a daemon restart never copies again
//! (the files are still on the disk); a rebuilt disk (a recreate, a new VM) gets them.

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

/// What is known of one Workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceFacts {
    /// The object is being deleted.
    pub deleting: bool,
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
}

/// Plans one Workspace: nothing when the VM's current root disk has the current
/// generation's files; else a `sync-workspace` step, blocked ([`Blocker::WaitingForVm`]) while the VM
/// is not running with its guest ready.
pub fn plan_workspace(f: &WorkspaceFacts) -> Plan {
    if f.deleting {
        return Plan {
            steps: vec![PlannedStep {
                action: Action::UnbindWorkspace,
                class: ChangeClass::Delete,
                reason: "workspace deleted".into(),
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
    let (class, reason) = match &f.copied {
        Some((g, t)) if *g == f.generation && t == target => return Plan::default(),
        Some((g, t)) if t == target => (
            ChangeClass::Live,
            format!("spec changed (generation {g} -> {})", f.generation),
        ),
        Some(_) => (
            ChangeClass::Create,
            format!("vm {} has a new root disk: copy again", f.vm),
        ),
        None => (ChangeClass::Create, format!("copy into vm {}", f.vm)),
    };
    Plan {
        steps: vec![PlannedStep {
            action: Action::SyncWorkspace,
            class,
            reason,
        }],
        blocked: None,
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
            vm: "a".into(),
            generation: 1,
            target: None,
            copied: None,
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
        let done = WorkspaceFacts {
            copied: Some((1, target("d1"))),
            ..first.clone()
        };
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
    fn deleting_unbinds() {
        let plan = plan_workspace(&WorkspaceFacts {
            deleting: true,
            ..facts()
        });
        assert_eq!(names(&plan), [("unbind-workspace", ChangeClass::Delete)]);
    }
}
