//! End-to-end: real QEMU guests driven by a real `banger daemon` in a network namespace.
//!
//! One VM's whole life (apply → Running and GuestReady → restart-class change → Stopped →
//! Running with the same IP and disk contents → VMM killed and restarted → delete leaves
//! nothing behind), and a daemon crash with two VMs running (the new daemon adopts them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use banger_tests::{condition, guest_ssh, wait_for, Daemon, Kit, NetNs};
use serde_json::Value;

const READY_TIMEOUT: &str = "180s";

fn image_yaml(kit: &Kit) -> String {
    format!(
        "apiVersion: banger.dev/v1alpha1\nkind: Image\nmetadata:\n  name: kit\nspec:\n  kernel: {}\n  initrd: {}\n  rootfs: {}\n",
        kit.kernel.display(),
        kit.initrd.display(),
        kit.rootfs.display()
    )
}

fn vm_yaml(name: &str, memory: &str, state: &str) -> String {
    format!(
        "apiVersion: banger.dev/v1alpha1\nkind: VM\nmetadata:\n  name: {name}\nspec:\n  image: kit\n  memory: {memory}\n  disk: 512MiB\n  state: {state}\n  hypervisor: qemu\n"
    )
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).expect("write spec");
}

fn status<'a>(obj: &'a Value, field: &str) -> &'a Value {
    &obj["status"][field]
}

fn pid_of(d: &Daemon, name: &str) -> Option<i64> {
    d.get_json("vm", name)
        .and_then(|o| status(&o, "pid").as_i64())
}

/// Whether `pid` is a live process (a zombie waiting for its reaper is not: after a
/// daemon crash the VMMs are reparented and reaped by pid 1, at its own pace).
fn process_alive(pid: i64) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

fn ssh_ok(ns: &NetNs, kit: &Kit, ip: &str, remote: &str) -> String {
    // The guest may take a moment after GuestReady to accept logins; bounded retries.
    let out = wait_for(Duration::from_secs(30), Duration::from_millis(500), || {
        let out = guest_ssh(ns, kit, ip, remote);
        out.status.success().then_some(out)
    });
    let out = out.unwrap_or_else(|| panic!("ssh root@{ip} {remote:?} kept failing"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn links_in(ns: &NetNs) -> String {
    let out = ns
        .command("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn nft_ruleset(ns: &NetNs) -> String {
    let out = ns
        .command("nft")
        .args(["list", "ruleset"])
        .output()
        .expect("nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_ready(d: &Daemon, name: &str) -> Value {
    d.cli_ok(&[
        "wait",
        &format!("vm/{name}"),
        "--for=condition=Ready",
        "--timeout",
        READY_TIMEOUT,
    ]);
    let obj = d.get_json("vm", name).expect("vm exists");
    assert_eq!(status(&obj, "phase"), "Running", "{obj:#}");
    assert_eq!(
        condition(&obj, "GuestReady").and_then(|c| c["status"].as_str()),
        Some("True"),
        "{obj:#}"
    );
    obj
}

#[test]
#[ignore = "needs root (network namespaces, taps, nftables), QEMU and the guest kit"]
fn vm_lifecycle_on_real_qemu_guest() {
    let kit = Kit::require();
    let ns = NetNs::new("life");
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(&ns, tmp.path(), &["--resync", "5s"]);
    let specs = tmp.path().join("apply");
    fs::create_dir_all(&specs).expect("mkdir");
    write(&specs.join("image.yaml"), &image_yaml(&kit));
    write(
        &specs.join("vm.yaml"),
        &vm_yaml("life", "256MiB", "Running"),
    );
    let specs_arg = specs.to_str().expect("utf-8 path");

    // Apply → Running and GuestReady; the guest reaches the bridge address.
    d.cli_ok(&["apply", "-f", specs_arg]);
    let obj = wait_ready(&d, "life");
    let ip = status(&obj, "ip").as_str().expect("status.ip").to_string();
    let uid = obj["metadata"]["uid"].as_str().expect("uid").to_string();
    let pid1 = status(&obj, "pid").as_i64().expect("status.pid");
    assert!(process_alive(pid1));
    ssh_ok(&ns, &kit, &ip, "ping -c 1 -W 3 172.30.0.1");
    ssh_ok(
        &ns,
        &kit,
        &ip,
        "echo kept-across-stop > /root/marker && sync",
    );
    let describe = d.cli_ok(&["describe", "vm", "life"]);
    // describe lists every host object of the VM.
    for needle in [
        uid.as_str(),
        "tap: bgt",
        "rootfs.ext4",
        "console.log",
        "qmp.sock",
        "qemu.log",
        "vmmUser: banger-vmm",
        "/banger/",
        "natRule: table ip banger",
        &format!("ip: {ip}"),
        &format!("pid: {pid1}"),
    ] {
        assert!(
            describe.contains(needle),
            "describe lacks {needle}:\n{describe}"
        );
    }

    // The VMM runs confined: as banger-vmm, under seccomp, in the VM's own cgroup.
    let cgroup_dirs = confined_in(pid1, &uid);

    // A memory change is a restart: diff says so, apply restarts the VMM.
    write(
        &specs.join("vm.yaml"),
        &vm_yaml("life", "320MiB", "Running"),
    );
    let diff = d.cli(&["diff", "-f", specs_arg]);
    assert_eq!(diff.status.code(), Some(1), "diff exit code");
    assert!(
        String::from_utf8_lossy(&diff.stdout).contains("restart"),
        "{diff:?}"
    );
    d.cli_ok(&["apply", "-f", specs_arg]);
    let pid2 = wait_for(Duration::from_secs(120), Duration::from_millis(500), || {
        pid_of(&d, "life").filter(|p| *p != pid1)
    })
    .expect("VMM restarted with a new pid");
    assert!(!process_alive(pid1), "old VMM {pid1} still alive");
    wait_ready(&d, "life");
    let meminfo = ssh_ok(&ns, &kit, &ip, "cat /proc/meminfo");
    let total_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("MemTotal");
    assert!(
        total_kib > 256 * 1024,
        "guest sees {total_kib} KiB after asking for 320MiB"
    );

    // Stopped: no process, disk kept.
    write(
        &specs.join("vm.yaml"),
        &vm_yaml("life", "320MiB", "Stopped"),
    );
    d.cli_ok(&["apply", "-f", specs_arg]);
    let stopped = wait_for(Duration::from_secs(90), Duration::from_millis(500), || {
        d.get_json("vm", "life")
            .filter(|o| status(o, "phase") == "Stopped")
    })
    .expect("phase Stopped");
    assert!(status(&stopped, "pid").is_null(), "{stopped:#}");
    assert!(!process_alive(pid2), "VMM {pid2} alive after Stopped");
    let root_disk = d.state_dir.join("vms").join(&uid).join("rootfs.ext4");
    let disk_len = fs::metadata(&root_disk)
        .unwrap_or_else(|e| panic!("root disk {} kept while stopped: {e}", root_disk.display()))
        .len();
    assert_eq!(disk_len, 512 * 1024 * 1024, "root disk grown to spec.disk");

    // Running again: same IP, disk contents intact.
    write(
        &specs.join("vm.yaml"),
        &vm_yaml("life", "320MiB", "Running"),
    );
    d.cli_ok(&["apply", "-f", specs_arg]);
    let again = wait_ready(&d, "life");
    assert_eq!(
        status(&again, "ip").as_str(),
        Some(ip.as_str()),
        "same IP after restart"
    );
    let marker = ssh_ok(&ns, &kit, &ip, "cat /root/marker");
    assert_eq!(marker.trim(), "kept-across-stop");

    // kill -9 of the VMM: noticed and restarted per policy (Always).
    let pid3 = status(&again, "pid").as_i64().expect("pid");
    // SAFETY: kill(2) on the VMM pid the daemon reported for our test VM.
    unsafe {
        libc_kill(pid3);
    }
    let pid4 = wait_for(Duration::from_secs(120), Duration::from_millis(500), || {
        pid_of(&d, "life").filter(|p| *p != pid3)
    })
    .expect("VMM restarted after kill -9");
    assert!(process_alive(pid4));
    wait_ready(&d, "life");

    // Delete: no process, tap, lease, nft rule or file left.
    d.cli_ok(&["delete", "vm", "life", "--wait", "--timeout", "120s"]);
    assert!(
        d.get_json("vm", "life").is_none(),
        "vm still listed after delete"
    );
    assert!(!process_alive(pid4), "VMM alive after delete");
    for dir in &cgroup_dirs {
        assert!(!dir.exists(), "cgroup {} left behind", dir.display());
    }
    let links = links_in(&ns);
    assert!(!links.contains("bgt"), "tap left behind:\n{links}");
    let rules = nft_ruleset(&ns);
    assert!(!rules.contains(&uid), "nft rule left behind:\n{rules}");
    let leftovers: Vec<String> = walk(&d.state_dir)
        .into_iter()
        .filter(|p| p.contains(&uid))
        .collect();
    assert!(leftovers.is_empty(), "files left behind: {leftovers:?}");
    let ps = Command::new("pgrep")
        .args(["-f", &uid])
        .output()
        .expect("pgrep");
    assert!(
        ps.stdout.is_empty(),
        "process with the VM uid left: {}",
        String::from_utf8_lossy(&ps.stdout)
    );

    // The VM's disk came from a prepared base of the Image (and the spare made after
    // it); both go with the Image.
    let bases = d.state_dir.join("disk-bases");
    let prepared = |suffix: &str| {
        walk(&bases)
            .into_iter()
            .filter(|p| p.ends_with(suffix))
            .count()
    };
    assert_eq!(prepared(".base.ext4"), 1, "{:?}", walk(&bases));
    d.cli_ok(&["delete", "image", "kit", "--wait", "--timeout", "60s"]);
    assert!(
        walk(&bases).is_empty(),
        "prepared disks left after the Image's delete: {:?}",
        walk(&bases)
    );
}

#[test]
#[ignore = "needs root (network namespaces, taps, nftables), QEMU and the guest kit"]
fn daemon_crash_adopts_running_vms() {
    let kit = Kit::require();
    let ns = NetNs::new("adopt");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut d = Daemon::start(&ns, tmp.path(), &["--resync", "5s"]);
    // The specs directory source this time: drop the files in.
    write(&d.specs_dir.join("image.yaml"), &image_yaml(&kit));
    write(
        &d.specs_dir.join("a.yaml"),
        &vm_yaml("a", "256MiB", "Running"),
    );
    write(
        &d.specs_dir.join("b.yaml"),
        &vm_yaml("b", "256MiB", "Running"),
    );
    let a = wait_ready(&d, "a");
    let b = wait_ready(&d, "b");
    let (pa, pb) = (
        status(&a, "pid").as_i64().expect("pid a"),
        status(&b, "pid").as_i64().expect("pid b"),
    );
    assert_ne!(status(&a, "ip"), status(&b, "ip"), "two VMs, two addresses");

    d.kill9();
    assert!(
        process_alive(pa) && process_alive(pb),
        "a daemon crash killed a VM"
    );
    let d = d.spawn(&ns);
    for (name, pid) in [("a", pa), ("b", pb)] {
        let obj = wait_ready(&d, name);
        assert_eq!(
            status(&obj, "pid").as_i64(),
            Some(pid),
            "vm {name} was not adopted: {obj:#}"
        );
    }

    // Removing the files deletes the VMs (GitOps), leaving nothing running.
    for f in ["a.yaml", "b.yaml"] {
        fs::remove_file(d.specs_dir.join(f)).expect("rm spec");
    }
    for name in ["a", "b"] {
        d.cli_ok(&[
            "wait",
            &format!("vm/{name}"),
            "--for=delete",
            "--timeout",
            "120s",
        ]);
    }
    assert!(!process_alive(pa) && !process_alive(pb));
}

/// Checks that VMM `pid` of VM `uid` runs confined (the VMM user, seccomp, no way back
/// to privileges, a cgroup named after the VM in every hierarchy it is in); returns the
/// cgroup directories.
fn confined_in(pid: i64, uid: &str) -> Vec<std::path::PathBuf> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("VMM status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let vmm_uid = Command::new("id")
        .args(["-u", "banger-vmm"])
        .output()
        .expect("id");
    let vmm_uid = String::from_utf8_lossy(&vmm_uid.stdout).trim().to_owned();
    assert!(!vmm_uid.is_empty() && vmm_uid != "0", "banger-vmm exists");
    assert_eq!(field("Uid:"), vec![vmm_uid; 4], "{status}");
    assert_eq!(field("Seccomp:"), ["2"], "{status}");
    assert_eq!(field("NoNewPrivs:"), ["1"], "{status}");
    let leaf = format!("/banger-{uid}");
    let membership = fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("VMM cgroups");
    let mut dirs = Vec::new();
    for line in membership.lines().filter(|l| l.ends_with(&leaf)) {
        // `ID:CONTROLLERS:PATH`; v1 hierarchies are mounted under /sys/fs/cgroup by
        // controller name, v2 at /sys/fs/cgroup.
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let base = if controllers.is_empty() {
            std::path::PathBuf::from("/sys/fs/cgroup")
        } else {
            Path::new("/sys/fs/cgroup").join(controllers)
        };
        dirs.push(base.join(path.trim_start_matches('/')));
    }
    assert!(
        !dirs.is_empty(),
        "VMM not in a cgroup of its VM:\n{membership}"
    );
    for dir in &dirs {
        assert!(dir.is_dir(), "{} missing", dir.display());
    }
    dirs
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            out.push(p.display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

/// kill -9 of a pid.
///
/// # Safety
/// The caller passes a pid it owns (a VMM of its own test).
unsafe fn libc_kill(pid: i64) {
    let pid = i32::try_from(pid).expect("pid fits i32");
    // SAFETY: kill(2) touches no memory; the caller vouches for the pid.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}
