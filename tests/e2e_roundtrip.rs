//! End-to-end: the Workspace round trip on a real QEMU guest, through a real `banger
//! daemon` in a network namespace the test creates (the CLI runs outside it).
//!
//! A repository holding a binary file, an executable, a file name with spaces, a
//! symlink, an untracked-not-ignored file and an ignored file is copied into a VM.
//! Through `banger exec` the guest edits a tracked file, adds a file, deletes a file and
//! commits a change; the VMM is killed (`kill -9`) and restarted: the guest's edits are
//! all still there (nothing was copied over them). `banger workspace export` (made by
//! the guest's git, then again with git hidden in the guest: made on the host from the
//! guest's tree) applied with `git apply` on a fresh clone at the base commit gives the
//! guest's tree exactly, while the guest's index and HEAD and the host checkout stay as
//! they were; deleting the Workspace leaves the host checkout alone. `banger run -- CMD`
//! passes CMD's exit status on (0, 1, 7), runs CMD in the copied checkout, and with
//! `--rm` leaves nothing behind, also when interrupted (Ctrl-C, exit 130).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use banger_tests::{banger_bin, condition, run_ok, wait_for, Daemon, Kit, NetNs};

const READY_TIMEOUT: &str = "240s";
const BINARY: &[u8] = &[0, 159, 146, 150, 255, 0, b'\n', 7, 0];

fn git(repo: &Path, args: &[&str]) -> String {
    let out = run_ok(
        Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `banger --socket S ARGS…` outside the namespace, with `stdin` fed (or /dev/null).
fn banger(d: &Daemon, args: &[&str], stdin: Option<&[u8]>) -> Output {
    d.cli_with_stdin(args, stdin)
}

/// `banger exec dev -- sh -c SCRIPT` in the Workspace's directory; panics unless it
/// exits 0; returns stdout.
#[track_caller]
fn guest(d: &Daemon, script: &str) -> String {
    let out = banger(d, &["exec", "dev", "--", "sh", "-c", script], None);
    assert!(
        out.status.success(),
        "guest `{script}` failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One entry of a tree, as compared.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    File { executable: bool, content: Vec<u8> },
    Link(String),
    Dir,
}

/// Every entry below `root` but `.git`, by relative path.
fn tree_of(root: &Path) -> BTreeMap<String, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel == ".git" {
                continue;
            }
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&path).unwrap();
                out.insert(rel, Entry::Link(target.to_string_lossy().into_owned()));
            } else if meta.is_dir() {
                out.insert(rel, Entry::Dir);
                walk(root, &path, out);
            } else {
                out.insert(
                    rel,
                    Entry::File {
                        executable: meta.permissions().mode() & 0o111 != 0,
                        content: fs::read(&path).unwrap(),
                    },
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The guest's Workspace directory, pulled back with `tar` through `banger exec` and
/// unpacked into `into`.
fn guest_tree(d: &Daemon, into: &Path) -> BTreeMap<String, Entry> {
    let out = banger(d, &["exec", "dev", "--", "tar", "-c", "-f", "-", "."], None);
    assert!(out.status.success(), "{out:?}");
    fs::create_dir_all(into).unwrap();
    let mut untar = Command::new("tar")
        .arg("-x")
        .arg("-f")
        .arg("-")
        .arg("-C")
        .arg(into)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    untar.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    assert!(untar.wait().unwrap().success());
    tree_of(into)
}

/// A fresh clone of `repo` at `base`, with `patch` applied; its tree.
fn applied(repo: &Path, base: &str, patch: &Path, into: &Path) -> BTreeMap<String, Entry> {
    run_ok(
        Command::new("git")
            .args(["clone", "-q"])
            .arg(repo)
            .arg(into),
    );
    git(into, &["checkout", "-q", base]);
    git(into, &["apply", "--binary", patch.to_str().unwrap()]);
    tree_of(into)
}

/// What `git status`, `HEAD` and the object count of the host checkout say: it must
/// not change while banger reads it.
fn checkout_state(repo: &Path) -> (String, String, usize) {
    let objects = walkdir_count(&repo.join(".git/objects"));
    (
        git(repo, &["status", "--porcelain", "--ignored"]),
        git(repo, &["rev-parse", "HEAD"]),
        objects,
    )
}

fn walkdir_count(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walkdir_count(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[test]
#[ignore = "needs root (network namespaces, taps, nftables), QEMU and the guest kit"]
fn the_workspace_round_trip_on_a_real_guest() {
    let kit = Kit::require();
    let ns = NetNs::new("rtrip");
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(&ns, tmp.path(), &["--resync", "5s"]);

    // The checkout.
    let repo = tmp.path().join("src").join("proj");
    fs::create_dir_all(repo.join("bin")).unwrap();
    git(&repo, &["init", "-q"]);
    fs::write(repo.join("README.md"), "the project\n").unwrap();
    fs::write(repo.join("data.bin"), BINARY).unwrap();
    fs::write(repo.join("bin/run.sh"), "#!/bin/sh\necho run\n").unwrap();
    fs::set_permissions(repo.join("bin/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(repo.join("name with spaces.txt"), "spaces\n").unwrap();
    std::os::unix::fs::symlink("README.md", repo.join("link")).unwrap();
    fs::write(repo.join("edit-me.txt"), "line 1\n").unwrap();
    fs::write(repo.join("commit-me.txt"), "before\n").unwrap();
    fs::write(repo.join("delete-me.txt"), "doomed\n").unwrap();
    fs::write(repo.join(".gitignore"), "*.log\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "base"]);
    let base = git(&repo, &["rev-parse", "HEAD"]).trim().to_string();
    fs::write(repo.join("notes.txt"), "untracked, not ignored\n").unwrap();
    fs::write(repo.join("build.log"), "ignored\n").unwrap();
    let checkout_before = checkout_state(&repo);

    let specs = tmp.path().join("apply");
    fs::create_dir_all(&specs).unwrap();
    fs::write(
        specs.join("all.yaml"),
        format!(
            "apiVersion: banger.dev/v1alpha1\nkind: Image\nmetadata:\n  name: kit\nspec:\n  kernel: {}\n  initrd: {}\n  rootfs: {}\n---\n\
apiVersion: banger.dev/v1alpha1\nkind: VM\nmetadata:\n  name: dev\nspec:\n  image: kit\n  memory: 256MiB\n  disk: 512MiB\n  hypervisor: qemu\n---\n\
apiVersion: banger.dev/v1alpha1\nkind: Workspace\nmetadata:\n  name: proj\nspec:\n  vm: dev\n  source: {}\n",
            kit.kernel.display(),
            kit.initrd.display(),
            kit.rootfs.display(),
            repo.display()
        ),
    )
    .unwrap();
    d.cli_ok(&["apply", "-f", specs.to_str().unwrap()]);
    d.cli_ok(&[
        "wait",
        "workspace/proj",
        "--for=condition=Synced",
        "--timeout",
        READY_TIMEOUT,
    ]);
    let ws = d.get_json("workspace", "proj").expect("workspace");
    assert_eq!(ws["status"]["baseCommit"], base.as_str(), "{ws:#}");
    assert!(ws["status"]["copiedAt"].is_string(), "{ws:#}");
    let table = d.cli_ok(&["get", "workspaces"]);
    assert!(table.contains(&base[..12]), "{table}");

    // What arrived: everything but the ignored file, modes and links kept, and a git
    // repository at the base commit in which the untracked file is untracked.
    let arrived = guest(
        &d,
        "ls -a; test -x bin/run.sh && echo exec-ok; readlink link; git rev-parse HEAD; git status --porcelain",
    );
    assert!(arrived.contains("name with spaces.txt"), "{arrived}");
    assert!(!arrived.contains("build.log"), "{arrived}");
    assert!(arrived.contains("exec-ok"), "{arrived}");
    assert!(
        arrived.contains(&format!("README.md\n{base}\n?? notes.txt\n")),
        "{arrived}"
    );

    // The guest's work: an edit, a new file, a deletion and a commit.
    guest(
        &d,
        "echo 'line 2 (guest)' >> edit-me.txt && echo 'added in the guest' > added.txt \
         && rm delete-me.txt && echo after > commit-me.txt && printf '\\001\\002' >> data.bin \
         && git add commit-me.txt && git -c user.name=g -c user.email=g@example.invalid commit -qm 'in the guest' \
         && sync",
    );
    let before_kill = guest(&d, "git rev-parse HEAD; cat edit-me.txt");

    // The VMM is killed; the restarted VMM runs from the same disk: nothing is copied
    // over the guest's work.
    let vm = d.get_json("vm", "dev").expect("vm");
    let pid1 = vm["status"]["pid"].as_i64().expect("pid");
    // SAFETY: kill(2) of the VMM pid the daemon reported for this test's VM.
    unsafe {
        libc::kill(i32::try_from(pid1).unwrap(), libc::SIGKILL);
    }
    let restarted = wait_for(
        Duration::from_secs(240),
        Duration::from_millis(1000),
        || {
            let vm = d.get_json("vm", "dev")?;
            let pid = vm["status"]["pid"].as_i64()?;
            (pid != pid1 && condition(&vm, "GuestReady")?["status"] == "True").then_some(pid)
        },
    );
    assert!(restarted.is_some(), "no restart; log:\n{}", d.log_tail(40));
    // The Workspace's plan empties once it was reconciled after the restart (a copy,
    // when planned, stays planned until it finished).
    let settled = wait_for(Duration::from_secs(120), Duration::from_millis(500), || {
        let text = d.cli_ok(&["describe", "workspace", "proj"]);
        text.contains("Planned steps:\n  <none>\n").then_some(text)
    })
    .expect("the workspace's plan never emptied");
    let copies = settled
        .lines()
        .filter(|l| l.trim_start().starts_with("sync-workspace "))
        .count();
    assert_eq!(copies, 1, "copied again after the VMM restart:\n{settled}");
    let after_restart = wait_for(Duration::from_secs(60), Duration::from_millis(500), || {
        let out = banger(
            &d,
            &[
                "exec",
                "dev",
                "--",
                "sh",
                "-c",
                "git rev-parse HEAD; cat edit-me.txt",
            ],
            None,
        );
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .expect("exec after the restart");
    assert_eq!(after_restart, before_kill, "the guest's work changed");
    let state = guest(
        &d,
        "cat added.txt; test -e delete-me.txt || echo deleted; git log --format=%s -1",
    );
    assert_eq!(state, "added in the guest\ndeleted\nin the guest\n");

    // Export, made by the guest's git: the guest's index and HEAD stay as they were.
    // (GIT_OPTIONAL_LOCKS=0: the test's own `git status` must not refresh the index.)
    let probe =
        "git rev-parse HEAD; sha256sum .git/index; GIT_OPTIONAL_LOCKS=0 git status --porcelain";
    let index_before = guest(&d, probe);
    let patch1 = tmp.path().join("guest-git.patch");
    let out = banger(
        &d,
        &[
            "workspace",
            "export",
            "proj",
            "-o",
            patch1.to_str().unwrap(),
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("(made in the guest with git)"), "{stderr}");
    assert!(
        stderr.contains(&format!("against {}", &base[..12])),
        "{stderr}"
    );
    assert_eq!(
        guest(&d, probe),
        index_before,
        "the export changed the guest's index or HEAD"
    );
    let guest_now = guest_tree(&d, &tmp.path().join("guest1"));
    assert!(!guest_now.contains_key("build.log"));
    let from_git = applied(&repo, &base, &patch1, &tmp.path().join("clone1"));
    assert_eq!(from_git, guest_now, "guest-git patch: trees differ");
    assert!(guest_now.contains_key("added.txt") && !guest_now.contains_key("delete-me.txt"));
    assert_eq!(
        guest_now["link"],
        Entry::Link("README.md".to_string()),
        "{guest_now:?}"
    );
    assert!(matches!(
        guest_now["bin/run.sh"],
        Entry::File {
            executable: true,
            ..
        }
    ));

    // Without git in the guest: the tree comes back and the host makes the patch.
    guest(&d, "mv \"$(command -v git)\" /root/git.hidden");
    let patch2 = tmp.path().join("host-diff.patch");
    let out = banger(
        &d,
        &[
            "workspace",
            "export",
            "proj",
            "-o",
            patch2.to_str().unwrap(),
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("(made on the host from the guest's tree"),
        "{stderr}"
    );
    let from_host = applied(&repo, &base, &patch2, &tmp.path().join("clone2"));
    assert_eq!(from_host, guest_now, "host-diff patch: trees differ");
    guest(&d, "mv /root/git.hidden /usr/bin/git");

    // banger run: CMD's exit status is passed on; --rm leaves nothing behind.
    let small = ["--image", "kit", "--memory", "256MiB", "--disk", "512MiB"];
    for code in [0, 1, 7] {
        let script = format!("exit {code}");
        let mut args = vec!["run", "--rm", "--timeout", READY_TIMEOUT];
        args.extend(small);
        args.extend(["--", "sh", "-c", &script]);
        let out = banger(&d, &args, None);
        assert_eq!(
            out.status.code(),
            Some(code),
            "run -- exit {code}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // With the checkout: copied in, and CMD runs in its directory.
    let mut args = vec!["run", repo.to_str().unwrap(), "--name", "withsrc", "--rm"];
    args.extend(["--timeout", READY_TIMEOUT]);
    args.extend(small);
    args.extend([
        "--",
        "sh",
        "-c",
        "pwd; cat README.md; test -e build.log || echo no-log",
    ]);
    let out = banger(&d, &args, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "/root/proj\nthe project\nno-log\n"
    );
    // Ctrl-C while it waits (this VM never gets ready: its "kernel" is not one): what
    // it created is deleted, and it exits 130.
    fs::write(
        specs.join("broken.yaml"),
        format!(
            "apiVersion: banger.dev/v1alpha1\nkind: Image\nmetadata:\n  name: broken\nspec:\n  kernel: {}\n  rootfs: {}\n",
            kit.rootfs.display(),
            kit.rootfs.display()
        ),
    )
    .unwrap();
    d.cli_ok(&["apply", "-f", specs.join("broken.yaml").to_str().unwrap()]);
    let mut interrupted = Command::new(banger_bin())
        .arg("--socket")
        .arg(&d.socket)
        .args([
            "run", "--image", "broken", "--name", "intr", "--rm", "--memory", "256MiB",
        ])
        .args(["--disk", "512MiB", "--timeout", READY_TIMEOUT, "--", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let appeared = wait_for(Duration::from_secs(60), Duration::from_millis(200), || {
        d.get_json("vm", "intr")
    });
    assert!(appeared.is_some(), "run never created vm/intr");
    // SAFETY: kill(2) of the banger process this test spawned.
    unsafe {
        libc::kill(i32::try_from(interrupted.id()).unwrap(), libc::SIGINT);
    }
    let status = wait_for(Duration::from_secs(300), Duration::from_millis(200), || {
        interrupted.try_wait().unwrap()
    })
    .expect("banger run did not end after Ctrl-C");
    assert_eq!(status.code(), Some(130));
    assert!(d.get_json("vm", "intr").is_none(), "vm/intr left behind");
    d.cli_ok(&["delete", "image", "broken", "--wait", "--timeout", "60s"]);
    // Nothing of the runs is left: no VM, no Workspace, no VM directory, no tap.
    let vms = d.cli_ok(&["get", "vms", "-o", "json"]);
    let names: Vec<String> = serde_json::from_str::<serde_json::Value>(&vms).unwrap()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["dev"], "{vms}");
    let workspaces = d.cli_ok(&["get", "workspaces"]);
    assert!(!workspaces.contains("withsrc"), "{workspaces}");
    let dev_uid = d.get_json("vm", "dev").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let vm_dirs: Vec<String> = fs::read_dir(d.state_dir.join("vms"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(vm_dirs, [dev_uid], "VM directories left behind");
    let links = run_ok(ns.command("ip").args(["-o", "link", "show"]));
    let taps = String::from_utf8_lossy(&links.stdout)
        .lines()
        .filter(|l| l.contains(": bgt"))
        .count();
    assert_eq!(taps, 1, "taps left behind");

    // The host checkout was only read, and deleting the Workspace leaves it alone.
    assert_eq!(
        checkout_state(&repo),
        checkout_before,
        "the checkout changed"
    );
    d.cli_ok(&["delete", "workspace", "proj", "--wait", "--timeout", "60s"]);
    assert_eq!(
        checkout_state(&repo),
        checkout_before,
        "delete touched the checkout"
    );
    assert_eq!(fs::read(repo.join("data.bin")).unwrap(), BINARY);

    d.cli_ok(&["delete", "vm", "dev", "--wait", "--timeout", "120s"]);
}
