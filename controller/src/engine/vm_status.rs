//! A VM's phase and conditions, derived from what was planned and observed. Pure: plain
//! values in ([`VmStatusInputs`]), plain values out ([`DerivedVmStatus`]); the engine
//! stamps the result with the generation and the time.
//!
//! | phase | when |
//! |-------|------|
//! | `Deleting` | the object is being deleted |
//! | `Running` | a VMM runs (also while it does not answer: it is still ours) |
//! | `Stopped` | the VMM exited cleanly, or stopped as desired (`state: Stopped`), and nothing is planned (or a crash-loop waits); or no VMM and a disk kept while `state: Stopped` |
//! | `Failed` | the VMM exited uncleanly, is wanted running, and nothing will restart it now |
//! | `Pending` | waiting for the Image |
//! | `Creating` | otherwise: steps remain |
//!
//! `Ready` is `True` with reason `Running` (the guest passed its readiness check) or
//! `Stopped` (stopped as desired); else `False` with the blocker's reason
//! (`WaitingForImage`, `RecreateBlocked`, `CrashLoopBackOff`), `Progressing`,
//! `Booting` or `Exited`.

use std::net::Ipv4Addr;
use std::time::Duration;

use banger_specs::PowerState;
use serde::Serialize;

use crate::planner::{Blocker, Plan};
use crate::runtime::{Lease, ObservedVm, ProcessState, VmContext, VmHandles};
use crate::status::{ConditionStatus, ConditionType, ConditionUpdate, HandlesJson, Phase, Reason};

/// How soon a running VM whose guest is not ready yet is looked at again.
pub const GUEST_POLL: Duration = Duration::from_millis(500);
/// How soon a VM with steps left (after a reconcile's rounds) is looked at again.
pub const STEPS_LEFT_POLL: Duration = Duration::from_millis(200);

/// What the derivation looks at.
#[derive(Debug, Clone, Copy)]
pub struct VmStatusInputs<'a> {
    /// The VM's context: spec, lease, handles, directory.
    pub ctx: &'a VmContext,
    /// The object is being deleted.
    pub deleting: bool,
    /// What the runtime measured last.
    pub observed: &'a ObservedVm,
    /// The plan after the last round of steps.
    pub plan: &'a Plan,
    /// Time left in a crash-loop backoff, if one is active.
    pub crash_wait: Option<Duration>,
}

/// A VM's derived status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedVmStatus {
    /// The phase.
    pub phase: Phase,
    /// The leased address.
    pub ip: Option<Ipv4Addr>,
    /// The running VMM's pid.
    pub pid: Option<i32>,
    /// The hypervisor of the recorded VMM.
    pub hypervisor: Option<String>,
    /// Every host object, for `describe`.
    pub handles: Option<HandlesJson>,
    /// `GuestReady`, `Ready` and `Reconciling`, in that order.
    pub conditions: [ConditionUpdate; 3],
    /// When to look again without a trigger (`None`: only on the next trigger).
    pub requeue: Option<Duration>,
}

/// Derives a VM's phase and conditions (see the module docs).
pub fn derive(inputs: VmStatusInputs<'_>) -> DerivedVmStatus {
    let VmStatusInputs {
        ctx,
        deleting,
        observed,
        plan,
        crash_wait,
    } = inputs;
    let running = matches!(observed.process, ProcessState::Running { .. });
    let want_running = ctx.spec.state == PowerState::Running;
    let crash_looping = matches!(plan.blocked, Some(Blocker::CrashLoopBackOff));
    let phase = if deleting {
        Phase::Deleting
    } else {
        match &observed.process {
            ProcessState::Running { .. } | ProcessState::Unresponsive { .. } => Phase::Running,
            ProcessState::Exited { clean } if plan.steps.is_empty() || crash_looping => {
                if *clean || !want_running {
                    Phase::Stopped
                } else {
                    Phase::Failed
                }
            }
            ProcessState::Absent if !want_running && observed.disk.is_some() => Phase::Stopped,
            ProcessState::Absent | ProcessState::Exited { .. } => {
                if matches!(plan.blocked, Some(Blocker::WaitingForImage { .. })) {
                    Phase::Pending
                } else {
                    Phase::Creating
                }
            }
        }
    };

    let guest = if running && observed.guest_ready {
        (
            ConditionStatus::True,
            Reason::GuestUp,
            "the guest passed its readiness check",
        )
    } else if running {
        (
            ConditionStatus::False,
            Reason::Booting,
            "waiting for the guest's readiness check",
        )
    } else {
        (ConditionStatus::False, Reason::NotRunning, "no running VMM")
    };

    let mut requeue = None;
    let converged = plan.is_converged();
    let (ready, reason, message): (ConditionStatus, Reason, String) = if let Some(b) = &plan.blocked
    {
        if let Blocker::CrashLoopBackOff = b {
            requeue = Some(crash_wait.unwrap_or(Duration::from_secs(1)));
        }
        (ConditionStatus::False, b.reason(), b.message())
    } else if !converged {
        requeue = Some(STEPS_LEFT_POLL);
        (
            ConditionStatus::False,
            Reason::Progressing,
            "steps remain".into(),
        )
    } else {
        match (&observed.process, want_running) {
            (ProcessState::Running { .. }, true) if observed.guest_ready => (
                ConditionStatus::True,
                Reason::Running,
                "the VM runs and its guest is ready".into(),
            ),
            (ProcessState::Running { .. }, true) => {
                requeue = Some(GUEST_POLL);
                (
                    ConditionStatus::False,
                    Reason::Booting,
                    "waiting for the guest's readiness check".into(),
                )
            }
            (ProcessState::Exited { clean }, true) => (
                ConditionStatus::False,
                Reason::Exited,
                format!(
                    "the VMM exited ({}) and restartPolicy {:?} keeps it down",
                    if *clean { "clean" } else { "unclean" },
                    ctx.spec.restart_policy
                ),
            ),
            (_, false) => (
                ConditionStatus::True,
                Reason::Stopped,
                "the VM is stopped as desired; its disk is kept".into(),
            ),
            (ProcessState::Absent | ProcessState::Unresponsive { .. }, true) => (
                ConditionStatus::False,
                Reason::Progressing,
                "steps remain".into(),
            ),
        }
    };
    let reconciling = !converged && !matches!(plan.blocked, Some(Blocker::RecreateBlocked { .. }));
    let (rs, rr) = if reconciling || requeue.is_some() {
        (ConditionStatus::True, Reason::Progressing)
    } else {
        (ConditionStatus::False, Reason::Converged)
    };

    DerivedVmStatus {
        phase,
        // The address the guest has: the running VMM's, else the one it will get.
        ip: match &observed.process {
            ProcessState::Running { launched } => launched.ip,
            ProcessState::Absent
            | ProcessState::Exited { .. }
            | ProcessState::Unresponsive { .. } => None,
        }
        .or(ctx.lease.as_ref().map(|l| l.ip)),
        pid: if running {
            ctx.handles.process.as_ref().map(|p| p.pid)
        } else {
            None
        },
        hypervisor: ctx
            .handles
            .process
            .as_ref()
            .map(|p| p.hypervisor_name().to_string()),
        handles: handles_view(ctx),
        conditions: [
            ConditionUpdate::new(ConditionType::GuestReady, guest.0, guest.1, guest.2),
            ConditionUpdate::new(ConditionType::Ready, ready, reason, message),
            ConditionUpdate::new(ConditionType::Reconciling, rs, rr, String::new()),
        ],
        requeue,
    }
}

/// The handles as `describe` shows them: the runtime's, plus the lease, the VM
/// directory and the console log when the VM holds a lease. `None` if they cannot be
/// written as JSON (a path that is not UTF-8).
fn handles_view(ctx: &VmContext) -> Option<HandlesJson> {
    /// The view's members ([`HandlesJson::of`] writes them sorted).
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct View<'a> {
        #[serde(flatten)]
        handles: &'a VmHandles,
        #[serde(skip_serializing_if = "Option::is_none")]
        lease: Option<&'a Lease>,
        #[serde(skip_serializing_if = "Option::is_none")]
        vm_dir: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        console_log: Option<String>,
    }
    let leased = ctx.lease.is_some();
    let view = View {
        handles: &ctx.handles,
        lease: ctx.lease.as_ref(),
        vm_dir: leased.then(|| ctx.vm_dir.display().to_string()),
        console_log: leased.then(|| ctx.console_log().display().to_string()),
    };
    HandlesJson::of(&view).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::{HypervisorKind, VmmProcess};
    use crate::planner::{Action, ChangeClass, PlannedStep};
    use crate::runtime::{LaunchConfig, Lease, ObservedDisk, ResolvedImage, VmHandles, VmStep};
    use std::path::PathBuf;

    fn ctx(state: PowerState) -> VmContext {
        let mut spec = crate::testutil::vm_spec("base");
        spec.state = state;
        VmContext {
            uid: "u1".into(),
            name: "a".into(),
            spec,
            image: None,
            vm_dir: PathBuf::from("/state/vms/u1"),
            lease: Some(Lease {
                ip: Ipv4Addr::new(172, 30, 0, 2),
                mac: "02:00:00:00:00:01".into(),
                gateway: Ipv4Addr::new(172, 30, 0, 1),
                prefix: 24,
            }),
            bridge: "banger0".into(),
            deleting: false,
            handles: VmHandles {
                process: Some(VmmProcess {
                    hypervisor: HypervisorKind::Qemu.as_str().to_string(),
                    pid: 42,
                    start_time: 7,
                    control_socket: PathBuf::from("/state/vms/u1/qmp.sock"),
                }),
                ..VmHandles::default()
            },
        }
    }

    fn launched() -> LaunchConfig {
        let image = ResolvedImage {
            kernel: PathBuf::from("/k"),
            initrd: None,
            rootfs: PathBuf::from("/r"),
            kernel_args: None,
            readiness: Default::default(),
            rootfs_digest: "d".into(),
        };
        LaunchConfig::desired(&crate::testutil::vm_spec("base"), &image, None)
    }

    fn observed(process: ProcessState, guest_ready: bool, disk: bool) -> ObservedVm {
        ObservedVm {
            process,
            guest_ready,
            disk: disk.then(|| ObservedDisk {
                image: "base".into(),
                digest: "d".into(),
                size: 1,
                id: None,
            }),
            ..ObservedVm::nothing()
        }
    }

    fn steps(step: VmStep) -> Plan {
        Plan {
            steps: vec![PlannedStep {
                action: Action::Vm(step),
                class: ChangeClass::Restart,
                reason: "r".into(),
            }],
            blocked: None,
        }
    }

    fn blocked(b: Blocker, step: VmStep) -> Plan {
        Plan {
            blocked: Some(b),
            ..steps(step)
        }
    }

    struct Case {
        state: PowerState,
        deleting: bool,
        observed: ObservedVm,
        plan: Plan,
        phase: Phase,
        ready: (ConditionStatus, Reason),
        reconciling: ConditionStatus,
        requeue: Option<Duration>,
    }

    fn check(case: Case) {
        let c = ctx(case.state);
        let d = derive(VmStatusInputs {
            ctx: &c,
            deleting: case.deleting,
            observed: &case.observed,
            plan: &case.plan,
            crash_wait: Some(Duration::from_secs(9)),
        });
        let what = format!("{:?} {:?}", case.observed.process, case.plan);
        assert_eq!(d.phase, case.phase, "{what}");
        assert_eq!(d.conditions[1].type_, ConditionType::Ready);
        assert_eq!(
            (d.conditions[1].status, d.conditions[1].reason),
            case.ready,
            "{what}"
        );
        assert_eq!(d.conditions[2].status, case.reconciling, "{what}");
        assert_eq!(d.requeue, case.requeue, "{what}");
    }

    #[test]
    fn every_phase_and_ready_reason() {
        use ConditionStatus::{False, True};
        let running = ProcessState::Running {
            launched: launched(),
        };
        let cases = [
            // Running with a ready guest: Ready.
            Case {
                state: PowerState::Running,
                deleting: false,
                observed: observed(running.clone(), true, true),
                plan: Plan::default(),
                phase: Phase::Running,
                ready: (True, Reason::Running),
                reconciling: False,
                requeue: None,
            },
            // Running, guest booting: looked at again soon.
            Case {
                state: PowerState::Running,
                deleting: false,
                observed: observed(running.clone(), false, true),
                plan: Plan::default(),
                phase: Phase::Running,
                ready: (False, Reason::Booting),
                reconciling: True,
                requeue: Some(GUEST_POLL),
            },
            // Stopped as desired, disk kept.
            Case {
                state: PowerState::Stopped,
                deleting: false,
                observed: observed(ProcessState::Absent, false, true),
                plan: Plan::default(),
                phase: Phase::Stopped,
                ready: (True, Reason::Stopped),
                reconciling: False,
                requeue: None,
            },
            // Exited cleanly and restartPolicy keeps it down.
            Case {
                state: PowerState::Running,
                deleting: false,
                observed: observed(ProcessState::Exited { clean: true }, false, true),
                plan: Plan::default(),
                phase: Phase::Stopped,
                ready: (False, Reason::Exited),
                reconciling: False,
                requeue: None,
            },
            // Exited uncleanly, kept down: Failed.
            Case {
                state: PowerState::Running,
                deleting: false,
                observed: observed(ProcessState::Exited { clean: false }, false, true),
                plan: Plan::default(),
                phase: Phase::Failed,
                ready: (False, Reason::Exited),
                reconciling: False,
                requeue: None,
            },
            // Crash loop: Failed, requeued after the backoff.
            Case {
                state: PowerState::Running,
                deleting: false,
                observed: observed(ProcessState::Exited { clean: false }, false, true),
                plan: blocked(Blocker::CrashLoopBackOff, VmStep::Launch),
                phase: Phase::Failed,
                ready: (False, Reason::CrashLoopBackOff),
                reconciling: True,
                requeue: Some(Duration::from_secs(9)),
            },
            // Waiting for the image: Pending.
            Case {
                state: PowerState::Running,
                deleting: false,
                observed: ObservedVm::nothing(),
                plan: blocked(
                    Blocker::WaitingForImage {
                        image: "base".into(),
                    },
                    VmStep::PrepareDisk,
                ),
                phase: Phase::Pending,
                ready: (False, Reason::WaitingForImage),
                reconciling: True,
                requeue: None,
            },
            // A blocked recreate: still Running, not reconciling.
            Case {
                state: PowerState::Running,
                deleting: false,
                observed: observed(running.clone(), true, true),
                plan: blocked(
                    Blocker::RecreateBlocked {
                        reason: "image base -> other".into(),
                    },
                    VmStep::RemoveDisk,
                ),
                phase: Phase::Running,
                ready: (False, Reason::RecreateBlocked),
                reconciling: False,
                requeue: None,
            },
            // Steps left after the rounds: Creating, Progressing.
            Case {
                state: PowerState::Running,
                deleting: false,
                observed: ObservedVm::nothing(),
                plan: steps(VmStep::Launch),
                phase: Phase::Creating,
                ready: (False, Reason::Progressing),
                reconciling: True,
                requeue: Some(STEPS_LEFT_POLL),
            },
            // An exit with a restart planned: Creating.
            Case {
                state: PowerState::Running,
                deleting: false,
                observed: observed(ProcessState::Exited { clean: false }, false, true),
                plan: steps(VmStep::Launch),
                phase: Phase::Creating,
                ready: (False, Reason::Progressing),
                reconciling: True,
                requeue: Some(STEPS_LEFT_POLL),
            },
            // Unresponsive: still Running (a restart is planned).
            Case {
                state: PowerState::Running,
                deleting: false,
                observed: observed(
                    ProcessState::Unresponsive {
                        reason: "qmp".into(),
                    },
                    false,
                    true,
                ),
                plan: steps(VmStep::Shutdown),
                phase: Phase::Running,
                ready: (False, Reason::Progressing),
                reconciling: True,
                requeue: Some(STEPS_LEFT_POLL),
            },
            // Being deleted.
            Case {
                state: PowerState::Running,
                deleting: true,
                observed: observed(running, true, true),
                plan: steps(VmStep::Shutdown),
                phase: Phase::Deleting,
                ready: (False, Reason::Progressing),
                reconciling: True,
                requeue: Some(STEPS_LEFT_POLL),
            },
        ];
        for case in cases {
            check(case);
        }
    }

    #[test]
    fn guest_readiness_pid_and_handles() {
        let c = ctx(PowerState::Running);
        let up = observed(
            ProcessState::Running {
                launched: launched(),
            },
            true,
            true,
        );
        let d = derive(VmStatusInputs {
            ctx: &c,
            deleting: false,
            observed: &up,
            plan: &Plan::default(),
            crash_wait: None,
        });
        assert_eq!(
            (d.conditions[0].status, d.conditions[0].reason),
            (ConditionStatus::True, Reason::GuestUp)
        );
        assert_eq!(d.pid, Some(42));
        assert_eq!(d.ip, Some(Ipv4Addr::new(172, 30, 0, 2)));
        assert_eq!(d.hypervisor.as_deref(), Some("qemu"));
        let handles = d.handles.unwrap().to_value();
        assert_eq!(handles["vmDir"], "/state/vms/u1");
        assert_eq!(handles["consoleLog"], "/state/vms/u1/console.log");
        assert_eq!(handles["lease"]["ip"], "172.30.0.2");
        let down = observed(ProcessState::Exited { clean: true }, false, true);
        let d = derive(VmStatusInputs {
            ctx: &c,
            deleting: false,
            observed: &down,
            plan: &Plan::default(),
            crash_wait: None,
        });
        assert_eq!(d.pid, None, "no pid for a VMM that is not running");
        assert_eq!(d.conditions[0].reason, Reason::NotRunning);
    }
}
