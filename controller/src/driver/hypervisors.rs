//! The hypervisors one host offers: every [`Driver`], configured once at start, with
//! whether this host can run it, and the `hypervisor: auto` decision among them.

use banger_specs::HypervisorChoice;

use super::{Driver, DriverConfig, DriverError, Hypervisor, HypervisorKind};
use crate::host::kvm::KvmStatus;

/// Whether this host can run one hypervisor: its version line, or why not.
pub type Suitability = Result<String, String>;

/// One hypervisor as the host offers it.
#[derive(Debug, Clone)]
struct Offered {
    driver: Driver,
    suitability: Suitability,
}

/// Every hypervisor banger drives, configured for this host, in [`HypervisorKind::ALL`]
/// order.
#[derive(Debug, Clone)]
pub struct Hypervisors {
    offered: Vec<Offered>,
}

impl Hypervisors {
    /// Configures every driver and judges whether this host can run it: the binary
    /// answers `--version` as that hypervisor ([`Hypervisor::check_binary`]), the
    /// configured accelerator can be used, and the host meets
    /// [`Hypervisor::host_requirement`].
    ///
    /// Blocking: it runs each binary's `--version` (bounded) and, under TCG, measures
    /// the TSC (~20 ms). The daemon calls it once, before it serves.
    pub fn probe(config: &DriverConfig, kvm: &KvmStatus) -> Hypervisors {
        let offered = HypervisorKind::ALL
            .into_iter()
            .map(|kind| {
                let (driver, configured) = Driver::configure(kind, config, kvm);
                let suitability = configured.and_then(|()| {
                    let version = driver.check_binary()?;
                    driver.host_requirement(kvm)?;
                    Ok(version)
                });
                Offered {
                    driver,
                    suitability,
                }
            })
            .collect();
        Hypervisors { offered }
    }

    fn offered(&self, kind: HypervisorKind) -> Option<&Offered> {
        self.offered.iter().find(|o| o.driver.kind() == kind)
    }

    /// The driver of `kind`, to probe or stop a process it launched (whether or not
    /// this host could launch a new one).
    pub fn driver(&self, kind: HypervisorKind) -> Option<&Driver> {
        self.offered(kind).map(|o| &o.driver)
    }

    /// Whether this host can run `kind`: its version line, or why not.
    pub fn suitability(&self, kind: HypervisorKind) -> Suitability {
        match self.offered(kind) {
            Some(o) => o.suitability.clone(),
            None => Err(format!("{kind} is not configured")),
        }
    }

    /// The driver to launch a VM on `kind` with, or why this host cannot run it.
    pub fn for_launch(&self, kind: HypervisorKind, vm: &str) -> Result<&Driver, DriverError> {
        let offered = self.offered(kind).ok_or_else(|| DriverError::Binary {
            vm: vm.to_string(),
            binary: kind.as_str().to_string(),
            reason: "not configured".into(),
        })?;
        match &offered.suitability {
            Ok(_) => Ok(&offered.driver),
            Err(reason) => Err(DriverError::Binary {
                vm: vm.to_string(),
                binary: offered.driver.binary().display().to_string(),
                reason: format!("{kind} cannot run here: {reason}"),
            }),
        }
    }

    /// The hypervisor `choice` resolves to on this host: the one it names, or for
    /// `auto` [`choose_auto`] among every hypervisor offered (`None` only when none is).
    pub fn resolve(&self, choice: HypervisorChoice) -> Option<HypervisorKind> {
        HypervisorKind::of_choice(choice).or_else(|| {
            choose_auto(
                self.offered
                    .iter()
                    .map(|o| (o.driver.kind(), o.driver.auto_rank(), o.suitability.is_ok())),
            )
        })
    }
}

/// `hypervisor: auto`: among `(kind, rank, suitable)` candidates, the suitable one of
/// highest [`Hypervisor::auto_rank`]. When none is suitable, the one of lowest rank
/// (the one that asks least of the host: QEMU, which falls back to TCG), whose launch
/// then fails saying why it cannot run. `None` only without candidates.
pub fn choose_auto(
    candidates: impl IntoIterator<Item = (HypervisorKind, u8, bool)>,
) -> Option<HypervisorKind> {
    let candidates: Vec<(HypervisorKind, u8, bool)> = candidates.into_iter().collect();
    candidates
        .iter()
        .filter(|(_, _, suitable)| *suitable)
        .max_by_key(|(_, rank, _)| *rank)
        .or_else(|| candidates.iter().min_by_key(|(_, rank, _)| *rank))
        .map(|(kind, _, _)| *kind)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::driver::firecracker::FirecrackerDriver;
    use crate::driver::qemu::{QemuDriver, QemuOptions};
    use crate::host::kvm::ResolvedAccel;

    /// `auto` with Firecracker's binary found or not, on a host whose KVM is `kvm`
    /// (QEMU's binary found).
    fn auto(firecracker_found: bool, kvm: &KvmStatus) -> Option<HypervisorKind> {
        let fc = FirecrackerDriver::default();
        let qemu = QemuDriver::new(QemuOptions::new("qemu", ResolvedAccel::Tcg));
        let fc_suitable = firecracker_found && fc.host_requirement(kvm).is_ok();
        let qemu_suitable = qemu.host_requirement(kvm).is_ok();
        choose_auto([
            (fc.kind(), fc.auto_rank(), fc_suitable),
            (qemu.kind(), qemu.auto_rank(), qemu_suitable),
        ])
    }

    #[test]
    fn chooses_auto_hypervisor() {
        use HypervisorKind::{Firecracker, Qemu};
        assert_eq!(auto(true, &KvmStatus::Usable), Some(Firecracker));
        assert_eq!(auto(true, &KvmStatus::ParavirtOnly), Some(Qemu));
        assert_eq!(auto(false, &KvmStatus::Usable), Some(Qemu));
        assert_eq!(auto(true, &KvmStatus::Missing), Some(Qemu));
    }

    #[test]
    fn auto_falls_back_to_the_least_demanding_when_none_is_suitable() {
        let none = [
            (HypervisorKind::Firecracker, 2, false),
            (HypervisorKind::Qemu, 1, false),
        ];
        assert_eq!(choose_auto(none), Some(HypervisorKind::Qemu));
        let only_fc = [
            (HypervisorKind::Firecracker, 2, true),
            (HypervisorKind::Qemu, 1, false),
        ];
        assert_eq!(choose_auto(only_fc), Some(HypervisorKind::Firecracker));
        assert_eq!(choose_auto([]), None);
    }

    #[test]
    fn a_jailer_beside_firecracker_is_used_and_a_bad_one_makes_it_unsuitable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fc = dir.path().join("firecracker");
        let jailer = dir.path().join("jailer");
        for file in [&fc, &jailer] {
            std::fs::write(file, b"#!/bin/sh\n").unwrap();
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let config = DriverConfig {
            firecracker_bin: Some(fc.clone()),
            jail_dir: Some("/state/jail".into()),
            ..DriverConfig::default()
        };
        let (driver, ok) =
            Driver::configure(HypervisorKind::Firecracker, &config, &KvmStatus::Usable);
        ok.unwrap();
        let Driver::Firecracker(fc_driver) = driver else {
            panic!("not firecracker")
        };
        let used = fc_driver.jailer().unwrap();
        assert_eq!(
            (used.binary.as_path(), used.chroot_base.as_path()),
            (jailer.as_path(), std::path::Path::new("/state/jail"))
        );
        let bad = DriverConfig {
            jailer_bin: Some(dir.path().join("no-jailer")),
            ..config
        };
        let (_, err) = Driver::configure(HypervisorKind::Firecracker, &bad, &KvmStatus::Usable);
        assert!(err.unwrap_err().contains("no-jailer"));
    }

    #[test]
    fn a_host_without_binaries_offers_every_driver_but_launches_none() {
        let config = DriverConfig {
            qemu_bin: Some("/nonexistent/qemu".into()),
            firecracker_bin: Some("/nonexistent/firecracker".into()),
            accel: crate::host::kvm::Accel::Tcg,
            ..DriverConfig::default()
        };
        let hypervisors = Hypervisors::probe(&config, &KvmStatus::Missing);
        for kind in HypervisorKind::ALL {
            assert_eq!(hypervisors.driver(kind).unwrap().kind(), kind);
            assert!(hypervisors.suitability(kind).is_err());
            let err = hypervisors.for_launch(kind, "web").unwrap_err().to_string();
            assert!(err.contains("cannot run here"), "{err}");
        }
        assert_eq!(
            hypervisors.resolve(HypervisorChoice::Auto),
            Some(HypervisorKind::Qemu)
        );
        assert_eq!(
            hypervisors.resolve(HypervisorChoice::Firecracker),
            Some(HypervisorKind::Firecracker)
        );
    }
}
