//! Fault injection on the simulated runtime: for every VM step of a create, a start, a
//! stop, a restart-class change and a delete, the daemon is killed just before and just
//! after that step (`DaemonConfig::crash_at`), a new daemon starts on the same state and
//! host, and then:
//! - the VM converges to its spec;
//! - nothing exists on the host that the store does not account for (and every stored
//!   VM's lease is its only address);
//! - a VM that was running before the kill and is not the one acted on (a bystander)
//!   was neither stopped nor restarted; no VM ever had two VMMs;
//! - no journal row is left unfinished.

use std::sync::Mutex;

use super::*;
use crate::config::{CrashAt, CrashWhen};
use crate::engine::fault::CrashHook;

/// One action on VM `a`, from a converged setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Create,
    Start,
    Stop,
    Restart,
    Delete,
}

const ALL: [Scenario; 5] = [
    Scenario::Create,
    Scenario::Start,
    Scenario::Stop,
    Scenario::Restart,
    Scenario::Delete,
];

fn vm_a(state: &str, memory: &str) -> String {
    vm_yaml("a", "base", memory, &format!("  state: {state}\n"))
}

/// The specs before the action (besides the Image and the bystander `keep`).
fn setup_of(s: Scenario) -> Option<String> {
    match s {
        Scenario::Create => None,
        Scenario::Start => Some(vm_a("Stopped", "512Mi")),
        Scenario::Stop | Scenario::Restart | Scenario::Delete => Some(vm_a("Running", "512Mi")),
    }
}

/// The spec the action applies (`None`: it deletes `a`).
fn action_of(s: Scenario) -> Option<String> {
    match s {
        Scenario::Create | Scenario::Start => Some(vm_a("Running", "512Mi")),
        Scenario::Stop => Some(vm_a("Stopped", "512Mi")),
        Scenario::Restart => Some(vm_a("Running", "1Gi")),
        Scenario::Delete => None,
    }
}

async fn apply_all(h: &Harness, a: Option<&str>) {
    let keep = vm_yaml("keep", "base", "256Mi", "");
    let mut docs = format!("{IMAGE}---\n{keep}");
    if let Some(a) = a {
        docs.push_str("---\n");
        docs.push_str(a);
    }
    h.apply(&[("/s/all.yaml", &docs)], |_| {}).await.unwrap();
}

async fn act(h: &Harness, s: Scenario) {
    match action_of(s) {
        Some(spec) => apply_all(h, Some(&spec)).await,
        None => h.delete(Kind::Vm, "a").await,
    }
}

/// Waits until the store and the simulated host show the scenario's end state.
async fn until_converged(h: &Harness, s: Scenario) {
    h.until_condition(Kind::Vm, "keep", READY, TRUE, "Running")
        .await;
    match s {
        Scenario::Create | Scenario::Start | Scenario::Restart => {
            h.until_condition(Kind::Vm, "a", READY, TRUE, "Running")
                .await;
            let want = if s == Scenario::Restart { 1024 } else { 512 };
            h.until(&format!("a runs with {want} MiB"), |h| {
                let uid = h.uid(Kind::Vm, "a");
                h.db()
                    .get_handles(&uid)
                    .unwrap()
                    .and_then(|hd| hd.launched)
                    .is_some_and(|l| l.memory_mib == want)
            })
            .await;
        }
        Scenario::Stop => {
            h.until_condition(Kind::Vm, "a", READY, TRUE, "Stopped")
                .await
        }
        Scenario::Delete => h.until_gone(Kind::Vm, "a").await,
    }
}

/// A new engine on the same state dir and simulated host, recovered and running.
async fn restart(
    dir: &Path,
    sim: &SimulatedRuntime,
    crash_at: Option<CrashAt>,
) -> (Harness, Arc<tokio::sync::Notify>) {
    let mut config = test_config(dir);
    config.crash_at = crash_at;
    let crashed = Arc::new(tokio::sync::Notify::new());
    let hook: CrashHook = {
        let crashed = crashed.clone();
        Arc::new(move || crashed.notify_one())
    };
    let engine = Arc::new(
        Engine::new(config, sim.clone())
            .unwrap()
            .with_crash_hook(hook),
    );
    bounded("recover", engine.recover_journal()).await.unwrap();
    engine.enqueue_all().await.unwrap();
    (Harness::with_engine(engine, sim.clone()), crashed)
}

/// The VM steps of `a` an undisturbed action runs.
async fn steps_of(s: Scenario) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimulatedRuntime::new();
    let h = Harness::start(test_config(dir.path()), sim.clone());
    apply_all(&h, setup_of(s).as_deref()).await;
    if setup_of(s).is_some() {
        until_converged(
            &h,
            if s == Scenario::Start {
                Scenario::Stop
            } else {
                Scenario::Create
            },
        )
        .await;
    } else {
        h.until_condition(Kind::Vm, "keep", READY, TRUE, "Running")
            .await;
    }
    let before = sim.executed().len();
    act(&h, s).await;
    until_converged(&h, s).await;
    let steps = sim.executed()[before..]
        .iter()
        .filter(|(name, _)| name == "a")
        .count();
    h.crash();
    steps
}

/// Kills the daemon at `at` during scenario `s`, restarts it, checks the invariants.
async fn crash_and_recover(s: Scenario, at: CrashAt) {
    let what = format!("{s:?} {at:?}");
    let dir = tempfile::tempdir().unwrap();
    let sim = SimulatedRuntime::new();

    // Setup, converged, with an undisturbed daemon.
    let h = Harness::start(test_config(dir.path()), sim.clone());
    apply_all(&h, setup_of(s).as_deref()).await;
    match s {
        Scenario::Create => {
            h.until_condition(Kind::Vm, "keep", READY, TRUE, "Running")
                .await
        }
        Scenario::Start => until_converged(&h, Scenario::Stop).await,
        Scenario::Stop | Scenario::Restart | Scenario::Delete => {
            until_converged(&h, Scenario::Create).await
        }
    }
    let keep_uid = h.uid(Kind::Vm, "keep");
    let keep_pid = sim.pid_of(&keep_uid).unwrap();
    h.crash();

    // A daemon armed to die at `at`: the action, then the kill.
    let (h, crashed) = restart(dir.path(), &sim, Some(at)).await;
    act(&h, s).await;
    bounded(
        &format!("{what}: the crash point is reached"),
        crashed.notified(),
    )
    .await;
    h.crash();

    // A new daemon: recovery, then convergence.
    let (h, _) = restart(dir.path(), &sim, None).await;
    until_converged(&h, s).await;

    assert_eq!(sim.duplicate_launches(), 0, "{what}: two VMMs for one VM");
    assert_eq!(
        sim.pid_of(&keep_uid),
        Some(keep_pid),
        "{what}: the bystander was stopped or restarted"
    );
    let stored: Vec<String> = h
        .db()
        .list_objects(Some(Kind::Vm))
        .unwrap()
        .into_iter()
        .map(|o| o.uid)
        .collect();
    for uid in sim.uids_with_anything() {
        assert!(
            stored.contains(&uid),
            "{what}: host objects of {uid}, which no VM owns"
        );
    }
    assert_eq!(
        h.db().leased_uids().unwrap().len(),
        stored.len(),
        "{what}: leases without a VM"
    );
    assert_eq!(
        h.db().lease_count().unwrap(),
        i64::try_from(stored.len()).unwrap(),
        "{what}: a VM without its lease"
    );
    assert!(
        h.db().journal_unfinished().unwrap().is_empty(),
        "{what}: unfinished journal rows"
    );
    h.crash();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_point_of_every_vm_action_converges_and_leaks_nothing() {
    let tried = Mutex::new(Vec::new());
    for s in ALL {
        let steps = steps_of(s).await;
        assert!(steps > 0, "{s:?} runs steps");
        for k in 1..=u32::try_from(steps).unwrap() {
            for when in [CrashWhen::Before, CrashWhen::After] {
                crash_and_recover(s, CrashAt { step: k, when }).await;
                tried.lock().unwrap().push((s, k, when));
            }
        }
    }
    // create 5, start 1, stop 1, restart 2, delete 5 steps: each killed before and after.
    assert_eq!(tried.lock().unwrap().len(), 2 * (5 + 1 + 1 + 2 + 5));
}
