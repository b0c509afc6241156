//! Builders of spec values for unit tests.

use banger_specs::{
    ByteSize, HypervisorChoice, ImageSpec, Kind, NetworkSpec, Object, ObjectMeta, PowerState, Readiness, Resource,
    RestartPolicy, VmSpec, WorkspaceSpec, API_VERSION,
};

const MIB: u64 = 1024 * 1024;

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta { name: name.to_string(), ..ObjectMeta::default() }
}

/// A canonical VM spec.
pub fn vm_spec(image: &str) -> VmSpec {
    VmSpec {
        image: image.into(),
        vcpus: 1,
        memory: ByteSize(512 * MIB),
        disk: ByteSize(2048 * MIB),
        state: PowerState::Running,
        restart_policy: RestartPolicy::Always,
        hypervisor: HypervisorChoice::Auto,
        network: NetworkSpec::default(),
        kernel_args: None,
    }
}

/// A VM resource.
pub fn vm_resource(name: &str, image: &str) -> Resource {
    Resource::Vm(Object { api_version: API_VERSION.into(), kind: Kind::Vm, metadata: meta(name), spec: vm_spec(image) })
}

/// An Image resource.
pub fn image_resource(name: &str) -> Resource {
    Resource::Image(Object {
        api_version: API_VERSION.into(),
        kind: Kind::Image,
        metadata: meta(name),
        spec: ImageSpec {
            kernel: format!("/images/{name}/vmlinuz").into(),
            initrd: None,
            rootfs: Some(format!("/images/{name}/rootfs.ext4").into()),
            oci: None,
            kernel_args: None,
            readiness: Readiness::default(),
        },
    })
}

/// A Workspace resource.
pub fn workspace_resource(name: &str, vm: &str) -> Resource {
    Resource::Workspace(Object {
        api_version: API_VERSION.into(),
        kind: Kind::Workspace,
        metadata: meta(name),
        spec: WorkspaceSpec { vm: vm.into(), source: "/src/repo".into(), path: "/root/repo".into(), include: Default::default() },
    })
}
