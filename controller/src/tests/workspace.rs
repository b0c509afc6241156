//! Workspaces on the simulated runtime: copied once the VM's guest is ready, once per
//! root disk (never again after a VMM restart, a stop/start or a daemon restart; again
//! onto a new disk), never while the VM is stopped; failures back off.

use std::sync::Arc;

use super::*;

const WORKSPACE: &str = "apiVersion: banger.dev/v1alpha1
kind: Workspace
metadata:
  name: code
spec:
  vm: a
  source: /src/repo
";

fn synced_message(h: &Harness) -> String {
    let s = h.status(Kind::Workspace, "code");
    status::condition(&s.conditions, SYNCED)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// Applies the Image, a running VM `a` and the Workspace `code` on it, as one file.
async fn apply_running_vm_with_workspace(h: &Harness) {
    let vm = vm_yaml("a", "base", "512Mi", "");
    h.apply(
        &[("/s/all.yaml", &format!("{IMAGE}---\n{vm}---\n{WORKSPACE}"))],
        |_| {},
    )
    .await
    .unwrap();
}

/// The second Image of these tests: another rootfs, so a VM moved to it gets a new disk.
fn other_image() -> String {
    IMAGE
        .replace("name: base", "name: other")
        .replace("/images/rootfs.ext4", "/images/other.ext4")
}

/// Waits until VM `a` runs a VMM other than `old_pid` with its guest ready, and returns
/// the new pid.
async fn until_restarted(h: &Harness, uid: &str, old_pid: i32) -> i32 {
    h.until("a new VMM with its guest ready", |h| {
        h.sim.pid_of(uid).is_some_and(|p| p != old_pid)
            && status::is_true(&h.status(Kind::Vm, "a").conditions, GUEST_READY)
            && h.status(Kind::Vm, "a").pid == h.sim.pid_of(uid)
    })
    .await;
    h.sim.pid_of(uid).unwrap()
}

/// Reconciles the Workspace `code` now (besides what the workers do), so a test can
/// assert on what one reconcile decides after the guest changed.
async fn reconcile_code(h: &Harness) {
    bounded(
        "reconcile workspace code",
        h.engine.reconcile(&key(Kind::Workspace, "code")),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copied_once_per_root_disk_and_never_again_after_a_vmm_restart() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(test_config(dir.path()), SimulatedRuntime::new());
    h.sim.set_boot_observations(3);
    apply_running_vm_with_workspace(&h).await;
    h.until_condition(Kind::Workspace, "code", SYNCED, TRUE, "Copied")
        .await;
    let uid = h.uid(Kind::Vm, "a");
    let pid1 = h.sim.pid_of(&uid).unwrap();
    assert_eq!(h.sim.syncs_of("code"), vec![(uid.clone(), pid1)]);
    assert_eq!(
        synced_message(&h),
        "3 files (commit 0123456789ab) copied to /root/repo"
    );
    let s = h.status(Kind::Workspace, "code");
    assert_eq!(s.phase, Phase::Ready);
    assert!(status::is_true(&s.conditions, READY));
    let events = h
        .db()
        .list_events(
            &crate::store::EventFilter {
                kind: Some(Kind::Workspace),
                name: Some("code".into()),
            },
            0,
            100,
        )
        .unwrap();
    assert!(
        events.iter().any(|e| e.reason == Reason::Copied),
        "{events:?}"
    );
    let disk = h.sim.disk_serial(&uid);

    // A resync changes nothing.
    h.engine.ctl.queue.add(key(Kind::Workspace, "code"));
    h.engine.ctl.queue.add(key(Kind::Vm, "a"));
    h.until_condition(Kind::Vm, "a", READY, TRUE, "Running")
        .await;
    reconcile_code(&h).await;
    assert_eq!(h.sim.syncs_of("code").len(), 1);

    // The VMM dies and is restarted (restartPolicy Always) on the same disk: the files
    // the guest holds are its own now; nothing is copied over them.
    assert!(h.sim.exit_process(&uid, false));
    let pid2 = until_restarted(&h, &uid, pid1).await;
    assert_ne!(pid1, pid2);
    assert_eq!(h.sim.disk_serial(&uid), disk, "same disk");
    let preview = h
        .apply(
            &[(
                "/s/all.yaml",
                &format!(
                    "{IMAGE}---\n{}---\n{WORKSPACE}",
                    vm_yaml("a", "base", "512Mi", "")
                ),
            )],
            |r| r.dry_run = true,
        )
        .await
        .unwrap();
    let ws = preview.items.iter().find(|i| i.name == "code").unwrap();
    assert!(ws.plan.is_empty(), "{:?}", ws.plan);
    reconcile_code(&h).await;
    assert_eq!(
        h.sim.syncs_of("code").len(),
        1,
        "copied again after a VMM restart"
    );
    h.until_condition(Kind::Workspace, "code", SYNCED, TRUE, "Copied")
        .await;

    // Stopped and started again: the same disk, no copy.
    let stopped = vm_yaml("a", "base", "512Mi", "  state: Stopped\n");
    h.apply(
        &[(
            "/s/all.yaml",
            &format!("{IMAGE}---\n{stopped}---\n{WORKSPACE}"),
        )],
        |_| {},
    )
    .await
    .unwrap();
    h.until_condition(Kind::Vm, "a", READY, TRUE, "Stopped")
        .await;
    apply_running_vm_with_workspace(&h).await;
    let pid3 = until_restarted(&h, &uid, pid2).await;
    assert_ne!(pid3, pid2);
    reconcile_code(&h).await;
    assert_eq!(
        h.sim.syncs_of("code").len(),
        1,
        "copied again after stop/start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_restart_does_not_copy_again() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimulatedRuntime::new();
    let h = Harness::start(test_config(dir.path()), sim.clone());
    apply_running_vm_with_workspace(&h).await;
    h.until_condition(Kind::Workspace, "code", SYNCED, TRUE, "Copied")
        .await;
    let uid = h.uid(Kind::Vm, "a");
    let pid = h.sim.pid_of(&uid).unwrap();
    h.crash();

    let engine = Arc::new(Engine::new(test_config(dir.path()), sim.clone()).unwrap());
    bounded("recover", engine.recover_journal()).await.unwrap();
    let h = Harness::with_engine(engine, sim.clone());
    bounded("enqueue", h.engine.enqueue_all()).await.unwrap();
    h.until_condition(Kind::Vm, "a", READY, TRUE, "Running")
        .await;
    reconcile_code(&h).await;
    assert_eq!(h.sim.pid_of(&uid), Some(pid), "the VMM survived the daemon");
    assert_eq!(
        sim.syncs_of("code").len(),
        1,
        "copied again after a daemon restart"
    );
    let s = h.status(Kind::Workspace, "code");
    assert!(status::is_true(&s.conditions, SYNCED), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_root_disk_gets_the_files_again() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(test_config(dir.path()), SimulatedRuntime::new());
    apply_running_vm_with_workspace(&h).await;
    h.until_condition(Kind::Workspace, "code", SYNCED, TRUE, "Copied")
        .await;
    let uid = h.uid(Kind::Vm, "a");
    let disk1 = h.sim.disk_serial(&uid).unwrap();

    // Another image: the disk is rebuilt (a recreate), so its guest has no files yet.
    let moved = vm_yaml("a", "other", "512Mi", "");
    h.apply(
        &[(
            "/s/all.yaml",
            &format!("{IMAGE}---\n{}---\n{moved}---\n{WORKSPACE}", other_image()),
        )],
        |r| r.allow_recreate = true,
    )
    .await
    .unwrap();
    h.until("a second copy, onto the new disk", |h| {
        h.sim.syncs_of("code").len() == 2
    })
    .await;
    let disk2 = h.sim.disk_serial(&uid).unwrap();
    assert_ne!(disk1, disk2);
    h.until_condition(Kind::Workspace, "code", SYNCED, TRUE, "Copied")
        .await;
    reconcile_code(&h).await;
    assert_eq!(h.sim.syncs_of("code").len(), 2, "exactly one copy per disk");
    let reasons: Vec<String> = h
        .db()
        .journal_for(&h.uid(Kind::Workspace, "code"), 10)
        .unwrap()
        .into_iter()
        .map(|r| r.step)
        .collect();
    assert_eq!(reasons, ["sync-workspace", "sync-workspace"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_copied_while_the_vm_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(test_config(dir.path()), SimulatedRuntime::new());
    let stopped = vm_yaml("a", "base", "512Mi", "  state: Stopped\n");
    h.apply(
        &[(
            "/s/all.yaml",
            &format!("{IMAGE}---\n{stopped}---\n{WORKSPACE}"),
        )],
        |_| {},
    )
    .await
    .unwrap();
    h.until_condition(Kind::Vm, "a", READY, TRUE, "Stopped")
        .await;
    h.engine.ctl.queue.add(key(Kind::Workspace, "code"));
    h.until_condition(Kind::Workspace, "code", SYNCED, FALSE, "WaitingForVM")
        .await;
    let s = h.status(Kind::Workspace, "code");
    assert_eq!(s.phase, Phase::Pending);
    assert!(!status::is_true(&s.conditions, READY));
    assert!(h.sim.syncs_of("code").is_empty());

    // Running: copied once.
    apply_running_vm_with_workspace(&h).await;
    h.until_condition(Kind::Workspace, "code", SYNCED, TRUE, "Copied")
        .await;
    assert_eq!(h.sim.syncs_of("code").len(), 1);

    // Stopped again: the workspace waits; the copy it had is not claimed for a new VMM.
    h.apply(
        &[(
            "/s/all.yaml",
            &format!("{IMAGE}---\n{stopped}---\n{WORKSPACE}"),
        )],
        |_| {},
    )
    .await
    .unwrap();
    h.until_condition(Kind::Workspace, "code", SYNCED, FALSE, "WaitingForVM")
        .await;
    assert_eq!(h.sim.syncs_of("code").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_copy_backs_off_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(test_config(dir.path()), SimulatedRuntime::new());
    h.sim.fail_sync("code", 2);
    apply_running_vm_with_workspace(&h).await;
    h.until_condition(Kind::Workspace, "code", SYNCED, TRUE, "Copied")
        .await;
    assert_eq!(h.sim.syncs_of("code").len(), 1);
    let events = h
        .db()
        .list_events(
            &crate::store::EventFilter {
                kind: Some(Kind::Workspace),
                name: Some("code".into()),
            },
            0,
            100,
        )
        .unwrap();
    let failures: Vec<_> = events
        .iter()
        .filter(|e| e.reason == Reason::ReconcileFailed)
        .collect();
    assert_eq!(failures.len(), 2, "{events:?}");
    assert!(
        failures[0]
            .message
            .contains("workspace code: vm a: ssh copy: injected fault"),
        "{failures:?}"
    );
    let journal = h
        .db()
        .journal_for(&h.uid(Kind::Workspace, "code"), 10)
        .unwrap();
    assert_eq!(
        journal
            .iter()
            .filter(|r| r.step == "sync-workspace")
            .count(),
        3,
        "{journal:?}"
    );
    let s = h.status(Kind::Workspace, "code");
    assert!(status::is_true(&s.conditions, READY));
    assert!(!status::is_true(&s.conditions, STALLED));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_copy_reports_sync_failed() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(test_config(dir.path()), SimulatedRuntime::new());
    h.sim.fail_sync("code", 1000);
    apply_running_vm_with_workspace(&h).await;
    h.until_condition(Kind::Workspace, "code", SYNCED, FALSE, "SyncFailed")
        .await;
    h.until_condition(Kind::Workspace, "code", READY, FALSE, "SyncFailed")
        .await;
    h.until_condition(Kind::Workspace, "code", STALLED, TRUE, "RepeatedFailures")
        .await;
    assert!(synced_message(&h).contains("injected fault"));
    assert!(h.sim.syncs_of("code").is_empty());
    // The VM itself is unaffected.
    assert!(status::is_true(&h.status(Kind::Vm, "a").conditions, READY));
}

/// The plan a dry run (what `banger diff` shows) prints for a Workspace is the plan the
/// engine then runs: while its VM runs but the guest is not ready yet, both say the copy
/// waits (`WaitingForVM`) and nothing is copied; once the guest is ready, both say
/// `sync-workspace` and exactly that runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previewed_plan_is_the_plan_the_engine_runs() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(test_config(dir.path()), SimulatedRuntime::new());
    h.sim.set_boot_observations(u32::MAX);
    h.apply_image_and_vm_a().await;
    h.until_condition(Kind::Vm, "a", GUEST_READY, FALSE, "Booting")
        .await;
    assert_eq!(h.status(Kind::Vm, "a").phase, Phase::Running);

    let file = [("/s/ws.yaml", WORKSPACE)];
    let preview = h.apply(&file, |r| r.dry_run = true).await.unwrap();
    let steps: Vec<(&str, &str)> = preview.items[0]
        .plan
        .iter()
        .map(|s| (s.step.as_str(), s.change_class.as_str()))
        .collect();
    assert_eq!(steps, [("sync-workspace", "create"), ("blocked", "none")]);
    assert!(
        preview.items[0].plan[1]
            .reason
            .starts_with("WaitingForVM: "),
        "{:?}",
        preview.items[0].plan
    );

    h.apply(&file, |_| {}).await.unwrap();
    h.until_condition(Kind::Workspace, "code", SYNCED, FALSE, "WaitingForVM")
        .await;
    let uid = h.uid(Kind::Workspace, "code");
    assert!(h.db().journal_for(&uid, 10).unwrap().is_empty());
    assert!(h.sim.syncs_of("code").is_empty());

    // The guest becomes ready: the copy is no longer blocked...
    h.sim.set_boot_observations(0);
    h.until_condition(Kind::Vm, "a", GUEST_READY, TRUE, "GuestUp")
        .await;
    h.engine.ctl.queue.add(key(Kind::Workspace, "code"));
    h.until_condition(Kind::Workspace, "code", SYNCED, TRUE, "Copied")
        .await;
    // ...and the engine ran exactly that one step.
    let journal: Vec<String> = h
        .db()
        .journal_for(&uid, 10)
        .unwrap()
        .into_iter()
        .map(|r| format!("{} {}", r.step, r.outcome))
        .collect();
    assert_eq!(journal, ["sync-workspace done"]);
    assert_eq!(h.sim.syncs_of("code").len(), 1);
    let after = h.apply(&file, |r| r.dry_run = true).await.unwrap();
    assert!(after.items[0].plan.is_empty(), "{:?}", after.items[0].plan);
}
