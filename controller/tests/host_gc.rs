//! Garbage collection on the real Linux runtime, inside a network namespace the test
//! creates: planted objects of unknown uids (a tap and its guest filter, a NAT rule, a
//! VM directory, a stray VMM-like process carrying the marker and the state dir) are
//! listed and removed; a known VM's real QEMU VMM, tap, NAT rule and directory stay; a process
//! carrying a marker but another state dir is left alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kit_support;
mod netns_support;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use banger_controller::host::cgroup::{daemon_parent, CgroupLayout, CgroupLimits};
use banger_controller::host::names::{self, ObjectUid};
use banger_controller::host::process;
use banger_controller::runtime::{
    Garbage, GarbageKind, ImageContext, Lease, ProcessState, ResolvedImage, VmContext, VmHandles,
    VmRuntime, VmStep,
};
use kit_support::{host_runtime, image_spec, kit_dir, vm_spec};
use netns_support::TestNetns;

const KNOWN: &str = "c0ffee00c0ffee00c0ffee00c0ffee00";
const GHOST: &str = "dead0000dead0000dead0000dead0000";
const OTHER_DAEMONS: &str = "beef0000beef0000beef0000beef0000";
/// A ghost whose only leftover is its cgroup, with a VMM-like process in it.
const CAGED: &str = "ca9e0000ca9e0000ca9e0000ca9e0000";
/// A tap named like banger's that no uid here derives to.
const STRAY_TAP: &str = "bgt0123456789ab";

fn vm(uid: &str, name: &str, ip: u8, state_dir: &Path, image: &ResolvedImage) -> VmContext {
    let object_uid = ObjectUid::parse(uid).unwrap();
    VmContext {
        uid: uid.to_string(),
        name: name.to_string(),
        spec: vm_spec(),
        image: Some(image.clone()),
        vm_dir: state_dir.join("vms").join(uid),
        lease: Some(Lease {
            ip: Ipv4Addr::new(172, 30, 0, ip),
            mac: names::mac_address(&object_uid),
            gateway: Ipv4Addr::new(172, 30, 0, 1),
            prefix: 24,
        }),
        bridge: "banger0".into(),
        deleting: false,
        handles: VmHandles::default(),
    }
}

/// `sh -c 'read line' banger-<uid> <dir>`: a process whose command line carries the
/// marker of `uid` and mentions `dir`. It waits on its stdin (a pipe the test holds)
/// with a shell builtin, so it never forks a child that would briefly carry the same
/// command line.
///
/// Returns once the child has exec'd: right after fork it still shows the test's own
/// command line, and a scan in that window would not see the marker.
fn marked_process(uid: &str, dir: &Path) -> Child {
    let marker = format!("banger-{uid}");
    let child = Command::new("sh")
        .arg("-c")
        .arg("read line")
        .arg(&marker)
        .arg(dir)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let cmdline = format!("/proc/{}/cmdline", child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read(&cmdline)
        .map(|c| String::from_utf8_lossy(&c).contains(&marker))
        .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "{marker} never exec'd");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

fn exited_within(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kinds_and_names(items: &[Garbage]) -> BTreeSet<(GarbageKind, String)> {
    items.iter().map(|g| (g.kind, g.name.clone())).collect()
}

#[test]
#[ignore = "needs root (network namespaces, taps, nftables), QEMU and the guest kit"]
fn gc_removes_exactly_the_planted_objects() {
    let kit = kit_dir();
    let ns = TestNetns::new();
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().join("state");
    std::fs::create_dir_all(&state_dir).unwrap();
    // A planted tap, made from outside with iproute2 (not through banger's code).
    ns.ip(&["tuntap", "add", "dev", STRAY_TAP, "mode", "tap"]);
    ns.run(move || async move {
        let runtime = host_runtime(&state_dir, Duration::from_secs(10));
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

        // The known VM: a real QEMU VMM with its disk, tap, NAT rule and directory.
        let mut known = vm(KNOWN, "known", 2, &state_dir, &image);
        for step in [
            VmStep::EnsureVmDir,
            VmStep::PrepareDisk,
            VmStep::EnsureTap,
            VmStep::EnsureNat,
            VmStep::Launch,
        ] {
            known.handles = runtime.execute(step, &known).await.unwrap();
        }
        let known_pid = known.handles.process.as_ref().unwrap().pid;

        // A ghost: a VM whose record is gone, leaving its directory, tap and NAT rule.
        let ghost = vm(GHOST, "ghost", 3, &state_dir, &image);
        for step in [VmStep::EnsureVmDir, VmStep::EnsureTap, VmStep::EnsureNat] {
            runtime.execute(step, &ghost).await.unwrap();
        }
        std::fs::write(ghost.vm_dir.join("console.log"), b"old boot\n").unwrap();
        // The ghost's stray VMM, and one of another daemon (another state dir).
        let mut stray = marked_process(GHOST, &state_dir);
        let other_state = PathBuf::from(format!("{}-other", state_dir.display()));
        let mut foreign = marked_process(OTHER_DAEMONS, &other_state);

        // A VMM left in the cgroup of another ghost, whose command line does not name
        // the state directory (as a jailed Firecracker's does not): found by its cgroup.
        let layout = CgroupLayout::detect().unwrap();
        let caged_uid = ObjectUid::parse(CAGED).unwrap();
        let caged_cgroup = layout.vm_cgroup(&daemon_parent(&state_dir), &caged_uid);
        caged_cgroup
            .ensure(&CgroupLimits::for_vm(128, 1, 0))
            .unwrap();
        let caged_dir = tempfile::tempdir().unwrap();
        let marker = process::uid_marker(CAGED);
        let caged = process::spawn_detached(
            &process::DetachedCommand {
                // One process that never forks, the marker a whole argument (tail
                // complains that no such file exists, and follows /dev/null).
                program: "tail".into(),
                args: vec!["-f".into(), "/dev/null".into(), marker.clone().into()],
                output_log: caged_dir.path().join("out.log"),
                cwd: caged_dir.path().to_path_buf(),
                marker: marker.clone(),
                credentials: None,
                cgroup_join_files: caged_cgroup.join_files(),
            },
            &[],
        )
        .unwrap();

        let known_uids: BTreeSet<String> = [KNOWN.to_string()].into_iter().collect();
        let found = runtime.find_garbage(&known_uids).await;
        let ghost_uid = ObjectUid::parse(GHOST).unwrap();
        let expected: BTreeSet<(GarbageKind, String)> = [
            (GarbageKind::Process, stray.id().to_string()),
            (GarbageKind::NatRule, names::nat_rule_comment(&ghost_uid)),
            (
                GarbageKind::FilterRules,
                names::nat_rule_comment(&ghost_uid),
            ),
            (GarbageKind::Cgroup, format!("banger-{CAGED}")),
            (GarbageKind::Tap, names::tap_name(&ghost_uid)),
            (GarbageKind::Tap, STRAY_TAP.to_string()),
            (GarbageKind::VmDir, GHOST.to_string()),
        ]
        .into_iter()
        .collect();
        assert_eq!(kinds_and_names(&found), expected, "{found:#?}");
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        assert!(found.iter().all(|g| g.uid.as_deref() != Some(KNOWN)));
        assert!(found
            .iter()
            .all(|g| g.name != known_pid.to_string() && g.name != foreign.id().to_string()));
        let process = found
            .iter()
            .find(|g| g.kind == GarbageKind::Process)
            .unwrap();
        assert_eq!(process.uid.as_deref(), Some(GHOST));
        assert!(process.detail.contains("read line"), "{process:?}");

        // Without the known set, the known VM's objects would be listed too.
        let unknown_all = runtime.find_garbage(&BTreeSet::new()).await;
        assert!(
            unknown_all
                .iter()
                .any(|g| g.kind == GarbageKind::Process && g.name == known_pid.to_string()),
            "{unknown_all:#?}"
        );

        for item in &found {
            runtime.remove_garbage(item).await.unwrap();
            // Idempotent.
            runtime.remove_garbage(item).await.unwrap();
        }
        assert!(runtime.find_garbage(&known_uids).await.is_empty());
        assert!(
            !caged.check(&marker).unwrap().is_ours(),
            "the VMM in the ghost's cgroup survived gc"
        );
        assert!(!caged_cgroup.exists(), "the ghost's cgroup survived gc");
        assert!(
            exited_within(&mut stray, Duration::from_secs(10)),
            "stray process survived gc"
        );
        assert!(!ghost.vm_dir.exists());
        let ghost_seen = runtime.observe(&ghost).await;
        assert!(ghost_seen.tap.is_none() && !ghost_seen.nat);

        // Another daemon's process and the known VM are untouched.
        assert!(
            foreign.try_wait().unwrap().is_none(),
            "foreign process killed"
        );
        let known_seen = runtime.observe(&known).await;
        assert!(
            matches!(known_seen.process, ProcessState::Running { .. }),
            "{known_seen:?}"
        );
        assert!(known_seen.tap.is_some() && known_seen.nat && known_seen.vm_dir);
        assert!(known_seen.disk.is_some());

        foreign.kill().unwrap();
        foreign.wait().unwrap();
        for step in [
            VmStep::Shutdown,
            VmStep::RemoveNat,
            VmStep::RemoveTap,
            VmStep::RemoveDisk,
            VmStep::RemoveVmDir,
        ] {
            known.handles = runtime.execute(step, &known).await.unwrap();
        }
    });
    let links = ns.ip(&["-o", "link"]);
    assert!(!links.contains("bgt"), "{links}");
}
