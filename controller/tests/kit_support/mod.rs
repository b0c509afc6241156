//! Test support: the guest kit (`scripts/guest-kit.sh`), the specs of a small QEMU VM
//! booting it, and a Linux runtime with default settings to run it on.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_controller::driver::DriverConfig;
use banger_controller::host::kvm::Accel;
use banger_controller::host::net::BridgeConfig;
use banger_controller::runtime::linux::{ImageConfig, LinuxRuntime, LinuxRuntimeConfig};

use banger_specs::{
    ByteSize, GuestMode, HypervisorChoice, ImageSpec, NetworkSpec, PowerState, Readiness,
    RestartPolicy, VmSpec,
};

/// The guest kit's directory: `BANGER_KIT_DIR`, default `<repo>/.cache/guest-kit`.
pub fn kit_dir() -> PathBuf {
    std::env::var_os("BANGER_KIT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/guest-kit"))
}

/// An image of the kit's kernel, initrd and root disk; fails the test when one is missing.
pub fn image_spec(kit: &Path) -> ImageSpec {
    for f in ["vmlinuz", "initrd.img", "rootfs.ext4"] {
        assert!(
            kit.join(f).exists(),
            "guest kit file {} missing: run scripts/guest-kit.sh",
            kit.join(f).display()
        );
    }
    ImageSpec {
        kernel: Some(kit.join("vmlinuz")),
        initrd: Some(kit.join("initrd.img")),
        rootfs: Some(kit.join("rootfs.ext4")),
        oci: None,
        kernel_args: None,
        readiness: Readiness::default(),
        guest: GuestMode::None,
    }
}

/// A running one-vCPU QEMU VM of 256 MiB memory and disk, of the image `kit`.
pub fn vm_spec() -> VmSpec {
    VmSpec {
        image: "kit".into(),
        vcpus: 1,
        memory: ByteSize(256 * 1024 * 1024),
        disk: ByteSize(256 * 1024 * 1024),
        state: PowerState::Running,
        restart_policy: RestartPolicy::Always,
        hypervisor: HypervisorChoice::Qemu,
        network: NetworkSpec::default(),
        kernel_args: None,
        stop_grace_period_seconds: None,
    }
}

/// A Linux runtime on `state_dir` with the default bridge, QEMU from PATH and automatic
/// acceleration. Call it inside the tokio runtime (and network namespace) it serves.
pub fn host_runtime(state_dir: &Path, stop_grace: Duration) -> LinuxRuntime {
    LinuxRuntime::new(LinuxRuntimeConfig {
        state_dir: state_dir.to_path_buf(),
        bridge: BridgeConfig::default(),
        drivers: DriverConfig {
            qemu_bin: None,
            firecracker_bin: None,
            accel: Accel::Auto,
            ..DriverConfig::default()
        },
        stop_grace,
        images: ImageConfig {
            // The kit's directory is laid out as a guest directory: vmlinux,
            // initrd.img and guest-bits/.
            guest_dir: kit_dir(),
            ..ImageConfig::for_state_dir(state_dir)
        },
        vmm_user: banger_controller::host::vmm_user::DEFAULT_VMM_USER.into(),
    })
    .unwrap()
}
