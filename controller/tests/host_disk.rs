//! Per-VM root disks from a real ext4 image made with mkfs.ext4: sparse copy, growth,
//! fsck, image left untouched, symlinks refused.
//!
//! Disks touch no network state, so these tests need no network namespace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use banger_controller::host::disk::{
    ensure_root_disk, probe_root_disk, remove_root_disk, root_disk_path, sparse_copy, CopyMethod,
    DiskError, ImageSource, RootDiskRequest,
};
use sha2::{Digest, Sha256};

const MIB: u64 = 1024 * 1024;

fn sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// A mostly empty 128 MiB ext4 image holding /hello.txt.
fn make_image(dir: &Path) -> PathBuf {
    let content = dir.join("content");
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("hello.txt"), b"hello from the image\n").unwrap();
    let image = dir.join("rootfs.ext4");
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&content)
        .arg(&image)
        .arg("128M")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    image
}

fn fsck_clean(path: &Path) {
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "e2fsck -fn {}: {}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Filesystem size in bytes from dumpe2fs -h.
fn fs_bytes(path: &Path) -> u64 {
    let out = Command::new("dumpe2fs")
        .arg("-h")
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    field("Block count:") * field("Block size:")
}

fn read_in_image(path: &Path, file: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {file}"))
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn sparse_copy_grows_and_leaves_the_image_alone() {
    let images = tempfile::tempdir().unwrap();
    let image_path = make_image(images.path());
    let image_hash = sha256(&image_path);
    let image_meta = std::fs::metadata(&image_path).unwrap();
    let state = tempfile::tempdir().unwrap();
    let vm_dir = state.path().join("vms/vm-0b6d8f1e");
    let image = ImageSource {
        identity: "image-uid-1".into(),
        rootfs: image_path.clone(),
    };
    let req = |size| RootDiskRequest {
        vm_name: "web",
        state_dir: state.path(),
        vm_dir: &vm_dir,
        image: &image,
        size_bytes: size,
        before_publish: None,
        prepared: None,
    };

    let started = Instant::now();
    let disk = ensure_root_disk(&req(256 * MIB)).unwrap();
    let elapsed = started.elapsed();
    println!(
        "measure: image {} MiB apparent, {} KiB allocated; disk made by {:?} in {:?}: {} MiB apparent, {} KiB allocated",
        image_meta.len() / MIB,
        image_meta.blocks() * 512 / 1024,
        disk.method,
        elapsed,
        disk.size_bytes / MIB,
        disk.allocated_bytes / 1024
    );
    assert!(matches!(
        disk.method,
        CopyMethod::Sparse | CopyMethod::Reflink
    ));
    assert_eq!(disk.path, root_disk_path(&vm_dir));
    assert_eq!(disk.size_bytes, 256 * MIB);
    assert!(
        disk.allocated_bytes < 64 * MIB,
        "copy is not sparse: {} bytes allocated",
        disk.allocated_bytes
    );
    let source = disk.source.clone().unwrap();
    assert_eq!(source.image_identity, "image-uid-1");
    assert_eq!(source.image_path, image_path);
    assert_eq!(source.image_size, 128 * MIB);
    assert_eq!(source.filesystem_bytes, 256 * MIB);
    let disk_id = source.disk_id.clone().expect("a new disk has an id");
    assert_eq!(disk_id.len(), 32, "{disk_id}");
    assert_eq!(fs_bytes(&disk.path), 256 * MIB, "filesystem not grown");
    fsck_clean(&disk.path);
    assert_eq!(
        read_in_image(&disk.path, "/hello.txt"),
        "hello from the image\n"
    );
    assert_eq!(sha256(&image_path), image_hash, "image modified");
    assert!(!vm_dir.join(".rootfs.ext4.tmp").exists());

    // Again: kept as is.
    let kept = ensure_root_disk(&req(256 * MIB)).unwrap();
    assert_eq!(kept.method, CopyMethod::Existing);
    assert_eq!(kept.size_bytes, 256 * MIB);
    assert_eq!(
        kept.source.unwrap().disk_id.as_ref(),
        Some(&disk_id),
        "same disk"
    );

    // Larger: grown in place, contents kept.
    let grown = ensure_root_disk(&req(320 * MIB)).unwrap();
    assert_eq!(grown.size_bytes, 320 * MIB);
    assert_eq!(fs_bytes(&grown.path), 320 * MIB);
    let grown_source = grown.source.clone().unwrap();
    assert_eq!(grown_source.filesystem_bytes, 320 * MIB);
    assert_eq!(
        grown_source.disk_id.as_ref(),
        Some(&disk_id),
        "a grown disk is the same disk"
    );
    fsck_clean(&grown.path);
    assert_eq!(
        read_in_image(&grown.path, "/hello.txt"),
        "hello from the image\n"
    );

    // Smaller: refused, naming the VM and both sizes; nothing changes.
    let err = ensure_root_disk(&req(200 * MIB)).unwrap_err();
    assert!(matches!(err, DiskError::WouldShrink { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("web")
            && text.contains(&(320 * MIB).to_string())
            && text.contains(&(200 * MIB).to_string()),
        "{text}"
    );
    assert_eq!(std::fs::metadata(&grown.path).unwrap().len(), 320 * MIB);

    // Another image: refused, never silently rebuilt.
    let other = ImageSource {
        identity: "image-uid-2".into(),
        rootfs: image_path.clone(),
    };
    let err = ensure_root_disk(&RootDiskRequest {
        image: &other,
        ..req(320 * MIB)
    })
    .unwrap_err();
    assert!(matches!(err, DiskError::OtherImage { .. }), "{err}");

    // A grow interrupted after extending the file (filesystem not resized yet) is
    // finished by the next ensure.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&grown.path)
        .unwrap()
        .set_len(384 * MIB)
        .unwrap();
    assert_eq!(fs_bytes(&grown.path), 320 * MIB);
    let finished = ensure_root_disk(&req(384 * MIB)).unwrap();
    assert_eq!(fs_bytes(&finished.path), 384 * MIB);
    assert_eq!(finished.source.unwrap().filesystem_bytes, 384 * MIB);
    fsck_clean(&finished.path);

    // Without its sidecar a disk's origin is unknown: refused, not overwritten.
    let sidecar = vm_dir.join("rootfs.source.json");
    let saved = std::fs::read(&sidecar).unwrap();
    std::fs::remove_file(&sidecar).unwrap();
    let err = ensure_root_disk(&req(384 * MIB)).unwrap_err();
    assert!(
        matches!(err, DiskError::OtherImage { ref recorded, .. } if recorded == "unknown"),
        "{err}"
    );
    std::fs::write(&sidecar, saved).unwrap();

    assert_eq!(sha256(&image_path), image_hash, "image modified");

    // Remove: idempotent, leaves the VM directory.
    remove_root_disk("web", state.path(), &vm_dir).unwrap();
    assert_eq!(probe_root_disk(&vm_dir).unwrap(), None);
    assert!(!vm_dir.join("rootfs.source.json").exists());
    assert!(vm_dir.is_dir());
    remove_root_disk("web", state.path(), &vm_dir).unwrap();

    // A disk made again is another disk: a new id.
    let again = ensure_root_disk(&req(256 * MIB)).unwrap();
    let again_id = again.source.unwrap().disk_id.unwrap();
    assert_ne!(again_id, disk_id);
    remove_root_disk("web", state.path(), &vm_dir).unwrap();
}

#[test]
fn sparse_copy_alone_is_byte_identical_and_sparse() {
    let images = tempfile::tempdir().unwrap();
    let image_path = make_image(images.path());
    let copy_path = images.path().join("copy.ext4");
    let src = std::fs::File::open(&image_path).unwrap();
    let dst = std::fs::File::create(&copy_path).unwrap();
    let started = Instant::now();
    sparse_copy(&src, &dst).unwrap();
    let elapsed = started.elapsed();
    let meta = std::fs::metadata(&copy_path).unwrap();
    println!(
        "measure: sparse_copy of a 128 MiB mkfs.ext4 image took {elapsed:?}; copy has {} KiB allocated (image {} KiB)",
        meta.blocks() * 512 / 1024,
        std::fs::metadata(&image_path).unwrap().blocks() * 512 / 1024
    );
    assert_eq!(meta.len(), 128 * MIB);
    assert!(meta.blocks() * 512 < 16 * MIB);
    assert_eq!(sha256(&copy_path), sha256(&image_path), "copy differs");
}

#[test]
fn image_larger_than_requested_size_is_refused() {
    let images = tempfile::tempdir().unwrap();
    let image_path = make_image(images.path());
    let state = tempfile::tempdir().unwrap();
    let vm_dir = state.path().join("vms/vm-small");
    let image = ImageSource {
        identity: "img".into(),
        rootfs: image_path,
    };
    let err = ensure_root_disk(&RootDiskRequest {
        vm_name: "small",
        state_dir: state.path(),
        vm_dir: &vm_dir,
        image: &image,
        before_publish: None,
        prepared: None,
        size_bytes: 64 * MIB,
    })
    .unwrap_err();
    assert!(matches!(err, DiskError::WouldShrink { .. }), "{err}");
    assert!(err.to_string().contains("small"), "{err}");
    assert_eq!(probe_root_disk(&vm_dir).unwrap(), None);
}

#[test]
fn symlinks_in_the_path_are_refused() {
    let images = tempfile::tempdir().unwrap();
    let image_path = make_image(images.path());
    let image = ImageSource {
        identity: "img".into(),
        rootfs: image_path,
    };
    let state = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();

    // A planted symlink for the VM directory.
    std::fs::create_dir_all(state.path().join("vms")).unwrap();
    let vm_dir = state.path().join("vms/vm-evil");
    std::os::unix::fs::symlink(elsewhere.path(), &vm_dir).unwrap();
    let err = ensure_root_disk(&RootDiskRequest {
        vm_name: "evil",
        state_dir: state.path(),
        vm_dir: &vm_dir,
        image: &image,
        before_publish: None,
        prepared: None,
        size_bytes: 128 * MIB,
    })
    .unwrap_err();
    assert!(matches!(err, DiskError::UnsafePath { .. }), "{err}");
    assert!(err.to_string().contains("evil"), "{err}");
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    assert!(matches!(
        remove_root_disk("evil", state.path(), &vm_dir),
        Err(DiskError::UnsafePath { .. })
    ));

    // A planted symlink for the disk file itself.
    let vm_dir = state.path().join("vms/vm-evil2");
    std::fs::create_dir_all(&vm_dir).unwrap();
    let target = elsewhere.path().join("victim");
    std::fs::write(&target, b"precious").unwrap();
    std::os::unix::fs::symlink(&target, vm_dir.join("rootfs.ext4")).unwrap();
    let err = ensure_root_disk(&RootDiskRequest {
        vm_name: "evil2",
        state_dir: state.path(),
        vm_dir: &vm_dir,
        image: &image,
        before_publish: None,
        prepared: None,
        size_bytes: 128 * MIB,
    })
    .unwrap_err();
    assert!(matches!(err, DiskError::UnsafePath { .. }), "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    // Removal deletes the link, not its target.
    remove_root_disk("evil2", state.path(), &vm_dir).unwrap();
    assert!(!vm_dir.join("rootfs.ext4").exists());
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
}

/// The caller's finishing touch (banger's SSH key) runs on the temporary disk before it
/// is published: a failing one leaves no disk at all, never a half-made published one;
/// a leftover temporary file next to a published disk is removed, the disk kept.
#[test]
fn a_new_disk_is_finished_before_it_is_published() {
    let images = tempfile::tempdir().unwrap();
    let image_path = make_image(images.path());
    let state = tempfile::tempdir().unwrap();
    let vm_dir = state.path().join("vms/vm-5a1e");
    let image = ImageSource {
        identity: "image-uid-1".into(),
        rootfs: image_path.clone(),
    };
    let seen = std::sync::Mutex::new(Vec::new());
    let failing = |p: &Path| -> Result<(), String> {
        seen.lock().unwrap().push(p.to_path_buf());
        assert!(
            !root_disk_path(p.parent().unwrap()).exists(),
            "not yet published"
        );
        Err("no key for you".into())
    };
    let err = ensure_root_disk(&RootDiskRequest {
        vm_name: "web",
        state_dir: state.path(),
        vm_dir: &vm_dir,
        image: &image,
        size_bytes: 128 * MIB,
        before_publish: Some(&failing),
        prepared: None,
    })
    .unwrap_err();
    assert!(err.to_string().contains("no key for you"), "{err}");
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [vm_dir.join(".rootfs.ext4.tmp")],
        "ran on the temporary file"
    );
    assert!(!root_disk_path(&vm_dir).exists(), "nothing published");
    assert!(
        !vm_dir.join(".rootfs.ext4.tmp").exists(),
        "nothing left over"
    );

    let marking = |p: &Path| -> Result<(), String> {
        let out = Command::new("debugfs")
            .args(["-w", "-R", "mkdir /marked"])
            .arg(p)
            .output()
            .map_err(|e| e.to_string())?;
        out.status
            .success()
            .then_some(())
            .ok_or_else(|| "debugfs".into())
    };
    let disk = ensure_root_disk(&RootDiskRequest {
        vm_name: "web",
        state_dir: state.path(),
        vm_dir: &vm_dir,
        image: &image,
        size_bytes: 128 * MIB,
        before_publish: Some(&marking),
        prepared: None,
    })
    .unwrap();
    let listing = Command::new("debugfs")
        .args(["-R", "ls /"])
        .arg(&disk.path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listing.stdout).contains("marked"));

    // A leftover temporary file (an interrupted later attempt) goes; the disk stays.
    std::fs::write(vm_dir.join(".rootfs.ext4.tmp"), b"half a disk").unwrap();
    let kept = ensure_root_disk(&RootDiskRequest {
        vm_name: "web",
        state_dir: state.path(),
        vm_dir: &vm_dir,
        image: &image,
        size_bytes: 128 * MIB,
        before_publish: Some(&failing),
        prepared: None,
    })
    .unwrap();
    assert_eq!(
        kept.method,
        CopyMethod::Existing,
        "the finishing touch is for new disks only"
    );
    assert!(!vm_dir.join(".rootfs.ext4.tmp").exists());
    assert_eq!(seen.lock().unwrap().len(), 1);
}

/// A "finishing touch" that marks the disk (as banger's SSH key would) and counts the
/// disks it ran on.
fn marking_finish(calls: &std::sync::Mutex<Vec<PathBuf>>, p: &Path) -> Result<(), String> {
    calls.lock().unwrap().push(p.to_path_buf());
    let out = Command::new("debugfs")
        .args(["-w", "-R", "mkdir /marked"])
        .arg(p)
        .output()
        .map_err(|e| e.to_string())?;
    out.status
        .success()
        .then_some(())
        .ok_or_else(|| "debugfs".into())
}

fn has_mark(disk: &Path) -> bool {
    let listing = Command::new("debugfs")
        .args(["-R", "ls /"])
        .arg(disk)
        .output()
        .unwrap();
    String::from_utf8_lossy(&listing.stdout).contains("marked")
}

/// New disks from a prepared base: the first disk of a key is made from the image; the
/// refill after it builds the base (grown, checked and finished once) and a spare; the
/// next disk is the spare renamed into place, the one after a copy of the base; every
/// disk is whole, grown, finished and has an id of its own; another size is another
/// base; a newer rootfs of the Image drops the older bases; the Image's removal drops
/// all of them; leftovers of interrupted builds are removed.
#[test]
fn new_disks_come_from_a_prepared_base_and_its_spare() {
    use banger_controller::host::disk::Prepared;
    use banger_controller::host::prepared_disk::{PreparedDisks, PreparedKey, PREPARED_DIR};

    let images = tempfile::tempdir().unwrap();
    let image_path = make_image(images.path());
    let image_hash = sha256(&image_path);
    let state = tempfile::tempdir().unwrap();
    let disks = PreparedDisks::for_state_dir(state.path());
    let image = ImageSource {
        identity: "base|digest-1".into(),
        rootfs: image_path.clone(),
    };
    let calls = std::sync::Mutex::new(Vec::new());
    let finish = |p: &Path| marking_finish(&calls, p);
    let make = |vm: &str, image: &ImageSource, size: u64| {
        let vm_dir = state.path().join("vms").join(vm);
        ensure_root_disk(&RootDiskRequest {
            vm_name: vm,
            state_dir: state.path(),
            vm_dir: &vm_dir,
            image,
            size_bytes: size,
            before_publish: Some(&finish),
            prepared: Some(Prepared {
                disks: &disks,
                finish_id: "ssh-ed25519 AAAA banger",
                image_name: "base",
            }),
        })
        .unwrap()
    };
    let key = |image: &'static ImageSource, size| PreparedKey {
        image_name: "base",
        image,
        size_bytes: size,
        finish_id: "ssh-ed25519 AAAA banger",
    };
    let image: &'static ImageSource = Box::leak(Box::new(image));
    let check_disk = |disk: &banger_controller::host::disk::RootDisk, size: u64| {
        assert_eq!(disk.method, CopyMethod::Prepared);
        assert_eq!(disk.size_bytes, size);
        assert_eq!(fs_bytes(&disk.path), size, "filesystem not grown");
        fsck_clean(&disk.path);
        assert!(has_mark(&disk.path), "not finished");
        assert_eq!(
            read_in_image(&disk.path, "/hello.txt"),
            "hello from the image\n"
        );
        let source = disk.source.clone().unwrap();
        assert_eq!(source.image_identity, "base|digest-1");
        assert_eq!(source.filesystem_bytes, size);
        assert_eq!(source.method, CopyMethod::Prepared);
        source.disk_id.unwrap()
    };

    // The first VM: no base yet, so its disk is made from the image as without one.
    let first = make("vm-1", image, 256 * MIB);
    assert_eq!(first.method, CopyMethod::Sparse);
    assert!(has_mark(&first.path));
    let first_id = first.source.clone().unwrap().disk_id.unwrap();
    assert_eq!(calls.lock().unwrap().len(), 1);
    let base = disks.base_path(&key(image, 256 * MIB));
    let spare = disks.spare_path(&key(image, 256 * MIB));
    assert!(!base.exists() && !spare.exists(), "nothing prepared yet");

    // The refill after it builds the base (finished once, in the store) and a spare.
    assert!(disks
        .refill_spare(&key(image, 256 * MIB), Some(&finish))
        .unwrap());
    let finished: Vec<PathBuf> = calls.lock().unwrap().clone();
    assert_eq!(finished.len(), 2, "{finished:?}");
    assert_eq!(finished[1].parent().unwrap(), disks.dir());
    assert!(base.is_file() && spare.is_file());
    fsck_clean(&base);
    fsck_clean(&spare);
    assert!(
        !disks
            .refill_spare(&key(image, 256 * MIB), Some(&finish))
            .unwrap(),
        "one spare"
    );

    // The next VM takes the spare: no new finishing touch.
    let spare_inode = std::fs::metadata(&spare).unwrap().ino();
    let second = make("vm-2", image, 256 * MIB);
    assert_eq!(
        std::fs::metadata(&second.path).unwrap().ino(),
        spare_inode,
        "the spare was renamed into place"
    );
    assert!(!spare.exists(), "the spare was used up");
    let second_id = check_disk(&second, 256 * MIB);
    assert_ne!(second_id, first_id, "each disk has its own id");
    assert!(
        second.allocated_bytes < 64 * MIB,
        "copy is not sparse: {} bytes allocated",
        second.allocated_bytes
    );
    assert_eq!(calls.lock().unwrap().len(), 2, "finished once per base");

    // Without a spare the base is copied.
    let third = make("vm-3", image, 256 * MIB);
    assert_ne!(check_disk(&third, 256 * MIB), second_id);
    assert_eq!(calls.lock().unwrap().len(), 2);

    // Another size is another base.
    let big = make("vm-4", image, 320 * MIB);
    assert_eq!(big.method, CopyMethod::Sparse);
    assert!(disks
        .refill_spare(&key(image, 320 * MIB), Some(&finish))
        .unwrap());
    assert_eq!(calls.lock().unwrap().len(), 4);
    check_disk(&make("vm-4b", image, 320 * MIB), 320 * MIB);
    let mut entries = disks.entries().unwrap();
    entries.sort_by_key(|e| e.size_bytes);
    assert_eq!(
        entries
            .iter()
            .map(|e| (e.image_name.as_str(), e.size_bytes, e.base))
            .collect::<Vec<_>>(),
        [("base", 256 * MIB, true), ("base", 320 * MIB, true)]
    );

    // Leftovers of interrupted builds are removed by the next build of their key.
    let name = key(image, 256 * MIB).name();
    let leftover_spare = disks.dir().join(format!(".{name}.spare.tmp"));
    std::fs::write(&leftover_spare, b"half a spare").unwrap();
    assert!(disks.refill_spare(&key(image, 256 * MIB), None).unwrap());
    assert!(!leftover_spare.exists());
    fsck_clean(&spare);

    // A newer rootfs of the Image: a failing finishing touch publishes no base and
    // no spare.
    let newer: &'static ImageSource = Box::leak(Box::new(ImageSource {
        identity: "base|digest-2".into(),
        rootfs: image_path.clone(),
    }));
    let failing = |_: &Path| -> Result<(), String> { Err("no key for you".into()) };
    let err = disks
        .refill_spare(&key(newer, 256 * MIB), Some(&failing))
        .unwrap_err();
    assert!(err.to_string().contains("no key for you"), "{err}");
    let newer_name = key(newer, 256 * MIB).name();
    assert!(!disks.base_path(&key(newer, 256 * MIB)).exists());
    assert!(!disks.spare_path(&key(newer, 256 * MIB)).exists());
    assert!(!disks.dir().join(format!(".{newer_name}.base.tmp")).exists());

    // That attempt already dropped the bases of the older rootfs of the Image.
    assert!(!base.exists(), "a base of the older rootfs was kept");
    assert!(disks
        .refill_spare(&key(newer, 256 * MIB), Some(&finish))
        .unwrap());
    let made = make("vm-5", newer, 256 * MIB);
    assert_eq!(made.method, CopyMethod::Prepared);
    assert!(has_mark(&made.path));
    assert_eq!(
        disks
            .entries()
            .unwrap()
            .iter()
            .map(|e| e.image_identity.as_str())
            .collect::<Vec<_>>(),
        ["base|digest-2"]
    );

    // The Image goes: so do its bases and spares.
    assert!(disks.refill_spare(&key(newer, 256 * MIB), None).unwrap());
    assert_eq!(disks.remove_image("other").unwrap(), Vec::<String>::new());
    assert_eq!(disks.remove_image("base").unwrap(), [newer_name]);
    assert_eq!(disks.entries().unwrap(), []);
    assert_eq!(
        std::fs::read_dir(state.path().join(PREPARED_DIR))
            .unwrap()
            .count(),
        0,
        "files left in the store"
    );
    // The VMs' disks are theirs: untouched.
    fsck_clean(&made.path);
    fsck_clean(&first.path);
    assert_eq!(sha256(&image_path), image_hash, "image modified");
}

/// Two VMs racing for one spare: one renames it, the other copies the base; both get
/// a whole disk of their own.
#[test]
fn two_vms_racing_for_one_spare_both_get_a_disk() {
    use banger_controller::host::disk::Prepared;
    use banger_controller::host::prepared_disk::{PreparedDisks, PreparedKey};

    let images = tempfile::tempdir().unwrap();
    let image_path = make_image(images.path());
    let state = tempfile::tempdir().unwrap();
    let disks = PreparedDisks::for_state_dir(state.path());
    let image = ImageSource {
        identity: "base|digest-1".into(),
        rootfs: image_path,
    };
    let calls = std::sync::Mutex::new(Vec::new());
    let finish = |p: &Path| marking_finish(&calls, p);
    let make = |vm: &str| {
        let vm_dir = state.path().join("vms").join(vm);
        ensure_root_disk(&RootDiskRequest {
            vm_name: vm,
            state_dir: state.path(),
            vm_dir: &vm_dir,
            image: &image,
            size_bytes: 192 * MIB,
            before_publish: Some(&finish),
            prepared: Some(Prepared {
                disks: &disks,
                finish_id: "k",
                image_name: "base",
            }),
        })
        .unwrap()
    };
    make("vm-0");
    let key = PreparedKey {
        image_name: "base",
        image: &image,
        size_bytes: 192 * MIB,
        finish_id: "k",
    };
    assert!(disks.refill_spare(&key, Some(&finish)).unwrap());
    let made: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = ["vm-a", "vm-b"]
            .into_iter()
            .map(|vm| scope.spawn(move || make(vm)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ids: Vec<String> = made
        .iter()
        .map(|d| {
            assert_eq!(d.method, CopyMethod::Prepared);
            fsck_clean(&d.path);
            assert!(has_mark(&d.path));
            assert_eq!(fs_bytes(&d.path), 192 * MIB);
            d.source.clone().unwrap().disk_id.unwrap()
        })
        .collect();
    assert_ne!(ids[0], ids[1]);
    assert!(!disks.spare_path(&key).exists(), "the spare was taken");
    assert_eq!(
        calls.lock().unwrap().len(),
        2,
        "the first disk and the base"
    );
}
