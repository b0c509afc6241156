//! The VM's network steps: `ensure-tap` (the tap and its guest filter), `remove-tap`,
//! `ensure-nat`, `remove-nat`, through [`crate::host::net::vm`].

use std::time::Instant;

use super::LinuxRuntime;
use crate::host::names::{self, ObjectUid};
use crate::host::net::guest_filter::GuestFilter;
use crate::host::net::neighbour::{forget_guest_neighbour, prime_guest_neighbour};
use crate::host::net::vm::{
    ensure_vm_filter, ensure_vm_nat, ensure_vm_tap, remove_vm_filter, remove_vm_nat, remove_vm_tap,
};
use crate::runtime::{RuntimeError, VmContext, VmHandles, VmStep};

/// Key in [`VmHandles::extra`]: what the VM's guest filter enforces (for `describe`).
const GUEST_FILTER: &str = "guestFilter";

impl LinuxRuntime {
    /// `ensure-tap`: forwarding, the bridge and the VM's tap attached to it, and at the
    /// same time the tap's guest filter for the VM's leased address and
    /// `network.isolated`; then the host's neighbour entry for the guest (a hint,
    /// [`crate::host::net::neighbour`]).
    pub(super) async fn ensure_tap(
        &self,
        vm: &VmContext,
        uid: &ObjectUid,
        mut handles: VmHandles,
    ) -> Result<VmHandles, RuntimeError> {
        let step = VmStep::EnsureTap;
        let lease = vm
            .lease
            .as_ref()
            .ok_or_else(|| Self::step_error(vm, step, "it has no IP lease"))?;
        let filter = GuestFilter {
            uid: uid.clone(),
            ip: lease.ip,
            isolated: vm.spec.network.isolated,
        };
        // The tap (netlink) and its filter (`nft` processes) at once: the filter's rules
        // name the tap (`iifname`), they do not need it to exist, and no guest frame
        // can cross a tap before its VMM runs.
        let (tap, enforced) = tokio::join!(
            ensure_vm_tap(&self.netlink, &self.config.bridge, uid),
            ensure_vm_filter(&self.nft, &self.config.bridge, &filter),
        );
        let tap = tap.map_err(|e| Self::step_error(vm, step, e))?;
        handles.tap = Some(tap.name);
        let enforced = enforced.map_err(|e| Self::step_error(vm, step, e))?;
        let mac = names::mac_bytes(uid);
        let primed = prime_guest_neighbour(&self.netlink, &self.config.bridge, lease.ip, mac).await;
        if let Err(e) = primed {
            tracing::debug!(%uid, error = %e, "cannot set the guest's neighbour entry");
        }
        handles.extra.insert(
            GUEST_FILTER.into(),
            format!(
                "table bridge {} comment {}: source {}{}",
                names::NFT_TABLE,
                names::nat_rule_comment(uid),
                enforced.ip,
                if enforced.isolated {
                    ", isolated"
                } else {
                    ", not isolated"
                }
            ),
        );
        Ok(handles)
    }

    /// `remove-tap`: deletes the VM's guest filter, then its tap (idempotent), and the
    /// host's neighbour entry for its address.
    pub(super) async fn remove_tap(
        &self,
        vm: &VmContext,
        uid: &ObjectUid,
        mut handles: VmHandles,
    ) -> Result<VmHandles, RuntimeError> {
        let step = VmStep::RemoveTap;
        remove_vm_filter(&self.nft, uid)
            .await
            .map_err(|e| Self::step_error(vm, step, e))?;
        handles.extra.remove(GUEST_FILTER);
        remove_vm_tap(&self.netlink, uid)
            .await
            .map_err(|e| Self::step_error(vm, step, e))?;
        handles.tap = None;
        if let Some(lease) = &vm.lease {
            let forgot = forget_guest_neighbour(&self.netlink, &self.config.bridge, lease.ip).await;
            if let Err(e) = forgot {
                tracing::debug!(%uid, error = %e, "cannot drop the guest's neighbour entry");
            }
        }
        Ok(handles)
    }

    /// `ensure-nat`: the VM's masquerade rule for its leased address, written from the
    /// table as this reconcile observed it when that read is fresh.
    pub(super) async fn ensure_nat(
        &self,
        vm: &VmContext,
        uid: &ObjectUid,
        mut handles: VmHandles,
    ) -> Result<VmHandles, RuntimeError> {
        let step = VmStep::EnsureNat;
        let lease = vm
            .lease
            .as_ref()
            .ok_or_else(|| Self::step_error(vm, step, "it has no IP lease"))?;
        // The table as this reconcile's `observe` read it, if it is fresh
        // ([`super::nat_reads`]); else `ensure_vm_nat` reads it.
        let read = self.nat_reads.take_fresh(&vm.uid, Instant::now());
        let rule = ensure_vm_nat(&self.nft, &self.config.bridge, uid, lease.ip, read.as_ref())
            .await
            .map_err(|e| Self::step_error(vm, step, e))?;
        handles.nat_rule = Some(format!(
            "table ip {} handle {} comment {}",
            names::NFT_TABLE,
            rule.handle,
            names::nat_rule_comment(uid)
        ));
        Ok(handles)
    }

    /// `remove-nat`: deletes the VM's masquerade rules (idempotent).
    pub(super) async fn remove_nat(
        &self,
        vm: &VmContext,
        uid: &ObjectUid,
        mut handles: VmHandles,
    ) -> Result<VmHandles, RuntimeError> {
        self.nat_reads.forget(&vm.uid);
        remove_vm_nat(&self.nft, uid)
            .await
            .map_err(|e| Self::step_error(vm, VmStep::RemoveNat, e))?;
        handles.nat_rule = None;
        Ok(handles)
    }
}
