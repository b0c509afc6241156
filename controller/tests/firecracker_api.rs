//! The Firecracker driver against an in-test model of Firecracker's API
//! (`support/fc_api_server.rs`): the launch sequence, refusals and their
//! `fault_message`, instance states, and the model's own checks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support {
    pub mod fc_api_server;
}

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banger_controller::driver::firecracker::api::{ActionType, ApiClient, ApiError, InstanceState};
use banger_controller::driver::firecracker::boot::boot_sequence;
use banger_controller::driver::firecracker::configure_and_start;
use banger_controller::driver::LaunchSpec;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{json, Value};
use support::fc_api_server::{FcApiServer, InstanceEvent, NOT_AFTER_START, NOT_BEFORE_START};

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
