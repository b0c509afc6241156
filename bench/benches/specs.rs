//! Criterion benches of the spec language's hot pure functions: decoding a realistic
//! multi-document file (what every rescan of the specs directory and every apply
//! does), and the canonical form and spec hash (what every upsert compares).
//! `cargo bench -p banger-bench --bench specs`.

// A bench's setup failing is a broken bench: panicking says so.
#![allow(clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::path::Path;

use banger_specs::canonical::canonical_json;
use banger_specs::load::parse_document_set;
use criterion::{criterion_group, criterion_main, Criterion};

/// An Image, three VMs and a Workspace, commented as people write them.
const FILE: &str = r#"# yaml-language-server: $schema=../schemas/image.json
apiVersion: banger.dev/v1alpha1
kind: Image
metadata:
  name: base
  labels:
    origin: guest-kit
spec:
  kernel: ../.cache/guest-kit/vmlinuz
  initrd: ../.cache/guest-kit/initrd.img
  rootfs: ../.cache/guest-kit/rootfs.ext4
  kernelArgs: console=ttyS0 panic=-1
  readiness:
    tcpPort: 22
---
# A development VM.
apiVersion: banger.dev/v1alpha1
kind: VM
metadata:
  name: dev
  labels: {role: dev, team: infra}
  annotations:
    banger.dev/allow-recreate: "true"
spec:
  image: base
  vcpus: 2
  memory: 1GiB
  disk: 4GiB
  state: Running
  restartPolicy: Always
  network:
    nat: true
---
apiVersion: banger.dev/v1alpha1
kind: VM
metadata:
  name: ci
  labels:
    role: ci
  annotations:
    banger.dev/on-remove: Delete
spec:
  image: base
  memory: 256Mi
  disk: 1Gi
  restartPolicy: OnFailure
  hypervisor: auto
  network: {nat: false, ip: "172.30.0.20"}
---
apiVersion: banger.dev/v1alpha1
kind: VM
metadata:
  name: db
spec:
  image: base
  vcpus: 4
  memory: 2G
  disk: 8G
  kernelArgs: quiet loglevel=3
---
apiVersion: banger.dev/v1alpha1
kind: Workspace
metadata:
  name: src
spec:
  vm: dev
  source: ..
  include: untracked
"#;

fn decode(c: &mut Criterion) {
    let load = parse_document_set(FILE.as_bytes(), "specs.yaml", Path::new("/srv/specs"));
    assert!(load.problems.is_empty(), "{:?}", load.problems);
    assert_eq!(load.objects.len(), 5);
    c.bench_function("parse_document_set/5-documents", |b| {
        b.iter(|| {
            parse_document_set(
                black_box(FILE.as_bytes()),
                "specs.yaml",
                Path::new("/srv/specs"),
            )
        })
    });
}

fn canonical(c: &mut Criterion) {
    let load = parse_document_set(FILE.as_bytes(), "specs.yaml", Path::new("/srv/specs"));
    let vm = &load.objects[1].resource;
    assert_eq!(vm.spec_hash().len(), 64);
    c.bench_function("spec_hash/vm", |b| b.iter(|| black_box(vm).spec_hash()));
    c.bench_function("canonical_json/vm-document", |b| {
        b.iter(|| canonical_json(&black_box(vm).to_json()))
    });
}

criterion_group!(benches, decode, canonical);
criterion_main!(benches);
