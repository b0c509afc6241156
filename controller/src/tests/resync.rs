//! Resyncs of converged VMs: a no-op writes nothing, and a restarted daemon on a
//! persistent simulated host adopts its VMs (no step) within its first resync pass.

use super::*;
use crate::runtime::VmStep;

fn fleet(n: usize) -> String {
    let mut docs = String::from(IMAGE);
    for i in 0..n {
        docs.push_str("---\n");
        docs.push_str(&vm_yaml(&format!("vm-{i:02}"), "base", "256Mi", ""));
    }
    docs
}

fn all_ready(h: &Harness, n: usize) -> bool {
    let vms = h.db().list_with_status(Some(Kind::Vm)).unwrap();
    vms.len() == n
        && vms
            .iter()
            .all(|(_, s)| s.phase == Phase::Running && status::is_true(&s.conditions, READY))
}

fn idle(h: &Harness) -> bool {
    h.engine.ctl.queue.is_empty() && h.engine.ctl.queue.active() == 0
}

/// A resync of converged VMs reconciles every object and writes no row at all: no
/// status, no journal row, no event, no lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_op_resync_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(test_config(dir.path()), SimulatedRuntime::new());
    h.apply(&[("/s/fleet.yaml", &fleet(12))], |_| {})
        .await
        .unwrap();
    h.until("12 VMs Running and Ready, queue idle", |h| {
        all_ready(h, 12) && idle(h)
    })
    .await;
    let before = h.engine.resyncs.counts();
    let written = h.db().rows_written();
    let first_trips = h.engine.ctl.store.trips();
    let queued = h.engine.enqueue_all().await.unwrap();
    assert_eq!(queued, 13, "the Image and 12 VMs");
    h.until("the resync pass completed", |h| {
        h.engine.resyncs.counts().completed == before.completed + 1 && idle(h)
    })
    .await;
    let after = h.engine.resyncs.counts();
    assert!(
        after.reconciles >= before.reconciles + 13,
        "every object reconciled: {before:?} -> {after:?}"
    );
    assert_eq!(
        h.db().rows_written() - written,
        0,
        "a no-op resync wrote rows"
    );
    assert!(all_ready(&h, 12));
    // What the VMs' creation wrote (their leases included) is cached as written: even
    // the first pass reads nothing but the list of keys.
    assert_eq!(
        h.engine.ctl.store.trips() - first_trips,
        1,
        "the first resync pass after the VMs converged"
    );

    // The pass above read what it needed once; another one answers every reconcile from
    // the store's cache: one trip in all, for the list of keys.
    let trips = h.engine.ctl.store.trips();
    resync_pass(&h).await;
    assert_eq!(
        h.engine.ctl.store.trips() - trips,
        1,
        "a cached resync pass makes one store trip"
    );
    assert_eq!(h.db().rows_written() - written, 0);
}

/// Runs one resync pass to its end.
async fn resync_pass(h: &Harness) {
    let before = h.engine.resyncs.counts().completed;
    h.engine.enqueue_all().await.unwrap();
    h.until("the resync pass completed", |h| {
        h.engine.resyncs.counts().completed == before + 1 && idle(h)
    })
    .await;
}

/// Two VMs converged and two resync passes run, so that every read of the next pass
/// comes from the store's cache.
async fn converged_and_cached(h: &Harness) {
    h.apply(&[("/s/fleet.yaml", &fleet(2))], |_| {})
        .await
        .unwrap();
    h.until("2 VMs Running and Ready, queue idle", |h| {
        all_ready(h, 2) && idle(h)
    })
    .await;
    resync_pass(h).await;
    let trips = h.engine.ctl.store.trips();
    resync_pass(h).await;
    assert_eq!(h.engine.ctl.store.trips() - trips, 1, "the pass was cached");
}

/// A cached pass sees a changed spec: the new memory is launched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_pass_sees_a_changed_spec() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(test_config(dir.path()), SimulatedRuntime::new());
    converged_and_cached(&h).await;
    let uid = h.uid(Kind::Vm, "vm-01");
    let pid = h.sim.pid_of(&uid);
    let doc = format!("{IMAGE}---\n{}", vm_yaml("vm-01", "base", "384Mi", ""));
    h.apply(&[("/s/fleet.yaml", &doc)], |_| {}).await.unwrap();
    h.until("vm-01 relaunched with 384 MiB", |h| {
        let s = h.status(Kind::Vm, "vm-01");
        s.observed_generation == 2
            && status::is_true(&s.conditions, READY)
            && h.sim.pid_of(&uid) != pid
    })
    .await;
    let launched = h.engine.load_handles(&uid).await.unwrap().launched.unwrap();
    assert_eq!(launched.memory_mib, 384);
}

/// A cached pass sees a changed status: an Image's new resolution (the VM's disk is
/// now of another content: a recreate, blocked without `--allow-recreate`), and a
/// problem with a VM's spec file recorded in its status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_pass_sees_a_changed_status() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(test_config(dir.path()), SimulatedRuntime::new());
    converged_and_cached(&h).await;
    let store = &h.engine.ctl.store;

    let (image_status, mut image_internal) = store.get_status(Kind::Image, "base").await.unwrap();
    let resolved = image_internal.resolved.as_mut().unwrap();
    resolved.rootfs_digest = "sha256:0123456789abcdef".into();
    store
        .put_status(Kind::Image, "base", image_status, image_internal)
        .await
        .unwrap();
    let (vm_status, mut vm_internal) = store.get_status(Kind::Vm, "vm-00").await.unwrap();
    vm_internal.invalid_spec = Some("/s/fleet.yaml line 3: a problem".into());
    store
        .put_status(Kind::Vm, "vm-00", vm_status, vm_internal)
        .await
        .unwrap();

    resync_pass(&h).await;
    for vm in ["vm-00", "vm-01"] {
        let s = h.status(Kind::Vm, vm);
        let ready = status::condition(&s.conditions, READY).unwrap();
        assert_eq!(
            (ready.status, ready.reason),
            (FALSE, Reason::RecreateBlocked),
            "{vm}: {ready:?}"
        );
    }
    let s = h.status(Kind::Vm, "vm-00");
    let valid = status::condition(&s.conditions, SPEC_VALID).unwrap();
    assert_eq!((valid.status, valid.reason), (FALSE, Reason::InvalidSpec));
    assert!(status::condition(&h.status(Kind::Vm, "vm-01").conditions, SPEC_VALID).is_none());
}

/// A cached pass sees a changed observation: a VMM that died without notice is
/// launched again, a tap deleted behind the daemon's back is made again (and the VMM
/// restarted onto it, as the planner does for a lost tap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_pass_sees_a_changed_observation() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(test_config(dir.path()), SimulatedRuntime::new());
    converged_and_cached(&h).await;
    let (uid0, uid1) = (h.uid(Kind::Vm, "vm-00"), h.uid(Kind::Vm, "vm-01"));
    let pid0 = h.sim.pid_of(&uid0).unwrap();
    assert!(h.sim.lose_process(&uid0));
    assert!(h.sim.lose_tap(&uid1));
    let executed = h.sim.executed().len();

    resync_pass(&h).await;
    h.until("both VMs Running and Ready again", |h| {
        all_ready(h, 2) && idle(h)
    })
    .await;
    let steps: Vec<(String, VmStep)> = h.sim.executed()[executed..].to_vec();
    assert!(
        steps.contains(&("vm-00".into(), VmStep::Launch)),
        "vm-00 relaunched: {steps:?}"
    );
    assert!(
        steps.contains(&("vm-01".into(), VmStep::EnsureTap)),
        "vm-01's tap made again: {steps:?}"
    );
    assert_ne!(h.sim.pid_of(&uid0), Some(pid0));
}

/// A daemon restarted on the same state directory and the same recorded simulated host
/// adopts the running VMs: same VMMs, no step, statuses unchanged, and its first
/// resync pass completes once every VM was observed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_adopts_a_recorded_simulated_host() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let record = config.state_dir.join("simulated-host.jsonl");
    let first = SimulatedRuntime::persistent(record.clone());
    let h = Harness::start(config.clone(), first.clone());
    h.apply(&[("/s/fleet.yaml", &fleet(5))], |_| {})
        .await
        .unwrap();
    h.until("5 VMs Running and Ready, queue idle", |h| {
        all_ready(h, 5) && idle(h)
    })
    .await;
    let uids: Vec<String> = (0..5)
        .map(|i| h.uid(Kind::Vm, &format!("vm-{i:02}")))
        .collect();
    let pids: Vec<Option<i32>> = uids.iter().map(|u| first.pid_of(u)).collect();
    assert!(pids.iter().all(Option::is_some));
    let statuses: Vec<ObjectStatus> = (0..5)
        .map(|i| h.status(Kind::Vm, &format!("vm-{i:02}")))
        .collect();
    h.crash();

    let second = SimulatedRuntime::persistent(record);
    let h = Harness::start(config, second.clone());
    h.engine.enqueue_all().await.unwrap();
    h.until("the first resync pass after the restart", |h| {
        h.engine.resyncs.counts().completed == 1 && idle(h)
    })
    .await;
    assert_eq!(second.executed(), vec![], "no step after the restart");
    let adopted: Vec<Option<i32>> = uids.iter().map(|u| second.pid_of(u)).collect();
    assert_eq!(adopted, pids, "the same VMMs");
    for (i, before) in statuses.iter().enumerate() {
        assert_eq!(&h.status(Kind::Vm, &format!("vm-{i:02}")), before);
    }
    assert_eq!(second.duplicate_launches(), 0);
}

/// The record survives a torn last line (a crash mid-write): the line is skipped and
/// the rest is adopted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_record_line_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let record = config.state_dir.join("simulated-host.jsonl");
    let first = SimulatedRuntime::persistent(record.clone());
    let h = Harness::start(config.clone(), first.clone());
    h.apply(&[("/s/fleet.yaml", &fleet(1))], |_| {})
        .await
        .unwrap();
    h.until("the VM Running and Ready", |h| all_ready(h, 1) && idle(h))
        .await;
    let uid = h.uid(Kind::Vm, "vm-00");
    let pid = first.pid_of(&uid);
    h.crash();
    let mut text = std::fs::read_to_string(&record).unwrap();
    text.push_str("{\"uid\":\"torn");
    std::fs::write(&record, text).unwrap();
    let second = SimulatedRuntime::persistent(record.clone());
    assert_eq!(second.pid_of(&uid), pid);
    let compacted = std::fs::read_to_string(&record).unwrap();
    assert!(
        !compacted.contains("torn"),
        "compacted without the torn line"
    );
}

/// A new VM's reconcile writes each step's completion in the same store trip as the
/// next step's journal row: one trip per step, plus the reads before, the last step's
/// completion and the status. Every row is `done` and each step's event is recorded,
/// in order, before the phase's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_vm_costs_one_store_trip_per_step() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(test_config(dir.path()), SimulatedRuntime::new());
    h.apply(&[("/s/i.yaml", IMAGE)], |_| {}).await.unwrap();
    h.until("the Image resolved, queue idle", |h| {
        h.status(Kind::Image, "base").phase == Phase::Ready && idle(h)
    })
    .await;
    h.apply(&[("/s/a.yaml", &vm_yaml("a", "base", "256Mi", ""))], |_| {})
        .await
        .unwrap();
    let applied = h.engine.ctl.store.trips();
    h.until("a Running and Ready, queue idle", |h| {
        all_ready(h, 1) && idle(h)
    })
    .await;
    let steps = h.db().journal_for(&h.uid(Kind::Vm, "a"), 50).unwrap();
    let events = h.events(Kind::Vm, "a");
    let names: Vec<&str> = steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(
        names,
        [
            "ensure-vm-dir",
            "ensure-tap",
            "ensure-nat",
            "prepare-disk",
            "launch"
        ]
    );
    assert!(
        steps.iter().all(|s| s.outcome == JournalOutcome::Done),
        "{steps:?}"
    );
    let reasons: Vec<Reason> = events.iter().map(|e| e.reason).collect();
    assert_eq!(
        reasons,
        [
            Reason::Created,
            Reason::DiskPrepared,
            Reason::Launched,
            Reason::PhaseChanged
        ]
    );
    // Its first read may come before the apply's answer: never more, possibly one
    // fewer. Two trips per step (row, then completion) would make 12.
    let reconcile = h.engine.ctl.store.trips() - applied;
    assert!(
        reconcile <= steps.len() as u64 + 3,
        "{reconcile} trips for {} steps",
        steps.len()
    );
}
