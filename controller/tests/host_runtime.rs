//! The Linux runtime against the real host: every step of a VM's life on a real QEMU
//! guest from the guest kit, inside a network namespace the test creates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kit_support;
mod netns_support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use banger_controller::host::names::{self, ObjectUid};
use banger_controller::runtime::{
    ImageContext, Lease, ProcessState, VmContext, VmHandles, VmRuntime, VmStep,
};
use kit_support::{host_runtime, image_spec, kit_dir, vm_spec};
use netns_support::TestNetns;

#[test]
#[ignore = "needs root (network namespaces, taps, nftables), QEMU and the guest kit"]
fn a_vm_lives_and_dies_on_the_host_runtime() {
    let kit = kit_dir();
    let ns = TestNetns::new();
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().to_path_buf();
    let ns_name = ns.name.clone();
    ns.run(move || async move {
        let runtime = host_runtime(&state_dir, Duration::from_secs(10));
        let (tx, mut exits) = tokio::sync::mpsc::unbounded_channel();
        runtime.set_exit_notifier(tx);

        let image = runtime
            .resolve_image(&ImageContext {
                uid: "feed".into(),
                name: "kit".into(),
                spec: image_spec(&kit),
                image_dir: state_dir.join("images/feed"),
                pin: None,
                progress: Default::default(),
            })
            .await
            .unwrap()
            .boot;

        let uid = "0123456789abcdef0123456789abcdef".to_string();
        let object_uid = ObjectUid::parse(&uid).unwrap();
        let mut vm = VmContext {
            uid: uid.clone(),
            name: "hostrt".into(),
            spec: vm_spec(),
            image: Some(image),
            vm_dir: state_dir.join("vms").join(&uid),
            lease: Some(Lease {
                ip: Ipv4Addr::new(172, 30, 0, 2),
                mac: names::mac_address(&object_uid),
                gateway: Ipv4Addr::new(172, 30, 0, 1),
                prefix: 24,
            }),
            bridge: "banger0".into(),
            deleting: false,
            handles: VmHandles::default(),
        };
        let before = runtime.observe(&vm).await;
        assert_eq!(before.process, ProcessState::Absent);
        assert!(before.disk.is_none() && before.tap.is_none() && !before.nat && !before.vm_dir);

        for step in [
            VmStep::EnsureVmDir,
            VmStep::PrepareDisk,
            VmStep::EnsureTap,
            VmStep::EnsureNat,
            VmStep::Launch,
        ] {
            vm.handles = runtime.execute(step, &vm).await.unwrap();
            // Idempotent: running a step twice is running it once (not for Launch).
            if step != VmStep::Launch {
                assert_eq!(
                    runtime.execute(step, &vm).await.unwrap(),
                    vm.handles,
                    "{step:?}"
                );
            }
        }
        let pid = vm.handles.process.as_ref().unwrap().pid;

        // The guest comes up: GuestReady by TCP connect to its SSH port.
        let deadline = Instant::now() + Duration::from_secs(120);
        let observed = loop {
            let o = runtime.observe(&vm).await;
            if o.guest_ready || Instant::now() > deadline {
                break o;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert!(
            observed.guest_ready,
            "guest never became ready: {observed:?}"
        );
        assert!(matches!(observed.process, ProcessState::Running { .. }));
        let disk = observed.disk.as_ref().unwrap();
        assert_eq!(disk.image, "kit");
        assert_eq!(disk.size, 256 * 1024 * 1024);
        assert!(observed.tap.as_ref().unwrap().attached);
        assert!(observed.nat);
        // The kit prints its marker once dropbear listens: the TCP probe can win that
        // race, so wait (bounded) for the line to reach the console log.
        let deadline = Instant::now() + Duration::from_secs(30);
        let console = loop {
            let console = std::fs::read_to_string(vm.console_log()).unwrap();
            if console.contains("BANGER-GUEST-READY") || Instant::now() > deadline {
                break console;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(console.contains("BANGER-GUEST-READY"), "{console}");

        // Shutdown: the guest powers off, the process goes, the exit is reported.
        vm.handles = runtime.execute(VmStep::Shutdown, &vm).await.unwrap();
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists() || {
                // a zombie awaiting its reaper is gone for every purpose but /proc
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| s.contains(") Z"))
                    .unwrap_or(true)
            }
        );
        let notice = tokio::time::timeout(Duration::from_secs(10), exits.recv()).await;
        assert_eq!(notice.unwrap().unwrap().uid, uid);
        let stopped = runtime.observe(&vm).await;
        assert_eq!(stopped.process, ProcessState::Absent);
        assert!(stopped.disk.is_some(), "disk kept while stopped");

        for step in [
            VmStep::RemoveNat,
            VmStep::RemoveTap,
            VmStep::RemoveDisk,
            VmStep::RemoveVmDir,
        ] {
            vm.handles = runtime.execute(step, &vm).await.unwrap();
            runtime.execute(step, &vm).await.unwrap();
        }
        let after = runtime.observe(&vm).await;
        assert_eq!(after.process, ProcessState::Absent);
        assert!(after.disk.is_none() && after.tap.is_none() && !after.nat && !after.vm_dir);
        assert!(!vm.vm_dir.exists());
    });
    let links = std::process::Command::new("ip")
        .args(["-n", &ns_name, "-o", "link"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&links.stdout).contains("bgt"));
}
