//! End-to-end: a Workspace copied into a real QEMU guest by a real `banger daemon` in a
//! network namespace: tracked and untracked files arrive, ignored ones do not; after a
//! VMM restart (kill -9) on the same disk nothing is copied again; a sync request onto
//! the changed guest is refused (GuestChanged) until forced.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use banger_tests::{condition, guest_ssh as ssh, run_ok, wait_for, Daemon, Kit, NetNs};

fn git(repo: &Path, args: &[&str]) {
    run_ok(
        Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args),
    );
}

#[test]
#[ignore = "needs root (network namespaces, taps, nftables), QEMU and the guest kit"]
fn workspace_files_are_copied_into_the_guest() {
    let kit = Kit::require();
    let ns = NetNs::new("wsync");
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(&ns, tmp.path(), &["--resync", "5s"]);

    // A checkout: one tracked file (committed), one untracked, one ignored.
    let repo = tmp.path().join("src").join("proj");
    fs::create_dir_all(repo.join("sub")).unwrap();
    git(&repo, &["init", "-q"]);
    fs::write(repo.join("tracked.txt"), "tracked content\n").unwrap();
    fs::write(repo.join("sub/nested.txt"), "nested\n").unwrap();
    fs::write(repo.join(".gitignore"), "ignored.txt\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "initial"]);
    fs::write(repo.join("untracked.txt"), "untracked content\n").unwrap();
    fs::write(repo.join("ignored.txt"), "must not be copied\n").unwrap();

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
    let started = Instant::now();
    d.cli_ok(&["apply", "-f", specs.to_str().unwrap()]);
    d.cli_ok(&[
        "wait",
        "workspace/proj",
        "--for=condition=Synced",
        "--timeout",
        "240s",
    ]);
    eprintln!(
        "apply -> Synced (boot + copy): {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let describe = d.cli_ok(&["describe", "workspace", "proj"]);
    for line in describe.lines().filter(|l| l.contains("sync-workspace")) {
        eprintln!("journal: {}", line.trim());
    }
    let ws = d.get_json("workspace", "proj").expect("workspace");
    let synced = condition(&ws, "Synced").expect("Synced condition");
    let message = synced["message"].as_str().unwrap();
    assert_eq!(synced["reason"], "Copied", "{ws:#}");
    assert!(
        message.starts_with("4 files (commit ") && message.ends_with(") copied to /root/proj"),
        "{message}"
    );
    assert_eq!(condition(&ws, "Ready").unwrap()["status"], "True", "{ws:#}");

    let vm = d.get_json("vm", "dev").expect("vm");
    let ip = vm["status"]["ip"].as_str().expect("ip").to_string();
    let pid1 = vm["status"]["pid"].as_i64().expect("pid");
    let check = |what: &str| -> String {
        let out = wait_for(Duration::from_secs(30), Duration::from_millis(500), || {
            let out = ssh(&ns, &kit, &ip, what);
            out.status.success().then_some(out)
        })
        .unwrap_or_else(|| panic!("ssh {what} kept failing"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listing = check(
        "cat /root/proj/tracked.txt /root/proj/sub/nested.txt /root/proj/untracked.txt; \
         ls -a /root/proj; stat -c '%u:%g' /root/proj/tracked.txt",
    );
    assert!(listing.contains("tracked content"), "{listing}");
    assert!(listing.contains("nested"), "{listing}");
    assert!(listing.contains("untracked content"), "{listing}");
    assert!(listing.contains(".gitignore"), "{listing}");
    assert!(
        !listing.contains("ignored.txt\n"),
        "ignored file copied: {listing}"
    );
    assert!(
        listing.trim_end().ends_with("0:0"),
        "owned by root: {listing}"
    );
    let ignored = ssh(&ns, &kit, &ip, "test -e /root/proj/ignored.txt");
    assert_eq!(ignored.status.code(), Some(1), "ignored file in the guest");
    // banger's own key went into the disk, and the kit's key still works (this ssh).
    let keys = check("cat /root/.ssh/authorized_keys");
    let banger_pub = fs::read_to_string(d.state_dir.join("ssh/id_ed25519.pub")).unwrap();
    assert!(keys.contains(banger_pub.trim()), "{keys}");

    // The guest removes the files (its own work) and its VMM is killed: the restarted
    // VMM runs from the same disk, so nothing is copied over the guest's state.
    check("rm -rf /root/proj && sync");
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
    // The Workspace is reconciled after the restart: its plan is empty once it is (a
    // copy, when planned, stays planned until it finished).
    let settled = wait_for(Duration::from_secs(120), Duration::from_millis(500), || {
        let text = d.cli_ok(&["describe", "workspace", "proj"]);
        text.contains("Planned steps:\n  <none>\n").then_some(text)
    })
    .expect("the workspace's plan never emptied");
    let copies = settled
        .lines()
        .filter(|l| l.trim_start().starts_with("sync-workspace "))
        .count();
    assert_eq!(copies, 1, "copied again after a VMM restart:\n{settled}");
    let gone = ssh(&ns, &kit, &ip, "test -e /root/proj");
    assert_eq!(
        gone.status.code(),
        Some(1),
        "the guest's removal was undone"
    );

    // Asking for a copy: refused, the guest changed (removed) what the last copy wrote.
    let refused = d.cli(&["workspace", "sync", "proj", "--timeout", "120s"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("workspace/proj: GuestChanged: 6 paths changed in the guest"),
        "{stderr}"
    );
    assert!(stderr.contains("tracked.txt (removed)"), "{stderr}");
    let ws = d.get_json("workspace", "proj").expect("workspace");
    assert_eq!(condition(&ws, "Synced").unwrap()["reason"], "GuestChanged");
    // Forced: the checkout's state is back in the guest.
    let forced = d.cli_ok(&["workspace", "sync", "proj", "--force", "--timeout", "120s"]);
    assert!(
        forced.starts_with("workspace/proj synced: 4 files"),
        "{forced}"
    );
    assert_eq!(check("cat /root/proj/tracked.txt"), "tracked content\n");

    d.cli_ok(&["delete", "vm", "dev", "--wait", "--timeout", "120s"]);
}
