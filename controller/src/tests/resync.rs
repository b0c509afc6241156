//! Resyncs of converged VMs: a no-op writes nothing, and a restarted daemon on a
//! persistent simulated host adopts its VMs (no step) within its first resync pass.

use super::*;

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
