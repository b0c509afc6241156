//! The QEMU driver against real QEMU (`-M microvm`, TCG on this project's machines)
//! booting real guests:
//!
//! - the guest kit (`scripts/guest-kit.sh`; directory from `BANGER_KIT_DIR`, default
//!   `<repo>/.cache/guest-kit`): Debian cloud kernel, initramfs, ext4 root with acpid;
//! - a tiny busybox initramfs built here (kit kernel, no acpid: ignores the power button);
//! - one kit guest on a tap in a network namespace the test creates and removes.
//!
//! Every test here needs QEMU and the guest kit, and the tap test root too: they are
//! `#[ignore]`d with the reason, and `scripts/test.sh` (as root) runs them. Without the
//! kit they fail, naming the command that builds it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kit_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_controller::driver::qemu::{QemuDriver, QemuOptions, DEFAULT_BINARY};
use banger_controller::driver::qmp::{QmpClient, QmpError};
use banger_controller::driver::{
    Confinement, DriverError, Hypervisor, LaunchSpec, Liveness, VmmProcess,
};
use banger_controller::host::kvm::{self, Accel, ResolvedAccel};
use banger_controller::host::process::{self, read_stat, IdentityCheck, ProcessIdentity};
use banger_controller::host::readiness::{console_len, tcp_ready, ConsoleWatch};
use banger_controller::host::vmm_user;

const KIT_MARKER: &str = "BANGER-GUEST-READY";
const TINY_MARKER: &str = "BANGER-TINY-READY";

struct Kit {
    kernel: PathBuf,
    initrd: PathBuf,
    rootfs: PathBuf,
}

/// The guest kit; fails the test (naming the command that builds it) when incomplete.
fn kit() -> Kit {
    let dir = kit_support::kit_dir();
    let kit = Kit {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        rootfs: dir.join("rootfs.ext4"),
    };
    let missing: Vec<&Path> = [&kit.kernel, &kit.initrd, &kit.rootfs]
        .into_iter()
        .map(PathBuf::as_path)
        .filter(|p| !p.is_file())
        .collect();
    assert!(
        missing.is_empty(),
        "guest kit incomplete in {} (missing {missing:?}): run scripts/guest-kit.sh",
        dir.display()
    );
    kit
}

fn driver() -> QemuDriver {
    let (driver, accel) = QemuDriver::for_kvm(None, Accel::Auto, &kvm::detect());
    accel.expect("accelerator");
    driver
}

/// A unique uid per test VM.
fn uid(tag: &str) -> String {
    format!("test-{tag}-{}", std::process::id())
}

fn spec(
    uid: &str,
    vm_dir: &Path,
    kernel: &Path,
    initrd: &Path,
    cmdline: &str,
    root_disk: &Path,
) -> LaunchSpec {
    LaunchSpec {
        uid: uid.to_owned(),
        name: format!("vm-{uid}"),
        vcpus: 1,
        memory_mib: 256,
        kernel: kernel.to_path_buf(),
        initrd: Some(initrd.to_path_buf()),
        cmdline: cmdline.to_owned(),
        root_disk: root_disk.to_path_buf(),
        tap: None,
        mac: "02:00:00:00:00:01".to_owned(),
        vm_dir: vm_dir.to_path_buf(),
        console_log: vm_dir.join("console.log"),
        // The driver's part of confinement (user, seccomp, descriptors); cgroups are the
        // runtime's, tested with it (host_runtime.rs, the end-to-end tests).
        confinement: Confinement {
            user: vmm_user::ensure(vmm_user::DEFAULT_VMM_USER).expect("the VMM user"),
            cgroup: None,
        },
    }
}

/// A kit guest with its own sparse copy of the root disk.
fn kit_spec(kit: &Kit, uid: &str, vm_dir: &Path) -> LaunchSpec {
    let disk = vm_dir.join("root.ext4");
    let status = std::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(&kit.rootfs)
        .arg(&disk)
        .status()
        .unwrap();
    assert!(status.success());
    spec(
        uid,
        vm_dir,
        &kit.kernel,
        &kit.initrd,
        "console=ttyS0 root=/dev/vda rw",
        &disk,
    )
}

/// A guest that runs only a busybox initramfs: prints a marker and idles, no acpid.
fn tiny_spec(kit: &Kit, uid: &str, vm_dir: &Path) -> LaunchSpec {
    let initrd = vm_dir.join("tiny.cpio");
    let init = format!("#!/bin/busybox sh\n/bin/busybox echo {TINY_MARKER}\nwhile :; do /bin/busybox sleep 1000; done\n");
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static at /bin/busybox");
    let mut archive = Cpio::default();
    archive.dir("bin");
    archive.dir("dev");
    archive.dir("proc");
    archive.char_device("dev/console", 5, 1);
    archive.file("bin/busybox", 0o755, &busybox);
    archive.file("init", 0o755, init.as_bytes());
    std::fs::write(&initrd, archive.finish()).unwrap();
    let disk = vm_dir.join("empty.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    spec(
        uid,
        vm_dir,
        &kit.kernel,
        &initrd,
        "console=ttyS0 rdinit=/init",
        &disk,
    )
}

/// A minimal `newc` cpio writer for the tiny initramfs.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let name_size = name.len() + 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            u32::try_from(data.len()).unwrap(),
            0,
            0,
            rdev.0,
            rdev.1,
            u32::try_from(name_size).unwrap(),
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for field in fields {
            self.out
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }
    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, (0, 0), &[]);
    }
    fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020_600, (major, minor), &[]);
    }
    fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | mode, (0, 0), data);
    }
    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

/// Waits (bounded) until the console log gets `needle` after byte `from`.
async fn wait_for_console(path: &Path, needle: &str, from: u64, timeout: Duration) -> bool {
    let mut watch = ConsoleWatch::new(path, needle, from);
    watch
        .wait(timeout, Duration::from_millis(100))
        .await
        .unwrap()
}

fn identity(vmm: &VmmProcess) -> ProcessIdentity {
    ProcessIdentity {
        pid: vmm.pid,
        start_time: vmm.start_time,
    }
}

/// Launches and reports the time to `running`.
async fn launch(driver: &QemuDriver, spec: &LaunchSpec) -> VmmProcess {
    let started = Instant::now();
    let vmm = driver
        .launch(spec)
        .await
        .unwrap_or_else(|e| panic!("launch {}: {e}", spec.name));
    eprintln!("{}: launch to running {:?}", spec.name, started.elapsed());
    vmm
}

#[tokio::test]
#[ignore = "needs root (the VMM user), QEMU and the guest kit"]
async fn kit_guest_runs_detached_and_powers_off_on_request() {
    let kit = kit();
    let dir = tempfile::tempdir().unwrap();
    let uid = uid("kit");
    let spec = kit_spec(&kit, &uid, dir.path());
    let driver = driver();
    let vmm = launch(&driver, &spec).await;

    assert_eq!(driver.probe(&vmm, &uid).await, Liveness::Running);
    assert_eq!(vmm.control_socket, dir.path().join("qmp.sock"));
    let started = Instant::now();
    assert!(
        wait_for_console(&spec.console_log, KIT_MARKER, 0, Duration::from_secs(120)).await,
        "no {KIT_MARKER} on the console"
    );
    eprintln!(
        "{}: running to {KIT_MARKER} {:?}",
        spec.name,
        started.elapsed()
    );

    // Its own session, not ours; the marker is on its command line.
    let stat = read_stat(vmm.pid).unwrap().unwrap();
    assert_eq!(stat.session, vmm.pid, "QEMU leads its own session");
    assert_ne!(stat.session, nix::unistd::getsid(None).unwrap().as_raw());
    assert_eq!(stat.start_time, vmm.start_time);
    // Confined: the VMM user (no other group), no way back to privileges, seccomp on.
    let user = &spec.confinement.user;
    let status = std::fs::read_to_string(format!("/proc/{}/status", vmm.pid)).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    let uid_text = user.uid.to_string();
    let gid_text = user.gid.to_string();
    assert_eq!(field("Uid:"), [uid_text.as_str(); 4].join(" "), "{status}");
    assert_eq!(field("Gid:"), [gid_text.as_str(); 4].join(" "), "{status}");
    assert_eq!(field("Groups:"), "", "no supplementary group under TCG");
    assert_eq!(field("NoNewPrivs:"), "1");
    assert_eq!(field("Seccomp:"), "2", "QEMU's -sandbox filter is on");
    assert_eq!(field("CapEff:"), "0000000000000000");
    assert!(
        !dir.path().join("qemu.pid").exists(),
        "no pid file: QEMU may not write in the VM directory"
    );
    assert_eq!(
        identity(&vmm).check(&process::uid_marker(&uid)).unwrap(),
        IdentityCheck::Ours
    );

    // Identity: a wrong uid or start time is not our VM.
    assert_eq!(driver.probe(&vmm, "some-other-uid").await, Liveness::Exited);
    let wrong_start = VmmProcess {
        start_time: vmm.start_time + 1,
        ..vmm.clone()
    };
    assert_eq!(driver.probe(&wrong_start, &uid).await, Liveness::Exited);
    // Shutting down a wrong identity touches nothing.
    driver
        .shutdown(&wrong_start, &uid, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(driver.probe(&vmm, &uid).await, Liveness::Running);

    // The kit's acpid turns the power button into a clean poweroff.
    let started = Instant::now();
    driver
        .shutdown(&vmm, &uid, Duration::from_secs(60))
        .await
        .unwrap();
    eprintln!("{}: graceful shutdown {:?}", spec.name, started.elapsed());
    assert_eq!(
        identity(&vmm).check(&process::uid_marker(&uid)).unwrap(),
        IdentityCheck::Exited
    );
    assert_eq!(driver.probe(&vmm, &uid).await, Liveness::Exited);
    let console = String::from_utf8_lossy(&std::fs::read(&spec.console_log).unwrap()).into_owned();
    assert!(
        console.contains("banger-init: poweroff"),
        "the guest powered itself off (graceful path)"
    );
    assert!(!vmm.control_socket.exists(), "the QMP socket is gone");

    // Already gone: still a success.
    driver
        .shutdown(&vmm, &uid, Duration::from_secs(1))
        .await
        .unwrap();

    // A second boot appends to the same console log; readiness looks only at the new part.
    let offset = console_len(&spec.console_log).unwrap();
    assert!(offset > 0);
    let vmm = launch(&driver, &spec).await;
    assert!(
        wait_for_console(
            &spec.console_log,
            KIT_MARKER,
            offset,
            Duration::from_secs(120)
        )
        .await,
        "second boot's marker appended"
    );
    assert!(
        std::fs::read_to_string(&spec.console_log)
            .unwrap()
            .starts_with(&console[..64]),
        "first boot's log kept"
    );
    driver
        .shutdown(&vmm, &uid, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(driver.probe(&vmm, &uid).await, Liveness::Exited);
}

#[tokio::test]
#[ignore = "needs root (the VMM user), QEMU and the guest kit"]
async fn busybox_guest_ignores_powerdown_and_shutdown_falls_back() {
    let kit = kit();
    let dir = tempfile::tempdir().unwrap();
    let uid = uid("tiny");
    let spec = tiny_spec(&kit, &uid, dir.path());
    let driver = driver();
    let vmm = launch(&driver, &spec).await;
    assert!(
        wait_for_console(&spec.console_log, TINY_MARKER, 0, Duration::from_secs(120)).await,
        "no {TINY_MARKER} on the console"
    );
    assert_eq!(driver.probe(&vmm, &uid).await, Liveness::Running);

    // Straight QMP: the power button is pressed (QEMU reports POWERDOWN), the guest has
    // no acpid and keeps running; events are skipped while waiting for answers.
    let qmp_timeout = Duration::from_secs(5);
    let mut qmp = QmpClient::connect(&vmm.control_socket, qmp_timeout)
        .await
        .unwrap();
    assert!(
        qmp.version()
            .is_some_and(|v| v.starts_with(char::is_numeric)),
        "{:?}",
        qmp.version()
    );
    qmp.system_powerdown().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = qmp.query_status().await.unwrap();
    assert!(status.running, "{status:?}");
    assert!(
        qmp.events().iter().any(|e| e == "POWERDOWN"),
        "{:?}",
        qmp.events()
    );
    match qmp.execute("no-such-command", None).await {
        Err(QmpError::Command { class, .. }) => assert_eq!(class, "CommandNotFound"),
        other => panic!("expected CommandNotFound, got {other:?}"),
    }
    // A paused guest is alive but not running: unresponsive, not exited.
    qmp.execute("stop", None).await.unwrap();
    drop(qmp);
    assert!(matches!(
        driver.probe(&vmm, &uid).await,
        Liveness::Unresponsive { .. }
    ));
    let mut qmp = QmpClient::connect(&vmm.control_socket, qmp_timeout)
        .await
        .unwrap();
    qmp.execute("cont", None).await.unwrap();
    drop(qmp);
    assert_eq!(driver.probe(&vmm, &uid).await, Liveness::Running);

    let grace = Duration::from_secs(2);
    let started = Instant::now();
    driver.shutdown(&vmm, &uid, grace).await.unwrap();
    eprintln!(
        "{}: shutdown via fallback (grace {grace:?}) {:?}",
        spec.name,
        started.elapsed()
    );
    assert_eq!(
        identity(&vmm).check(&process::uid_marker(&uid)).unwrap(),
        IdentityCheck::Exited
    );
    assert_eq!(driver.probe(&vmm, &uid).await, Liveness::Exited);
}

#[tokio::test]
#[ignore = "needs root (the VMM user), QEMU and the guest kit"]
async fn exit_after_kill_9_is_noticed() {
    let kit = kit();
    let dir = tempfile::tempdir().unwrap();
    let uid = uid("kill");
    let spec = tiny_spec(&kit, &uid, dir.path());
    let driver = driver();
    let vmm = launch(&driver, &spec).await;
    let marker = process::uid_marker(&uid);
    let exited = process::watch_exit(&identity(&vmm), &marker).unwrap();

    // No twin while it runs.
    let err = driver.launch(&spec).await.unwrap_err().to_string();
    assert!(err.contains("already serves"), "{err}");
    assert_eq!(driver.probe(&vmm, &uid).await, Liveness::Running);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(vmm.pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    tokio::time::timeout(Duration::from_secs(30), exited)
        .await
        .expect("watch_exit resolves after kill -9");
    assert_eq!(driver.probe(&vmm, &uid).await, Liveness::Exited);
    // Shutting down a dead VM succeeds and cleans its leftovers.
    driver
        .shutdown(&vmm, &uid, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(!vmm.control_socket.exists());
}

#[tokio::test]
#[ignore = "needs root (the VMM user), QEMU and the guest kit"]
async fn failed_launch_explains_and_leaves_no_process() {
    let kit = kit();
    let dir = tempfile::tempdir().unwrap();
    let uid = uid("bad");
    let mut spec = tiny_spec(&kit, &uid, dir.path());
    spec.kernel = dir.path().join("no-such-kernel");
    let err = driver().launch(&spec).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DriverError::Operation { .. }), "{text}");
    assert!(
        text.contains("no-such-kernel"),
        "the missing file is named: {text}"
    );
    // A kernel the VMM user may not read is refused before QEMU starts, saying so.
    let private = dir.path().join("private-kernel");
    std::fs::copy(&kit.kernel, &private).unwrap();
    std::fs::set_permissions(
        &private,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    spec.kernel = private;
    let text = driver().launch(&spec).await.unwrap_err().to_string();
    assert!(
        text.contains("private-kernel") && text.contains("not readable by the VMM user"),
        "{text}"
    );
    // A kernel QEMU cannot boot: QEMU's own complaint is in the error.
    let garbage = dir.path().join("garbage-kernel");
    std::fs::write(&garbage, b"not a kernel").unwrap();
    spec.kernel = garbage;
    let err = driver().launch(&spec).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DriverError::Operation { .. }), "{text}");
    assert!(
        text.contains("qemu.log"),
        "QEMU's output log is quoted: {text}"
    );
    // No QEMU carries this VM's marker any more.
    let marker = process::uid_marker(&uid);
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(Some(args)) = process::read_cmdline(pid) {
            let found = args.iter().any(|a| a.to_string_lossy().contains(&marker));
            assert!(
                !found || read_stat(pid).unwrap().is_none_or(|s| s.is_exited()),
                "pid {pid} still runs for {uid}"
            );
        }
    }

    let version = QemuDriver::new(QemuOptions::new(DEFAULT_BINARY, ResolvedAccel::Tcg))
        .check_binary()
        .unwrap();
    assert!(version.starts_with("QEMU emulator version"), "{version}");
    let missing = QemuDriver::new(QemuOptions::new("/nonexistent/qemu", ResolvedAccel::Tcg));
    assert!(missing.check_binary().is_err());

    let (missing, accel) = QemuDriver::for_kvm(
        Some(PathBuf::from("/nonexistent/qemu")),
        Accel::Tcg,
        &kvm::detect(),
    );
    accel.unwrap();
    let err = missing.launch(&spec).await.unwrap_err();
    assert!(matches!(err, DriverError::Binary { .. }), "{err}");
}

/// A network namespace with a bridge and a tap, removed on drop.
struct NetNs {
    name: String,
}

impl NetNs {
    fn create(name: &str) -> NetNs {
        let ip = |args: &[&str]| {
            let status = std::process::Command::new("ip")
                .args(args)
                .status()
                .unwrap();
            assert!(status.success(), "ip {args:?}");
        };
        ip(&["netns", "add", name]);
        let ns = NetNs {
            name: name.to_owned(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"]);
        ip(&["-n", name, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", name, "addr", "add", "172.31.0.1/24", "dev", "br0"]);
        ip(&["-n", name, "link", "set", "br0", "up"]);
        ip(&["-n", name, "tuntap", "add", "dev", "tap0", "mode", "tap"]);
        ip(&["-n", name, "link", "set", "tap0", "master", "br0"]);
        ip(&["-n", name, "link", "set", "tap0", "up"]);
        ns
    }
}

/// Moves the calling thread (and so the processes it spawns) into namespace `name`.
fn enter_netns(name: &str) {
    let file = std::fs::File::open(format!("/var/run/netns/{name}")).unwrap();
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
#[ignore = "needs root (network namespaces, taps), QEMU and the guest kit"]
fn kit_guest_on_a_tap_answers_tcp_readiness() {
    let kit = kit();
    let ns = NetNs::create(&format!("bqt{}", std::process::id()));
    // A dedicated thread: the namespace switch must not leak into other tests' threads.
    let ns_name = ns.name.clone();
    let worker = std::thread::spawn(move || {
        enter_netns(&ns_name);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let uid = uid("net");
            let mut spec = kit_spec(&kit, &uid, dir.path());
            spec.tap = Some("tap0".to_owned());
            spec.mac = "02:00:ac:1f:00:02".to_owned();
            spec.cmdline
                .push_str(" ip=172.31.0.2::172.31.0.1:255.255.255.0::eth0:off");
            let driver = driver();
            let vmm = launch(&driver, &spec).await;
            let started = Instant::now();
            let addr = "172.31.0.2:22".parse().unwrap();
            let mut last = String::new();
            let mut ready = false;
            while started.elapsed() < Duration::from_secs(120) {
                match tcp_ready(addr, Duration::from_secs(2)).await {
                    Ok(()) => {
                        ready = true;
                        break;
                    }
                    Err(e) => last = e,
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            eprintln!(
                "{}: running to ssh port open {:?}",
                spec.name,
                started.elapsed()
            );
            let shutdown = driver.shutdown(&vmm, &uid, Duration::from_secs(60)).await;
            assert!(ready, "guest ssh port never answered: {last}");
            shutdown.unwrap();
            assert_eq!(driver.probe(&vmm, &uid).await, Liveness::Exited);
        });
    });
    let result = worker.join();
    drop(ns);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
