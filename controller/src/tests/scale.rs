use super::*;
use crate::runtime::VmStep;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_is_scoped_to_the_same_path_set() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(test_config(dir.path()), SimulatedRuntime::new());
    let set_a = |r: &mut ApplyRequest| r.path_set = vec!["/work/a".into()];
    let set_b = |r: &mut ApplyRequest| r.path_set = vec!["/work/b".into()];
    h.apply(
        &[
            ("/work/a/i.yaml", IMAGE),
            (
                "/work/a/v.yaml",
                &format!(
                    "{}---\n{}",
                    vm_yaml("a1", "base", "512Mi", ""),
                    vm_yaml("a2", "base", "512Mi", "")
                ),
            ),
        ],
        set_a,
    )
    .await
    .unwrap();
    h.apply(
        &[("/work/b/v.yaml", &vm_yaml("b1", "base", "512Mi", ""))],
        set_b,
    )
    .await
    .unwrap();
    h.until_condition(Kind::Vm, "a2", READY, TRUE, "Running")
        .await;

    // Dry run lists the prune and changes nothing.
    let files = [
        ("/work/a/i.yaml", IMAGE),
        (
            "/work/a/v.yaml",
            &vm_yaml("a1", "base", "512Mi", "") as &str,
        ),
    ];
    let dry = h
        .apply(&files, |r| {
            set_a(r);
            r.prune = true;
            r.dry_run = true;
        })
        .await
        .unwrap();
    let pruned: Vec<&str> = dry
        .items
        .iter()
        .filter(|i| i.action == ApplyAction::Pruned)
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(pruned, vec!["a2"]);
    assert!(h.exists(Kind::Vm, "a2"));

    let resp = h
        .apply(&files, |r| {
            set_a(r);
            r.prune = true;
        })
        .await
        .unwrap();
    assert_eq!(
        resp.items
            .iter()
            .filter(|i| i.action == ApplyAction::Pruned)
            .count(),
        1
    );
    h.until_gone(Kind::Vm, "a2").await;
    assert!(h.exists(Kind::Vm, "a1"));
    assert!(h.exists(Kind::Vm, "b1"), "other path sets are never pruned");
    assert!(h.exists(Kind::Image, "base"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_applies_run_one_reconcile_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimulatedRuntime::new();
    sim.set_latency(Duration::from_millis(2));
    let h = Arc::new(Harness::start(test_config(dir.path()), sim.clone()));
    h.apply(&[("/s/i.yaml", IMAGE)], |_| {}).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..50u32 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let mem = format!("{}Mi", 256 + 16 * (i % 8));
            h.apply(&[("/s/a.yaml", &vm_yaml("a", "base", &mem, ""))], |_| {})
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        bounded("apply", t).await.unwrap();
    }
    h.until("converged on the last applied spec", |h| {
        let obj = h.object(Kind::Vm, "a");
        let s = h.status(Kind::Vm, "a");
        let want = match &obj.resource {
            banger_specs::Resource::Vm(o) => o.spec.memory.0 / (1024 * 1024),
            _ => 0,
        };
        let launched = h
            .db()
            .get_handles(&obj.uid)
            .unwrap()
            .unwrap_or_default()
            .launched
            .map(|l| l.memory_mib);
        s.observed_generation == obj.generation
            && status::is_true(&s.conditions, READY)
            && launched == Some(want)
    })
    .await;
    assert_eq!(
        sim.max_concurrency_for("a"),
        1,
        "two reconciles of one VM overlapped"
    );
    assert_eq!(sim.duplicate_launches(), 0);
}

/// Copying a root disk is heavy: at most `max_heavy` copies run at once however many
/// VMs are reconciled together, while the other steps run side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_disks_are_prepared_within_the_heavy_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.max_concurrent = 8;
    config.max_heavy = 1;
    let sim = SimulatedRuntime::new();
    sim.set_latency(Duration::from_millis(20));
    let h = Harness::start(config, sim.clone());
    let mut docs = String::from(IMAGE);
    for i in 0..6 {
        docs.push_str("---\n");
        docs.push_str(&vm_yaml(&format!("vm-{i}"), "base", "256Mi", ""));
    }
    h.apply(&[("/s/many.yaml", &docs)], |_| {}).await.unwrap();
    h.until("6 VMs Running", |h| h.running_vms() == 6).await;
    assert_eq!(sim.max_concurrency_of(VmStep::PrepareDisk), 1);
    assert!(
        sim.max_concurrency_of(VmStep::EnsureVmDir) > 1,
        "the VMs were reconciled side by side: {}",
        sim.max_concurrency_of(VmStep::EnsureVmDir)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_vms_converge() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.bridge_network = std::net::Ipv4Addr::new(10, 200, 0, 0);
    config.bridge_prefix = 16;
    config.max_concurrent = 16;
    let sim = SimulatedRuntime::new();
    let h = Harness::start(config, sim.clone());
    let mut docs = String::from(IMAGE);
    for i in 0..1000 {
        docs.push_str("---\n");
        docs.push_str(&vm_yaml(&format!("vm-{i:04}"), "base", "256Mi", ""));
    }
    let resp = h.apply(&[("/s/many.yaml", &docs)], |_| {}).await.unwrap();
    assert_eq!(resp.items.len(), 1001);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let ready = h
            .db()
            .list_objects(Some(Kind::Vm))
            .unwrap()
            .iter()
            .filter(|o| {
                status::condition(&h.status(Kind::Vm, o.resource.name()).conditions, READY)
                    .is_some_and(|c| c.status == TRUE && c.reason == Reason::Running)
            })
            .count();
        if ready == 1000 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {ready}/1000 VMs ready"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(sim.running_count(), 1000);
    assert_eq!(h.db().lease_count().unwrap(), 1000);
    assert!(
        sim.max_concurrency() <= 16,
        "global bound: {}",
        sim.max_concurrency()
    );
    let ips: std::collections::HashSet<String> = h
        .db()
        .list_objects(Some(Kind::Vm))
        .unwrap()
        .iter()
        .filter_map(|o| {
            h.status(Kind::Vm, o.resource.name())
                .ip
                .map(|ip| ip.to_string())
        })
        .collect();
    assert_eq!(ips.len(), 1000, "every VM has its own address");
}

/// Creating and deleting 1,000 VMs leaves the database within a fixed bound: a deleted
/// object's events and journal rows go with it, and the events of all objects together
/// are capped. A second round does not grow it further.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_vms_created_and_deleted_leave_the_database_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.bridge_network = std::net::Ipv4Addr::new(10, 200, 0, 0);
    config.bridge_prefix = 16;
    config.max_concurrent = 16;
    config.events_total = 1_500;
    let db_path = config.db_path();
    let h = Harness::start(config, SimulatedRuntime::new());
    h.apply(&[("/s/i.yaml", IMAGE)], |_| {}).await.unwrap();
    let names: Vec<String> = (0..1000).map(|i| format!("vm-{i:04}")).collect();
    let docs: String = names
        .iter()
        .map(|n| format!("---\n{}", vm_yaml(n, "base", "256Mi", "")))
        .collect();
    let size = |p: &Path| {
        let wal = p.with_extension("db-wal");
        std::fs::metadata(p).map_or(0, |m| m.len()) + std::fs::metadata(wal).map_or(0, |m| m.len())
    };
    let mut pages = Vec::new();
    for round in 0..2 {
        h.apply(&[("/s/many.yaml", &docs)], |_| {}).await.unwrap();
        h.until(&format!("round {round}: 1000 VMs Running"), |h| {
            h.running_vms() == 1000
        })
        .await;
        let delete = DeleteRequest {
            objects: names
                .iter()
                .map(|n| ObjectRef {
                    kind: Kind::Vm,
                    name: n.clone(),
                })
                .collect(),
            files: vec![],
        };
        apply::delete(&h.engine.ctl, &delete).await.unwrap();
        h.until(&format!("round {round}: all gone"), |h| {
            h.db().list_objects(Some(Kind::Vm)).unwrap().is_empty()
        })
        .await;
        let (events, journal) = h.db().history_rows().unwrap();
        let image_rows = h
            .db()
            .journal_for(&h.uid(Kind::Image, "base"), 1000)
            .unwrap()
            .len() as i64;
        assert_eq!(journal, image_rows, "no journal rows of deleted VMs");
        assert!(events <= 1_500, "round {round}: {events} events");
        assert_eq!(h.db().lease_count().unwrap(), 0);
        pages.push(h.db().page_bytes());
        let on_disk = size(&db_path);
        assert!(on_disk < 16 * 1024 * 1024, "round {round}: {on_disk} bytes");
    }
    // Free pages are reused: the second round fits in what the first one made. (Counted
    // in pages, not in file bytes: how much of the log is checkpointed at this moment
    // depends on the checkpoint thread's timing, not on reuse.)
    assert!(
        pages[1] <= pages[0] + pages[0] / 10,
        "database grew from {} to {} bytes of pages",
        pages[0],
        pages[1]
    );
}
