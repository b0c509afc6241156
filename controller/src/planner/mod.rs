//! The planner: `plan(desired, observed) -> Plan`, pure.
//!
//! No I/O, no clock, no store: plain values in, plain values out. The same functions
//! serve the engine, `banger diff` and `apply --dry-run`. Every planned step carries
//! its change class ([`ChangeClass`]) and the reason it is needed, so a plan can be
//! printed as is.
//!
//! Classification of a VM change:
//! - `create`: something that does not exist yet is made (first boot, missing tap…);
//! - `live`: applied without restarting the guest (NAT on/off, power state, restart
//!   policy);
//! - `restart`: the VMM is shut down and launched again (vcpus, memory, kernel args,
//!   kernel/initrd, hypervisor, static IP, a larger disk);
//! - `recreate`: the root disk is rebuilt from the image (a different image or image
//!   content, a smaller disk). Needs `allow_recreate`, else the plan is
//!   [`Blocker::RecreateBlocked`] and nothing runs;
//! - `delete`: cleanup of a deleted object.
//!
//! A Workspace's copy into its VM's guest is a planned step too (`sync-workspace`,
//! [`plan_workspace`]): it runs once the VM runs with its guest ready, so `diff` shows
//! it blocked (`WaitingForVM`) until then, exactly as the engine will run it; a
//! `banger workspace sync` request is planned the same way, and a copy refused because
//! the guest changed stays blocked (`GuestChanged`) until forced.
//!
//! Across objects: Images before VMs before Workspaces, deletes in reverse
//! ([`kind_order`]). A VM whose Image is not resolved yet is [`Blocker::WaitingForImage`].
//!
//! The inputs (`DesiredVm`, [`ImageFacts`], [`WorkspaceFacts`]) are gathered by one
//! function for the engine, `diff`, `apply --dry-run` and `describe`
//! ([`crate::engine::facts`]).

use banger_specs::Kind;
use serde::{Deserialize, Serialize};

use crate::runtime::VmStep;
use crate::status::Reason;

mod image;
mod vm;
mod workspace;

pub use image::{plan_image, ImageFacts};
pub use vm::{crash_backoff_remaining, launch_diffs, plan_vm, DesiredVm, CRASH_WINDOW_SECS};
pub use workspace::{plan_workspace, CopyTarget, Refusal, SyncRequest, WorkspaceFacts};

/// How disruptive a planned step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeClass {
    /// Makes something that does not exist yet.
    Create,
    /// Applied without restarting the guest.
    Live,
    /// Restarts the VMM.
    Restart,
    /// Rebuilds the root disk.
    Recreate,
    /// Cleans up a deleted object.
    Delete,
}

impl ChangeClass {
    /// `create`, `live`, `restart`, `recreate` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeClass::Create => "create",
            ChangeClass::Live => "live",
            ChangeClass::Restart => "restart",
            ChangeClass::Recreate => "recreate",
            ChangeClass::Delete => "delete",
        }
    }
}

/// What a planned step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// A host step of a VM, run by the runtime.
    Vm(VmStep),
    /// Check or pull an Image.
    ResolveImage,
    /// Remove an Image's cached content.
    RemoveImage,
    /// Ask the registry which digest an Image's tag names now (no pull).
    CheckImageUpdate,
    /// Copy a Workspace's files into its running VM's guest.
    SyncWorkspace,
    /// Forget a Workspace (its files in the guest stay; the host checkout is untouched).
    UnbindWorkspace,
}

impl Action {
    /// The step's name, as shown by `diff` and `describe`.
    pub fn name(self) -> &'static str {
        match self {
            Action::Vm(s) => s.name(),
            Action::ResolveImage => "resolve-image",
            Action::RemoveImage => "remove-image",
            Action::CheckImageUpdate => "check-image-update",
            Action::SyncWorkspace => "sync-workspace",
            Action::UnbindWorkspace => "unbind-workspace",
        }
    }
}

/// One planned step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedStep {
    /// What it does.
    pub action: Action,
    /// How disruptive it is.
    pub class: ChangeClass,
    /// Why it is needed.
    pub reason: String,
}

/// Why a plan must not run now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Blocker {
    /// The VM's Image is not resolved yet.
    WaitingForImage {
        /// The image's name.
        image: String,
    },
    /// The Workspace's VM is not running with its guest ready yet.
    WaitingForVm {
        /// The VM's name.
        vm: String,
    },
    /// The plan rebuilds the root disk and that was not allowed.
    RecreateBlocked {
        /// Which change needs it.
        reason: String,
    },
    /// The VMM keeps exiting: the next restart waits for the crash-loop backoff.
    CrashLoopBackOff,
    /// The root disk is gone (removed, or its record unreadable) while the VMM runs:
    /// nothing is rebuilt under the running guest; the user decides.
    DiskMissing,
    /// The object is still used by others (an Image by VMs): deletion waits.
    InUse {
        /// Who uses it.
        by: Vec<String>,
    },
    /// A Workspace copy was refused: the guest changed what the last copy wrote. Only
    /// `banger workspace sync --force` (or a new root disk) unblocks it.
    GuestChanged {
        /// The Workspace's name.
        workspace: String,
        /// What changed, one line.
        changes: String,
    },
}

impl Blocker {
    /// The condition reason reported for it.
    pub fn reason(&self) -> Reason {
        match self {
            Blocker::WaitingForImage { .. } => Reason::WaitingForImage,
            Blocker::WaitingForVm { .. } => Reason::WaitingForVm,
            Blocker::RecreateBlocked { .. } => Reason::RecreateBlocked,
            Blocker::CrashLoopBackOff => Reason::CrashLoopBackOff,
            Blocker::DiskMissing => Reason::DiskMissing,
            Blocker::InUse { .. } => Reason::InUse,
            Blocker::GuestChanged { .. } => Reason::GuestChanged,
        }
    }

    /// A one-line message.
    pub fn message(&self) -> String {
        match self {
            Blocker::WaitingForImage { image } => format!("waiting for image {image} to be ready"),
            Blocker::WaitingForVm { vm } => {
                format!("waiting for vm {vm} to run with its guest ready")
            }
            Blocker::RecreateBlocked { reason } => format!(
                "{reason}: the root disk must be rebuilt; apply with --allow-recreate or annotate banger.dev/allow-recreate: \"true\""
            ),
            Blocker::CrashLoopBackOff => "the VMM keeps exiting; waiting before the next restart".to_string(),
            Blocker::DiskMissing => "the root disk file is gone (removed, or its record unreadable) while the VMM runs; the guest keeps using the removed file until it stops. banger rebuilds nothing under a running guest: restore the file (for example from /proc/<VMM pid>/fd), or stop the VM (state: Stopped) to have the disk rebuilt from the image, losing its contents".to_string(),
            Blocker::InUse { by } => format!("still used by {}", by.join(", ")),
            Blocker::GuestChanged { workspace, changes } => format!(
                "{changes}; not overwritten: `banger workspace export {workspace}` saves them, `banger workspace sync {workspace} --force` overwrites them"
            ),
        }
    }
}

/// The planner's answer: ordered steps, or why nothing may run now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The steps, in the order they run. When `blocked` is set they are what would run
    /// once unblocked (shown by `diff`), and the executor runs none of them.
    pub steps: Vec<PlannedStep>,
    /// Set when the plan must not run now.
    pub blocked: Option<Blocker>,
}

impl Plan {
    /// Nothing to do and nothing blocked.
    pub fn is_converged(&self) -> bool {
        self.steps.is_empty() && self.blocked.is_none()
    }

    /// The most disruptive class among the steps.
    pub fn worst_class(&self) -> Option<ChangeClass> {
        self.steps.iter().map(|s| s.class).max()
    }
}

/// The order objects are worked on within one apply or rescan: Images, then VMs, then
/// Workspaces; deletions in reverse.
pub fn kind_order(kind: Kind, deleting: bool) -> u8 {
    let base = match kind {
        Kind::Image => 0,
        Kind::Vm => 1,
        Kind::Workspace => 2,
    };
    if deleting {
        10 - base
    } else {
        base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_ordered_and_deletes_reversed() {
        assert!(kind_order(Kind::Image, false) < kind_order(Kind::Vm, false));
        assert!(kind_order(Kind::Vm, false) < kind_order(Kind::Workspace, false));
        assert!(kind_order(Kind::Vm, true) < kind_order(Kind::Image, true));
    }
}
