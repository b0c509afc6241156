//! The VM's state directory: `ensure-vm-dir` and `remove-vm-dir` (which also removes
//! the VM's cgroup, the one host object that lives as long as the VM and has no step of
//! its own).

use std::os::unix::fs::PermissionsExt;

use super::LinuxRuntime;
use crate::host::names::ObjectUid;
use crate::runtime::{RuntimeError, VmContext, VmHandles, VmStep};

impl LinuxRuntime {
    /// `ensure-vm-dir`: `<state>/vms/<uid>` exists with mode 0700, with no symlink on
    /// the way below the state directory.
    pub(super) async fn ensure_vm_dir(
        &self,
        vm: &VmContext,
        handles: VmHandles,
    ) -> Result<VmHandles, RuntimeError> {
        let step = VmStep::EnsureVmDir;
        let err = |m: String| Self::step_error(vm, step, m);
        self.check_below_state(vm, step, &vm.vm_dir).await?;
        tokio::fs::create_dir_all(&vm.vm_dir)
            .await
            .map_err(|e| err(format!("create {}: {e}", vm.vm_dir.display())))?;
        tokio::fs::set_permissions(&vm.vm_dir, std::fs::Permissions::from_mode(0o700))
            .await
            .map_err(|e| err(format!("chmod {}: {e}", vm.vm_dir.display())))?;
        Ok(handles)
    }

    /// `remove-vm-dir`: removes the directory and everything left in it (idempotent),
    /// and the VM's cgroup (left behind when its VMM exited on its own), and forgets the
    /// files the handles named there.
    pub(super) async fn remove_vm_dir(
        &self,
        vm: &VmContext,
        uid: &ObjectUid,
        mut handles: VmHandles,
    ) -> Result<VmHandles, RuntimeError> {
        let step = VmStep::RemoveVmDir;
        self.remove_cgroup(uid)
            .await
            .map_err(|e| Self::step_error(vm, step, e))?;
        self.check_below_state(vm, step, &vm.vm_dir).await?;
        match tokio::fs::remove_dir_all(&vm.vm_dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Self::step_error(
                    vm,
                    step,
                    format!("remove {}: {e}", vm.vm_dir.display()),
                ))
            }
        }
        handles.extra.clear();
        self.consoles.forget(&vm.uid);
        self.nat_reads.forget(&vm.uid);
        Ok(handles)
    }
}
