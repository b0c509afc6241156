//! Criterion benches of the planner, the pure function every reconcile runs:
//! `plan_vm` for a converged VM (what each of a resync's reconciles plans, 1,000 times
//! for P2's fleet) and for a VM that does not exist yet (what an apply of a new VM
//! plans). `cargo bench -p banger-bench --bench planner`.

// A bench's setup failing is a broken bench: panicking says so.
#![allow(clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use banger_controller::planner::{plan_vm, DesiredVm};
use banger_controller::runtime::{
    LaunchConfig, ObservedDisk, ObservedFilter, ObservedTap, ObservedVm, ProcessState,
    ResolvedImage,
};
use banger_specs::load::parse_document_set;
use banger_specs::{Readiness, Resource, VmSpec};
use criterion::{criterion_group, criterion_main, Criterion};

const VM: &str = "\
apiVersion: banger.dev/v1alpha1
kind: VM
metadata:
  name: dev
spec:
  image: base
  vcpus: 2
  memory: 1GiB
  disk: 4GiB
  network:
    nat: true
  kernelArgs: quiet
";

fn vm_spec() -> VmSpec {
    let load = parse_document_set(VM.as_bytes(), "dev.yaml", Path::new("/specs"));
    assert!(load.problems.is_empty(), "{:?}", load.problems);
    match &load.objects[0].resource {
        Resource::Vm(vm) => vm.spec.clone(),
        other => panic!("not a VM: {other:?}"),
    }
}

fn image() -> ResolvedImage {
    ResolvedImage {
        kernel: PathBuf::from("/kit/vmlinuz"),
        initrd: Some(PathBuf::from("/kit/initrd.img")),
        rootfs: PathBuf::from("/kit/rootfs.ext4"),
        kernel_args: Some("console=ttyS0".into()),
        readiness: Readiness::default(),
        rootfs_digest: "ab".repeat(32),
    }
}

fn plans(c: &mut Criterion) {
    let spec = vm_spec();
    let image = image();
    let ip = Ipv4Addr::new(172, 30, 0, 2);
    let desired = DesiredVm {
        spec: &spec,
        image: Some(&image),
        deleting: false,
        allow_recreate: false,
        crash_backoff: false,
        ip: Some(ip),
    };
    let converged = ObservedVm {
        process: ProcessState::Running {
            launched: LaunchConfig::desired(&spec, &image, Some(ip)),
        },
        disk: Some(ObservedDisk {
            image: spec.image.clone(),
            digest: image.rootfs_digest.clone(),
            size: spec.disk.0,
            id: Some("0123456789abcdef".into()),
        }),
        tap: Some(ObservedTap {
            name: "bgt0123456789ab".into(),
            attached: true,
            filter: Some(ObservedFilter {
                ip,
                isolated: spec.network.isolated,
            }),
        }),
        nat: spec.network.nat,
        guest_ready: true,
        vm_dir: true,
    };
    assert!(plan_vm(&desired, &converged).is_converged());
    c.bench_function("plan_vm/converged", |b| {
        b.iter(|| plan_vm(black_box(&desired), black_box(&converged)))
    });

    let fresh = ObservedVm::nothing();
    assert!(!plan_vm(&desired, &fresh).steps.is_empty());
    c.bench_function("plan_vm/fresh", |b| {
        b.iter(|| plan_vm(black_box(&desired), black_box(&fresh)))
    });
}

criterion_group!(benches, plans);
criterion_main!(benches);
