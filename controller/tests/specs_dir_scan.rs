//! The specs directory scan against hostile entries on a real filesystem: a FIFO with
//! no writer, a symlink to it, a symlink to a device node, a symlink loop and a spec
//! name on a directory are refused without blocking, while regular files (and
//! symlinks to them) are read.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use banger_controller::sources::dir::{scan, DirScan};

const IMAGE: &str = "apiVersion: banger.dev/v1alpha1\nkind: Image\nmetadata: {name: base}\nspec: {kernel: k, rootfs: r}\n";

/// Runs the scan on its own thread: a scan that opened the FIFO would block forever,
/// and this turns that hang into a failure (the bound is a hang guard, not a speed
/// check).
fn scan_without_hanging(dir: &Path) -> DirScan {
    let (tx, rx) = mpsc::channel();
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(scan(&dir));
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("the scan blocked on a non-regular file")
}

#[test]
fn non_regular_spec_files_are_refused_without_blocking() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("image.yaml"), IMAGE).unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::os::unix::fs::symlink(dir.join("image.yaml"), dir.join("sub/image-link.yaml")).unwrap();
    nix::unistd::mkfifo(
        &dir.join("fifo.yaml"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink(dir.join("fifo.yaml"), dir.join("fifo-link.yml")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.join("device.yaml")).unwrap();
    std::os::unix::fs::symlink(dir.join("loop.yaml"), dir.join("loop.yaml")).unwrap();
    std::fs::create_dir(dir.join("sub/dir.yaml")).unwrap();
    std::os::unix::fs::symlink(dir.join("sub/dir.yaml"), dir.join("dir-link.yaml")).unwrap();
    std::os::unix::fs::symlink(dir.join("gone"), dir.join("dangling.yaml")).unwrap();

    let result = scan_without_hanging(dir);

    let refused: Vec<(String, &str)> = result
        .refused
        .iter()
        .map(|r| {
            let name = r.path.strip_prefix(dir).unwrap().display().to_string();
            (name, r.reason.as_str())
        })
        .collect();
    let regular = "spec files must be regular files";
    assert_eq!(refused.len(), 5, "{refused:#?}");
    let reason = |name: &str| {
        refused
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} not refused: {refused:#?}"))
            .1
    };
    assert_eq!(
        reason("fifo.yaml"),
        format!("not a regular file (it is a FIFO); {regular}")
    );
    assert_eq!(
        reason("fifo-link.yml"),
        format!("not a regular file (it is a FIFO); {regular}")
    );
    assert_eq!(
        reason("device.yaml"),
        format!("not a regular file (it is a character device); {regular}")
    );
    assert_eq!(
        reason("dir-link.yaml"),
        format!("not a regular file (it is a directory); {regular}")
    );
    assert!(
        reason("loop.yaml").starts_with("cannot read: "),
        "{}",
        reason("loop.yaml")
    );

    // The readable files are parsed; each refused one is an invalid load (no object,
    // one file-level error) so that its objects keep their last good spec. The dangling
    // symlink is simply absent, and the directory named like a spec is walked into.
    let loads: Vec<(String, usize, usize)> = result
        .files
        .iter()
        .map(|f| {
            let name = Path::new(&f.file)
                .strip_prefix(dir)
                .unwrap()
                .display()
                .to_string();
            (name, f.objects.len(), f.problems.len())
        })
        .collect();
    assert_eq!(
        loads,
        [
            ("device.yaml".to_string(), 0, 1),
            ("dir-link.yaml".to_string(), 0, 1),
            ("fifo-link.yml".to_string(), 0, 1),
            ("fifo.yaml".to_string(), 0, 1),
            ("image.yaml".to_string(), 1, 0),
            ("loop.yaml".to_string(), 0, 1),
            ("sub/image-link.yaml".to_string(), 1, 0),
        ]
    );
    let fifo = result
        .files
        .iter()
        .find(|f| f.file.ends_with("/fifo.yaml"))
        .unwrap();
    assert_eq!(
        fifo.problems[0].to_string(),
        format!(
            "{}: not a regular file (it is a FIFO); {regular}",
            dir.join("fifo.yaml").display()
        )
    );
}

#[test]
fn an_oversized_spec_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let big = format!(
        "{IMAGE}# {}\n",
        "x".repeat(banger_specs::load::MAX_FILE_BYTES)
    );
    std::fs::write(tmp.path().join("big.yaml"), big).unwrap();
    let result = scan_without_hanging(tmp.path());
    assert_eq!(result.refused.len(), 1);
    assert_eq!(
        result.refused[0].reason,
        "larger than 1024 KiB, the most one spec file may hold"
    );
    assert!(result.files[0].objects.is_empty());
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Spec files and directories others could write are refused, never read: a
/// world-writable file, a group-writable directory (nothing below it is read), and the
/// specs directory itself.
#[test]
fn what_others_could_write_is_refused_unread() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("specs");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o755);
    std::fs::write(dir.join("image.yaml"), IMAGE).unwrap();
    chmod(&dir.join("image.yaml"), 0o644);
    std::fs::write(dir.join("open.yaml"), IMAGE.replace("base", "open")).unwrap();
    chmod(&dir.join("open.yaml"), 0o666);
    std::fs::create_dir(dir.join("team")).unwrap();
    chmod(&dir.join("team"), 0o775);
    std::fs::write(dir.join("team/vm.yaml"), "not: [valid").unwrap();

    let result = scan_without_hanging(&dir);
    let why = banger_controller::sources::dir_trust::WHY;
    let loaded: Vec<(&str, usize)> = result
        .files
        .iter()
        .map(|f| (f.file.rsplit('/').next().unwrap(), f.objects.len()))
        .collect();
    assert_eq!(loaded, [("image.yaml", 1), ("open.yaml", 0)]);
    assert_eq!(result.refused.len(), 1);
    assert_eq!(result.refused[0].path, dir.join("open.yaml"));
    assert_eq!(
        result.refused[0].reason,
        format!("writable by its group and others (mode 0666); {why}")
    );
    assert_eq!(result.untrusted.len(), 1);
    assert_eq!(result.untrusted[0].path, dir.join("team"));
    assert_eq!(
        result.untrusted[0].reason,
        format!(
            "{}: writable by its group (mode 0775); {why}",
            dir.join("team").display()
        )
    );

    // The whole directory open to others: nothing is read at all.
    chmod(&dir, 0o777);
    let result = scan_without_hanging(&dir);
    assert!(result.files.is_empty(), "{:?}", result.files);
    assert_eq!(result.untrusted.len(), 1);
    assert_eq!(result.untrusted[0].path, dir);
    assert_eq!(
        result.untrusted[0].reason,
        format!(
            "specs dir {}: writable by its group and others (mode 0777); {why}",
            dir.display()
        )
    );
}
