use super::*;
use crate::runtime::VmStep;

const WORKSPACE: &str = "apiVersion: banger.dev/v1alpha1
kind: Workspace
metadata:
  name: code
spec:
  vm: a
  source: /src/repo
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_runs_stops_and_is_deleted_with_everything_it_made() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(test_config(dir.path()), SimulatedRuntime::new());
    let vm = vm_yaml("a", "base", "512Mi", "");
    let resp = h
        .apply(
            &[(
                "/specs/all.yaml",
                &format!("{IMAGE}---\n{vm}---\n{WORKSPACE}"),
            )],
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(resp.items.len(), 3);
    assert_eq!(resp.items[0].kind, Kind::Image, "images first");
    assert_eq!(action_of(&resp, "a"), ApplyAction::Created);

    h.until_condition(Kind::Vm, "a", READY, TRUE, "Running")
        .await;
    let s = h.status(Kind::Vm, "a");
    assert_eq!(s.phase, Phase::Running);
    assert!(status::is_true(&s.conditions, GUEST_READY));
    assert_eq!(s.ip.map(|ip| ip.to_string()).as_deref(), Some("172.30.0.2"));
    assert_eq!(s.hypervisor.as_deref(), Some("simulated"));
    let uid = h.uid(Kind::Vm, "a");
    assert_eq!(s.pid, h.sim.pid_of(&uid));
    let handles = serde_json::to_string(&h.engine.load_handles(&uid).await.unwrap()).unwrap();
    assert!(handles.contains("\"tap\""), "{handles}");
    h.until_phase(Kind::Workspace, "code", Phase::Ready).await;
    assert_eq!(h.status(Kind::Image, "base").phase, Phase::Ready);

    // Stop: no process, disk kept, same lease; the workspace waits.
    let stopped = vm_yaml("a", "base", "512Mi", "  state: Stopped\n");
    h.apply(&[("/specs/all.yaml", &stopped)], |_| {})
        .await
        .unwrap();
    h.until_condition(Kind::Vm, "a", READY, TRUE, "Stopped")
        .await;
    assert_eq!(h.status(Kind::Vm, "a").phase, Phase::Stopped);
    assert_eq!(h.sim.pid_of(&uid), None);
    assert!(h.sim.has_anything(&uid), "disk kept");
    h.until_phase(Kind::Workspace, "code", Phase::Pending).await;

    // Running again: same IP.
    h.apply(&[("/specs/all.yaml", &vm)], |_| {}).await.unwrap();
    h.until_condition(Kind::Vm, "a", READY, TRUE, "Running")
        .await;
    assert_eq!(
        h.status(Kind::Vm, "a")
            .ip
            .map(|ip| ip.to_string())
            .as_deref(),
        Some("172.30.0.2")
    );

    // Delete all: workspace, VM, then the image; nothing left.
    for (k, n) in [
        (Kind::Image, "base"),
        (Kind::Vm, "a"),
        (Kind::Workspace, "code"),
    ] {
        h.delete(k, n).await;
    }
    h.until_gone(Kind::Vm, "a").await;
    h.until_gone(Kind::Image, "base").await;
    h.until_gone(Kind::Workspace, "code").await;
    assert!(!h.sim.has_anything(&uid));
    assert_eq!(h.db().lease_count().unwrap(), 0);
    assert!(!h.engine.config.vm_dir(&uid).exists());
    let steps: Vec<VmStep> = h
        .sim
        .executed()
        .into_iter()
        .filter(|(n, _)| n == "a")
        .map(|(_, s)| s)
        .collect();
    let shutdown = steps.iter().rposition(|s| *s == VmStep::Shutdown).unwrap();
    let remove_disk = steps
        .iter()
        .rposition(|s| *s == VmStep::RemoveDisk)
        .unwrap();
    assert!(shutdown < remove_disk, "{steps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_classes_restart_and_recreate_blocked_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(test_config(dir.path()), SimulatedRuntime::new());
    let image2 = IMAGE
        .replace("name: base", "name: other")
        .replace("/images/rootfs.ext4", "/images/other.ext4");
    h.apply(
        &[(
            "/s/i.yaml",
            &format!(
                "{IMAGE}---\n{image2}---\n{}",
                vm_yaml("a", "base", "512Mi", "")
            ),
        )],
        |_| {},
    )
    .await
    .unwrap();
    h.until_condition(Kind::Vm, "a", READY, TRUE, "Running")
        .await;
    let uid = h.uid(Kind::Vm, "a");
    let pid = h.sim.pid_of(&uid).unwrap();

    // Unchanged: an explicit default is the same spec.
    let same = h
        .apply(
            &[("/s/v.yaml", &vm_yaml("a", "base", "512Mi", "  vcpus: 1\n"))],
            |r| r.dry_run = true,
        )
        .await
        .unwrap();
    assert_eq!(action_of(&same, "a"), ApplyAction::Unchanged);
    assert!(same.items[0].plan.is_empty(), "{:?}", same.items[0].plan);

    // Memory: restart, shown by the dry run, nothing changed by it.
    let dry = h
        .apply(&[("/s/v.yaml", &vm_yaml("a", "base", "1Gi", ""))], |r| {
            r.dry_run = true
        })
        .await
        .unwrap();
    assert_eq!(action_of(&dry, "a"), ApplyAction::Configured);
    let classes: Vec<&str> = dry.items[0]
        .plan
        .iter()
        .map(|p| p.change_class.as_str())
        .collect();
    assert_eq!(classes, vec!["restart", "restart"]);
    assert!(
        dry.items[0]
            .changes
            .iter()
            .any(|c| c.starts_with("spec.memory")),
        "{:?}",
        dry.items[0].changes
    );
    assert_eq!(h.object(Kind::Vm, "a").generation, 1);
    let gen_before = h.object(Kind::Vm, "a").generation;
    h.apply(&[("/s/v.yaml", &vm_yaml("a", "base", "1Gi", ""))], |_| {})
        .await
        .unwrap();
    assert_eq!(h.object(Kind::Vm, "a").generation, gen_before + 1);
    h.until("restarted with 1Gi", |h| {
        let s = h.status(Kind::Vm, "a");
        s.observed_generation == 2
            && status::is_true(&s.conditions, READY)
            && h.sim.pid_of(&uid).is_some_and(|p| p != pid)
    })
    .await;

    // NAT off: live, no restart.
    let pid2 = h.sim.pid_of(&uid).unwrap();
    let nat = h
        .apply(
            &[(
                "/s/v.yaml",
                &vm_yaml("a", "base", "1Gi", "  network:\n    nat: false\n"),
            )],
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(
        nat.items[0]
            .plan
            .iter()
            .map(|p| p.change_class.as_str())
            .collect::<Vec<_>>(),
        vec!["live"]
    );
    h.until("NAT removed", |h| {
        h.status(Kind::Vm, "a").observed_generation == 3
            && status::is_true(&h.status(Kind::Vm, "a").conditions, READY)
    })
    .await;
    assert_eq!(h.sim.pid_of(&uid), Some(pid2));

    // Another image: recreate, blocked without --allow-recreate, VM keeps running.
    let other = vm_yaml("a", "other", "1Gi", "  network:\n    nat: false\n");
    let blocked = h.apply(&[("/s/v.yaml", &other)], |_| {}).await.unwrap();
    assert!(blocked.items[0]
        .plan
        .iter()
        .any(|p| p.change_class == "recreate"));
    h.until_condition(Kind::Vm, "a", READY, FALSE, "RecreateBlocked")
        .await;
    assert_eq!(h.sim.pid_of(&uid), Some(pid2));
    assert_eq!(h.status(Kind::Vm, "a").phase, Phase::Running);

    h.apply(&[("/s/v.yaml", &other)], |r| r.allow_recreate = true)
        .await
        .unwrap();
    h.until_condition(Kind::Vm, "a", READY, TRUE, "Running")
        .await;
    let handles = h.engine.load_handles(&uid).await.unwrap();
    assert_eq!(handles.disk_image.as_deref(), Some("other"));
    assert_ne!(h.sim.pid_of(&uid), Some(pid2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_waits_for_its_image_then_runs() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(test_config(dir.path()), SimulatedRuntime::new());
    let resp = h
        .apply(&[("/s/v.yaml", &vm_yaml("a", "base", "512Mi", ""))], |_| {})
        .await
        .unwrap();
    assert!(
        resp.warnings.iter().any(|w| w.message.contains("base")),
        "reference warning: {:?}",
        resp.warnings
    );
    h.until_condition(Kind::Vm, "a", READY, FALSE, "WaitingForImage")
        .await;
    assert_eq!(h.status(Kind::Vm, "a").phase, Phase::Pending);
    assert_eq!(
        h.engine.ctl.queue.failures(&key(Kind::Vm, "a")),
        0,
        "waiting is not an error"
    );
    h.apply(&[("/s/i.yaml", IMAGE)], |_| {}).await.unwrap();
    h.until_condition(Kind::Vm, "a", READY, TRUE, "Running")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_back_off_then_stall_and_retry_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(test_config(dir.path()), SimulatedRuntime::new());
    h.sim.fail_step("a", VmStep::Launch, 1000);
    h.apply_image_and_vm_a().await;
    h.until_condition(Kind::Vm, "a", STALLED, TRUE, "RepeatedFailures")
        .await;
    let s = h.status(Kind::Vm, "a");
    let stalled = status::condition(&s.conditions, STALLED).unwrap();
    assert!(
        stalled.message.contains("simulated failure") && stalled.message.contains("launch"),
        "{}",
        stalled.message
    );
    assert!(h.engine.ctl.queue.failures(&key(Kind::Vm, "a")) >= 3);
    let steps = h.db().journal_for(&h.uid(Kind::Vm, "a"), 50).unwrap();
    assert!(steps
        .iter()
        .any(|s| s.step == "launch" && s.outcome == JournalOutcome::Failed));
    assert!(h
        .events(Kind::Vm, "a")
        .iter()
        .any(|e| e.reason == Reason::ReconcileFailed));

    // Fix the fault; retry now resets the backoff; success clears Stalled.
    h.sim.fail_step("a", VmStep::Launch, 0);
    h.engine.ctl.queue.retry_now(key(Kind::Vm, "a"));
    h.until_condition(Kind::Vm, "a", READY, TRUE, "Running")
        .await;
    assert_eq!(
        status::condition(&h.status(Kind::Vm, "a").conditions, STALLED)
            .unwrap()
            .status,
        FALSE
    );
    assert_eq!(h.engine.ctl.queue.failures(&key(Kind::Vm, "a")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_exits_follow_restart_policy_with_crash_loop_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(test_config(dir.path()), SimulatedRuntime::new());
    let never = vm_yaml("n", "base", "512Mi", "  restartPolicy: Never\n");
    h.apply(
        &[(
            "/s/a.yaml",
            &format!(
                "{IMAGE}---\n{}---\n{never}",
                vm_yaml("a", "base", "512Mi", "")
            ),
        )],
        |_| {},
    )
    .await
    .unwrap();
    h.until_condition(Kind::Vm, "a", READY, TRUE, "Running")
        .await;
    h.until_condition(Kind::Vm, "n", READY, TRUE, "Running")
        .await;

    // Never: an unclean exit leaves it Failed.
    assert!(h.sim.exit_process(&h.uid(Kind::Vm, "n"), false));
    h.until_condition(Kind::Vm, "n", READY, FALSE, "Exited")
        .await;
    assert_eq!(h.status(Kind::Vm, "n").phase, Phase::Failed);

    // Always: restarted at once (the exit notice enqueues it), three times freely, then
    // the crash-loop backoff holds the fourth.
    let uid = h.uid(Kind::Vm, "a");
    for round in 0..3 {
        let pid = h.sim.pid_of(&uid).unwrap();
        assert!(h.sim.exit_process(&uid, false));
        h.until(&format!("restart {round}"), |h| {
            h.sim.pid_of(&uid).is_some_and(|p| p != pid)
        })
        .await;
    }
    h.until_condition(Kind::Vm, "a", READY, TRUE, "Running")
        .await;
    assert!(h.sim.exit_process(&uid, false));
    h.until_condition(Kind::Vm, "a", READY, FALSE, "CrashLoopBackOff")
        .await;
    assert_eq!(h.sim.pid_of(&uid), None);
    let restarts = h
        .events(Kind::Vm, "a")
        .iter()
        .filter(|e| e.reason == Reason::Restarted)
        .count();
    assert_eq!(restarts, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_launch_is_rolled_back_and_resumed_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimulatedRuntime::new();
    sim.hang_after("a", VmStep::Launch);
    let h = Harness::start(test_config(dir.path()), sim.clone());
    h.apply_image_and_vm_a().await;
    h.until_journaled_running("launch").await;
    let uid = h.uid(Kind::Vm, "a");
    assert!(
        sim.pid_of(&uid).is_some(),
        "the VMM was spawned before the crash"
    );
    let engine = h.engine.clone();
    h.crash();
    drop(engine);

    // A new daemon on the same state dir and the same (simulated) host.
    sim.clear_hangs();
    let engine = Arc::new(Engine::new(test_config(dir.path()), sim.clone()).unwrap());
    let handled = bounded("recover", engine.recover_journal()).await.unwrap();
    assert_eq!(handled, 1);
    let h = Harness::with_engine(engine, sim.clone());
    h.until_condition(Kind::Vm, "a", READY, TRUE, "Running")
        .await;
    let steps = h.db().journal_for(&uid, 50).unwrap();
    let launch_rows: Vec<String> = steps
        .iter()
        .filter(|s| s.step == "launch")
        .map(|s| s.outcome.to_string())
        .collect();
    assert_eq!(launch_rows, vec!["rolled-back", "done"], "{steps:?}");
    assert!(
        steps
            .iter()
            .any(|s| s.step == "shutdown" && s.outcome == JournalOutcome::Done),
        "rollback ran shutdown"
    );
    assert_eq!(sim.duplicate_launches(), 0, "never two VMMs for one VM");
    assert_eq!(sim.running_count(), 1);
    assert!(h.db().journal_unfinished().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_ip_is_honoured_and_conflicts_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(test_config(dir.path()), SimulatedRuntime::new());
    let fixed = |name: &str, ip: &str| {
        vm_yaml(
            name,
            "base",
            "512Mi",
            &format!("  network:\n    ip: {ip}\n"),
        )
    };
    h.apply(
        &[(
            "/s/a.yaml",
            &format!("{IMAGE}---\n{}", fixed("a", "172.30.0.50")),
        )],
        |_| {},
    )
    .await
    .unwrap();
    h.until_condition(Kind::Vm, "a", READY, TRUE, "Running")
        .await;
    assert_eq!(
        h.status(Kind::Vm, "a")
            .ip
            .map(|ip| ip.to_string())
            .as_deref(),
        Some("172.30.0.50")
    );

    h.apply(&[("/s/b.yaml", &fixed("b", "172.30.0.50"))], |_| {})
        .await
        .unwrap();
    h.until_condition(Kind::Vm, "b", READY, FALSE, "IPConflict")
        .await;
    let msg = status::condition(&h.status(Kind::Vm, "b").conditions, READY)
        .unwrap()
        .message
        .clone();
    assert!(
        msg.contains("172.30.0.50") && msg.contains("already leased"),
        "{msg}"
    );
    assert_eq!(h.sim.pid_of(&h.uid(Kind::Vm, "b")), None);

    // Moving a to another static address is a restart with the new address.
    let uid = h.uid(Kind::Vm, "a");
    let pid = h.sim.pid_of(&uid).unwrap();
    let moved = h
        .apply(&[("/s/a.yaml", &fixed("a", "172.30.0.60"))], |_| {})
        .await
        .unwrap();
    assert!(
        moved.items[0]
            .plan
            .iter()
            .all(|p| p.change_class == "restart"),
        "{:?}",
        moved.items[0].plan
    );
    h.until("a moved", |h| {
        h.status(Kind::Vm, "a")
            .ip
            .map(|ip| ip.to_string())
            .as_deref()
            == Some("172.30.0.60")
            && status::is_true(&h.status(Kind::Vm, "a").conditions, READY)
    })
    .await;
    assert_ne!(h.sim.pid_of(&uid), Some(pid));
    let launched = h.engine.load_handles(&uid).await.unwrap().launched.unwrap();
    assert_eq!(launched.ip, Some("172.30.0.60".parse().unwrap()));
    // Now b gets its address.
    h.engine.ctl.queue.retry_now(key(Kind::Vm, "b"));
    h.until_condition(Kind::Vm, "b", READY, TRUE, "Running")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_re_probed_and_re_resolved_when_their_files_vanish() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(test_config(dir.path()), SimulatedRuntime::new());
    h.apply(&[("/s/i.yaml", IMAGE)], |_| {}).await.unwrap();
    h.until_phase(Kind::Image, "base", Phase::Ready).await;
    let uid = h.uid(Kind::Image, "base");
    let count = |h: &Harness| {
        h.db()
            .journal_for(&uid, 50)
            .unwrap()
            .iter()
            .filter(|s| s.step == "resolve-image")
            .count()
    };
    assert_eq!(count(&h), 1);
    h.sim.lose_image_files(Path::new("/images/rootfs.ext4"));
    h.sim.fail_image("base", 1);
    h.engine.enqueue_all().await.unwrap(); // what a resync does
    h.until("resolved again after a failure", |h| {
        count(h) == 3 && status::is_true(&h.status(Kind::Image, "base").conditions, READY)
    })
    .await;
    let outcomes: Vec<String> = h
        .db()
        .journal_for(&uid, 50)
        .unwrap()
        .into_iter()
        .map(|s| s.outcome.to_string())
        .collect();
    assert_eq!(outcomes, vec!["done", "failed", "done"]);
    let events = h.events(Kind::Image, "base");
    assert!(events
        .iter()
        .any(|e| e.reason == Reason::ReconcileFailed && e.message.contains("simulated failure")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_rollback_does_not_stop_the_next_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimulatedRuntime::new();
    sim.hang_after("a", VmStep::Launch);
    let h = Harness::start(test_config(dir.path()), sim.clone());
    h.apply_image_and_vm_a().await;
    h.until_journaled_running("launch").await;
    let uid = h.uid(Kind::Vm, "a");
    h.crash();

    sim.clear_hangs();
    sim.fail_step("a", VmStep::Shutdown, 1);
    let engine = Arc::new(Engine::new(test_config(dir.path()), sim.clone()).unwrap());
    assert_eq!(
        bounded("recover", engine.recover_journal()).await.unwrap(),
        1
    );
    let h = Harness::with_engine(engine, sim.clone());
    h.until_condition(Kind::Vm, "a", READY, TRUE, "Running")
        .await;
    let steps = h.db().journal_for(&uid, 50).unwrap();
    let launch: Vec<String> = steps
        .iter()
        .filter(|s| s.step == "launch")
        .map(|s| s.outcome.to_string())
        .collect();
    assert_eq!(
        launch.first().map(String::as_str),
        Some("failed"),
        "{steps:?}"
    );
    assert!(steps
        .iter()
        .find(|s| s.step == "launch")
        .unwrap()
        .error
        .as_deref()
        .unwrap()
        .contains("rollback failed"));
    let events = h.events(Kind::Vm, "a");
    assert!(events.iter().any(|e| e.reason == Reason::RollbackFailed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_without_effect_are_failures_not_a_hot_loop() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(test_config(dir.path()), SimulatedRuntime::new());
    h.sim.set_no_effect("a", VmStep::EnsureVmDir, true);
    h.apply_image_and_vm_a().await;
    h.until_condition(Kind::Vm, "a", STALLED, TRUE, "RepeatedFailures")
        .await;
    let ready = status::condition(&h.status(Kind::Vm, "a").conditions, READY)
        .unwrap()
        .clone();
    assert_eq!(ready.reason, Reason::NoProgress);
    assert!(ready.message.contains("ensure-vm-dir"), "{}", ready.message);
    h.sim.set_no_effect("a", VmStep::EnsureVmDir, false);
    h.engine.ctl.queue.retry_now(key(Kind::Vm, "a"));
    h.until_condition(Kind::Vm, "a", READY, TRUE, "Running")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booting_guest_is_polled_until_ready() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(test_config(dir.path()), SimulatedRuntime::new());
    h.sim.set_boot_observations(4);
    h.apply_image_and_vm_a().await;
    h.until_condition(Kind::Vm, "a", GUEST_READY, FALSE, "Booting")
        .await;
    let s = h.status(Kind::Vm, "a");
    assert_eq!(s.phase, Phase::Running);
    assert_eq!(
        status::condition(&s.conditions, READY).unwrap().reason,
        Reason::Booting
    );
    assert!(status::is_true(&s.conditions, RECONCILING));
    h.until_condition(Kind::Vm, "a", READY, TRUE, "Running")
        .await;
    let s = h.status(Kind::Vm, "a");
    let guest = status::condition(&s.conditions, GUEST_READY).unwrap();
    assert_eq!(guest.status, TRUE);
    assert_eq!(
        status::condition(&s.conditions, RECONCILING)
            .unwrap()
            .status,
        FALSE
    );
}

/// An address change that cannot run yet (a blocked recreate) keeps the VM on its old
/// address, and that address is not handed to another VM (issue: two guests, one IP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_stays_with_its_running_vm_until_the_new_launch() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(test_config(dir.path()), SimulatedRuntime::new());
    let image2 = IMAGE
        .replace("name: base", "name: other")
        .replace("/images/rootfs.ext4", "/images/other.ext4");
    h.apply(
        &[(
            "/s/x.yaml",
            &format!(
                "{IMAGE}---\n{image2}---\n{}",
                vm_yaml("x", "base", "512Mi", "")
            ),
        )],
        |_| {},
    )
    .await
    .unwrap();
    h.until_condition(Kind::Vm, "x", READY, TRUE, "Running")
        .await;
    let ip = |h: &Harness, name: &str| h.status(Kind::Vm, name).ip.map(|ip| ip.to_string());
    assert_eq!(ip(&h, "x").as_deref(), Some("172.30.0.2"));
    let uid = h.uid(Kind::Vm, "x");
    let pid = h.sim.pid_of(&uid).unwrap();

    // Another image and another address, without --allow-recreate: blocked.
    let moved = vm_yaml("x", "other", "512Mi", "  network:\n    ip: 172.30.0.40\n");
    h.apply(
        &[("/s/x.yaml", &format!("{IMAGE}---\n{image2}---\n{moved}"))],
        |_| {},
    )
    .await
    .unwrap();
    h.until_condition(Kind::Vm, "x", READY, FALSE, "RecreateBlocked")
        .await;
    assert_eq!(h.sim.pid_of(&uid), Some(pid), "x keeps running");
    assert_eq!(
        ip(&h, "x").as_deref(),
        Some("172.30.0.2"),
        "on its old address"
    );

    // A new VM must not get x's address.
    h.apply(&[("/s/y.yaml", &vm_yaml("y", "base", "512Mi", ""))], |_| {})
        .await
        .unwrap();
    h.until_condition(Kind::Vm, "y", READY, TRUE, "Running")
        .await;
    assert_ne!(ip(&h, "y").as_deref(), Some("172.30.0.2"));
    assert_ne!(
        ip(&h, "y").as_deref(),
        Some("172.30.0.40"),
        "x's reservation"
    );

    // Allowed: x restarts on the new address and the old one is free again.
    h.apply(
        &[("/s/x.yaml", &format!("{IMAGE}---\n{image2}---\n{moved}"))],
        |r| r.allow_recreate = true,
    )
    .await
    .unwrap();
    h.until("x runs on its new address", |h| {
        ip(h, "x").as_deref() == Some("172.30.0.40")
            && status::is_true(&h.status(Kind::Vm, "x").conditions, READY)
    })
    .await;
    assert_ne!(h.sim.pid_of(&uid), Some(pid));
    assert_eq!(
        h.db().lease_of(&uid).unwrap().unwrap().0.to_string(),
        "172.30.0.40"
    );
    h.apply(&[("/s/z.yaml", &vm_yaml("z", "base", "512Mi", ""))], |_| {})
        .await
        .unwrap();
    h.until_condition(Kind::Vm, "z", READY, TRUE, "Running")
        .await;
    assert_eq!(
        ip(&h, "z").as_deref(),
        Some("172.30.0.2"),
        "released after the move"
    );
}

/// A launch that succeeded is recorded with its journal row in one transaction, in the
/// store only: a VM directory where no file can be written (here a directory planted
/// where a `handles.json` used to go) does not leave the launch "unfinished", so the
/// next daemon neither rolls it back nor stops the healthy VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_that_succeeded_survives_a_daemon_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimulatedRuntime::new();
    let h = Harness::start(test_config(dir.path()), sim.clone());
    let stopped = vm_yaml("a", "base", "512Mi", "  state: Stopped\n");
    h.apply(&[("/s/a.yaml", &format!("{IMAGE}---\n{stopped}"))], |_| {})
        .await
        .unwrap();
    h.until_condition(Kind::Vm, "a", READY, TRUE, "Stopped")
        .await;
    let uid = h.uid(Kind::Vm, "a");
    std::fs::create_dir_all(h.engine.config.vm_dir(&uid).join("handles.json")).unwrap();
    h.apply_image_and_vm_a().await;
    h.until_condition(Kind::Vm, "a", READY, TRUE, "Running")
        .await;
    let pid = sim.pid_of(&uid).unwrap();
    assert!(h.db().journal_unfinished().unwrap().is_empty());

    let engine = h.engine.clone();
    h.crash();
    drop(engine);
    let engine = Arc::new(Engine::new(test_config(dir.path()), sim.clone()).unwrap());
    let handled = bounded("recover", engine.recover_journal()).await.unwrap();
    assert_eq!(handled, 0, "nothing was left unfinished");
    let h = Harness::with_engine(engine, sim.clone());
    h.engine.enqueue_all().await.unwrap();
    h.until_condition(Kind::Vm, "a", READY, TRUE, "Running")
        .await;
    assert_eq!(
        sim.pid_of(&uid),
        Some(pid),
        "the healthy VM was not restarted"
    );
    assert_eq!(sim.duplicate_launches(), 0);
}

/// One failed probe of a healthy VMM does not restart it: the engine acts only after
/// `probe_failure_threshold` (3) failures in a row, like a liveness probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_probe_below_the_threshold_restarts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.probe_retry = Duration::from_millis(50);
    let h = Harness::start(config, SimulatedRuntime::new());
    h.apply_image_and_vm_a().await;
    h.until_condition(Kind::Vm, "a", READY, TRUE, "Running")
        .await;
    let uid = h.uid(Kind::Vm, "a");
    let pid = h.sim.pid_of(&uid).unwrap();
    let probe_events = |h: &Harness| {
        h.db()
            .recent_events(Kind::Vm, "a", 100)
            .unwrap()
            .into_iter()
            .filter(|e| e.reason == Reason::ProbeFailed)
            .count()
    };

    // Two failures in a row: tolerated, reported, then a good probe.
    h.sim.fail_probes(&uid, 2);
    h.engine.ctl.queue.add(key(Kind::Vm, "a"));
    h.until("two failed probes reported", |h| probe_events(h) == 2)
        .await;
    h.until_condition(Kind::Vm, "a", READY, TRUE, "Running")
        .await;
    assert_eq!(h.sim.pid_of(&uid), Some(pid), "not restarted");
    assert!(status::is_true(&h.status(Kind::Vm, "a").conditions, READY));

    // Three in a row: unresponsive, restarted.
    h.sim.fail_probes(&uid, 3);
    h.engine.ctl.queue.add(key(Kind::Vm, "a"));
    h.until("restarted after three failed probes", |h| {
        h.sim.pid_of(&uid).is_some_and(|p| p != pid)
    })
    .await;
    h.until_condition(Kind::Vm, "a", READY, TRUE, "Running")
        .await;
}

/// `describe`, `diff` and dry runs plan from the engine's last observation: they never
/// probe the VMM (its control socket may serve one client at a time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previews_do_not_probe_the_vmm() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(test_config(dir.path()), SimulatedRuntime::new());
    h.apply_image_and_vm_a().await;
    h.until_condition(Kind::Vm, "a", READY, TRUE, "Running")
        .await;
    let uid = h.uid(Kind::Vm, "a");
    // Let the engine settle: no reconcile of a left queued.
    h.until("queue idle", |h| {
        h.engine.ctl.queue.is_empty() && h.engine.ctl.queue.active() == 0
    })
    .await;
    let before = h.sim.observations(&uid);
    let bigger = vm_yaml("a", "base", "1Gi", "");
    for _ in 0..5 {
        let preview = h
            .apply(&[("/s/a.yaml", &format!("{IMAGE}---\n{bigger}"))], |r| {
                r.dry_run = true
            })
            .await
            .unwrap();
        let vm = preview.items.iter().find(|i| i.name == "a").unwrap();
        assert_eq!(vm.plan.len(), 2, "{:?}", vm.plan);
        assert!(vm.plan.iter().all(|s| s.change_class == "restart"));
    }
    assert_eq!(h.sim.observations(&uid), before, "no probe for previews");
}

/// A preview of a VM the store does not have yet (`apply`'s plan, `diff`) observes
/// nothing and remembers nothing: its fresh uid names no host object and no VM the
/// daemon would ever forget. A stored VM is observed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_of_a_new_vm_probes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(test_config(dir.path()), SimulatedRuntime::new());
    let before = h.sim.observe_calls();
    let handles_before = h.engine.facts.handles.len();
    let new_vm = vm_yaml("fresh", "base", "1Gi", "");
    let preview = h
        .apply(
            &[("/s/fresh.yaml", &format!("{IMAGE}---\n{new_vm}"))],
            |r| r.dry_run = true,
        )
        .await
        .unwrap();
    let vm = preview.items.iter().find(|i| i.name == "fresh").unwrap();
    assert!(
        vm.plan.iter().any(|s| s.step == "launch"),
        "a new VM is planned from nothing: {:?}",
        vm.plan
    );
    assert_eq!(
        h.sim.observe_calls(),
        before,
        "no probe for a new VM's preview"
    );
    assert_eq!(
        h.engine.facts.handles.len(),
        handles_before,
        "no handles remembered for a uid that was never stored"
    );
}

/// A simulated host without step records (what `banger daemon --simulate` runs) still
/// runs every step; it only keeps no list of them, which would grow forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_without_step_records_runs_steps_and_keeps_no_list() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimulatedRuntime::new().without_step_records();
    let h = Harness::start(test_config(dir.path()), sim.clone());
    h.apply_image_and_vm_a().await;
    h.until_condition(Kind::Vm, "a", READY, TRUE, "Running")
        .await;
    assert_eq!(sim.running_count(), 1, "the VM's VMM runs");
    assert_eq!(sim.executed(), vec![], "no list of steps kept");
    assert_eq!(sim.max_concurrency_for("a"), 0, "no per-VM records kept");
    assert!(
        sim.max_concurrency() >= 1,
        "the global maximum is still kept"
    );
}

/// An interrupted `prepare-disk` is never rolled back by removing a disk: the disk it
/// ran on (here an existing one whose record could not be read, so the planner asked
/// for a disk) may hold the user's work. Recovery resumes it; the disk stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_prepare_disk_never_removes_a_disk() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimulatedRuntime::new();
    let h = Harness::start(test_config(dir.path()), sim.clone());
    let stopped = vm_yaml("a", "base", "512Mi", "  state: Stopped\n");
    h.apply(&[("/s/a.yaml", &format!("{IMAGE}---\n{stopped}"))], |_| {})
        .await
        .unwrap();
    h.until_condition(Kind::Vm, "a", READY, TRUE, "Stopped")
        .await;
    let uid = h.uid(Kind::Vm, "a");
    let disk = sim.disk_serial(&uid).unwrap();

    sim.hide_disk(&uid);
    sim.hang_after("a", VmStep::PrepareDisk);
    h.apply_image_and_vm_a().await;
    h.until_journaled_running("prepare-disk").await;
    h.crash();

    sim.clear_hangs();
    let engine = Arc::new(Engine::new(test_config(dir.path()), sim.clone()).unwrap());
    assert_eq!(
        bounded("recover", engine.recover_journal()).await.unwrap(),
        1
    );
    let h = Harness::with_engine(engine, sim.clone());
    let steps = h.db().journal_for(&uid, 50).unwrap();
    assert!(
        steps
            .iter()
            .any(|s| s.step == "prepare-disk" && s.outcome == JournalOutcome::Resumed),
        "{steps:?}"
    );
    assert!(!steps.iter().any(|s| s.step == "remove-disk"), "{steps:?}");
    assert_eq!(
        sim.disk_serial(&uid),
        Some(disk),
        "the disk is the same one"
    );
}
