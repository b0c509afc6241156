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
    let events = h.events(Kind::Workspace, "code");
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
    let events = h.events(Kind::Workspace, "code");
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

/// Asks for a copy as `banger workspace sync` does.
async fn request_sync(h: &Harness, force: bool) -> u64 {
    crate::api::workspace::request_sync(&h.engine.ctl, "code", force)
        .await
        .unwrap()
        .request
}

/// The digest a simulated copy of [`WORKSPACE`] writes at `path`.
fn copied_digest(path: &str) -> crate::runtime::EntryDigest {
    use sha2::Digest;
    crate::runtime::EntryDigest::file(
        false,
        &sha2::Sha256::digest(format!("/src/repo:{path}").as_bytes()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_request_copies_again_onto_an_unchanged_guest() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(test_config(dir.path()), SimulatedRuntime::new());
    apply_running_vm_with_workspace(&h).await;
    h.until_condition(Kind::Workspace, "code", SYNCED, TRUE, "Copied")
        .await;
    let s = h.status(Kind::Workspace, "code");
    assert_eq!(
        s.base_commit.as_deref(),
        Some("0123456789abcdef0123456789abcdef01234567")
    );
    let first_copy = s.copied_at.clone().expect("copiedAt");
    assert_eq!(s.last_sync_request, None);

    let n = request_sync(&h, false).await;
    assert_eq!(n, 1);
    h.until("the request is served", |h| {
        h.status(Kind::Workspace, "code").last_sync_request == Some(1)
    })
    .await;
    assert_eq!(h.sim.syncs_of("code").len(), 2);
    let s = h.status(Kind::Workspace, "code");
    assert!(status::is_true(&s.conditions, SYNCED), "{s:?}");
    assert!(s.copied_at.unwrap() >= first_copy);
    let events = h.db().recent_events(Kind::Workspace, "code", 50).unwrap();
    assert!(
        events.iter().any(|e| e.reason == Reason::SyncRequested
            && e.message == "banger workspace sync (request 1)"),
        "{events:?}"
    );
    // Served: nothing more is planned.
    reconcile_code(&h).await;
    assert_eq!(h.sim.syncs_of("code").len(), 2);

    // A new generation copies onto the same guest, checked first, and removes what
    // the last copy wrote that the checkout no longer has (include: tracked drops
    // the untracked file).
    let uid = h.uid(Kind::Vm, "a");
    assert_eq!(
        h.sim.guest_file(&uid, "notes.txt"),
        Some(copied_digest("notes.txt"))
    );
    let tracked = format!("{WORKSPACE}  include: tracked\n");
    let vm = vm_yaml("a", "base", "512Mi", "");
    h.apply(
        &[("/s/all.yaml", &format!("{IMAGE}---\n{vm}---\n{tracked}"))],
        |_| {},
    )
    .await
    .unwrap();
    h.until("a copy for generation 2", |h| {
        h.sim.syncs_of("code").len() == 3
    })
    .await;
    assert_eq!(h.sim.guest_file(&uid, "notes.txt"), None);
    assert_eq!(
        h.sim.guest_file(&uid, "README.md"),
        Some(copied_digest("README.md"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_guest_is_not_overwritten_until_forced() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(test_config(dir.path()), SimulatedRuntime::new());
    apply_running_vm_with_workspace(&h).await;
    h.until_condition(Kind::Workspace, "code", SYNCED, TRUE, "Copied")
        .await;
    let uid = h.uid(Kind::Vm, "a");
    h.sim.edit_guest(&uid, "src/main.rs");

    // A plain request: refused, naming what changed; nothing is copied.
    assert_eq!(request_sync(&h, false).await, 1);
    h.until_condition(Kind::Workspace, "code", SYNCED, FALSE, "GuestChanged")
        .await;
    let s = h.status(Kind::Workspace, "code");
    assert_eq!(s.last_sync_request, Some(1));
    let message = synced_message(&h);
    assert!(
        message.starts_with(
            "1 path changed in the guest since the last copy: src/main.rs (modified); not overwritten"
        ),
        "{message}"
    );
    assert!(
        message.contains("banger workspace sync code --force"),
        "{message}"
    );
    assert!(!status::is_true(&s.conditions, READY));
    assert!(
        !status::is_true(&s.conditions, STALLED),
        "a refusal is not a failure"
    );
    assert_eq!(h.sim.syncs_of("code").len(), 1);
    assert_ne!(
        h.sim.guest_file(&uid, "src/main.rs"),
        Some(copied_digest("src/main.rs"))
    );
    let journal = h
        .db()
        .journal_for(&h.uid(Kind::Workspace, "code"), 10)
        .unwrap();
    let last = journal.last().unwrap();
    assert_eq!(
        (last.step.as_str(), last.outcome),
        ("sync-workspace", JournalOutcome::Failed)
    );
    assert!(
        last.error
            .as_deref()
            .unwrap_or("")
            .starts_with("refused: 1 path changed"),
        "{last:?}"
    );

    // Not retried on its own: the plan is blocked until the user acts.
    reconcile_code(&h).await;
    assert_eq!(h.sim.syncs_of("code").len(), 1);
    let file = [(
        "/s/all.yaml",
        &*format!(
            "{IMAGE}---\n{}---\n{WORKSPACE}",
            vm_yaml("a", "base", "512Mi", "")
        ),
    )];
    let preview = h.apply(&file, |r| r.dry_run = true).await.unwrap();
    let plan = &preview
        .items
        .iter()
        .find(|i| i.name == "code")
        .unwrap()
        .plan;
    assert_eq!(plan.last().unwrap().step, "blocked");
    assert!(
        plan.last()
            .unwrap()
            .reason
            .starts_with("GuestChanged: 1 path changed"),
        "{plan:?}"
    );

    // A new spec is checked too: refused again.
    let tracked = format!("{WORKSPACE}  include: tracked\n");
    let vm = vm_yaml("a", "base", "512Mi", "");
    h.apply(
        &[("/s/all.yaml", &format!("{IMAGE}---\n{vm}---\n{tracked}"))],
        |_| {},
    )
    .await
    .unwrap();
    h.until("the new generation refused", |h| {
        let s = h.status(Kind::Workspace, "code");
        s.observed_generation == 2
            && status::condition(&s.conditions, SYNCED)
                .is_some_and(|c| c.reason == Reason::GuestChanged)
    })
    .await;
    assert_eq!(h.sim.syncs_of("code").len(), 1);

    // Forced: copied over the guest's change.
    assert_eq!(request_sync(&h, true).await, 2);
    h.until_condition(Kind::Workspace, "code", SYNCED, TRUE, "Copied")
        .await;
    assert_eq!(h.sim.syncs_of("code").len(), 2);
    assert_eq!(
        h.sim.guest_file(&uid, "src/main.rs"),
        Some(copied_digest("src/main.rs"))
    );
    let s = h.status(Kind::Workspace, "code");
    assert_eq!(s.last_sync_request, Some(2));
    assert!(status::is_true(&s.conditions, READY));
    reconcile_code(&h).await;
    assert_eq!(h.sim.syncs_of("code").len(), 2, "served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_requests_for_unknown_workspaces_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(test_config(dir.path()), SimulatedRuntime::new());
    let err = crate::api::workspace::request_sync(&h.engine.ctl, "nope", false)
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("workspace/nope not found"),
        "{err:?}"
    );
}

/// A copy interrupted by a daemon stop left the guest half written with the checkout's
/// files (it started only after the guest passed the check): the next copy is not
/// refused for what the interrupted one wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_copy_after_an_interrupted_one_is_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimulatedRuntime::new();
    let h = Harness::start(test_config(dir.path()), sim.clone());
    apply_running_vm_with_workspace(&h).await;
    h.until_condition(Kind::Workspace, "code", SYNCED, TRUE, "Copied")
        .await;
    let uid = h.uid(Kind::Vm, "a");

    // A new source (other contents): the copy writes them, then the daemon dies.
    sim.hang_sync("code");
    let moved = WORKSPACE.replace("/src/repo", "/src/other");
    let vm = vm_yaml("a", "base", "512Mi", "");
    h.apply(
        &[("/s/all.yaml", &format!("{IMAGE}---\n{vm}---\n{moved}"))],
        |_| {},
    )
    .await
    .unwrap();
    h.until_journaled_running("sync-workspace").await;
    h.until("the copy wrote the guest's files", |h| {
        h.sim.syncs_of("code").len() == 2
    })
    .await;
    h.crash();

    sim.clear_hangs();
    let engine = Arc::new(Engine::new(test_config(dir.path()), sim.clone()).unwrap());
    bounded("recover", engine.recover_journal()).await.unwrap();
    let h = Harness::with_engine(engine, sim.clone());
    h.until("a copy after the interrupted one", |h| {
        let s = h.status(Kind::Workspace, "code");
        s.observed_generation == 2 && status::is_true(&s.conditions, SYNCED)
    })
    .await;
    assert_eq!(sim.syncs_of("code").len(), 3);
    let journal: Vec<String> = h
        .db()
        .journal_for(&h.uid(Kind::Workspace, "code"), 10)
        .unwrap()
        .into_iter()
        .map(|r| format!("{} {}", r.step, r.outcome))
        .collect();
    assert_eq!(
        journal,
        [
            "sync-workspace done",
            "sync-workspace resumed",
            "sync-workspace done"
        ]
    );
    assert_eq!(
        h.sim.guest_file(&uid, "README.md"),
        Some(crate::runtime::EntryDigest::file(
            false,
            &<sha2::Sha256 as sha2::Digest>::digest(b"/src/other:README.md")
        ))
    );
}
