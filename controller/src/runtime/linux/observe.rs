//! `observe`: every host object of one VM, probed live, and the guest's readiness.
//! Never changes anything and never fails: what cannot be confirmed is absent or
//! unresponsive.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::disk::split_disk_identity;
use super::vmm::console_offset;
use super::{driver_of, LinuxRuntime};
use crate::driver::{Hypervisor, Liveness, VmmProcess};
use crate::host::disk;
use crate::host::names::ObjectUid;
use crate::host::net::vm::probe_vm_network;
use crate::host::readiness::{self, console_since};
use crate::runtime::{
    ObservedDisk, ObservedFilter, ObservedTap, ObservedVm, ProcessState, VmContext,
};

/// How long a readiness TCP connect may take.
const READINESS_CONNECT_TIMEOUT: Duration = Duration::from_millis(400);

impl LinuxRuntime {
    /// [`crate::runtime::VmRuntime::observe`] on this host.
    pub(super) async fn observe_vm(&self, vm: &VmContext) -> ObservedVm {
        let mut observed = ObservedVm::nothing();
        observed.vm_dir = tokio::fs::metadata(&vm.vm_dir)
            .await
            .is_ok_and(|m| m.is_dir());
        if observed.vm_dir {
            self.consoles.know(&vm.uid, vm.console_log());
        }
        observed.process = self.observe_process(vm).await;
        let vm_dir = vm.vm_dir.clone();
        let root = tokio::task::spawn_blocking(move || disk::probe_root_disk(&vm_dir)).await;
        if let Ok(Ok(Some(root))) = root {
            if let Some(source) = &root.source {
                let (image, digest) = split_disk_identity(&source.image_identity);
                observed.disk = Some(ObservedDisk {
                    image,
                    digest,
                    size: root.size_bytes,
                    id: source.disk_id.clone(),
                });
            }
        }
        if let Ok(uid) = ObjectUid::parse(&vm.uid) {
            let probed_at = Instant::now();
            let net = probe_vm_network(&self.netlink, &self.nft, &self.config.bridge, &uid).await;
            observed.tap = net.tap.as_ref().map(|tap| ObservedTap {
                attached: tap.is_healthy(),
                name: tap.name.clone(),
                filter: net.filter.map(|f| ObservedFilter {
                    ip: f.ip,
                    isolated: f.isolated,
                }),
            });
            observed.nat = vm.lease.as_ref().is_some_and(|lease| net.nat_for(lease.ip));
            match net.nat_read {
                Some(read) if vm.spec.network.nat && !observed.nat => {
                    self.nat_reads.keep(&vm.uid, read, probed_at);
                }
                _ => self.nat_reads.forget(&vm.uid),
            }
        }
        if matches!(observed.process, ProcessState::Running { .. }) {
            observed.guest_ready = self.guest_ready(vm).await;
            if !observed.guest_ready {
                self.watch_boot(vm);
            }
        }
        observed
    }

    /// The recorded VMM, probed by its driver.
    async fn observe_process(&self, vm: &VmContext) -> ProcessState {
        let Some(vmm) = &vm.handles.process else {
            return ProcessState::Absent;
        };
        let liveness = match driver_of(&self.hypervisors, vmm) {
            Ok(driver) => driver.probe(vmm, &vm.uid).await,
            Err(reason) => Liveness::Unresponsive { reason },
        };
        match liveness {
            Liveness::Running => {
                self.watch(&vm.uid, vmm);
                match &vm.handles.launched {
                    Some(launched) => ProcessState::Running {
                        launched: launched.clone(),
                    },
                    None => ProcessState::Unresponsive {
                        reason: "running VMM without a recorded launch configuration".into(),
                    },
                }
            }
            Liveness::GuestHalted => ProcessState::Exited { clean: true },
            Liveness::Exited => ProcessState::Exited {
                clean: self.console_shows_halt(vm, vmm).await,
            },
            Liveness::Unresponsive { reason } => ProcessState::Unresponsive { reason },
        }
    }

    /// Whether the guest of the current launch halted, as its hypervisor tells from the
    /// console since the launch: an exited VMM whose guest halted stopped cleanly.
    async fn console_shows_halt(&self, vm: &VmContext, vmm: &VmmProcess) -> bool {
        let Ok(driver) = driver_of(&self.hypervisors, vmm) else {
            return false;
        };
        let (path, offset) = (vm.console_log(), console_offset(&vm.handles));
        match tokio::task::spawn_blocking(move || console_since(&path, offset)).await {
            Ok(Ok(console)) => driver.console_shows_halt(&console),
            _ => false,
        }
    }

    /// The Image's readiness probe: a console marker printed since the launch, or a TCP
    /// connect to the guest.
    async fn guest_ready(&self, vm: &VmContext) -> bool {
        let Some(image) = &vm.image else { return false };
        if let Some(marker) = &image.readiness.console_marker {
            return self
                .consoles
                .marker_seen(
                    &vm.uid,
                    vm.console_log(),
                    marker,
                    console_offset(&vm.handles),
                )
                .await;
        }
        let (Some(port), Some(lease)) = (image.readiness.tcp_port, &vm.lease) else {
            return false;
        };
        readiness::tcp_ready(
            SocketAddr::from((lease.ip, port)),
            READINESS_CONNECT_TIMEOUT,
        )
        .await
        .is_ok()
    }
}
