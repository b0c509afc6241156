//! The VM's network steps: `ensure-tap`, `remove-tap`, `ensure-nat`, `remove-nat`,
//! through [`crate::host::net::vm`].

use super::LinuxRuntime;
use crate::host::names::{self, ObjectUid};
use crate::host::net::vm::{ensure_vm_nat, ensure_vm_tap, remove_vm_nat, remove_vm_tap};
use crate::runtime::{RuntimeError, VmContext, VmHandles, VmStep};

impl LinuxRuntime {
    /// `ensure-tap`: forwarding, the bridge, and the VM's tap attached to it.
    pub(super) async fn ensure_tap(
        &self,
        vm: &VmContext,
        uid: &ObjectUid,
        mut handles: VmHandles,
    ) -> Result<VmHandles, RuntimeError> {
        let tap = ensure_vm_tap(&self.netlink, &self.config.bridge, uid)
            .await
            .map_err(|e| Self::step_error(vm, VmStep::EnsureTap, e))?;
        handles.tap = Some(tap.name);
        Ok(handles)
    }

    /// `remove-tap`: deletes the VM's tap (idempotent).
    pub(super) async fn remove_tap(
        &self,
        vm: &VmContext,
        uid: &ObjectUid,
        mut handles: VmHandles,
    ) -> Result<VmHandles, RuntimeError> {
        remove_vm_tap(&self.netlink, uid)
            .await
            .map_err(|e| Self::step_error(vm, VmStep::RemoveTap, e))?;
        handles.tap = None;
        Ok(handles)
    }

    /// `ensure-nat`: the VM's masquerade rule for its leased address.
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
        let rule = ensure_vm_nat(&self.nft, &self.config.bridge, uid, lease.ip)
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
        remove_vm_nat(&self.nft, uid)
            .await
            .map_err(|e| Self::step_error(vm, VmStep::RemoveNat, e))?;
        handles.nat_rule = None;
        Ok(handles)
    }
}
