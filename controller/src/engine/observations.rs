//! What the engine last observed of each VM, kept in memory.
//!
//! Two uses:
//! - **One failed probe never restarts a VM.** A VMM whose control socket does not
//!   answer is reported `Unresponsive` by the runtime; the engine acts on it only after
//!   [`crate::config::DaemonConfig::probe_failure_threshold`] failures in a row (like a
//!   liveness probe's `failureThreshold`). Until then the last good observation of the
//!   process stands ([`tolerate`]) and the VM is probed again soon.
//! - **API reads never probe the hypervisor.** `describe`, `diff` and `apply --dry-run`
//!   plan from the engine's last observation of a VM ([`crate::engine::facts`]): a
//!   control socket such as QEMU's QMP serves one client at a time, so a read at the
//!   wrong moment must not make the engine's own probe fail.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::runtime::{ObservedVm, ProcessState};

/// An observation as the planner got it, and the probe failures in a row behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// What the planner was given (after [`tolerate`]).
    pub observed: ObservedVm,
    /// Consecutive probes that found the VMM unresponsive.
    pub failed_probes: u32,
    /// What the last failed probe said, while failures are tolerated.
    pub probe_error: Option<String>,
}

/// Pure: the observation the planner gets from a fresh probe, given the last one.
/// An `Unresponsive` process below the threshold is replaced by the last observation's
/// running process (and guest readiness); everything else is taken fresh.
pub fn tolerate(fresh: ObservedVm, last: Option<&Observation>, threshold: u32) -> Observation {
    let ProcessState::Unresponsive { reason } = &fresh.process else {
        return Observation {
            observed: fresh,
            failed_probes: 0,
            probe_error: None,
        };
    };
    let probe_error = Some(reason.clone());
    let failed_probes = last.map_or(0, |l| l.failed_probes).saturating_add(1);
    match last.map(|l| &l.observed) {
        Some(
            good @ ObservedVm {
                process: ProcessState::Running { .. },
                ..
            },
        ) if failed_probes < threshold => Observation {
            observed: ObservedVm {
                process: good.process.clone(),
                guest_ready: good.guest_ready,
                ..fresh
            },
            failed_probes,
            probe_error,
        },
        _ => Observation {
            observed: fresh,
            failed_probes,
            probe_error: None,
        },
    }
}

/// The last observation of every VM this daemon has observed. Boxed: a hash table's
/// empty slots are as wide as its values.
#[derive(Default)]
pub struct Observations {
    map: Mutex<HashMap<String, Box<Observation>>>,
}

impl Observations {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Box<Observation>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last observation of a VM, if it was observed since the daemon started.
    pub fn last(&self, uid: &str) -> Option<Observation> {
        self.map().get(uid).map(|o| Observation::clone(o))
    }

    /// Records an observation.
    pub fn record(&self, uid: &str, observation: Observation) {
        self.map().insert(uid.to_string(), Box::new(observation));
    }

    /// Forgets a VM (deleted).
    pub fn forget(&self, uid: &str) {
        self.map().remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::LaunchConfig;

    fn running(guest_ready: bool) -> ObservedVm {
        ObservedVm {
            process: ProcessState::Running {
                launched: LaunchConfig {
                    vcpus: 1,
                    memory_mib: 512,
                    hypervisor: banger_specs::HypervisorChoice::Auto,
                    boot_digest: "d".into(),
                    ip: None,
                },
            },
            guest_ready,
            vm_dir: true,
            ..ObservedVm::nothing()
        }
    }

    fn unresponsive() -> ObservedVm {
        ObservedVm {
            process: ProcessState::Unresponsive {
                reason: "qmp timed out".into(),
            },
            vm_dir: true,
            nat: true,
            ..ObservedVm::nothing()
        }
    }

    #[test]
    fn failures_below_the_threshold_keep_the_last_good_process() {
        let good = tolerate(running(true), None, 3);
        assert_eq!(good.failed_probes, 0);
        let one = tolerate(unresponsive(), Some(&good), 3);
        assert_eq!(one.failed_probes, 1);
        assert_eq!(one.observed.process, running(true).process);
        assert_eq!(one.probe_error.as_deref(), Some("qmp timed out"));
        assert!(one.observed.guest_ready);
        assert!(one.observed.nat, "the rest is taken fresh");
        let two = tolerate(unresponsive(), Some(&one), 3);
        assert_eq!(two.failed_probes, 2);
        assert_eq!(two.observed.process, running(true).process);
        let three = tolerate(unresponsive(), Some(&two), 3);
        assert_eq!(three.failed_probes, 3);
        assert!(matches!(
            three.observed.process,
            ProcessState::Unresponsive { .. }
        ));
        // A good probe resets the count.
        let again = tolerate(running(false), Some(&three), 3);
        assert_eq!(again.failed_probes, 0);
        assert_eq!(tolerate(unresponsive(), Some(&again), 3).failed_probes, 1);
    }

    #[test]
    fn without_a_good_observation_unresponsive_stands() {
        let first = tolerate(unresponsive(), None, 3);
        assert_eq!(first.failed_probes, 1);
        assert!(matches!(
            first.observed.process,
            ProcessState::Unresponsive { .. }
        ));
        let threshold_one = tolerate(unresponsive(), Some(&tolerate(running(true), None, 1)), 1);
        assert!(matches!(
            threshold_one.observed.process,
            ProcessState::Unresponsive { .. }
        ));
    }
}
