use super::*;
use crate::objects;
use crate::status::{EventType, Reason};
use crate::testutil::vm_resource;

fn open() -> (tempfile::TempDir, Database) {
    let dir = tempfile::tempdir().unwrap();
    let store = Database::open(&dir.path().join("banger.db")).unwrap();
    (dir, store)
}

/// An object `apply` owns, with uid `uid-<name>`.
fn stored_object(name: &str, resource: banger_specs::Resource, generation: i64) -> StoredObject {
    StoredObject {
        uid: format!("uid-{name}"),
        generation,
        hash: objects::spec_hash(&resource),
        resource,
        owner: Owner::Cli { path_set: vec![] },
        allow_recreate: false,
        created: "t".into(),
        deleting: None,
    }
}

#[test]
fn migrations_run_once_and_reopen_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("banger.db");
    {
        let s = Database::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), schema::MIGRATIONS.len() as i64);
        let r = vm_resource("a", "base");
        s.put_object(&StoredObject {
            uid: "u1".into(),
            generation: 1,
            hash: objects::spec_hash(&r),
            resource: r,
            owner: Owner::Cli {
                path_set: vec!["/x".into()],
            },
            allow_recreate: false,
            created: "t".into(),
            deleting: None,
        })
        .unwrap();
    }
    let s = Database::open(&path).unwrap();
    assert_eq!(s.schema_version().unwrap(), schema::MIGRATIONS.len() as i64);
    let o = s.get_object(Kind::Vm, "a").unwrap().unwrap();
    assert_eq!(o.uid, "u1");
    assert_eq!(
        o.owner,
        Owner::Cli {
            path_set: vec!["/x".into()]
        }
    );
    assert_eq!(
        s.referrers(Kind::Vm, "base").unwrap(),
        vec!["a".to_string()]
    );
}

#[test]
fn leases_honour_static_ips_and_report_conflicts() {
    let (_d, s) = open();
    let net = Ipv4Addr::new(172, 30, 0, 0);
    let a = s
        .lease("a", &crate::host::names::mac_address_of("a"), None, net, 24)
        .unwrap()
        .ip;
    assert_eq!(
        a,
        Ipv4Addr::new(172, 30, 0, 2),
        "first address is the bridge"
    );
    assert_eq!(
        s.lease("a", &crate::host::names::mac_address_of("a"), None, net, 24)
            .unwrap()
            .ip,
        a,
        "stable"
    );
    let b = s
        .lease(
            "b",
            &crate::host::names::mac_address_of("b"),
            Some(Ipv4Addr::new(172, 30, 0, 50)),
            net,
            24,
        )
        .unwrap()
        .ip;
    assert_eq!(b, Ipv4Addr::new(172, 30, 0, 50));
    let err = s
        .lease(
            "c",
            &crate::host::names::mac_address_of("c"),
            Some(Ipv4Addr::new(172, 30, 0, 50)),
            net,
            24,
        )
        .unwrap_err();
    assert!(err.to_string().contains("already leased"), "{err}");
    let err = s
        .lease(
            "c",
            &crate::host::names::mac_address_of("c"),
            Some(Ipv4Addr::new(10, 0, 0, 5)),
            net,
            24,
        )
        .unwrap_err();
    assert!(err.to_string().contains("outside"), "{err}");
    s.release_lease("b").unwrap();
    assert_eq!(
        s.lease(
            "c",
            &crate::host::names::mac_address_of("c"),
            Some(Ipv4Addr::new(172, 30, 0, 50)),
            net,
            24
        )
        .unwrap()
        .ip,
        b
    );
    assert_eq!(gateway_of(net, 24), Ipv4Addr::new(172, 30, 0, 1));
    assert_ne!(
        crate::host::names::mac_address_of("a"),
        crate::host::names::mac_address_of("b")
    );
    // Exhaustion of a tiny network.
    let tiny = Ipv4Addr::new(10, 9, 9, 0);
    s.lease("t1", "m", None, tiny, 30).unwrap();
    assert!(matches!(
        s.lease("t2", "m", None, tiny, 30),
        Err(StoreError::LeasesExhausted { .. })
    ));
}

#[test]
fn an_address_change_reserves_until_committed() {
    let (_d, s) = open();
    let net = Ipv4Addr::new(172, 30, 0, 0);
    let ip = |last: u8| Ipv4Addr::new(172, 30, 0, last);
    let x = s.lease("x", "mx", None, net, 24).unwrap();
    assert_eq!((x.ip, x.pending), (ip(2), false));
    // x asks for .9: a reservation; .2 stays x's.
    let moved = s.lease("x", "mx", Some(ip(9)), net, 24).unwrap();
    assert_eq!((moved.ip, moved.pending), (ip(9), true));
    assert_eq!(s.lease("x", "mx", Some(ip(9)), net, 24).unwrap(), moved);
    assert_eq!(s.lease_of("x").unwrap().unwrap().0, ip(2));
    let y = s.lease("y", "my", None, net, 24).unwrap();
    assert_eq!(y.ip, ip(3), "neither x's address nor its reservation");
    assert!(s.lease("z", "mz", Some(ip(9)), net, 24).is_err());
    assert_eq!(s.lease_count().unwrap(), 2, "reservations are not leases");
    assert_eq!(s.leased_uids().unwrap(), ["x", "y"]);
    // Committed: .9 is x's, .2 is free.
    assert!(s.commit_lease("x").unwrap());
    assert!(!s.commit_lease("x").unwrap());
    assert_eq!(s.lease_of("x").unwrap().unwrap().0, ip(9));
    assert_eq!(s.lease("z", "mz", None, net, 24).unwrap().ip, ip(2));
    // Asking for the active address again drops a reservation.
    s.lease("y", "my", Some(ip(20)), net, 24).unwrap();
    let back = s.lease("y", "my", None, net, 24).unwrap();
    assert_eq!((back.ip, back.pending), (ip(3), false));
    assert_eq!(
        s.lease("w", "mw", Some(ip(20)), net, 24).unwrap().ip,
        ip(20)
    );
    // Release drops both rows.
    s.lease("w", "mw", Some(ip(21)), net, 24).unwrap();
    s.release_lease("w").unwrap();
    assert_eq!(
        s.lease("v", "mv", Some(ip(21)), net, 24).unwrap().ip,
        ip(21)
    );
}

#[test]
fn events_are_capped_per_object_and_journal_tracks_unfinished() {
    let (_d, s) = open();
    let event = |name: &str, message: String| NewEvent {
        kind: Kind::Vm,
        name: name.into(),
        type_: EventType::Normal,
        reason: Reason::Created,
        message,
    };
    let caps = EventCaps {
        per_object: 4,
        total: 100,
    };
    for i in 0..10 {
        s.add_event(&event("a", format!("m{i}")), caps).unwrap();
    }
    s.add_event(&event("b", "other".into()), caps).unwrap();
    let only_a = EventFilter {
        kind: Some(Kind::Vm),
        name: Some("a".into()),
    };
    let a = s.list_events(&only_a, 0, 100).unwrap();
    assert_eq!(
        a.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
        vec!["m6", "m7", "m8", "m9"]
    );
    assert_eq!(
        s.list_events(&EventFilter::default(), 0, 100)
            .unwrap()
            .len(),
        5
    );
    let id = s.journal_begin("u", Kind::Vm, "a", "launch").unwrap();
    let id2 = s.journal_begin("u", Kind::Vm, "a", "ensure-tap").unwrap();
    s.journal_finish(id2, JournalOutcome::Done, None).unwrap();
    let open_rows = s.journal_unfinished().unwrap();
    assert_eq!(open_rows.len(), 1);
    assert_eq!(open_rows[0].id, id);
    assert_eq!(open_rows[0].step, "launch");
    let steps = s.journal_for("u", 10).unwrap();
    assert_eq!(
        steps
            .iter()
            .map(|s| s.outcome.to_string())
            .collect::<Vec<_>>(),
        vec!["running", "done"]
    );
}

#[test]
fn sync_requests_are_numbered_per_workspace_and_go_with_the_object() {
    let (_d, s) = open();
    assert_eq!(s.sync_request("w1").unwrap(), None);
    let first = s.request_sync("w1", false, "t1").unwrap();
    assert_eq!((first.serial, first.force), (1, false));
    let second = s.request_sync("w1", true, "t2").unwrap();
    assert_eq!(
        (second.serial, second.force, second.at.as_str()),
        (2, true, "t2")
    );
    assert_eq!(
        s.request_sync("w2", false, "t3").unwrap().serial,
        1,
        "per workspace"
    );
    assert_eq!(s.sync_request("w1").unwrap(), Some(second));

    let mut manifest = crate::runtime::CopyManifest::default();
    manifest.insert("a.txt", crate::runtime::EntryDigest::directory());
    let status = ObjectStatus {
        base_commit: Some("abc".into()),
        ..ObjectStatus::default()
    };
    s.put_copy("code", "w1", &status, &InternalState::default(), &manifest)
        .unwrap();
    assert_eq!(s.copy_manifest("w1").unwrap(), Some(manifest));
    assert_eq!(s.get_status(Kind::Workspace, "code").unwrap().0, status);

    s.remove_object(Kind::Workspace, "code", "w1").unwrap();
    assert_eq!(s.sync_request("w1").unwrap(), None);
    assert_eq!(s.copy_manifest("w1").unwrap(), None);
    assert!(
        s.sync_request("w2").unwrap().is_some(),
        "another workspace's kept"
    );
}

/// The daemon's cache of parsed rows agrees with SQLite after every kind of write: a
/// second connection (no cache) reads the same object, status, Image resolution and
/// lease as the cache holds, and a failed write leaves the cache as it was.
#[test]
fn the_row_cache_follows_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("banger.db");
    let db = Database::open_cached(&path).unwrap();
    let plain = Database::open(&path).unwrap();
    let cache = db.cache().unwrap();
    assert!(
        plain.cache().is_none(),
        "only the daemon's connection caches"
    );
    let net = Ipv4Addr::new(172, 30, 0, 0);
    // Every cached entry equals what the uncached connection reads.
    let agree = |what: &str| {
        for (kind, name) in [(Kind::Vm, "a"), (Kind::Image, "base")] {
            if let Some(o) = cache.object(kind, name) {
                assert_eq!(
                    Some(o),
                    plain.get_object(kind, name).unwrap(),
                    "{what}: {kind}/{name}"
                );
            }
            if let Some(s) = cache.status(kind, name) {
                assert_eq!(
                    s,
                    plain.get_status(kind, name).unwrap(),
                    "{what}: status of {kind}/{name}"
                );
            }
        }
        if let Some(r) = cache.image_resolution("base") {
            assert_eq!(
                r,
                plain.image_resolution("base").unwrap(),
                "{what}: resolution"
            );
        }
        if let Some(active) = cache.active_lease("uid-a") {
            assert_eq!(
                active,
                plain.lease_of("uid-a").unwrap().map(|(ip, _)| ip),
                "{what}: lease"
            );
        }
        assert_eq!(
            db.list_objects(None).unwrap(),
            plain.list_objects(None).unwrap(),
            "{what}: the list"
        );
    };

    let image = objects::document_from_json(
        Kind::Image,
        r#"{"apiVersion":"banger.dev/v1alpha1","kind":"Image","metadata":{"name":"base"},"spec":{"kernel":"/k","rootfs":"/r"}}"#,
    )
    .unwrap();
    db.put_object(&stored_object("base", image.clone(), 1))
        .unwrap();
    db.put_object(&stored_object("a", vm_resource("a", "base"), 1))
        .unwrap();
    assert!(
        cache.object(Kind::Vm, "a").is_some(),
        "a write fills the cache"
    );
    assert_eq!(cache.image_resolution("base"), None, "not read yet");
    assert_eq!(db.image_resolution("base").unwrap(), None);
    assert_eq!(
        cache.image_resolution("base"),
        Some(None),
        "known unresolved"
    );
    agree("objects written");

    // A new Image status changes its resolution.
    let resolved = crate::runtime::ResolvedImage {
        kernel: "/k".into(),
        initrd: None,
        rootfs: "/r".into(),
        kernel_args: None,
        readiness: Default::default(),
        rootfs_digest: "d1".into(),
    };
    let internal = InternalState {
        resolved: Some(resolved.clone()),
        ..InternalState::default()
    };
    db.put_status(Kind::Image, "base", &ObjectStatus::default(), &internal)
        .unwrap();
    assert_eq!(
        cache.image_resolution("base"),
        None,
        "dropped by the status write"
    );
    assert_eq!(db.image_resolution("base").unwrap(), Some(resolved));
    agree("image status written");

    // Statuses, a new generation, a deletion mark.
    let (mut status, vm_internal) = db.get_status(Kind::Vm, "a").unwrap();
    status.observed_generation = 7;
    db.put_status(Kind::Vm, "a", &status, &vm_internal).unwrap();
    assert_eq!(
        cache.status(Kind::Vm, "a").unwrap().0.observed_generation,
        7
    );
    db.put_objects(
        &[stored_object("a", vm_resource("a", "other"), 2)],
        &[],
        EventCaps {
            per_object: 10,
            total: 100,
        },
    )
    .unwrap();
    assert_eq!(cache.object(Kind::Vm, "a").unwrap().generation, 2);
    agree("generation 2");
    assert!(db.mark_deleting(Kind::Vm, "a").unwrap());
    assert!(cache.object(Kind::Vm, "a").is_none(), "dropped by the mark");
    assert!(db
        .get_object(Kind::Vm, "a")
        .unwrap()
        .unwrap()
        .deleting
        .is_some());
    agree("marked deleting");

    // Leases: a read-only grant is cached; a conflicting address fails and changes
    // nothing; commits and releases drop the entry.
    let mac = crate::host::names::mac_address_of("uid-a");
    let first = db.lease("uid-a", &mac, None, net, 24).unwrap();
    assert_eq!(
        cache.lease_grant("uid-a", None),
        Some(first),
        "a new lease is cached as written"
    );
    assert_eq!(db.lease("uid-a", &mac, None, net, 24).unwrap(), first);
    assert_eq!(cache.lease_grant("uid-a", None), Some(first));
    agree("leased");
    db.lease(
        "uid-b",
        &crate::host::names::mac_address_of("uid-b"),
        None,
        net,
        24,
    )
    .unwrap();
    let taken = plain.lease_of("uid-b").unwrap().unwrap().0;
    assert!(db.lease("uid-a", &mac, Some(taken), net, 24).is_err());
    agree("a refused lease");
    let moved = Ipv4Addr::new(172, 30, 0, 77);
    let reserved = db.lease("uid-a", &mac, Some(moved), net, 24).unwrap();
    assert!(reserved.pending);
    assert_eq!(
        cache.lease_grant("uid-a", Some(moved)),
        None,
        "a reservation is never granted from the cache"
    );
    assert_eq!(
        cache.active_lease("uid-a"),
        Some(Some(first.ip)),
        "the active lease stays beside the reservation"
    );
    agree("reserved");
    assert!(db.commit_lease("uid-a").unwrap());
    assert_eq!(
        db.lease("uid-a", &mac, Some(moved), net, 24).unwrap().ip,
        moved
    );
    agree("committed");
    db.release_lease("uid-a").unwrap();
    assert_eq!(cache.active_lease("uid-a"), None);
    agree("released");

    // Removal drops the object and its status.
    db.remove_object(Kind::Vm, "a", "uid-a").unwrap();
    assert!(cache.object(Kind::Vm, "a").is_none());
    assert!(cache.status(Kind::Vm, "a").is_none());
    assert!(plain.get_object(Kind::Vm, "a").unwrap().is_none());
    agree("removed");
}

/// `list_objects` on the daemon's connection answers from the row cache where it can
/// and reads the rest: after a restart (nothing cached) the whole list in one query,
/// later only the few objects the cache lacks. Either way the list equals what a
/// connection without a cache reads, and what was read is cached.
#[test]
fn listing_objects_reads_what_the_row_cache_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("banger.db");
    let names: Vec<String> = (0..20).map(|i| format!("vm-{i:02}")).collect();
    {
        let before_restart = Database::open_cached(&path).unwrap();
        for name in &names {
            before_restart
                .put_object(&stored_object(name, vm_resource(name, "base"), 1))
                .unwrap();
        }
    }
    let db = Database::open_cached(&path).unwrap();
    let plain = Database::open(&path).unwrap();
    let cache = db.cache().unwrap();
    assert!(
        cache.object(Kind::Vm, "vm-00").is_none(),
        "a new connection"
    );
    let listed = db.list_objects(None).unwrap();
    assert_eq!(listed.len(), 20);
    assert_eq!(listed, plain.list_objects(None).unwrap());
    assert!(
        names.iter().all(|n| cache.object(Kind::Vm, n).is_some()),
        "the list filled the cache"
    );

    // A few entries dropped, one object marked for deletion (dropped too): read again.
    for n in ["vm-03", "vm-11", "vm-19"] {
        cache.forget_document(Kind::Vm, n);
    }
    assert!(db.mark_deleting(Kind::Vm, "vm-07").unwrap());
    let listed = db.list_objects(Some(Kind::Vm)).unwrap();
    assert_eq!(listed, plain.list_objects(Some(Kind::Vm)).unwrap());
    assert!(
        listed[7].deleting.is_some(),
        "{:?}",
        listed[7].resource.name()
    );
    assert!(["vm-03", "vm-07", "vm-11", "vm-19"]
        .iter()
        .all(|n| cache.object(Kind::Vm, n).is_some()));
    assert!(db.list_objects(Some(Kind::Image)).unwrap().is_empty());

    db.remove_object(Kind::Vm, "vm-05", "uid-vm-05").unwrap();
    assert_eq!(
        db.list_objects(None).unwrap(),
        plain.list_objects(None).unwrap()
    );
    assert_eq!(db.list_objects(None).unwrap().len(), 19);
}

/// A status that says `phase`.
fn status_of(phase: crate::status::Phase) -> ObjectStatus {
    ObjectStatus {
        phase,
        ..ObjectStatus::default()
    }
}

/// Occupies the store's thread until the returned sender is dropped or sent to, so that
/// the calls made meanwhile queue up behind it; returns once the thread runs it.
async fn hold_store_thread(store: &Store) -> std::sync::mpsc::Sender<()> {
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (running, started) = tokio::sync::oneshot::channel::<()>();
    let store = store.clone();
    tokio::spawn(async move {
        store
            .run("hold the thread", move |_db| {
                let _ = running.send(());
                let _ = held.recv_timeout(std::time::Duration::from_secs(10));
                Ok(())
            })
            .await
    });
    started.await.unwrap();
    release
}

/// Spawns a call that writes the VM `name`'s status as `phase`; it answers whether it
/// ran in a shared transaction.
fn spawn_status_write(
    store: &Store,
    name: &'static str,
    phase: crate::status::Phase,
) -> tokio::task::JoinHandle<Result<bool, StoreError>> {
    let store = store.clone();
    tokio::spawn(async move {
        store
            .run("write status", move |db| {
                db.put_status(Kind::Vm, name, &status_of(phase), &InternalState::default())?;
                Ok(db.in_batch())
            })
            .await
    })
}

/// Lets the calls spawned so far reach the store's queue.
async fn let_calls_queue() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_queued_together_share_one_transaction_each_with_its_own_outcome() {
    use crate::status::Phase;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("banger.db");
    let store = Store::open(&path).unwrap();
    // Alone in the queue, a call is its own transaction.
    let alone = store.run("alone", |db| Ok(db.in_batch())).await.unwrap();
    assert!(!alone);

    let release = hold_store_thread(&store).await;
    let first = spawn_status_write(&store, "a", Phase::Running);
    let_calls_queue().await;
    // A call that writes and then fails: it alone gets the error; the others' writes
    // and its own (made before it failed) stay, as without the batch.
    let s = store.clone();
    let failing = tokio::spawn(async move {
        s.run("fail", |db| -> Result<(), StoreError> {
            db.journal_begin("uid-b", Kind::Vm, "b", "create-tap")?;
            db.put_handles("uid-b", &VmHandles::default())?;
            Err(StoreError::Task {
                path: db.path().to_path_buf(),
                operation: "fail",
                message: "on purpose".into(),
            })
        })
        .await
    });
    let_calls_queue().await;
    let s = store.clone();
    let panicking = tokio::spawn(async move {
        s.run("panic", |db| -> Result<(), StoreError> {
            db.put_status(
                Kind::Vm,
                "p",
                &status_of(Phase::Failed),
                &InternalState::default(),
            )?;
            panic!("on purpose");
        })
        .await
    });
    let_calls_queue().await;
    let last = spawn_status_write(&store, "c", Phase::Stopped);
    let_calls_queue().await;
    // Nothing is answered while the transaction is open.
    assert!(!first.is_finished() && !last.is_finished());
    release.send(()).unwrap();

    assert!(
        first.await.unwrap().unwrap(),
        "the first queued call ran in the batch"
    );
    assert!(failing.await.unwrap().is_err());
    let panicked = panicking.await.unwrap().unwrap_err();
    assert!(panicked.to_string().contains("on purpose"), "{panicked}");
    assert!(
        last.await.unwrap().unwrap(),
        "the last queued call ran in the batch"
    );

    // Another connection sees what the batch committed: each call's writes as if
    // it had been its own transaction (the failed call's writes did commit: they
    // were done before the failure, as without the batch).
    let other = Database::open(&path).unwrap();
    let phase = |name: &str| other.get_status(Kind::Vm, name).unwrap().0.phase;
    assert_eq!(phase("a"), Phase::Running);
    assert_eq!(phase("c"), Phase::Stopped);
    assert_eq!(other.journal_unfinished().unwrap().len(), 1);
    // A panic unwinds through the call: the status it wrote is still the call's
    // own write, committed with the batch like the failed call's.
    assert_eq!(phase("p"), Phase::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_transaction_that_is_lost_fails_every_call_in_it() {
    use crate::status::Phase;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("banger.db");
    let store = Store::open(&path).unwrap();
    let release = hold_store_thread(&store).await;
    let before = spawn_status_write(&store, "a", Phase::Running);
    let_calls_queue().await;
    // What SQLite does after a full disk or an I/O error: the whole transaction is
    // rolled back under the calls' feet.
    let s = store.clone();
    let rollback = tokio::spawn(async move {
        s.run("roll back", |db| {
            db.execute_raw("ROLLBACK");
            Ok(())
        })
        .await
    });
    let_calls_queue().await;
    let after = spawn_status_write(&store, "b", Phase::Running);
    let_calls_queue().await;
    release.send(()).unwrap();

    let lost = before.await.unwrap().unwrap_err();
    assert!(
        lost.to_string()
            .contains("rolled the shared transaction back"),
        "{lost}"
    );
    assert!(rollback.await.unwrap().is_err());
    after.await.unwrap().unwrap();

    let other = Database::open(&path).unwrap();
    let phase = |name: &str| other.get_status(Kind::Vm, name).unwrap().0.phase;
    assert_eq!(phase("a"), Phase::Pending, "no status row: the default");
    assert_eq!(phase("b"), Phase::Running);
    // The cache forgot what the lost write put there.
    assert!(store.cached().unwrap().status(Kind::Vm, "a").is_none());
    let (status, _) = store.get_status(Kind::Vm, "a").await.unwrap();
    assert_eq!(status.phase, Phase::Pending);
}

/// The daemon's connection finds a new VM's address in its cached set of taken
/// addresses: after every kind of lease write (grant, reservation, a reservation
/// dropped, committed, released) it grants what a connection that reads every lease
/// grants, and the set equals the table.
#[test]
fn cached_taken_addresses_grant_what_a_scan_grants() {
    let dir = tempfile::tempdir().unwrap();
    let cached = Database::open_cached(&dir.path().join("cached.db")).unwrap();
    let plain = Database::open(&dir.path().join("plain.db")).unwrap();
    let net = Ipv4Addr::new(172, 30, 0, 0);
    let (first, last) = (u32::from(net) + 2, u32::from(net) + 254);
    let ip = |n: u8| Ipv4Addr::new(172, 30, 0, n);
    let lease = |uid: &str, want: Option<Ipv4Addr>| {
        let mac = crate::host::names::mac_address_of(uid);
        let a = cached.lease(uid, &mac, want, net, 24).unwrap();
        let b = plain.lease(uid, &mac, want, net, 24).unwrap();
        assert_eq!((a.ip, a.pending), (b.ip, b.pending), "{uid} wants {want:?}");
        a.ip
    };
    // Whether the set is known (a release or a commit drops it: read whole again on the
    // next grant); when known, it finds what the table's addresses give.
    let agree = |what: &str, known: bool| {
        let cache = cached.cache().unwrap();
        let free = cache.lowest_free(first, last);
        assert_eq!(free.is_some(), known, "{what}: known");
        if let Some(free) = free {
            let scanned = database::lowest_free(cached.taken(), first, last);
            assert_eq!(free, scanned, "{what}");
        }
    };
    for uid in ["a", "b", "c", "d"] {
        lease(uid, None);
    }
    agree("granted", true);
    assert_eq!(lease("b", None), ip(3));
    cached.release_lease("b").unwrap();
    plain.release_lease("b").unwrap();
    agree("released", false);
    assert_eq!(lease("e", None), ip(3), "the gap is reused");
    // `a` moves to .6: .6 is reserved beside its active .2, so neither is free.
    assert_eq!(lease("a", Some(ip(6))), ip(6));
    agree("reserved", true);
    assert_eq!(lease("f", None), ip(7));
    // `a` asks for its active address again: the reservation goes, .6 is free.
    assert_eq!(lease("a", None), ip(2));
    agree("reservation dropped", true);
    assert_eq!(lease("g", None), ip(6));
    // `a` moves to .9 and commits: .2 is free.
    lease("a", Some(ip(9)));
    assert!(cached.commit_lease("a").unwrap());
    assert!(plain.commit_lease("a").unwrap());
    agree("committed", false);
    assert_eq!(lease("h", None), ip(2));
    agree("end", true);
}
