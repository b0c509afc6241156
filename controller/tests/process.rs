//! Detached processes against the real kernel: sessions, identity, pidfd exit watching,
//! identity-checked signals.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::time::Duration;

use banger_controller::host::process::{
    read_stat, spawn_detached, terminate, uid_marker, wait_for_exit, watch_exit, DetachedCommand,
    IdentityCheck, ProcessIdentity, StopOutcome,
};
use nix::sys::signal::Signal;

/// A shell that stays alive (the trailing `:` keeps `sh` from exec'ing `sleep`), with the
/// marker as its `$0`, printing a line to stdout first.
fn sleeper(dir: &std::path::Path, uid: &str, trap_term: bool) -> DetachedCommand {
    let script = if trap_term {
        "trap '' TERM; echo started; sleep 60; :"
    } else {
        "echo started; sleep 60; :"
    };
    DetachedCommand {
        program: "/bin/sh".into(),
        args: vec![OsString::from("-c"), script.into(), uid_marker(uid).into()],
        output_log: dir.join("out.log"),
        cwd: dir.to_path_buf(),
        marker: uid_marker(uid),
        credentials: None,
        cgroup_join_files: Vec::new(),
    }
}

async fn wait_for_file_text(path: &std::path::Path, needle: &str) -> bool {
    for _ in 0..100 {
        if std::fs::read_to_string(path).is_ok_and(|t| t.contains(needle)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn detached_process_has_own_session_and_identity() {
    let dir = tempfile::tempdir().unwrap();
    // A descriptor without close-on-exec that the child must not inherit.
    let devnull = std::fs::File::open("/dev/null").unwrap();
    // SAFETY: dup of a valid descriptor; the result is owned below.
    let leaked = unsafe { OwnedFd::from_raw_fd(libc::dup(devnull.as_raw_fd())) };

    let id = spawn_detached(&sleeper(dir.path(), "u1", false), &[]).unwrap();
    let stat = read_stat(id.pid).unwrap().unwrap();
    assert_eq!(stat.start_time, id.start_time);
    assert_eq!(stat.session, id.pid, "the process leads its own session");
    let ours = nix::unistd::getsid(None).unwrap().as_raw();
    assert_ne!(stat.session, ours);
    assert!(
        wait_for_file_text(&dir.path().join("out.log"), "started").await,
        "stdout goes to the log"
    );

    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", id.pid))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let leaked_name = leaked.as_raw_fd().to_string();
    assert!(
        !fds.contains(&leaked_name),
        "inherited fd {leaked_name} leaked into the child: {fds:?}"
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/fd/0", id.pid)).unwrap(),
        std::path::Path::new("/dev/null")
    );

    assert_eq!(id.check(&uid_marker("u1")).unwrap(), IdentityCheck::Ours);
    assert!(matches!(
        id.check(&uid_marker("u2")).unwrap(),
        IdentityCheck::Reused { .. }
    ));
    let wrong_time = ProcessIdentity {
        pid: id.pid,
        start_time: id.start_time + 1,
    };
    assert!(matches!(
        wrong_time.check(&uid_marker("u1")).unwrap(),
        IdentityCheck::Reused { .. }
    ));
    // A wrong identity is never signalled.
    assert_eq!(
        terminate(
            &wrong_time,
            &uid_marker("u1"),
            Duration::from_secs(1),
            Duration::from_secs(1)
        )
        .await
        .unwrap(),
        StopOutcome::AlreadyGone
    );
    assert_eq!(
        terminate(
            &id,
            &uid_marker("u2"),
            Duration::from_secs(1),
            Duration::from_secs(1)
        )
        .await
        .unwrap(),
        StopOutcome::AlreadyGone
    );
    assert_eq!(id.check(&uid_marker("u1")).unwrap(), IdentityCheck::Ours);

    assert_eq!(
        terminate(
            &id,
            &uid_marker("u1"),
            Duration::from_secs(5),
            Duration::from_secs(5)
        )
        .await
        .unwrap(),
        StopOutcome::Terminated
    );
    assert_eq!(id.check(&uid_marker("u1")).unwrap(), IdentityCheck::Exited);
    // Stopping again is a no-op.
    assert_eq!(
        terminate(
            &id,
            &uid_marker("u1"),
            Duration::from_secs(1),
            Duration::from_secs(1)
        )
        .await
        .unwrap(),
        StopOutcome::AlreadyGone
    );
}

#[tokio::test]
async fn watch_exit_fires_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let id = spawn_detached(&sleeper(dir.path(), "u3", false), &[]).unwrap();
    let exited = watch_exit(&id, &uid_marker("u3")).unwrap();
    let tracked = id.attach(&uid_marker("u3")).unwrap().unwrap();
    assert!(!tracked.has_exited());
    assert!(tracked.signal(Signal::SIGKILL).unwrap());
    tokio::time::timeout(Duration::from_secs(10), exited)
        .await
        .expect("watch_exit resolves after SIGKILL");
    assert!(tracked.has_exited());
    assert!(
        !tracked.signal(Signal::SIGTERM).unwrap(),
        "signalling an exited process reports it gone"
    );
    // Once gone, a new watch resolves at once.
    tokio::time::timeout(
        Duration::from_secs(1),
        watch_exit(&id, &uid_marker("u3")).unwrap(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn terminate_escalates_to_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let id = spawn_detached(&sleeper(dir.path(), "u4", true), &[]).unwrap();
    assert!(
        wait_for_file_text(&dir.path().join("out.log"), "started").await,
        "trap installed before we signal"
    );
    let marker = uid_marker("u4");
    assert!(
        !wait_for_exit(&id, &marker, Duration::from_millis(200))
            .await
            .unwrap(),
        "still running"
    );
    let outcome = terminate(
        &id,
        &uid_marker("u4"),
        Duration::from_millis(500),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(outcome, StopOutcome::Killed);
    assert_eq!(id.check(&uid_marker("u4")).unwrap(), IdentityCheck::Exited);
}

#[tokio::test]
async fn handed_over_descriptors_reach_the_program_and_no_others() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("handed-over.txt");
    std::fs::write(&secret, "handed over\n").unwrap();
    let given = std::fs::File::open(&secret).unwrap();
    // Opened close-on-exec like every descriptor std opens; not handed over.
    let kept = std::fs::File::open(&secret).unwrap();
    let script = format!(
        "cat /proc/self/fd/{}; test -e /proc/self/fd/{} && echo leaked; sleep 60; :",
        given.as_raw_fd(),
        kept.as_raw_fd()
    );
    let command = DetachedCommand {
        args: vec![OsString::from("-c"), script.into(), uid_marker("u7").into()],
        ..sleeper(dir.path(), "u7", false)
    };
    let id = spawn_detached(&command, &[given.as_fd()]).unwrap();
    let log = dir.path().join("out.log");
    assert!(
        wait_for_file_text(&log, "handed over").await,
        "the program read it"
    );
    terminate(
        &id,
        &uid_marker("u7"),
        Duration::from_secs(5),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("leaked"), "{text}");
}

#[test]
fn spawn_refuses_a_command_without_its_marker() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = sleeper(dir.path(), "u5", false);
    cmd.marker = uid_marker("other");
    assert!(spawn_detached(&cmd, &[])
        .unwrap_err()
        .to_string()
        .contains("marker"));
    let mut missing = sleeper(dir.path(), "u5", false);
    missing.program = "/nonexistent/vmm".into();
    assert!(spawn_detached(&missing, &[])
        .unwrap_err()
        .to_string()
        .contains("/nonexistent/vmm"));
}

/// Set (to a directory) in the child copy of this test binary that
/// `vmm_survives_the_death_of_its_spawner` starts to play the daemon.
const SPAWNER_DIR: &str = "BANGER_TEST_SPAWNER_DIR";

/// The child's part of `vmm_survives_the_death_of_its_spawner`: it plays the daemon,
/// spawns a detached process, reports its identity in `dir` and waits to be killed.
async fn play_the_spawner(dir: std::path::PathBuf) {
    let id = spawn_detached(&sleeper(&dir, "u6", false), &[]).unwrap();
    std::fs::write(
        dir.join("identity"),
        format!("{} {}", id.pid, id.start_time),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[tokio::test]
async fn vmm_survives_the_death_of_its_spawner() {
    if let Some(dir) = std::env::var_os(SPAWNER_DIR) {
        return play_the_spawner(dir.into()).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut spawner = std::process::Command::new(exe)
        .args([
            "--exact",
            "vmm_survives_the_death_of_its_spawner",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SPAWNER_DIR, dir.path())
        .process_group(0)
        .spawn()
        .unwrap();
    let identity_file = dir.path().join("identity");
    let mut identity = None;
    for _ in 0..200 {
        if let Ok(text) = std::fs::read_to_string(&identity_file) {
            let mut parts = text.split_whitespace().map(|p| p.parse::<u64>().unwrap());
            if let (Some(pid), Some(start)) = (parts.next(), parts.next()) {
                identity = Some(ProcessIdentity {
                    pid: i32::try_from(pid).unwrap(),
                    start_time: start,
                });
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = identity.expect("the spawner reported its process");
    assert_eq!(
        read_stat(id.pid).unwrap().unwrap().ppid,
        i32::try_from(spawner.id()).unwrap()
    );

    // The "daemon" crashes: SIGKILL to it and its whole process group.
    let spawner_pid = nix::unistd::Pid::from_raw(i32::try_from(spawner.id()).unwrap());
    let pgid = nix::unistd::getpgid(Some(spawner_pid)).unwrap();
    assert_eq!(
        pgid, spawner_pid,
        "the spawner leads its own group, so killpg spares us"
    );
    nix::sys::signal::killpg(pgid, Signal::SIGKILL).unwrap();
    nix::sys::signal::kill(spawner_pid, Signal::SIGKILL).ok();
    spawner.wait().unwrap();

    assert_eq!(
        id.check(&uid_marker("u6")).unwrap(),
        IdentityCheck::Ours,
        "the detached process outlived its spawner"
    );
    assert_ne!(
        read_stat(id.pid).unwrap().unwrap().ppid,
        i32::try_from(spawner.id()).unwrap(),
        "reparented"
    );
    assert_eq!(
        terminate(
            &id,
            &uid_marker("u6"),
            Duration::from_secs(5),
            Duration::from_secs(5)
        )
        .await
        .unwrap(),
        StopOutcome::Terminated
    );
}
