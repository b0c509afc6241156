//! The Firecracker driver against an in-test model of Firecracker's API (this crate's
//! library): the launch sequence, refusals and their `fault_message`, instance states,
//! and the model's own checks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banger_controller::driver::firecracker::api::{ActionType, ApiClient, ApiError, InstanceState};
use banger_controller::driver::firecracker::boot::boot_sequence;
use banger_controller::driver::firecracker::{
    configure_and_start, detect_version, kvm_requirement, FirecrackerDriver, FirecrackerTimeouts,
    KvmUnsuitable,
};
use banger_controller::driver::{
    Confinement, DriverConfig, DriverError, Hypervisor, HypervisorKind, Hypervisors, LaunchSpec,
    Liveness, VmmProcess,
};
use banger_controller::host::kvm::KvmStatus;
use banger_controller::host::vmm_user::VmmUser;
use banger_test_firecracker::{
    read_journal_file, FcApiServer, InstanceEvent, RecordedRequest, NOT_AFTER_START,
    NOT_BEFORE_START,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{json, Value};

const INSTANCE_ID: &str = "banger-7d1e0c52-1f0a-4c57-9a51-2b8f0e6f7a10";

/// A VM directory with real (tiny) kernel, initrd and disk files.
fn vm_files(dir: &Path) -> LaunchSpec {
    for file in ["vmlinux", "initrd.img", "root.ext4", "firecracker.log"] {
        std::fs::write(dir.join(file), b"test file").unwrap();
    }
    LaunchSpec {
        uid: "7d1e0c52-1f0a-4c57-9a51-2b8f0e6f7a10".into(),
        name: "web".into(),
        vcpus: 2,
        memory_mib: 256,
        kernel: dir.join("vmlinux"),
        initrd: Some(dir.join("initrd.img")),
        cmdline: "console=ttyS0 reboot=k panic=1 pci=off root=/dev/vda rw".into(),
        root_disk: dir.join("root.ext4"),
        tap: Some("bgt7d1e0c52".into()),
        mac: "02:7d:1e:0c:52:01".into(),
        vm_dir: dir.to_path_buf(),
        console_log: dir.join("console.log"),
        // Without the jailer Firecracker runs as the daemon's user, and these tests run
        // as any user: no cgroup (cgroups are tested with the runtime, as root).
        confinement: Confinement {
            user: VmmUser {
                name: "banger-vmm".into(),
                uid: 998,
                gid: 997,
            },
            cgroup: None,
        },
    }
}

fn client(server: &FcApiServer) -> ApiClient {
    ApiClient::new(server.socket(), Duration::from_secs(5))
}

/// One raw request (any method, any body) for probing the model's checks.
async fn raw(socket: &Path, method: &str, path: &str, body: &str) -> (u16, Value) {
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let driver = tokio::spawn(connection);
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    driver.abort();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, value)
}

fn fault(answer: &(u16, Value)) -> &str {
    assert_eq!(answer.0, 400, "expected a refusal, got {answer:?}");
    answer.1["fault_message"].as_str().unwrap()
}

#[tokio::test]
async fn launch_sequence_is_accepted_in_order_with_exact_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let spec = vm_files(dir.path());
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    let server = FcApiServer::start(
        &dir.path().join("firecracker.sock"),
        INSTANCE_ID,
        Some(Arc::new(move |event| seen.lock().unwrap().push(event))),
    )
    .unwrap();
    let client = client(&server);
    assert_eq!(
        client.instance_info().await.unwrap().state,
        InstanceState::NotStarted
    );

    let calls = boot_sequence(&spec, &dir.path().join("firecracker.log")).unwrap();
    configure_and_start(&client, &calls).await.unwrap();

    let journal = server.journal();
    let sent: Vec<(&str, &str)> = journal
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        sent,
        [
            ("GET", "/"),
            ("PUT", "/logger"),
            ("PUT", "/machine-config"),
            ("PUT", "/boot-source"),
            ("PUT", "/drives/rootfs"),
            ("PUT", "/network-interfaces/eth0"),
            ("PUT", "/actions"),
        ]
    );
    assert!(
        journal.iter().skip(1).all(|r| r.status == 204),
        "{journal:#?}"
    );
    let d = dir.path().display();
    assert_eq!(
        journal[2].body,
        json!({"vcpu_count": 2, "mem_size_mib": 256})
    );
    assert_eq!(
        journal[3].body,
        json!({"kernel_image_path": format!("{d}/vmlinux"),
               "initrd_path": format!("{d}/initrd.img"),
               "boot_args": "console=ttyS0 reboot=k panic=1 pci=off root=/dev/vda rw"})
    );
    assert_eq!(
        journal[4].body,
        json!({"drive_id": "rootfs", "path_on_host": format!("{d}/root.ext4"),
               "is_root_device": true, "is_read_only": false})
    );
    assert_eq!(
        journal[5].body,
        json!({"iface_id": "eth0", "host_dev_name": "bgt7d1e0c52", "guest_mac": "02:7d:1e:0c:52:01"})
    );
    assert_eq!(journal[6].body, json!({"action_type": "InstanceStart"}));
    assert_eq!(*events.lock().unwrap(), [InstanceEvent::Started]);

    let info = client.instance_info().await.unwrap();
    assert_eq!(info.state, InstanceState::Running);
    assert_eq!(info.id, INSTANCE_ID);
    assert_eq!(info.app_name, "Firecracker");

    // Stopping: Ctrl-Alt-Del is accepted once running, and reported to the process.
    client.action(ActionType::SendCtrlAltDel).await.unwrap();
    assert_eq!(
        *events.lock().unwrap(),
        [InstanceEvent::Started, InstanceEvent::CtrlAltDel]
    );
    assert_eq!(
        server.journal().last().unwrap().body,
        json!({"action_type": "SendCtrlAltDel"})
    );
}

#[tokio::test]
async fn refused_configuration_surfaces_fault_message_and_stops_the_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = vm_files(dir.path());
    spec.kernel = dir.path().join("missing-vmlinux");
    let server =
        FcApiServer::start(&dir.path().join("firecracker.sock"), INSTANCE_ID, None).unwrap();
    let client = client(&server);
    let calls = boot_sequence(&spec, &dir.path().join("firecracker.log")).unwrap();

    let err = configure_and_start(&client, &calls).await.unwrap_err();
    let ApiError::Fault {
        status,
        fault_message,
        path,
        ..
    } = &err
    else {
        panic!("expected a fault, got {err:?}");
    };
    assert_eq!(*status, 400);
    assert_eq!(path, "/boot-source");
    assert!(
        fault_message.contains("kernel file cannot be opened"),
        "{fault_message}"
    );
    assert!(err.to_string().contains("missing-vmlinux"), "{err}");
    // Nothing after the refusal was sent, and the guest was not started.
    assert_eq!(server.journal().last().unwrap().path, "/boot-source");
    assert!(!server.model().started());

    // A value outside the definition's range is refused by the schema check.
    let server2_dir = tempfile::tempdir().unwrap();
    let mut spec = vm_files(server2_dir.path());
    spec.vcpus = 64;
    let server2 =
        FcApiServer::start(&server2_dir.path().join("fc.sock"), INSTANCE_ID, None).unwrap();
    let calls = boot_sequence(&spec, &server2_dir.path().join("firecracker.log")).unwrap();
    let err = configure_and_start(&client_for(server2.socket()), &calls)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("vcpu_count: 64 is out of range [1, 32]"),
        "{err}"
    );
}

fn client_for(socket: &Path) -> ApiClient {
    ApiClient::new(socket, Duration::from_secs(5))
}

#[tokio::test]
async fn model_checks_every_request_against_the_definition() {
    let dir = tempfile::tempdir().unwrap();
    let spec = vm_files(dir.path());
    let server =
        FcApiServer::start(&dir.path().join("firecracker.sock"), INSTANCE_ID, None).unwrap();
    let s = server.socket();
    let d = dir.path().display().to_string();

    // Unknown path or method.
    assert!(fault(&raw(s, "PUT", "/no-such-thing", "{}").await)
        .contains("Invalid request method and/or path"));
    assert!(fault(&raw(s, "DELETE", "/drives/rootfs", "").await)
        .contains("Invalid request method and/or path"));
    // Bodies: not JSON, empty, unknown field, missing field, wrong type, bad enum, range.
    assert!(fault(&raw(s, "PUT", "/machine-config", "{vcpu").await).contains("not valid JSON"));
    assert!(fault(&raw(s, "PUT", "/machine-config", "").await).contains("Empty PUT request"));
    assert!(fault(&raw(s, "GET", "/", "{}").await).contains("cannot have a body"));
    let unknown = raw(
        s,
        "PUT",
        "/machine-config",
        r#"{"vcpu_count":1,"mem_size_mib":128,"cpus":2}"#,
    )
    .await;
    assert!(fault(&unknown).contains("unknown field `cpus`"));
    let missing = raw(s, "PUT", "/machine-config", r#"{"vcpu_count":1}"#).await;
    assert!(fault(&missing).contains("missing field `mem_size_mib`"));
    let wrong_type = raw(
        s,
        "PUT",
        "/machine-config",
        r#"{"vcpu_count":"1","mem_size_mib":128}"#,
    )
    .await;
    assert!(fault(&wrong_type).contains("vcpu_count: expected an integer"));
    let fraction = raw(
        s,
        "PUT",
        "/machine-config",
        r#"{"vcpu_count":1.5,"mem_size_mib":128}"#,
    )
    .await;
    assert!(fault(&fraction).contains("expected an integer"));
    let bad_enum = raw(s, "PUT", "/actions", r#"{"action_type":"Reboot"}"#).await;
    assert!(fault(&bad_enum).contains("unknown variant `Reboot`"));
    let nested = raw(
        s,
        "PUT",
        "/drives/data",
        &format!(r#"{{"drive_id":"data","is_root_device":false,"is_read_only":true,"path_on_host":"{d}/root.ext4","rate_limiter":{{"ops":{{"size":1}}}}}}"#),
    )
    .await;
    assert!(fault(&nested).contains("missing field `refill_time` in TokenBucket"));
    // Logger level is case-insensitive in the definition.
    let logger = raw(
        s,
        "PUT",
        "/logger",
        &format!(r#"{{"log_path":"{d}/firecracker.log","level":"debug"}}"#),
    )
    .await;
    assert_eq!(logger.0, 204);
    // Path id must match the body id.
    let mismatch = raw(
        s,
        "PUT",
        "/drives/rootfs",
        &format!(r#"{{"drive_id":"other","is_root_device":true,"is_read_only":false,"path_on_host":"{d}/root.ext4"}}"#),
    )
    .await;
    assert!(fault(&mismatch).contains("does not match"));
    let bad_id = raw(
        s,
        "PUT",
        "/drives/root-fs",
        r#"{"drive_id":"root-fs","is_root_device":true}"#,
    )
    .await;
    assert!(fault(&bad_id).contains("alphanumeric characters and underscores"));
    // virtio-block drives need their path and read-only flag.
    let no_path = raw(
        s,
        "PUT",
        "/drives/rootfs",
        r#"{"drive_id":"rootfs","is_root_device":true}"#,
    )
    .await;
    assert!(fault(&no_path).contains("`path_on_host` is required"));
    // A bad MAC and an over-long tap name.
    let bad_mac = raw(
        s,
        "PUT",
        "/network-interfaces/eth0",
        r#"{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"02:00"}"#,
    )
    .await;
    assert!(fault(&bad_mac).contains("Invalid MAC address"));
    let long_tap = raw(
        s,
        "PUT",
        "/network-interfaces/eth0",
        r#"{"iface_id":"eth0","host_dev_name":"a-very-long-tap-name"}"#,
    )
    .await;
    assert!(fault(&long_tap).contains("invalid tap name"));
    // Post-boot-only and start-dependent operations before the start.
    assert_eq!(
        fault(&raw(s, "PATCH", "/vm", r#"{"state":"Paused"}"#).await),
        NOT_BEFORE_START
    );
    assert_eq!(
        fault(&raw(s, "PUT", "/actions", r#"{"action_type":"SendCtrlAltDel"}"#).await),
        NOT_BEFORE_START
    );
    // InstanceStart without the full configuration (banger's contract).
    let early = raw(s, "PUT", "/actions", r#"{"action_type":"InstanceStart"}"#).await;
    assert!(
        fault(&early).contains("missing boot source, machine configuration, root drive"),
        "{early:?}"
    );

    // Now configure properly and start.
    let calls = boot_sequence(&spec, &dir.path().join("firecracker.log")).unwrap();
    configure_and_start(&client(&server), &calls).await.unwrap();
    // A second root drive is refused even under another id — before the start; after
    // the start every pre-boot-only request is refused.
    for (method, path, body) in [
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count":4,"mem_size_mib":512}"#.to_owned(),
        ),
        (
            "PUT",
            "/boot-source",
            format!(r#"{{"kernel_image_path":"{d}/vmlinux"}}"#),
        ),
        (
            "PUT",
            "/logger",
            format!(r#"{{"log_path":"{d}/firecracker.log"}}"#),
        ),
        (
            "PUT",
            "/drives/rootfs",
            format!(
                r#"{{"drive_id":"rootfs","is_root_device":true,"is_read_only":true,"path_on_host":"{d}/root.ext4"}}"#
            ),
        ),
        (
            "PUT",
            "/network-interfaces/eth1",
            r#"{"iface_id":"eth1","host_dev_name":"tap1"}"#.to_owned(),
        ),
        (
            "PUT",
            "/actions",
            r#"{"action_type":"InstanceStart"}"#.to_owned(),
        ),
    ] {
        assert_eq!(
            fault(&raw(s, method, path, &body).await),
            NOT_AFTER_START,
            "{method} {path}"
        );
    }
    // Post-boot operations work now: pause and resume are visible in GET /.
    assert_eq!(raw(s, "PATCH", "/vm", r#"{"state":"Paused"}"#).await.0, 204);
    assert_eq!(raw(s, "GET", "/", "").await.1["state"], "Paused");
    assert_eq!(
        raw(s, "PATCH", "/vm", r#"{"state":"Resumed"}"#).await.0,
        204
    );
    assert_eq!(raw(s, "GET", "/", "").await.1["state"], "Running");
    assert_eq!(
        raw(s, "PATCH", "/drives/rootfs", r#"{"drive_id":"rootfs"}"#)
            .await
            .0,
        204
    );
    // Every request, refused or not, was recorded.
    assert!(server.journal().iter().filter(|r| r.status == 400).count() >= 20);
}

#[tokio::test]
async fn second_root_drive_is_refused_before_start() {
    let dir = tempfile::tempdir().unwrap();
    vm_files(dir.path());
    let server =
        FcApiServer::start(&dir.path().join("firecracker.sock"), INSTANCE_ID, None).unwrap();
    let d = dir.path().display();
    let drive = |id: &str| {
        format!(
            r#"{{"drive_id":"{id}","is_root_device":true,"is_read_only":false,"path_on_host":"{d}/root.ext4"}}"#
        )
    };
    assert_eq!(
        raw(server.socket(), "PUT", "/drives/rootfs", &drive("rootfs"))
            .await
            .0,
        204
    );
    // Re-putting the same drive is an update, not a second root.
    assert_eq!(
        raw(server.socket(), "PUT", "/drives/rootfs", &drive("rootfs"))
            .await
            .0,
        204
    );
    let second = raw(server.socket(), "PUT", "/drives/other", &drive("other")).await;
    assert_eq!(fault(&second), "A root block device already exists!");
}

// ---------------------------------------------------------------------------------
// The whole driver, with a real process: the test stand-in for the firecracker binary
// (`src/stand_in.rs`) serves the same model on the driver's `--api-sock`.
// ---------------------------------------------------------------------------------

const STAND_IN: &str = env!("CARGO_BIN_EXE_banger-test-firecracker-stand-in");

fn stand_in_driver() -> FirecrackerDriver {
    FirecrackerDriver::new(STAND_IN).with_timeouts(FirecrackerTimeouts {
        api_socket: Duration::from_secs(20),
        request: Duration::from_secs(5),
        term_grace: Duration::from_secs(5),
        kill_grace: Duration::from_secs(10),
    })
}

/// A VM directory for the stand-in with the given behaviour (see `src/stand_in.rs`).
fn stand_in_vm(dir: &Path, uid: &str, behaviour: Value) -> LaunchSpec {
    let mut spec = vm_files(dir);
    spec.uid = uid.to_owned();
    std::fs::write(dir.join("fc-stand-in.json"), behaviour.to_string()).unwrap();
    std::fs::remove_file(dir.join("firecracker.log")).unwrap();
    spec
}

fn stand_in_journal(dir: &Path) -> Vec<RecordedRequest> {
    read_journal_file(&dir.join("fc-stand-in.journal"))
}

fn console(spec: &LaunchSpec) -> String {
    std::fs::read_to_string(&spec.console_log).unwrap_or_default()
}

/// A uid unique to this test run (detached stand-ins of an earlier, aborted run must
/// not be mistaken for this run's).
fn unique_uid(test: u32) -> String {
    format!(
        "0b6f3c1e-{test:04x}-4f35-{:04x}-{:012x}",
        std::process::id() & 0xffff,
        nanos()
    )
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        & 0xffff_ffff_ffff
}

/// Kills (SIGKILL) every stand-in carrying the VM's marker when the test ends, so a
/// failing test leaves no detached process behind.
struct KillOnDrop(String);

impl KillOnDrop {
    fn new(uid: &str) -> Self {
        Self(format!("banger-{uid}"))
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in processes_with_marker(&self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Live (non-zombie) processes whose command line carries `marker`.
fn processes_with_marker(marker: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|&b| b == 0).any(|arg| arg == marker.as_bytes()))
        })
        .collect()
}

/// Waits (bounded) until the console log contains `needle`.
async fn console_shows(spec: &LaunchSpec, needle: &str) -> bool {
    for _ in 0..200 {
        if console(spec).contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

#[tokio::test]
async fn launch_probe_and_graceful_shutdown_of_a_real_process() {
    let dir = tempfile::tempdir().unwrap();
    let uid = &unique_uid(1);
    let _cleanup = KillOnDrop::new(uid);
    let spec = stand_in_vm(dir.path(), uid, json!({"on_ctrl_alt_del": "reset"}));
    let driver = stand_in_driver();

    let process = driver.launch(&spec).await.unwrap();
    assert_eq!(process.hypervisor_kind(), Some(HypervisorKind::Firecracker));
    assert_eq!(process.control_socket, dir.path().join("firecracker.sock"));
    // The recorded identity is the live process, in its own session, carrying the marker.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", process.pid)).unwrap();
    let after_comm: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    assert_eq!(after_comm[19].parse::<u64>().unwrap(), process.start_time);
    assert_eq!(
        after_comm[3].parse::<i32>().unwrap(),
        process.pid,
        "own session"
    );
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", process.pid)).unwrap();
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let socket = dir.path().join("firecracker.sock").display().to_string();
    let marker = format!("banger-{uid}");
    assert_eq!(
        args[1..],
        [
            String::from("--api-sock"),
            socket,
            "--id".into(),
            marker.clone()
        ]
    );

    // The stand-in saw exactly the boot sequence, each accepted.
    let expected = boot_sequence(&spec, &dir.path().join("firecracker.log")).unwrap();
    let journal = stand_in_journal(dir.path());
    assert_eq!(journal.len(), expected.len(), "{journal:#?}");
    for (seen, call) in journal.iter().zip(&expected) {
        assert_eq!(
            (seen.method.as_str(), seen.path.as_str(), &seen.body),
            ("PUT", call.path.as_str(), &call.body)
        );
        assert_eq!(seen.status, 204, "{seen:?}");
    }
    // Firecracker's log file exists (the logger call needs it) and stdout is the console.
    assert!(dir.path().join("firecracker.log").is_file());
    assert!(
        console_shows(&spec, "instance started").await,
        "{}",
        console(&spec)
    );

    assert_eq!(driver.probe(&process, uid).await, Liveness::Running);
    // Another VM's uid, or a different start time, is not this process.
    assert_eq!(
        driver.probe(&process, &unique_uid(99)).await,
        Liveness::Exited
    );
    let reused = VmmProcess {
        start_time: process.start_time + 1,
        ..process.clone()
    };
    assert_eq!(driver.probe(&reused, uid).await, Liveness::Exited);
    // Shutting down a pid that is not ours anymore touches nothing.
    driver
        .shutdown(&reused, uid, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(driver.probe(&process, uid).await, Liveness::Running);

    driver
        .shutdown(&process, uid, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(driver.probe(&process, uid).await, Liveness::Exited);
    assert!(processes_with_marker(&marker).is_empty());
    assert_eq!(
        stand_in_journal(dir.path()).last().unwrap().body,
        json!({"action_type": "SendCtrlAltDel"})
    );
    let text = console(&spec);
    assert!(text.contains("reboot: Restarting system"), "{text}");
    assert!(
        !text.contains("SIGTERM"),
        "the graceful path needs no signal: {text}"
    );
    assert!(
        !dir.path().join("firecracker.sock").exists(),
        "socket removed"
    );
    // Already gone: still a success.
    driver
        .shutdown(&process, uid, Duration::from_secs(1))
        .await
        .unwrap();
}

#[tokio::test]
async fn guest_power_off_under_a_live_vmm_is_guest_halted_and_a_relaunch_starts_clean() {
    let dir = tempfile::tempdir().unwrap();
    let uid = &unique_uid(2);
    let _cleanup = KillOnDrop::new(uid);
    let spec = stand_in_vm(dir.path(), uid, json!({"on_ctrl_alt_del": "power-off"}));
    let driver = stand_in_driver();
    let process = driver.launch(&spec).await.unwrap();
    assert_eq!(driver.probe(&process, uid).await, Liveness::Running);

    // The guest powers off; the VMM stays alive and keeps answering "Running".
    let client = ApiClient::new(&process.control_socket, Duration::from_secs(5));
    client.action(ActionType::SendCtrlAltDel).await.unwrap();
    assert!(console_shows(&spec, "reboot: Power down").await);
    assert_eq!(
        client.instance_info().await.unwrap().state,
        InstanceState::Running
    );
    assert_eq!(driver.probe(&process, uid).await, Liveness::GuestHalted);

    // Shutdown does not wait out a long grace for a halted guest: it goes on to SIGTERM.
    driver
        .shutdown(&process, uid, Duration::from_secs(600))
        .await
        .unwrap();
    assert!(console(&spec).contains("SIGTERM received"));
    assert_eq!(driver.probe(&process, uid).await, Liveness::Exited);

    // The console log keeps the old power-down line; the next launch is judged only on
    // its own output.
    let again = driver.launch(&spec).await.unwrap();
    assert_ne!(again.pid, process.pid);
    assert_eq!(driver.probe(&again, uid).await, Liveness::Running);
    driver
        .shutdown(&again, uid, Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(driver.probe(&again, uid).await, Liveness::Exited);
}

#[tokio::test]
async fn ignored_ctrl_alt_del_escalates_to_sigterm_then_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let uid = &unique_uid(3);
    let _cleanup = KillOnDrop::new(uid);
    let spec = stand_in_vm(
        dir.path(),
        uid,
        json!({"on_ctrl_alt_del": "ignore", "ignore_sigterm": true}),
    );
    let driver = FirecrackerDriver::new(STAND_IN).with_timeouts(FirecrackerTimeouts {
        api_socket: Duration::from_secs(20),
        request: Duration::from_secs(5),
        term_grace: Duration::from_millis(300),
        kill_grace: Duration::from_secs(10),
    });
    let process = driver.launch(&spec).await.unwrap();
    driver
        .shutdown(&process, uid, Duration::from_millis(300))
        .await
        .unwrap();
    let text = console(&spec);
    assert!(text.contains("Ctrl-Alt-Del ignored"), "{text}");
    assert!(
        text.contains("SIGTERM received"),
        "SIGTERM was sent and survived: {text}"
    );
    // Only SIGKILL can have ended it.
    assert_eq!(driver.probe(&process, uid).await, Liveness::Exited);
    assert!(processes_with_marker(&format!("banger-{uid}")).is_empty());
}

#[tokio::test]
async fn paused_or_unreachable_instances_are_unresponsive() {
    let dir = tempfile::tempdir().unwrap();
    let uid = &unique_uid(4);
    let _cleanup = KillOnDrop::new(uid);
    let spec = stand_in_vm(dir.path(), uid, json!({}));
    let driver = stand_in_driver();
    let process = driver.launch(&spec).await.unwrap();

    let socket = process.control_socket.clone();
    assert_eq!(
        raw(&socket, "PATCH", "/vm", r#"{"state":"Paused"}"#)
            .await
            .0,
        204
    );
    let Liveness::Unresponsive { reason } = driver.probe(&process, uid).await else {
        panic!("a paused guest is not Running");
    };
    assert!(reason.contains("Paused"), "{reason}");
    assert_eq!(
        raw(&socket, "PATCH", "/vm", r#"{"state":"Resumed"}"#)
            .await
            .0,
        204
    );
    assert_eq!(driver.probe(&process, uid).await, Liveness::Running);

    // The process lives but its socket is gone: unresponsive, and shutdown falls back to
    // signals.
    std::fs::remove_file(&socket).unwrap();
    let Liveness::Unresponsive { reason } = driver.probe(&process, uid).await else {
        panic!("no socket cannot be Running");
    };
    assert!(reason.contains("connect to API socket"), "{reason}");
    driver
        .shutdown(&process, uid, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(driver.probe(&process, uid).await, Liveness::Exited);
    assert!(console(&spec).contains("SIGTERM received"));
}

#[tokio::test]
async fn refused_configuration_fails_the_launch_and_leaves_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let uid = &unique_uid(5);
    let _cleanup = KillOnDrop::new(uid);
    let mut spec = stand_in_vm(dir.path(), uid, json!({}));
    spec.root_disk = dir.path().join("no-such-root.ext4");
    let err = stand_in_driver().launch(&spec).await.unwrap_err();
    let DriverError::Operation {
        vm,
        operation,
        reason,
    } = &err
    else {
        panic!("expected an operation error, got {err:?}");
    };
    assert_eq!((vm.as_str(), operation.as_str()), ("web", "configure"));
    assert!(reason.contains("PUT /drives/rootfs"), "{reason}");
    assert!(reason.contains("400"), "{reason}");
    assert!(
        reason.contains("Unable to create the block device"),
        "fault_message surfaces: {reason}"
    );
    assert!(
        processes_with_marker(&format!("banger-{uid}")).is_empty(),
        "the half-configured VMM was killed"
    );
    // Nothing after the refusal reached the API.
    assert_eq!(
        stand_in_journal(dir.path()).last().unwrap().path,
        "/drives/rootfs"
    );
}

#[tokio::test]
async fn missing_or_broken_binaries_fail_the_launch() {
    let dir = tempfile::tempdir().unwrap();
    let uid = &unique_uid(6);
    let _cleanup = KillOnDrop::new(uid);
    let spec = stand_in_vm(dir.path(), uid, json!({}));

    let err = FirecrackerDriver::new("banger-no-such-firecracker")
        .launch(&spec)
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::Binary { .. }), "{err:?}");
    assert!(
        err.to_string().contains("banger-no-such-firecracker"),
        "{err}"
    );

    // A binary that exits at once (here `false`) never opens the socket.
    let err = FirecrackerDriver::new("false")
        .launch(&spec)
        .await
        .unwrap_err();
    let DriverError::Operation {
        operation, reason, ..
    } = &err
    else {
        panic!("expected an operation error, got {err:?}");
    };
    assert_eq!(operation, "spawn");
    assert!(reason.contains("exited"), "{reason}");

    // A file that is not a socket where the socket goes is never deleted.
    std::fs::write(dir.path().join("firecracker.sock"), b"not a socket").unwrap();
    let err = stand_in_driver().launch(&spec).await.unwrap_err();
    assert!(err.to_string().contains("is not a socket"), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("firecracker.sock")).unwrap(),
        b"not a socket"
    );
    assert!(processes_with_marker(&format!("banger-{uid}")).is_empty());
}

#[tokio::test]
async fn a_stale_socket_is_replaced_but_a_live_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let uid = &unique_uid(7);
    let _cleanup = KillOnDrop::new(uid);
    let spec = stand_in_vm(dir.path(), uid, json!({}));
    drop(std::os::unix::net::UnixListener::bind(dir.path().join("firecracker.sock")).unwrap());
    let driver = stand_in_driver();
    let process = driver.launch(&spec).await.unwrap();
    assert_eq!(driver.probe(&process, uid).await, Liveness::Running);
    // A socket a live Firecracker still serves is never replaced.
    let err = driver.launch(&spec).await.unwrap_err();
    assert!(
        err.to_string().contains("served by a live process"),
        "{err}"
    );
    assert_eq!(driver.probe(&process, uid).await, Liveness::Running);
    assert_eq!(
        processes_with_marker(&format!("banger-{uid}")),
        [process.pid]
    );
    driver
        .shutdown(&process, uid, Duration::from_secs(20))
        .await
        .unwrap();
}

#[test]
fn detection_reads_the_version_of_the_binary() {
    assert_eq!(
        detect_version(Path::new(STAND_IN), Duration::from_secs(10)).unwrap(),
        "1.9.0"
    );
    assert!(FirecrackerDriver::new(STAND_IN).check_binary().is_ok());
    assert!(FirecrackerDriver::new("banger-no-such-firecracker")
        .check_binary()
        .is_err());
    // `hypervisor: auto` and doctor: a working binary is not enough without KVM for
    // stock guests (a kvm_pvm host such as banger's CI). What the daemon probes at
    // start:
    let suitability = |kvm: &KvmStatus| {
        let config = DriverConfig {
            firecracker_bin: Some(STAND_IN.into()),
            ..DriverConfig::default()
        };
        Hypervisors::probe(&config, kvm).suitability(HypervisorKind::Firecracker)
    };
    assert_eq!(suitability(&KvmStatus::Usable).unwrap(), "1.9.0");
    let pvm = suitability(&KvmStatus::ParavirtOnly).unwrap_err();
    assert_eq!(
        kvm_requirement(&KvmStatus::ParavirtOnly),
        Err(KvmUnsuitable(KvmStatus::ParavirtOnly))
    );
    assert!(pvm.contains("kvm_pvm"), "{pvm}");
    let missing = suitability(&KvmStatus::Missing).unwrap_err();
    assert!(missing.contains("/dev/kvm does not exist"), "{missing}");
}

// ---------------------------------------------------------------------------------
// Through the jailer: the test stand-in for the jailer (`src/jailer_stand_in.rs`) runs
// the stand-in Firecracker in its jail, as the VMM user, in the VM's cgroup.
// ---------------------------------------------------------------------------------

const JAILER_STAND_IN: &str = env!("CARGO_BIN_EXE_banger-test-jailer-stand-in");

/// The uid/gid fields of `/proc/PID/status` (real, effective, saved, filesystem).
fn ids_of(pid: i32, field: &str) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.split_whitespace().map(|n| n.parse().unwrap()).collect())
        .unwrap_or_default()
}

#[tokio::test]
#[ignore = "needs root (the jailer's chroot and mount namespace, cgroups, the VMM user)"]
async fn a_jailed_firecracker_runs_as_the_vmm_user_in_its_jail_and_cgroup() {
    use banger_controller::driver::firecracker::jail::{Jail, Jailer};
    use banger_controller::host::cgroup::{daemon_parent, CgroupLayout};
    use banger_controller::host::names::ObjectUid;
    use banger_controller::host::vmm_user;
    use std::os::unix::fs::MetadataExt;

    let state = tempfile::tempdir().unwrap();
    // Short: the jailed API socket's path must fit a Unix socket address.
    let uid = format!(
        "f1{:06x}{:04x}",
        std::process::id() & 0xff_ffff,
        nanos() & 0xffff
    );
    let vm_dir = state.path().join("vms").join(&uid);
    std::fs::create_dir_all(&vm_dir).unwrap();
    let user = vmm_user::ensure(vmm_user::DEFAULT_VMM_USER).unwrap();
    let layout = CgroupLayout::detect().unwrap();
    let cgroup = layout.vm_cgroup(
        &daemon_parent(state.path()),
        &ObjectUid::parse(&uid).unwrap(),
    );
    let mut spec = vm_files(&vm_dir);
    spec.uid = uid.clone();
    spec.confinement = Confinement {
        user: user.clone(),
        cgroup: Some(cgroup.clone()),
    };
    // Stops whatever runs in the VM's cgroup and removes it, however the test ends.
    struct Cleanup(banger_controller::host::cgroup::VmCgroup);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for _ in 0..100 {
                let pids = self.0.pids().unwrap_or_default();
                for pid in &pids {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(*pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                if self.0.remove().is_ok() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let _cleanup = Cleanup(cgroup.clone());
    let jailer = Jailer {
        binary: JAILER_STAND_IN.into(),
        chroot_base: state.path().join("jail"),
    };
    let driver = stand_in_driver().with_jailer(jailer.clone());
    let jail = Jail::new(
        &jailer.chroot_base,
        Path::new(STAND_IN),
        &format!("banger-{uid}"),
    )
    .unwrap();

    let process = driver.launch(&spec).await.unwrap();
    assert_eq!(process.control_socket, jail.api_socket());
    assert_eq!(
        driver.vm_files(&vm_dir, &uid).control_socket,
        jail.api_socket()
    );
    assert_eq!(driver.probe(&process, &uid).await, Liveness::Running);

    // The VMM user, no other group, in the VM's cgroup.
    assert_eq!(ids_of(process.pid, "Uid:"), vec![user.uid; 4]);
    assert_eq!(ids_of(process.pid, "Gid:"), vec![user.gid; 4]);
    assert_eq!(ids_of(process.pid, "Groups:"), Vec::<u32>::new());
    assert!(cgroup.pids().unwrap().contains(&process.pid));
    // Confined to its jail: what it wrote at `/` is in the jail's root on the host, and
    // it was configured with the jail's paths.
    let journal = read_journal_file(&jail.root.join("fc-stand-in.journal"));
    let boot_source = journal
        .iter()
        .find(|r| r.path == "/boot-source")
        .expect("boot source configured");
    assert_eq!(boot_source.body["kernel_image_path"], "/vmlinux");
    let drive = journal
        .iter()
        .find(|r| r.path == "/drives/rootfs")
        .expect("root drive configured");
    assert_eq!(drive.body["path_on_host"], "/rootfs.ext4");
    // Its root disk is the VM's own file (a hard link), given to the VMM user; the
    // kernel the test made (world-readable) is linked, not copied.
    let disk = std::fs::metadata(jail.root.join("rootfs.ext4")).unwrap();
    let original = std::fs::metadata(&spec.root_disk).unwrap();
    assert_eq!(disk.ino(), original.ino());
    assert_eq!(
        (disk.uid(), disk.gid(), disk.mode() & 0o777),
        (user.uid, user.gid, 0o600)
    );
    assert_eq!(
        std::fs::metadata(jail.root.join("vmlinux")).unwrap().ino(),
        std::fs::metadata(&spec.kernel).unwrap().ino()
    );

    // Shutdown: the process goes, the jail goes, the disk is root's again.
    driver
        .shutdown(&process, &uid, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(driver.probe(&process, &uid).await, Liveness::Exited);
    assert!(!jail.instance_dir.exists(), "the jail was left behind");
    let after = std::fs::metadata(&spec.root_disk).unwrap();
    assert_eq!((after.uid(), after.gid(), after.nlink()), (0, 0, 1));
}
