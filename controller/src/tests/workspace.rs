//! Workspaces on the simulated runtime: copied once the VM's guest is ready, again
//! after the VMM is replaced, never while the VM is stopped; failures back off.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copied_after_the_guest_is_ready_and_again_after_a_vmm_restart() {
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

    // A resync changes nothing: the copy is for this VMM.
    h.engine.ctl.queue.add(key(Kind::Workspace, "code"));
    h.engine.ctl.queue.add(key(Kind::Vm, "a"));
    h.until_condition(Kind::Vm, "a", READY, TRUE, "Running")
        .await;
    assert_eq!(h.sim.syncs_of("code").len(), 1);

    // The VMM dies and is restarted (restartPolicy Always): the new guest gets the files.
    assert!(h.sim.exit_process(&uid, false));
    h.until("a second copy, into the new VMM", |h| {
        h.sim.syncs_of("code").len() == 2
    })
    .await;
    let syncs = h.sim.syncs_of("code");
    let pid2 = h.sim.pid_of(&uid).unwrap();
    assert_ne!(pid1, pid2);
    assert_eq!(syncs[1], (uid.clone(), pid2));
    h.until_condition(Kind::Workspace, "code", SYNCED, TRUE, "Copied")
        .await;
    assert_eq!(h.sim.syncs_of("code").len(), 2, "exactly one copy per VMM");
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
