//! The VMM process: `launch` and `shutdown` through the VM's hypervisor driver, and the
//! pidfd watch that reports a VMM's exit to the engine.
//!
//! Which files a VMM keeps in the VM directory, which kernel arguments its guests need
//! and which driver stops a recorded process are the driver's to say
//! ([`crate::driver::Hypervisor`]); nothing here names a hypervisor.

use std::sync::Arc;
use std::time::Duration;

use super::{driver_of, LinuxRuntime};
use crate::driver::{Confinement, Hypervisor, LaunchSpec, VmmProcess};
use crate::host::cgroup::VmCgroup;
use crate::host::disk;
use crate::host::garbage;
use crate::host::names::{self, ObjectUid};
use crate::host::net::cidr::kernel_ip_arg;
use crate::host::process::{self, ProcessIdentity};
use crate::host::readiness::console_len;
use crate::runtime::{
    ExitNotice, LaunchConfig, ResolvedImage, RuntimeError, VmContext, VmHandles, VmStep,
};

/// Key in [`VmHandles::extra`]: console log length when the current VMM was launched, so
/// readiness and halt markers of earlier boots are ignored.
pub(super) const CONSOLE_OFFSET: &str = "consoleOffset";
/// Key in [`VmHandles::extra`]: the VMM's own log file (its stdout/stderr or logger).
const VMM_LOG: &str = "vmmLog";
/// Key in [`VmHandles::extra`]: the VMM's pid file, where the hypervisor writes one.
const PID_FILE: &str = "pidFile";
/// Key in [`VmHandles::extra`]: the VM's cgroup directories, while its VMM runs.
const CGROUP: &str = "cgroup";
/// Key in [`VmHandles::extra`]: the user the VMM runs as.
const VMM_USER: &str = "vmmUser";
/// How often, and how far apart, removing a cgroup whose VMM just exited is tried.
const CGROUP_REMOVE_ATTEMPTS: u32 = 20;
const CGROUP_REMOVE_PAUSE: Duration = Duration::from_millis(50);
/// Kernel command line every guest gets before the hypervisor's, image's and VM's
/// arguments.
const BASE_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 root=/dev/vda rw";
/// How long a VMM the handles did not name gets after SIGTERM, then after SIGKILL.
const STRAY_TERM_GRACE: Duration = Duration::from_secs(3);
const STRAY_KILL_GRACE: Duration = Duration::from_secs(5);

impl LinuxRuntime {
    /// `launch`: resolves the VM's hypervisor, boots the guest with its driver, watches
    /// the VMM's exit, and records the process, the launch configuration, the console
    /// offset and every file the VMM keeps (so `describe` lists them all).
    pub(super) async fn launch(
        &self,
        vm: &VmContext,
        uid: &ObjectUid,
        mut handles: VmHandles,
    ) -> Result<VmHandles, RuntimeError> {
        let err = |m: String| Self::step_error(vm, VmStep::Launch, m);
        let image = vm
            .image
            .as_ref()
            .ok_or_else(|| err("its Image is not resolved".into()))?;
        let lease = vm
            .lease
            .as_ref()
            .ok_or_else(|| err("it has no IP lease".into()))?;
        let kind = self
            .hypervisors
            .resolve(vm.spec.hypervisor)
            .ok_or_else(|| err("no hypervisor is configured".into()))?;
        let driver = self
            .hypervisors
            .for_launch(kind, &vm.name)
            .map_err(|e| err(e.to_string()))?;
        let console_log = vm.console_log();
        let path = console_log.clone();
        let console_offset = tokio::task::spawn_blocking(move || console_len(&path))
            .await
            .map_err(|e| err(e.to_string()))?
            .unwrap_or(0);
        let ip_arg = kernel_ip_arg(lease.ip, self.config.bridge.cidr(), None);
        let spec = LaunchSpec {
            uid: vm.uid.clone(),
            name: vm.name.clone(),
            vcpus: vm.spec.vcpus,
            memory_mib: vm.spec.memory.mib(),
            kernel: image.kernel.clone(),
            initrd: image.initrd.clone(),
            cmdline: kernel_cmdline(vm, image, driver.kernel_args(), &ip_arg),
            root_disk: disk::root_disk_path(&vm.vm_dir),
            tap: Some(names::tap_name(uid)),
            mac: lease.mac.clone(),
            vm_dir: vm.vm_dir.clone(),
            console_log,
            confinement: Confinement {
                user: self.vmm_user.clone().map_err(&err)?,
                cgroup: Some(self.vm_cgroup(uid).map_err(&err)?),
            },
        };
        let vmm = match driver.launch(&spec).await {
            Ok(vmm) => vmm,
            Err(e) => {
                // A failed launch leaves no process: leave no cgroup either.
                let removed = self.remove_cgroup(uid).await;
                let note = removed.map_or_else(|r| format!(" (and {r})"), |()| String::new());
                return Err(err(format!("{e}{note}")));
            }
        };
        self.watch(&vm.uid, &vmm);
        handles
            .extra
            .insert(CONSOLE_OFFSET.into(), console_offset.to_string());
        let files = driver.vm_files(&vm.vm_dir, &vm.uid);
        handles
            .extra
            .insert(VMM_LOG.into(), files.log.display().to_string());
        match files.pid_file {
            Some(p) => handles
                .extra
                .insert(PID_FILE.into(), p.display().to_string()),
            None => handles.extra.remove(PID_FILE),
        };
        if let Some(cgroup) = &spec.confinement.cgroup {
            let dirs: Vec<String> = cgroup
                .dirs()
                .iter()
                .map(|d| d.display().to_string())
                .collect();
            handles.extra.insert(CGROUP.into(), dirs.join(" "));
        }
        handles
            .extra
            .insert(VMM_USER.into(), spec.confinement.user.name.clone());
        handles.process = Some(vmm);
        handles.launched = Some(LaunchConfig::desired(&vm.spec, image, Some(lease.ip)));
        Ok(handles)
    }

    /// `shutdown`: stops the recorded VMM with its driver (graceful for
    /// [`VmContext::stop_grace`], then forced), then any VMM of this daemon still
    /// carrying the VM's uid marker as a whole argument (a launch interrupted before its
    /// handles were recorded; gc's rule, [`garbage::find_vmms_of`]).
    pub(super) async fn shutdown(
        &self,
        vm: &VmContext,
        mut handles: VmHandles,
    ) -> Result<VmHandles, RuntimeError> {
        let step = VmStep::Shutdown;
        if let Some(vmm) = &handles.process {
            let driver =
                driver_of(&self.hypervisors, vmm).map_err(|e| Self::step_error(vm, step, e))?;
            driver
                .shutdown(vmm, &vm.uid, vm.stop_grace(self.config.stop_grace))
                .await
                .map_err(|e| Self::step_error(vm, step, e))?;
        }
        let marker = process::uid_marker(&vm.uid);
        let uid = ObjectUid::parse(&vm.uid).map_err(|e| Self::step_error(vm, step, e))?;
        for identity in garbage::find_vmms_of(&self.config.state_dir, &uid).await {
            tracing::warn!(vm = %vm.name, pid = identity.pid, "stopping a VMM the handles did not name");
            process::terminate(&identity, &marker, STRAY_TERM_GRACE, STRAY_KILL_GRACE)
                .await
                .map_err(|e| Self::step_error(vm, step, e))?;
        }
        self.stop_vmms_in_cgroup(&uid)
            .await
            .map_err(|e| Self::step_error(vm, step, e))?;
        self.remove_cgroup(&uid)
            .await
            .map_err(|e| Self::step_error(vm, step, e))?;
        handles.process = None;
        handles.launched = None;
        handles.extra.remove(PID_FILE);
        handles.extra.remove(CGROUP);
        Ok(handles)
    }

    /// The cgroup of VM `uid`, or why this host has none.
    pub(super) fn vm_cgroup(&self, uid: &ObjectUid) -> Result<VmCgroup, String> {
        self.cgroups
            .as_ref()
            .map(|layout| layout.vm_cgroup(&self.cgroup_parent, uid))
            .map_err(Clone::clone)
    }

    /// Stops every VMM of VM `uid` still in the VM's cgroup (SIGTERM, then SIGKILL, each
    /// bounded): only banger puts processes there, so whatever carries the VM's uid
    /// marker in it is a VMM of this VM, even one whose command line does not name the
    /// state directory (a jailed Firecracker's does not). A process without the marker
    /// is left alone.
    pub(super) async fn stop_vmms_in_cgroup(&self, uid: &ObjectUid) -> Result<(), String> {
        let Ok(cgroup) = self.vm_cgroup(uid) else {
            return Ok(());
        };
        let identities = tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            for pid in cgroup.pids().map_err(|e| e.to_string())? {
                found.extend(ProcessIdentity::of_pid(pid).map_err(|e| e.to_string())?);
            }
            Ok::<_, String>(found)
        })
        .await
        .map_err(|e| e.to_string())??;
        let marker = process::uid_marker(uid.as_str());
        for identity in identities {
            tracing::warn!(%uid, pid = identity.pid, "stopping a VMM left in the VM's cgroup");
            process::terminate(&identity, &marker, STRAY_TERM_GRACE, STRAY_KILL_GRACE)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Removes the cgroup of VM `uid` once its VMM is gone (idempotent; nothing to do on a
    /// host without cgroups). A VMM that has just exited may be listed for a moment
    /// longer, so a busy cgroup is tried again, a bounded number of times.
    pub(super) async fn remove_cgroup(&self, uid: &ObjectUid) -> Result<(), String> {
        let Ok(cgroup) = self.vm_cgroup(uid) else {
            return Ok(());
        };
        let mut last = String::new();
        for _ in 0..CGROUP_REMOVE_ATTEMPTS {
            let attempt = cgroup.clone();
            match tokio::task::spawn_blocking(move || attempt.remove()).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => last = e.to_string(),
                Err(e) => return Err(format!("remove cgroup {}: {e}", cgroup.leaf())),
            }
            tokio::time::sleep(CGROUP_REMOVE_PAUSE).await;
        }
        Err(format!("cannot remove cgroup: {last}"))
    }

    /// Watches a VMM for its exit (once per process) and reports it to the engine.
    pub(super) fn watch(&self, uid: &str, vmm: &VmmProcess) {
        let identity = ProcessIdentity {
            pid: vmm.pid,
            start_time: vmm.start_time,
        };
        {
            let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
            if !watched.insert(identity) {
                return;
            }
        }
        let marker = process::uid_marker(uid);
        let exited = match process::watch_exit(&identity, &marker) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(uid, pid = vmm.pid, error = %e, "cannot watch VMM exit");
                self.unwatch(&identity);
                return;
            }
        };
        let notifier = Arc::clone(&self.notifier);
        let watched = Arc::clone(&self.watched);
        let uid = uid.to_string();
        tokio::spawn(async move {
            exited.await;
            watched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&identity);
            tracing::info!(uid, pid = identity.pid, "VMM exited");
            if let Some(n) = notifier.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                let _ = n.send(ExitNotice { uid });
            }
        });
    }

    fn unwatch(&self, identity: &ProcessIdentity) {
        self.watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(identity);
    }
}

/// The guest kernel command line: banger's base, the hypervisor's own arguments, the
/// address, the VM's name, then the image's and the VM's own arguments (later
/// arguments win in the guest).
fn kernel_cmdline(
    vm: &VmContext,
    image: &ResolvedImage,
    hypervisor_args: &[&str],
    ip_arg: &str,
) -> String {
    let mut parts = vec![BASE_CMDLINE.to_string()];
    parts.extend(hypervisor_args.iter().map(|a| a.to_string()));
    parts.push(ip_arg.to_string());
    parts.push(format!("banger.name={}", vm.name));
    parts.extend(image.kernel_args.iter().cloned());
    parts.extend(vm.spec.kernel_args.iter().cloned());
    parts.join(" ")
}

/// Where the console log ended when the current VMM was launched.
pub(super) fn console_offset(handles: &VmHandles) -> u64 {
    handles
        .extra
        .get(CONSOLE_OFFSET)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::firecracker::FirecrackerDriver;
    use crate::driver::qemu::{QemuDriver, QemuOptions};
    use crate::host::kvm::ResolvedAccel;
    use crate::runtime::Lease;
    use banger_specs::{
        ByteSize, HypervisorChoice, NetworkSpec, PowerState, Readiness, RestartPolicy, VmSpec,
    };

    fn vm() -> (VmContext, ResolvedImage) {
        let image = ResolvedImage {
            kernel: "/img/vmlinux".into(),
            initrd: None,
            rootfs: "/img/rootfs.ext4".into(),
            kernel_args: Some("quiet".into()),
            readiness: Readiness::default(),
            rootfs_digest: "d".into(),
        };
        let vm = VmContext {
            uid: "0123abcd".into(),
            name: "web".into(),
            spec: VmSpec {
                image: "base".into(),
                vcpus: 1,
                memory: ByteSize(256 << 20),
                disk: ByteSize(256 << 20),
                state: PowerState::Running,
                restart_policy: RestartPolicy::Always,
                hypervisor: HypervisorChoice::Auto,
                network: NetworkSpec::default(),
                kernel_args: Some("debug".into()),
                stop_grace_period_seconds: None,
            },
            image: Some(image.clone()),
            vm_dir: "/state/vms/0123abcd".into(),
            lease: Some(Lease {
                ip: "172.30.0.2".parse().unwrap(),
                mac: "02:00:00:00:00:01".into(),
                gateway: "172.30.0.1".parse().unwrap(),
                prefix: 24,
            }),
            bridge: "banger0".into(),
            deleting: false,
            handles: VmHandles::default(),
        };
        (vm, image)
    }

    #[test]
    fn the_hypervisor_adds_its_own_kernel_arguments() {
        let (vm, image) = vm();
        let ip = "ip=172.30.0.2::172.30.0.1:255.255.255.0::eth0:off";
        let firecracker = FirecrackerDriver::default();
        assert_eq!(
            kernel_cmdline(&vm, &image, firecracker.kernel_args(), ip),
            format!("{BASE_CMDLINE} pci=off {ip} banger.name=web quiet debug")
        );
        let qemu = QemuDriver::new(QemuOptions::new("qemu", ResolvedAccel::Tcg));
        assert_eq!(
            kernel_cmdline(&vm, &image, qemu.kernel_args(), ip),
            format!("{BASE_CMDLINE} {ip} banger.name=web quiet debug")
        );
    }

    #[test]
    fn a_delete_gives_no_grace_and_a_stop_the_spec_s_or_the_daemon_s() {
        let default = Duration::from_secs(15);
        let (mut vm, _) = vm();
        assert_eq!(vm.stop_grace(default), default);
        vm.spec.stop_grace_period_seconds = Some(40);
        assert_eq!(vm.stop_grace(default), Duration::from_secs(40));
        vm.spec.stop_grace_period_seconds = Some(0);
        assert_eq!(vm.stop_grace(default), Duration::ZERO);
        vm.spec.stop_grace_period_seconds = Some(40);
        vm.deleting = true;
        assert_eq!(vm.stop_grace(default), Duration::ZERO);
    }

    #[test]
    fn console_offset_reads_the_recorded_launch() {
        let mut handles = VmHandles::default();
        assert_eq!(console_offset(&handles), 0);
        handles.extra.insert(CONSOLE_OFFSET.into(), "42".into());
        assert_eq!(console_offset(&handles), 42);
    }
}
