//! Builders of spec values for unit tests.

use banger_specs::{
    ByteSize, HypervisorChoice, Kind, NetworkSpec, Object, ObjectMeta, PowerState, Resource,
    RestartPolicy, VmSpec, API_VERSION,
};

const MIB: u64 = 1024 * 1024;

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: name.to_string(),
        ..ObjectMeta::default()
    }
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
        stop_grace_period_seconds: None,
    }
}

/// A VM resource.
pub fn vm_resource(name: &str, image: &str) -> Resource {
    Resource::Vm(Object {
        api_version: API_VERSION.into(),
        kind: Kind::Vm,
        metadata: meta(name),
        spec: vm_spec(image),
    })
}

/// A confinement for driver argv tests: an unprivileged user that need not exist, and
/// no cgroup.
pub fn test_confinement() -> crate::driver::Confinement {
    crate::driver::Confinement {
        user: crate::host::vmm_user::VmmUser {
            name: "banger-vmm".into(),
            uid: 998,
            gid: 997,
        },
        cgroup: None,
    }
}
