//! Per-VM cgroups on this host's real cgroup hierarchies (v1 on this project's machines,
//! v2 where the host gives it the controllers): made with their limits, a detached
//! process spawned into them as an unprivileged user, the limits enforced by the kernel,
//! found by the garbage listing, removed only once empty.
//!
//! Needs root (cgroups, the VMM user): `#[ignore]`d with the reason; `scripts/test.sh`
//! runs it. Every cgroup it makes lives below a parent derived from a fresh temporary
//! directory (as a daemon's is from its state directory) and is removed at the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use banger_controller::host::cgroup::{
    daemon_parent, list_vm_cgroups, CgroupError, CgroupLayout, CgroupLimits, VmCgroup,
};
use banger_controller::host::names::ObjectUid;
use banger_controller::host::process::{
    read_stat, spawn_detached, terminate, uid_marker, DetachedCommand,
};
use banger_controller::host::vmm_user;

const MIB: u64 = 1024 * 1024;

/// Removes the test's cgroups (and the daemon parent it made) when the test ends,
/// however it ends.
struct Cleanup {
    cgroups: Vec<VmCgroup>,
    parents: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for cgroup in &self.cgroups {
            for pid in cgroup.pids().unwrap_or_default() {
                // SAFETY: kill(2) on a process this test put in its own cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while cgroup.remove().is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        for parent in &self.parents {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

fn uid(n: u32) -> ObjectUid {
    ObjectUid::parse(&format!("c9a0{:08x}-{n:04x}", std::process::id())).unwrap()
}

/// `sh -c SCRIPT sh PROCS…`: the shell writes itself into each `cgroup.procs` given as
/// an argument, then runs the rest of `script` (no value is spliced into the script).
fn in_cgroup(cgroup: &VmCgroup, script: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "for f in \"$@\"; do echo 0 > \"$f\" || exit 99; done; {script}"
        ))
        .arg("sh")
        .args(cgroup.join_files());
    cmd
}

fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

#[tokio::test]
#[ignore = "needs root (cgroups, the VMM user)"]
async fn a_vm_cgroup_confines_a_detached_process_and_is_removed_once_empty() {
    let layout = CgroupLayout::detect().expect("this host offers memory and pids cgroups");
    let state = tempfile::tempdir().unwrap();
    let parent = daemon_parent(state.path());
    let mut cleanup = Cleanup {
        cgroups: Vec::new(),
        parents: layout.parent_dirs(&parent),
    };
    let uid = uid(1);
    let cgroup = layout.vm_cgroup(&parent, &uid);
    cleanup.cgroups.push(cgroup.clone());

    // Made with its limits (twice: idempotent).
    let limits = CgroupLimits {
        memory_bytes: 96 * MIB,
        pids: 16,
    };
    cgroup.ensure(&limits).unwrap();
    cgroup.ensure(&limits).unwrap();
    for (file, value) in cgroup.limit_writes(&limits) {
        assert_eq!(read_trimmed(&file), value, "{}", file.display());
    }
    assert!(cgroup.exists());
    assert_eq!(cgroup.pids().unwrap(), Vec::<i32>::new());

    // A detached process spawned into it as the VMM user.
    let user = vmm_user::ensure(vmm_user::DEFAULT_VMM_USER).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let marker = uid_marker(uid.as_str());
    let command = DetachedCommand {
        program: "/bin/sh".into(),
        args: vec![
            OsString::from("-c"),
            "sleep 60; :".into(),
            marker.clone().into(),
        ],
        output_log: dir.path().join("out.log"),
        cwd: dir.path().to_path_buf(),
        marker: marker.clone(),
        credentials: Some(user.credentials(Vec::new())),
        cgroup_join_files: cgroup.join_files(),
    };
    let id = spawn_detached(&command, &[]).unwrap();
    assert!(read_stat(id.pid).unwrap().is_some());
    let membership = std::fs::read_to_string(format!("/proc/{}/cgroup", id.pid)).unwrap();
    let leaf = format!("/{parent}/{}", cgroup.leaf());
    let lines_in_leaf = membership.lines().filter(|l| l.ends_with(&leaf)).count();
    let expected = match layout {
        CgroupLayout::V2 { .. } => 1,
        CgroupLayout::V1 { .. } => layout.roots().len(),
    };
    assert_eq!(lines_in_leaf, expected, "{membership}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", id.pid)).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [
                    "Uid:",
                    &user.uid.to_string(),
                    &user.uid.to_string(),
                    &user.uid.to_string(),
                    &user.uid.to_string()
                ]),
        "{status}"
    );
    assert!(status.lines().any(|l| l == "NoNewPrivs:\t1"), "{status}");
    let pids = cgroup.pids().unwrap();
    assert!(pids.contains(&id.pid), "{pids:?}");

    // Listed for the daemon it belongs to (and for no other), refused removal while busy.
    let listed = list_vm_cgroups(&layout, &parent).unwrap();
    assert_eq!(listed, vec![cgroup.clone()]);
    let other_daemon = daemon_parent(&state.path().join("other"));
    assert!(list_vm_cgroups(&layout, &other_daemon).unwrap().is_empty());
    assert!(matches!(cgroup.remove(), Err(CgroupError::Busy { .. })));
    assert!(cgroup.exists());

    terminate(&id, &marker, Duration::from_secs(5), Duration::from_secs(5))
        .await
        .unwrap();
    // The shell's `sleep` child outlives it (a VMM cannot fork: its seccomp filter
    // forbids it); until it is gone too, the cgroup is not empty.
    for pid in cgroup.pids().unwrap() {
        assert_ne!(pid, id.pid, "the terminated process is still listed");
        // SAFETY: kill(2) on a process in this test's own cgroup.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Err(e) = cgroup.remove() {
        assert!(Instant::now() < deadline, "not removable once empty: {e}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!cgroup.exists());
    for dir in layout.parent_dirs(&parent) {
        assert!(
            !dir.exists(),
            "the emptied daemon parent {} stays",
            dir.display()
        );
    }
    cgroup.remove().unwrap();
    assert!(list_vm_cgroups(&layout, &parent).unwrap().is_empty());
}

#[test]
#[ignore = "needs root (cgroups)"]
fn the_kernel_enforces_the_memory_and_pids_limits() {
    let layout = CgroupLayout::detect().expect("this host offers memory and pids cgroups");
    let state = tempfile::tempdir().unwrap();
    let parent = daemon_parent(state.path());
    let mut cleanup = Cleanup {
        cgroups: Vec::new(),
        parents: layout.parent_dirs(&parent),
    };
    let cgroup = layout.vm_cgroup(&parent, &uid(2));
    cleanup.cgroups.push(cgroup.clone());
    cgroup
        .ensure(&CgroupLimits {
            memory_bytes: 32 * MIB,
            pids: 4,
        })
        .unwrap();

    // 256 MiB in one buffer under a 32 MiB limit: the OOM killer ends it.
    let out = in_cgroup(&cgroup, "exec dd if=/dev/zero of=/dev/null bs=256M count=1")
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "{:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // The same within the limit works.
    let out = in_cgroup(&cgroup, "exec dd if=/dev/zero of=/dev/null bs=4M count=1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    // Four processes at most: the shell cannot fork eight children.
    let out = in_cgroup(&cgroup, "for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fork"), "{:?} {stderr}", out.status);
}
