//! Getting into VMs, against a real `banger daemon --simulate` whose VM addresses come
//! from 127.0.77.0/24: a TCP listener on a VM's address plays the guest port, so
//! `connect` and `port-forward` carry real bytes through the daemon without a guest.
//! Refusals (unknown VM, not running, guest not ready) and `ssh-config` as ssh reads it.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::io::{BufRead, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use banger_controller::api::types::ObjectView;
use support::{image_and_vm, Daemon, BANGER};

const WAIT: &str = "60s";
/// Bound on any socket read or write below.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

fn start() -> Daemon {
    Daemon::start_with(&["--bridge-cidr", "127.0.77.0/24"])
}

fn vm(daemon: &Daemon, name: &str) -> ObjectView {
    let run = daemon
        .banger(&["get", "vm", name, "-o", "json"])
        .expect_code(0);
    serde_json::from_str(&run.stdout).expect("vm json")
}

fn running_vm(daemon: &Daemon) -> Ipv4Addr {
    daemon.write_work("dev.yaml", &image_and_vm("dev", "512MiB"));
    daemon
        .banger(&["apply", "-f", "dev.yaml", "--wait", "--timeout", WAIT])
        .expect_code(0);
    let ip: Ipv4Addr = vm(daemon, "dev").status.ip.expect("ip").parse().unwrap();
    assert!(ip.is_loopback(), "{ip}");
    ip
}

/// A one-connection server on `ip`: reads until end of stream, answers `pong:` and
/// what it read, closes.
fn echo_once(ip: Ipv4Addr) -> (u16, std::thread::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        conn.write_all(b"pong:").unwrap();
        conn.write_all(&got).unwrap();
        got
    });
    (port, server)
}

#[test]
fn connect_streams_stdin_and_stdout_through_the_daemon() {
    let daemon = start();
    let ip = running_vm(&daemon);
    let (port, server) = echo_once(ip);
    let port_arg = port.to_string();
    // NAME.banger is accepted, as ssh's %h passes it.
    let run = daemon.banger_stdin(&["connect", "dev.banger", &port_arg], "ping\n");
    let run = run.expect_code(0);
    assert_eq!(run.stdout, "pong:ping\n");
    assert_eq!(server.join().unwrap(), b"ping\n");

    // Refusals come as one line, before any byte flows.
    let run = daemon.banger(&["connect", "nope", "22"]).expect_code(1);
    assert_eq!(run.stderr, "Error from daemon: vm/nope not found\n");
    let closed = TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let run = daemon
        .banger(&["connect", "dev", &closed.to_string()])
        .expect_code(1);
    assert!(
        run.stderr.starts_with(&format!(
            "Error from daemon: vm/dev: connect to {ip}:{closed}: "
        )),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    daemon.banger(&["connect", "dev", "0"]).expect_code(2);
}

#[test]
fn port_forward_carries_each_connection_until_interrupted() {
    let daemon = start();
    let ip = running_vm(&daemon);
    let (port, server) = echo_once(ip);
    let mut forward = Command::new(BANGER)
        .args(["port-forward", "dev", &format!(":{port}")])
        .env("BANGER_SOCKET", &daemon.socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(forward.stdout.take().unwrap()).lines();
    let line = lines.next().expect("a line").unwrap();
    let local = line
        .strip_prefix("Forwarding from ")
        .and_then(|l| l.strip_suffix(&format!(" -> dev:{port}")))
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    let local: std::net::SocketAddr = local.parse().unwrap();
    assert_eq!(local.ip(), Ipv4Addr::LOCALHOST);

    let mut conn = TcpStream::connect(local).unwrap();
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    conn.write_all(b"hello").unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).unwrap();
    assert_eq!(answer, b"pong:hello");
    assert_eq!(server.join().unwrap(), b"hello");

    // SIGINT ends it with status 0.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(forward.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = forward.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status}");
}

#[test]
fn commands_that_log_in_refuse_vms_that_are_not_ready() {
    let daemon = start();
    daemon.write_work("file.txt", "x");
    for args in [
        vec!["exec", "nope", "--", "true"],
        vec!["ssh", "nope"],
        vec!["cp", "file.txt", "nope:/root/"],
        vec!["port-forward", "nope", "80"],
    ] {
        let run = daemon.banger(&args).expect_code(1);
        assert_eq!(run.stderr, "error: vm \"nope\" not found\n", "{args:?}");
    }
    daemon.write_work(
        "stopped.yaml",
        &format!("{}  state: Stopped\n", image_and_vm("dev", "512MiB")),
    );
    daemon
        .banger(&["apply", "-f", "stopped.yaml", "--wait", "--timeout", WAIT])
        .expect_code(0);
    for args in [
        vec!["exec", "dev", "--", "true"],
        vec!["ssh", "dev", "--", "true"],
        vec!["cp", "dev:/etc/hostname", "."],
    ] {
        let run = daemon.banger(&args).expect_code(1);
        assert!(
            run.stderr
                .starts_with("error: vm dev is not ready: it is not running (phase Stopped)"),
            "{args:?}: {}",
            run.stderr
        );
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    }
    let run = daemon.banger(&["connect", "dev", "22"]).expect_code(1);
    assert_eq!(
        run.stderr,
        "Error from daemon: vm/dev is not running (phase Stopped)\n"
    );
    // Argument mistakes are usage errors (status 2).
    for args in [
        vec!["cp", "a", "b"],
        vec!["cp", "dev:/a", "dev:/b"],
        vec!["cp", "file.txt", "dev:"],
        vec!["exec", "dev"],
        vec!["port-forward", "dev", "80:0"],
    ] {
        daemon.banger(&args).expect_code(2);
    }
}

#[test]
fn ssh_config_names_every_vm_with_its_uid() {
    let daemon = start();
    running_vm(&daemon);
    let uid = vm(&daemon, "dev").metadata.uid;
    let run = daemon.banger(&["ssh-config"]).expect_code(0);
    let file = daemon.write_work("ssh_config", &run.stdout);
    let out = Command::new("ssh")
        .arg("-G")
        .arg("-F")
        .arg(&file)
        .arg("dev.banger")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let config = String::from_utf8(out.stdout).unwrap();
    let socket = std::path::absolute(&daemon.socket).unwrap();
    for line in [
        format!("hostkeyalias banger-{uid}"),
        "stricthostkeychecking accept-new".to_string(),
        "user root".to_string(),
        format!(
            "proxycommand {BANGER} --socket {} connect %h 22",
            socket.display()
        ),
    ] {
        assert!(
            config.lines().any(|l| l == line),
            "{line:?} not in:\n{config}"
        );
    }
}
