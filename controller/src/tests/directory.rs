use std::path::PathBuf;

use super::*;
use crate::objects::Owner;
use crate::sources::dir::DirSource;

/// An engine plus the specs directory watcher on a real temp dir.
struct DirHarness {
    h: Harness,
    specs: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl DirHarness {
    async fn start() -> DirHarness {
        let dir = tempfile::tempdir().unwrap();
        let specs = dir.path().join("specs");
        std::fs::create_dir_all(&specs).unwrap();
        let mut config = test_config(dir.path());
        config.specs_dir = Some(specs.clone());
        let h = Harness::start(config, SimulatedRuntime::new());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let engine = h.engine.clone();
        let dir_path = specs.clone();
        tokio::spawn(async move {
            let src = DirSource::new();
            src.watch(&engine.ctl, dir_path, engine.config.debounce, async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        DirHarness {
            h,
            specs,
            stop: Some(tx),
            _dir: dir,
        }
    }

    fn write(&self, name: &str, content: &str) {
        // Atomic-rename save, as editors do.
        let tmp = self.specs.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, self.specs.join(name)).unwrap();
    }
}

impl Drop for DirHarness {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

fn memory_mib(h: &Harness, name: &str) -> u64 {
    match h.object(Kind::Vm, name).resource {
        banger_specs::Resource::Vm(o) => o.spec.memory.0 / (1024 * 1024),
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_create_edit_rename_invalid_edit_and_delete() {
    let d = DirHarness::start().await;
    let h = &d.h;
    d.write("image.yaml", IMAGE);
    d.write("a.yaml", &vm_yaml("a", "base", "512Mi", ""));
    h.until_condition(Kind::Vm, "a", READY, TRUE, "Running")
        .await;
    let uid = h.uid(Kind::Vm, "a");
    let owner = h.object(Kind::Vm, "a").owner;
    assert_eq!(
        owner,
        Owner::SpecsDir {
            file: d.specs.join("a.yaml").display().to_string()
        }
    );

    // Edit: generation moves, the VM restarts with the new memory.
    d.write("a.yaml", &vm_yaml("a", "base", "1Gi", ""));
    h.until("edit picked up", |h| memory_mib(h, "a") == 1024)
        .await;
    assert_eq!(h.object(Kind::Vm, "a").generation, 2);
    h.until("restarted", |h| {
        h.status(Kind::Vm, "a").observed_generation == 2
            && status::is_true(&h.status(Kind::Vm, "a").conditions, READY)
    })
    .await;

    // Rename: same object (same uid), now owned by the new file; nothing deleted.
    std::fs::rename(d.specs.join("a.yaml"), d.specs.join("renamed.yaml")).unwrap();
    h.until("rename picked up", |h| {
        h.db().get_object(Kind::Vm, "a").unwrap().is_some_and(|o| {
            o.owner
                == Owner::SpecsDir {
                    file: d.specs.join("renamed.yaml").display().to_string(),
                }
        })
    })
    .await;
    assert_eq!(h.uid(Kind::Vm, "a"), uid);
    assert!(h.object(Kind::Vm, "a").deleting.is_none());

    // Invalid edit: the last good spec stays, with a condition naming file and line.
    d.write("renamed.yaml", &vm_yaml("a", "base", "lots", ""));
    h.until_condition(Kind::Vm, "a", SPEC_VALID, FALSE, "InvalidSpec")
        .await;
    let cond = status::condition(&h.status(Kind::Vm, "a").conditions, SPEC_VALID)
        .unwrap()
        .clone();
    assert!(cond.message.contains("renamed.yaml:"), "{}", cond.message);
    assert!(cond.message.contains("spec.memory"), "{}", cond.message);
    assert_eq!(memory_mib(h, "a"), 1024);
    assert!(
        status::is_true(&h.status(Kind::Vm, "a").conditions, READY),
        "the VM keeps running"
    );

    // Fixing it clears the condition.
    d.write("renamed.yaml", &vm_yaml("a", "base", "1Gi", ""));
    h.until("InvalidSpec cleared", |h| {
        status::condition(&h.status(Kind::Vm, "a").conditions, SPEC_VALID).is_none()
    })
    .await;

    // Delete the file: the VM goes, with everything it made.
    std::fs::remove_file(d.specs.join("renamed.yaml")).unwrap();
    h.until_gone(Kind::Vm, "a").await;
    assert!(!h.sim.has_anything(&uid));
    assert!(h.exists(Kind::Image, "base"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_remove_orphan_keeps_the_vm_and_stop_stops_it() {
    let d = DirHarness::start().await;
    let h = &d.h;
    let orphan = "apiVersion: banger.dev/v1alpha1\nkind: VM\nmetadata:\n  name: o\n  annotations:\n    banger.dev/on-remove: Orphan\nspec:\n  image: base\n";
    let stop = "apiVersion: banger.dev/v1alpha1\nkind: VM\nmetadata:\n  name: s\n  annotations:\n    banger.dev/on-remove: Stop\nspec:\n  image: base\n";
    d.write("image.yaml", IMAGE);
    d.write("o.yaml", orphan);
    d.write("s.yaml", stop);
    h.until_condition(Kind::Vm, "o", READY, TRUE, "Running")
        .await;
    h.until_condition(Kind::Vm, "s", READY, TRUE, "Running")
        .await;
    let (uo, us) = (h.uid(Kind::Vm, "o"), h.uid(Kind::Vm, "s"));
    std::fs::remove_file(d.specs.join("o.yaml")).unwrap();
    std::fs::remove_file(d.specs.join("s.yaml")).unwrap();
    h.until_gone(Kind::Vm, "o").await;
    assert!(h.sim.pid_of(&uo).is_some(), "orphaned VM keeps running");
    h.until_condition(Kind::Vm, "s", READY, TRUE, "Stopped")
        .await;
    assert_eq!(h.sim.pid_of(&us), None);
    assert!(h.exists(Kind::Vm, "s"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sources_conflict_and_force_takes_ownership() {
    let d = DirHarness::start().await;
    let h = &d.h;
    d.write("image.yaml", IMAGE);
    d.write("a.yaml", &vm_yaml("a", "base", "512Mi", ""));
    h.until("dir object", |h| h.exists(Kind::Vm, "a")).await;

    // The CLI may not overwrite what the directory owns.
    let err = h
        .apply(&[("/cli/a.yaml", &vm_yaml("a", "base", "1Gi", ""))], |_| {})
        .await
        .unwrap_err();
    match err {
        SourceError::Conflict(m) => assert!(
            m.contains("specs directory") && m.contains("--force"),
            "{m}"
        ),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(memory_mib(h, "a"), 512, "nothing changed");

    // --force moves it to the CLI; the directory then leaves it alone (no overwrite,
    // no delete) and reports the conflict as an event.
    h.apply(&[("/cli/a.yaml", &vm_yaml("a", "base", "1Gi", ""))], |r| {
        r.force = true
    })
    .await
    .unwrap();
    assert!(matches!(h.object(Kind::Vm, "a").owner, Owner::Cli { .. }));
    d.write("a.yaml", &vm_yaml("a", "base", "256Mi", ""));
    h.until("conflict event", |h| {
        h.events(Kind::Vm, "a")
            .iter()
            .any(|e| e.reason == Reason::SourceConflict)
    })
    .await;
    assert_eq!(memory_mib(h, "a"), 1024);
    std::fs::remove_file(d.specs.join("a.yaml")).unwrap();
    // A later rescan (here: a new file event) must not delete the CLI's object.
    d.write("other.yaml", &vm_yaml("b", "base", "512Mi", ""));
    h.until("b created", |h| h.exists(Kind::Vm, "b")).await;
    assert!(h.object(Kind::Vm, "a").deleting.is_none());
}

/// The specs directory removed (a remount, a careless `rm -r`) is not every file
/// deleted: its objects are kept, with a warning; once the directory is back it is
/// watched again and edits and removals work as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_specs_directory_keeps_its_objects_and_is_watched_again() {
    let d = DirHarness::start().await;
    let h = &d.h;
    d.write("image.yaml", IMAGE);
    d.write("a.yaml", &vm_yaml("a", "base", "512Mi", ""));
    h.until_condition(Kind::Vm, "a", READY, TRUE, "Running")
        .await;
    let uid = h.uid(Kind::Vm, "a");

    std::fs::remove_dir_all(&d.specs).unwrap();
    h.until("the missing directory is reported", |h| {
        h.db()
            .recent_events(Kind::Vm, "a", 50)
            .unwrap()
            .iter()
            .any(|e| e.reason == Reason::SpecsDirMissing)
    })
    .await;
    // Give a wrong implementation the time to delete (two rescans' worth), then check.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(h.object(Kind::Vm, "a").deleting.is_none(), "kept");
    assert!(h.exists(Kind::Image, "base"));
    assert!(h.sim.pid_of(&uid).is_some(), "still running");

    // Back, with an edit: picked up by a new watch.
    std::fs::create_dir_all(&d.specs).unwrap();
    d.write("image.yaml", IMAGE);
    d.write("a.yaml", &vm_yaml("a", "base", "1Gi", ""));
    h.until("the edit after the return is picked up", |h| {
        memory_mib(h, "a") == 1024
    })
    .await;
    assert_eq!(h.uid(Kind::Vm, "a"), uid, "the same object");
    // And a removed file deletes its object again.
    std::fs::remove_file(d.specs.join("a.yaml")).unwrap();
    h.until_gone(Kind::Vm, "a").await;
}

/// A spec file, or a directory, that others than its owner and root could write stops
/// counting: its objects keep their last good spec with `SpecValid=False` naming the
/// path, and removing files below an open directory deletes nothing, until it is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_and_directories_others_could_write_are_not_trusted() {
    use std::os::unix::fs::PermissionsExt;
    let chmod = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let d = DirHarness::start().await;
    let h = &d.h;
    d.write("image.yaml", IMAGE);
    std::fs::create_dir(d.specs.join("team")).unwrap();
    std::fs::write(
        d.specs.join("team/b.yaml"),
        vm_yaml("b", "base", "512Mi", ""),
    )
    .unwrap();
    d.write("a.yaml", &vm_yaml("a", "base", "512Mi", ""));
    h.until("a and b", |h| {
        h.exists(Kind::Vm, "a") && h.exists(Kind::Vm, "b")
    })
    .await;

    // A world-writable file: its edit is not taken; the object says why.
    chmod(&d.specs.join("a.yaml"), 0o666);
    std::fs::write(d.specs.join("a.yaml"), vm_yaml("a", "base", "1Gi", "")).unwrap();
    h.until_condition(Kind::Vm, "a", SPEC_VALID, FALSE, "InvalidSpec")
        .await;
    let cond = status::condition(&h.status(Kind::Vm, "a").conditions, SPEC_VALID)
        .unwrap()
        .clone();
    assert!(
        cond.message
            .contains("a.yaml: writable by its group and others (mode 0666)"),
        "{}",
        cond.message
    );
    assert_eq!(memory_mib(h, "a"), 512, "the last good spec stays");

    // A group-writable directory: a file removed below it deletes nothing.
    chmod(&d.specs.join("team"), 0o775);
    std::fs::remove_file(d.specs.join("team/b.yaml")).unwrap();
    h.until_condition(Kind::Vm, "b", SPEC_VALID, FALSE, "InvalidSpec")
        .await;
    let cond = status::condition(&h.status(Kind::Vm, "b").conditions, SPEC_VALID)
        .unwrap()
        .clone();
    assert!(
        cond.message
            .contains("team: writable by its group (mode 0775)"),
        "{}",
        cond.message
    );
    assert!(h.exists(Kind::Vm, "b") && h.object(Kind::Vm, "b").deleting.is_none());

    // Fixed: the edit is taken and the removal acted on.
    chmod(&d.specs.join("a.yaml"), 0o644);
    chmod(&d.specs.join("team"), 0o755);
    d.write("image.yaml", IMAGE); // a file event, so the directory is rescanned now
    h.until("edit taken", |h| memory_mib(h, "a") == 1024).await;
    h.until_gone(Kind::Vm, "b").await;
}
