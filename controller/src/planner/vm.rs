//! Planning one VM: from its desired spec and what the runtime observed to ordered,
//! classified steps (see the classification in the [parent module](super)).

use std::time::Duration;

use banger_specs::{PowerState, RestartPolicy, VmSpec};

use super::{Action, Blocker, ChangeClass, Plan, PlannedStep};
use crate::runtime::{
    LaunchConfig, ObservedFilter, ObservedVm, ProcessState, ResolvedImage, VmStep,
};

/// What is wanted for one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredVm<'a> {
    /// Its canonical spec.
    pub spec: &'a VmSpec,
    /// Its Image, resolved; `None` while the Image is not Ready.
    pub image: Option<&'a ResolvedImage>,
    /// The object is being deleted.
    pub deleting: bool,
    /// A recreate may run (`--allow-recreate` or the annotation).
    pub allow_recreate: bool,
    /// The crash-loop backoff is active: a restart after an exit must wait.
    pub crash_backoff: bool,
    /// The VM's leased address (`None` when not leased yet, or unknown in a dry run:
    /// then an address change is not planned).
    pub ip: Option<std::net::Ipv4Addr>,
}

/// Plans one VM.
pub fn plan_vm(desired: &DesiredVm<'_>, observed: &ObservedVm) -> Plan {
    if desired.deleting {
        return plan_vm_delete(observed);
    }
    let spec = desired.spec;
    let mut b = VmPlanBuilder::default();
    let fresh = observed.disk.is_none() && observed.process == ProcessState::Absent;
    let new_class = if fresh {
        ChangeClass::Create
    } else {
        ChangeClass::Live
    };
    let running = matches!(
        observed.process,
        ProcessState::Running { .. } | ProcessState::Unresponsive { .. }
    );
    let want_running = spec.state == PowerState::Running;

    if !observed.vm_dir {
        b.ensure_dir = Some((new_class, "state directory missing".into()));
    }
    match &observed.tap {
        // A VMM keeps the tap it opened: once the device is gone its network is gone,
        // and a new tap of the same name does not reach it. Restart it on a new tap.
        None if running => {
            let reason = "tap device deleted under a running VMM: its network is gone";
            b.tap = Some((ChangeClass::Restart, reason.into()));
            b.shutdown(ChangeClass::Restart, reason);
            if want_running {
                b.launch(ChangeClass::Restart, reason);
            }
        }
        None => b.tap = Some((new_class, "tap device missing".into())),
        Some(t) if !t.attached => {
            b.tap = Some((
                ChangeClass::Live,
                format!("tap {} not attached to the bridge", t.name),
            ))
        }
        Some(t) => b.tap = filter_change(t.filter, spec.network.isolated, desired.ip),
    }
    if spec.network.nat && !observed.nat {
        b.nat_add = Some((new_class, "NAT rule missing (network.nat: true)".into()));
    } else if !spec.network.nat && observed.nat {
        b.nat_remove = Some((
            ChangeClass::Live,
            "NAT rule present (network.nat: false)".into(),
        ));
    }

    // The root disk.
    let mut recreate_reason = None;
    match &observed.disk {
        None if running => {
            // The guest still writes to the file it opened; a disk rebuilt under it
            // would take its place at the next start and its contents would be lost.
            // Only a stop (asked for by the user) goes on; the next start rebuilds it.
            if want_running {
                b.blocked = Some(Blocker::DiskMissing);
                b.prepare_disk = Some((
                    ChangeClass::Recreate,
                    "root disk missing under a running VMM".into(),
                ));
            }
        }
        None => {
            if desired.image.is_none() {
                b.blocked = Some(Blocker::WaitingForImage {
                    image: spec.image.clone(),
                });
            }
            let reason = if fresh {
                "root disk missing"
            } else {
                "root disk missing: rebuilt from the image"
            };
            b.prepare_disk = Some((new_class, reason.into()));
        }
        Some(disk) => {
            if disk.image != spec.image {
                recreate_reason = Some(format!("image {} -> {}", disk.image, spec.image));
            } else if let Some(img) = desired.image.filter(|i| i.rootfs_digest != disk.digest) {
                recreate_reason = Some(format!(
                    "image {} content changed ({} -> {})",
                    spec.image,
                    short(&disk.digest),
                    short(&img.rootfs_digest)
                ));
            } else if disk.size > spec.disk.0 {
                recreate_reason = Some(format!(
                    "disk {} -> {} bytes (shrink)",
                    disk.size, spec.disk.0
                ));
            } else if disk.size < spec.disk.0 {
                let reason = format!("disk {} -> {} bytes", disk.size, spec.disk.0);
                b.grow_disk = Some((ChangeClass::Restart, reason.clone()));
                if running {
                    b.shutdown(ChangeClass::Restart, &reason);
                    if want_running {
                        b.launch(ChangeClass::Restart, &reason);
                    }
                }
            }
        }
    }
    if let Some(reason) = &recreate_reason {
        if desired.image.is_none() {
            b.blocked = Some(Blocker::WaitingForImage {
                image: spec.image.clone(),
            });
        }
        b.remove_disk = Some((ChangeClass::Recreate, reason.clone()));
        b.prepare_disk = Some((ChangeClass::Recreate, reason.clone()));
        if running {
            b.shutdown(ChangeClass::Recreate, reason);
            if want_running {
                b.launch(ChangeClass::Recreate, reason);
            }
        }
        if !desired.allow_recreate && b.blocked.is_none() {
            b.blocked = Some(Blocker::RecreateBlocked {
                reason: reason.clone(),
            });
        }
    }

    // The process.
    match (&observed.process, want_running) {
        (ProcessState::Absent, true) => {
            let reason = if fresh { "new VM" } else { "state: Running" };
            b.launch(new_class, reason);
        }
        (ProcessState::Running { launched }, true) => {
            if let Some(image) = desired.image {
                let want = LaunchConfig::desired(spec, image, desired.ip);
                let diffs = launch_diffs(launched, &want);
                if !diffs.is_empty() {
                    let reason = diffs.join(", ");
                    b.shutdown(ChangeClass::Restart, &reason);
                    b.launch(ChangeClass::Restart, &reason);
                }
            }
        }
        (ProcessState::Unresponsive { reason }, true) => {
            let reason = format!("VMM unresponsive: {reason}");
            b.shutdown(ChangeClass::Restart, &reason);
            b.launch(ChangeClass::Restart, &reason);
        }
        (ProcessState::Exited { clean }, true) => {
            let restart = match spec.restart_policy {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => !clean,
                RestartPolicy::Never => false,
            };
            if restart {
                let how = if *clean {
                    "guest powered off"
                } else {
                    "VMM exited"
                };
                b.launch(
                    ChangeClass::Restart,
                    &format!("{how}; restartPolicy {:?}", spec.restart_policy),
                );
                if desired.crash_backoff && b.blocked.is_none() {
                    b.blocked = Some(Blocker::CrashLoopBackOff);
                }
            }
        }
        (ProcessState::Absent, false) => {}
        (_, false) => b.shutdown(ChangeClass::Live, "state: Stopped"),
    }
    if (b.launch.is_some() || b.prepare_disk.is_some())
        && desired.image.is_none()
        && b.blocked.is_none()
    {
        b.blocked = Some(Blocker::WaitingForImage {
            image: spec.image.clone(),
        });
    }
    b.build()
}

fn plan_vm_delete(observed: &ObservedVm) -> Plan {
    let mut steps = Vec::new();
    let mut push = |step: VmStep, reason: &str| {
        steps.push(PlannedStep {
            action: Action::Vm(step),
            class: ChangeClass::Delete,
            reason: reason.to_string(),
        })
    };
    if observed.process != ProcessState::Absent {
        push(VmStep::Shutdown, "VM deleted");
    }
    if observed.nat {
        push(VmStep::RemoveNat, "VM deleted");
    }
    if observed.tap.is_some() {
        push(VmStep::RemoveTap, "VM deleted");
    }
    if observed.disk.is_some() {
        push(VmStep::RemoveDisk, "VM deleted");
    }
    if observed.vm_dir {
        push(VmStep::RemoveVmDir, "VM deleted");
    }
    Plan {
        steps,
        blocked: None,
    }
}

/// Whether the tap's guest filter must be rewritten, and why: it is missing or
/// `network.isolated` changed (live: rules only), or the leased address (`ip`, when
/// known) is not the one it allows (part of the restart that moves the guest to its new
/// address, which it learns on its kernel command line).
fn filter_change(
    have: Option<ObservedFilter>,
    isolated: bool,
    ip: Option<std::net::Ipv4Addr>,
) -> Slot {
    let Some(have) = have else {
        return Some((ChangeClass::Live, "guest filter missing".into()));
    };
    if have.isolated != isolated {
        return Some((
            ChangeClass::Live,
            format!("network.isolated {} -> {isolated}", have.isolated),
        ));
    }
    match ip {
        Some(ip) if ip != have.ip => Some((
            ChangeClass::Restart,
            format!("guest filter source {} -> {ip}", have.ip),
        )),
        _ => None,
    }
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// Field-level differences between a running launch configuration and the wanted one.
pub fn launch_diffs(have: &LaunchConfig, want: &LaunchConfig) -> Vec<String> {
    let mut d = Vec::new();
    if have.vcpus != want.vcpus {
        d.push(format!("vcpus {} -> {}", have.vcpus, want.vcpus));
    }
    if have.memory_mib != want.memory_mib {
        d.push(format!(
            "memory {}Mi -> {}Mi",
            have.memory_mib, want.memory_mib
        ));
    }
    if have.hypervisor != want.hypervisor {
        d.push(format!("hypervisor {:?} -> {:?}", have.hypervisor, want.hypervisor).to_lowercase());
    }
    if let (Some(a), Some(b)) = (have.ip, want.ip) {
        if a != b {
            d.push(format!("ip {a} -> {b}"));
        }
    }
    if have.boot_digest != want.boot_digest {
        d.push("kernel, initrd or kernel args changed".to_string());
    }
    d
}

type Slot = Option<(ChangeClass, String)>;

#[derive(Default)]
struct VmPlanBuilder {
    ensure_dir: Slot,
    tap: Slot,
    nat_add: Slot,
    nat_remove: Slot,
    shutdown: Slot,
    remove_disk: Slot,
    prepare_disk: Slot,
    grow_disk: Slot,
    launch: Slot,
    blocked: Option<Blocker>,
}

impl VmPlanBuilder {
    fn upgrade(slot: &mut Slot, class: ChangeClass, reason: &str) {
        match slot {
            Some((c, _)) if *c >= class => {}
            _ => *slot = Some((class, reason.to_string())),
        }
    }
    fn shutdown(&mut self, class: ChangeClass, reason: &str) {
        Self::upgrade(&mut self.shutdown, class, reason);
    }
    fn launch(&mut self, class: ChangeClass, reason: &str) {
        Self::upgrade(&mut self.launch, class, reason);
    }
    fn build(self) -> Plan {
        let order = [
            (VmStep::EnsureVmDir, self.ensure_dir),
            (VmStep::EnsureTap, self.tap),
            (VmStep::EnsureNat, self.nat_add),
            (VmStep::Shutdown, self.shutdown),
            (VmStep::RemoveDisk, self.remove_disk),
            (VmStep::PrepareDisk, self.prepare_disk),
            (VmStep::GrowDisk, self.grow_disk),
            (VmStep::Launch, self.launch),
            (VmStep::RemoveNat, self.nat_remove),
        ];
        let steps = order
            .into_iter()
            .filter_map(|(step, slot)| {
                slot.map(|(class, reason)| PlannedStep {
                    action: Action::Vm(step),
                    class,
                    reason,
                })
            })
            .collect();
        Plan {
            steps,
            blocked: self.blocked,
        }
    }
}

/// Restarts after exits counted for crash-loop detection within this window (seconds).
pub const CRASH_WINDOW_SECS: i64 = 600;
/// Restarts within the window before the crash-loop backoff starts.
const CRASH_FREE_RESTARTS: usize = 3;

/// Crash-loop backoff: after `CRASH_FREE_RESTARTS` (3) restarts within the window, the
/// next restart waits `5 s * 2^(extra)` (at most 5 min) after the last one. `restarts`
/// and `now` are unix seconds. Returns the time left to wait, if any.
pub fn crash_backoff_remaining(restarts: &[i64], now: i64) -> Option<Duration> {
    let recent: Vec<i64> = restarts
        .iter()
        .copied()
        .filter(|t| *t >= now - CRASH_WINDOW_SECS)
        .collect();
    if recent.len() < CRASH_FREE_RESTARTS {
        return None;
    }
    let extra = u32::try_from(recent.len() - CRASH_FREE_RESTARTS)
        .unwrap_or(u32::MAX)
        .min(6);
    let delay = (5i64 << extra).min(300);
    let last = recent.iter().copied().max().unwrap_or(now);
    let left = last + delay - now;
    (left > 0).then(|| Duration::from_secs(u64::try_from(left).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::Plan;
    use crate::runtime::{ObservedDisk, ObservedTap};
    use banger_specs::{ByteSize, HypervisorChoice};
    use std::path::PathBuf;

    const MIB: u64 = 1024 * 1024;

    fn spec() -> VmSpec {
        crate::testutil::vm_spec("base")
    }

    fn image() -> ResolvedImage {
        ResolvedImage {
            kernel: PathBuf::from("/k"),
            initrd: None,
            rootfs: PathBuf::from("/r"),
            kernel_args: None,
            readiness: Default::default(),
            rootfs_digest: "d1d1d1d1d1d1d1d1".into(),
        }
    }

    fn running(spec: &VmSpec, image: &ResolvedImage) -> ObservedVm {
        ObservedVm {
            process: ProcessState::Running {
                launched: LaunchConfig::desired(spec, image, None),
            },
            disk: Some(ObservedDisk {
                image: spec.image.clone(),
                digest: image.rootfs_digest.clone(),
                size: spec.disk.0,
                id: None,
            }),
            tap: Some(ObservedTap {
                name: "bgx".into(),
                attached: true,
                filter: Some(ObservedFilter {
                    ip: "172.30.0.2".parse().unwrap(),
                    isolated: spec.network.isolated,
                }),
            }),
            nat: spec.network.nat,
            guest_ready: true,
            vm_dir: true,
        }
    }

    fn desired<'a>(spec: &'a VmSpec, image: &'a ResolvedImage) -> DesiredVm<'a> {
        DesiredVm {
            spec,
            image: Some(image),
            deleting: false,
            allow_recreate: false,
            crash_backoff: false,
            ip: None,
        }
    }

    fn names(plan: &Plan) -> Vec<(&'static str, ChangeClass)> {
        plan.steps
            .iter()
            .map(|s| (s.action.name(), s.class))
            .collect()
    }

    #[test]
    fn new_vm_is_created_in_order() {
        let (s, i) = (spec(), image());
        let plan = plan_vm(&desired(&s, &i), &ObservedVm::nothing());
        assert_eq!(
            names(&plan),
            vec![
                ("ensure-vm-dir", ChangeClass::Create),
                ("ensure-tap", ChangeClass::Create),
                ("ensure-nat", ChangeClass::Create),
                ("prepare-disk", ChangeClass::Create),
                ("launch", ChangeClass::Create),
            ]
        );
        assert_eq!(plan.blocked, None);
    }

    #[test]
    fn isolation_and_the_guest_filter_are_live_changes() {
        let (mut s, i) = (spec(), image());
        let observed = running(&s, &i);
        s.network.isolated = false;
        let plan = plan_vm(&desired(&s, &i), &observed);
        assert_eq!(names(&plan), vec![("ensure-tap", ChangeClass::Live)]);
        assert_eq!(plan.steps[0].reason, "network.isolated true -> false");

        // A missing filter (say, a tap made by an older banger) is made, live.
        let s = spec();
        let mut unfiltered = running(&s, &i);
        if let Some(tap) = unfiltered.tap.as_mut() {
            tap.filter = None;
        }
        let plan = plan_vm(&desired(&s, &i), &unfiltered);
        assert_eq!(names(&plan), vec![("ensure-tap", ChangeClass::Live)]);
        assert_eq!(plan.steps[0].reason, "guest filter missing");

        // A filter for another address than the lease: rewritten; unknown lease: kept.
        let moved = DesiredVm {
            ip: Some("172.30.0.9".parse().unwrap()),
            ..desired(&s, &i)
        };
        let plan = plan_vm(&moved, &running(&s, &i));
        assert_eq!(
            (plan.steps[0].action.name(), plan.steps[0].class),
            ("ensure-tap", ChangeClass::Restart)
        );
        assert_eq!(
            plan.steps[0].reason,
            "guest filter source 172.30.0.2 -> 172.30.0.9"
        );
        assert!(plan_vm(&desired(&s, &i), &running(&s, &i)).is_converged());
    }

    #[test]
    fn converged_vm_has_empty_plan() {
        let (s, i) = (spec(), image());
        let plan = plan_vm(&desired(&s, &i), &running(&s, &i));
        assert!(plan.is_converged(), "{plan:?}");
    }

    #[test]
    fn memory_vcpus_and_kernel_args_are_restarts() {
        let (s, i) = (spec(), image());
        let observed = running(&s, &i);
        for change in [
            |s: &mut VmSpec| s.memory = ByteSize(1024 * MIB),
            |s: &mut VmSpec| s.vcpus = 2,
            |s: &mut VmSpec| s.kernel_args = Some("quiet".into()),
            |s: &mut VmSpec| s.hypervisor = HypervisorChoice::Qemu,
        ] {
            let mut s2 = spec();
            change(&mut s2);
            let plan = plan_vm(&desired(&s2, &i), &observed);
            assert_eq!(
                names(&plan),
                vec![
                    ("shutdown", ChangeClass::Restart),
                    ("launch", ChangeClass::Restart)
                ]
            );
            assert_eq!(plan.worst_class(), Some(ChangeClass::Restart));
            assert_eq!(plan.blocked, None);
        }
    }

    #[test]
    fn nat_toggle_and_power_state_are_live() {
        let (s, i) = (spec(), image());
        let observed = running(&s, &i);
        let mut s2 = spec();
        s2.network.nat = false;
        assert_eq!(
            names(&plan_vm(&desired(&s2, &i), &observed)),
            vec![("remove-nat", ChangeClass::Live)]
        );
        let mut s3 = spec();
        s3.state = PowerState::Stopped;
        assert_eq!(
            names(&plan_vm(&desired(&s3, &i), &observed)),
            vec![("shutdown", ChangeClass::Live)]
        );
        let mut stopped = observed.clone();
        stopped.process = ProcessState::Absent;
        assert_eq!(
            names(&plan_vm(&desired(&s, &i), &stopped)),
            vec![("launch", ChangeClass::Live)]
        );
        let mut s4 = spec();
        s4.restart_policy = RestartPolicy::Never;
        assert!(plan_vm(&desired(&s4, &i), &observed).is_converged());
    }

    #[test]
    fn image_change_is_a_recreate_blocked_unless_allowed() {
        let (s, i) = (spec(), image());
        let observed = running(&s, &i);
        let mut i2 = image();
        i2.rootfs_digest = "e2e2e2e2e2e2e2e2".into();
        let plan = plan_vm(&desired(&s, &i2), &observed);
        assert_eq!(
            names(&plan),
            vec![
                ("shutdown", ChangeClass::Recreate),
                ("remove-disk", ChangeClass::Recreate),
                ("prepare-disk", ChangeClass::Recreate),
                ("launch", ChangeClass::Recreate),
            ]
        );
        assert!(
            matches!(plan.blocked, Some(Blocker::RecreateBlocked { .. })),
            "{plan:?}"
        );
        let mut d = desired(&s, &i2);
        d.allow_recreate = true;
        let allowed = plan_vm(&d, &observed);
        assert_eq!(allowed.blocked, None);
        assert_eq!(allowed.worst_class(), Some(ChangeClass::Recreate));
        // Another image by name is a recreate too.
        let mut s2 = spec();
        s2.image = "other".into();
        assert!(matches!(
            plan_vm(&desired(&s2, &i), &observed).blocked,
            Some(Blocker::RecreateBlocked { .. })
        ));
    }

    #[test]
    fn disk_growth_is_a_restart_and_shrink_a_recreate() {
        let (s, i) = (spec(), image());
        let observed = running(&s, &i);
        let mut bigger = spec();
        bigger.disk = ByteSize(4096 * MIB);
        assert_eq!(
            names(&plan_vm(&desired(&bigger, &i), &observed)),
            vec![
                ("shutdown", ChangeClass::Restart),
                ("grow-disk", ChangeClass::Restart),
                ("launch", ChangeClass::Restart)
            ]
        );
        let mut smaller = spec();
        smaller.disk = ByteSize(1024 * MIB);
        assert!(matches!(
            plan_vm(&desired(&smaller, &i), &observed).blocked,
            Some(Blocker::RecreateBlocked { .. })
        ));
    }

    #[test]
    fn waiting_for_image_blocks_without_error() {
        let s = spec();
        let d = DesiredVm {
            spec: &s,
            image: None,
            deleting: false,
            allow_recreate: false,
            crash_backoff: false,
            ip: None,
        };
        let plan = plan_vm(&d, &ObservedVm::nothing());
        assert_eq!(
            plan.blocked,
            Some(Blocker::WaitingForImage {
                image: "base".into()
            })
        );
    }

    #[test]
    fn exits_follow_restart_policy_and_crash_backoff() {
        let (s, i) = (spec(), image());
        let mut observed = running(&s, &i);
        observed.process = ProcessState::Exited { clean: false };
        let plan = plan_vm(&desired(&s, &i), &observed);
        assert_eq!(names(&plan), vec![("launch", ChangeClass::Restart)]);
        let mut d = desired(&s, &i);
        d.crash_backoff = true;
        assert_eq!(
            plan_vm(&d, &observed).blocked,
            Some(Blocker::CrashLoopBackOff)
        );
        let mut never = spec();
        never.restart_policy = RestartPolicy::Never;
        assert!(plan_vm(&desired(&never, &i), &observed).is_converged());
        let mut on_failure = spec();
        on_failure.restart_policy = RestartPolicy::OnFailure;
        observed.process = ProcessState::Exited { clean: true };
        assert!(plan_vm(&desired(&on_failure, &i), &observed).is_converged());
        observed.process = ProcessState::Exited { clean: false };
        assert_eq!(
            names(&plan_vm(&desired(&on_failure, &i), &observed)),
            vec![("launch", ChangeClass::Restart)]
        );
    }

    #[test]
    fn delete_cleans_up_in_reverse() {
        let (s, i) = (spec(), image());
        let mut d = desired(&s, &i);
        d.deleting = true;
        assert_eq!(
            names(&plan_vm(&d, &running(&s, &i))),
            vec![
                ("shutdown", ChangeClass::Delete),
                ("remove-nat", ChangeClass::Delete),
                ("remove-tap", ChangeClass::Delete),
                ("remove-disk", ChangeClass::Delete),
                ("remove-vm-dir", ChangeClass::Delete),
            ]
        );
        assert!(plan_vm(&d, &ObservedVm::nothing()).is_converged());
    }

    #[test]
    fn a_tap_deleted_under_a_running_vmm_is_a_restart_on_a_new_tap() {
        let (s, i) = (spec(), image());
        let mut observed = running(&s, &i);
        observed.tap = None;
        let plan = plan_vm(&desired(&s, &i), &observed);
        assert_eq!(
            names(&plan),
            vec![
                ("ensure-tap", ChangeClass::Restart),
                ("shutdown", ChangeClass::Restart),
                ("launch", ChangeClass::Restart),
            ]
        );
        assert!(plan.steps[0].reason.contains("network is gone"), "{plan:?}");
        assert_eq!(plan.blocked, None);
        // A stopped VM only needs its tap again.
        let mut stopped = spec();
        stopped.state = PowerState::Stopped;
        observed.process = ProcessState::Absent;
        assert_eq!(
            names(&plan_vm(&desired(&stopped, &i), &observed)),
            vec![("ensure-tap", ChangeClass::Live)]
        );
    }

    #[test]
    fn a_disk_missing_under_a_running_vmm_is_never_rebuilt() {
        let (s, i) = (spec(), image());
        let mut observed = running(&s, &i);
        observed.disk = None;
        let plan = plan_vm(&desired(&s, &i), &observed);
        assert_eq!(plan.blocked, Some(Blocker::DiskMissing));
        assert!(plan.blocked.as_ref().unwrap().message().contains("/proc/"));
        // The user may stop it: the stop goes on, nothing is rebuilt yet.
        let mut stop = spec();
        stop.state = PowerState::Stopped;
        let plan = plan_vm(&desired(&stop, &i), &observed);
        assert_eq!(names(&plan), vec![("shutdown", ChangeClass::Live)]);
        assert_eq!(plan.blocked, None);
        // Once stopped, the disk is rebuilt from the image.
        observed.process = ProcessState::Absent;
        let plan = plan_vm(&desired(&s, &i), &observed);
        assert_eq!(plan.blocked, None);
        assert!(
            plan.steps
                .iter()
                .any(|s| s.action == Action::Vm(VmStep::PrepareDisk)),
            "{plan:?}"
        );
    }

    #[test]
    fn crash_backoff_starts_after_free_restarts() {
        assert_eq!(crash_backoff_remaining(&[100, 101], 102), None);
        assert_eq!(
            crash_backoff_remaining(&[100, 101, 102], 103),
            Some(Duration::from_secs(4))
        );
        assert_eq!(
            crash_backoff_remaining(&[100, 101, 102, 103], 104),
            Some(Duration::from_secs(9))
        );
        assert_eq!(
            crash_backoff_remaining(&[100, 101, 102], 2000),
            None,
            "old restarts forgotten"
        );
    }
}
