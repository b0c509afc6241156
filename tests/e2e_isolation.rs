//! End-to-end: what a guest can reach, with real QEMU guests on a real bridge in a
//! network namespace the test creates, next to a second namespace playing the world
//! outside (joined by a veth pair, reached through banger's NAT).
//!
//! Two VMs `a` and `b`, isolated (the default): `a` cannot reach `b` (no ping, no TCP to
//! its SSH port), a packet `a` sends from an address it was not leased is dropped on the
//! bridge (it never reaches the host), `a` reaches none of the host's own addresses
//! (the gateway's and the uplink's TCP ports) and not `169.254.169.254`, while it still
//! pings its gateway and reaches the outside through NAT. Then both say
//! `isolated: false`: a live change (same VMMs), after which `a` reaches `b`. Deleting
//! them leaves no rule behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use banger_tests::{guest_ssh, run_ok, wait_for, Daemon, Kit, NetNs};
use serde_json::Value;

const READY_TIMEOUT: &str = "180s";
/// The outside host, beyond the daemon namespace's uplink.
const OUTSIDE: &str = "10.99.0.2";
/// The daemon namespace's own uplink address (a host address guests must not reach).
const UPLINK: &str = "10.99.0.1";
/// An address no VM is leased: what `a` tries to spoof.
const SPOOFED: &str = "172.30.0.200";
/// The port the outside host serves (HTTP) and the one the host itself serves.
const OUTSIDE_PORT: &str = "7777";
const HOST_PORT: &str = "7778";

fn image_yaml(kit: &Kit) -> String {
    format!(
        "apiVersion: banger.dev/v1alpha1\nkind: Image\nmetadata:\n  name: kit\nspec:\n  kernel: {}\n  initrd: {}\n  rootfs: {}\n",
        kit.kernel.display(),
        kit.initrd.display(),
        kit.rootfs.display()
    )
}

fn vm_yaml(name: &str, isolated: bool) -> String {
    format!(
        "apiVersion: banger.dev/v1alpha1\nkind: VM\nmetadata:\n  name: {name}\nspec:\n  image: kit\n  memory: 256MiB\n  disk: 256MiB\n  hypervisor: qemu\n  network: {{nat: true, isolated: {isolated}}}\n"
    )
}

fn wait_ready(d: &Daemon, name: &str) -> Value {
    d.cli_ok(&[
        "wait",
        &format!("vm/{name}"),
        "--for=condition=Ready",
        "--timeout",
        READY_TIMEOUT,
    ]);
    d.get_json("vm", name).expect("vm exists")
}

/// Runs `remote` in the guest at `ip`; its stdout. Retries only failures of ssh itself
/// (exit 255: the guest may take a moment after Ready to accept logins); the command's
/// own failure is an answer.
fn in_guest(ns: &NetNs, kit: &Kit, ip: &str, remote: &str) -> String {
    let mut last = String::new();
    let out = wait_for(Duration::from_secs(30), Duration::from_millis(500), || {
        let out = guest_ssh(ns, kit, ip, remote);
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code() != Some(255)).then_some(out)
    })
    .unwrap_or_else(|| panic!("ssh root@{ip} {remote:?} kept failing: {last}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A shell line that prints `REACHED` when `probe` succeeds, `BLOCKED` when it fails.
fn verdict(probe: &str) -> String {
    format!("if {probe} >/dev/null 2>&1; then echo REACHED; else echo BLOCKED; fi")
}

/// A `busybox httpd` serving a directory, stopped (and reaped) when dropped.
struct HttpServer(Child);

impl HttpServer {
    /// Serves `dir` on `addr` in `ns`.
    fn start(ns: &NetNs, addr: &str, dir: &Path) -> HttpServer {
        let child = ns
            .command("busybox")
            .args(["httpd", "-f", "-p", addr, "-h"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("busybox httpd");
        HttpServer(child)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The packets the observation chain counted for the rule of source `source`.
fn counted(ns: &NetNs, source: &str) -> u64 {
    let out = run_ok(
        ns.command("nft")
            .args(["list", "chain", "ip", "observe", "pre"]),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let needle = format!("ip saddr {source} ");
    let line = text
        .lines()
        .find(|l| l.contains(&needle))
        .unwrap_or_else(|| panic!("no rule for {source}:\n{text}"));
    line.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no packet count in {line:?}"))
}

#[test]
#[ignore = "needs root (network namespaces, taps, nftables, cgroups), QEMU and the guest kit"]
fn guests_are_isolated_from_each_other_and_the_host_and_nat_still_works() {
    let kit = Kit::require();
    let ns = NetNs::new("iso");
    let outside = NetNs::new("out");
    let tmp = tempfile::tempdir().expect("tempdir");

    // The world outside: a veth pair to a second namespace that serves HTTP on its own
    // address and on the metadata address.
    run_ok(Command::new("ip").args([
        "link",
        "add",
        "vo0",
        "netns",
        &ns.name,
        "type",
        "veth",
        "peer",
        "name",
        "vo1",
        "netns",
        &outside.name,
    ]));
    run_ok(
        ns.command("ip")
            .args(["addr", "add", &format!("{UPLINK}/24"), "dev", "vo0"]),
    );
    run_ok(ns.command("ip").args(["link", "set", "vo0", "up"]));
    run_ok(
        ns.command("ip")
            .args(["route", "add", "169.254.169.254/32", "via", OUTSIDE]),
    );
    run_ok(
        outside
            .command("ip")
            .args(["addr", "add", &format!("{OUTSIDE}/24"), "dev", "vo1"]),
    );
    run_ok(
        outside
            .command("ip")
            .args(["addr", "add", "169.254.169.254/32", "dev", "lo"]),
    );
    run_ok(outside.command("ip").args(["link", "set", "vo1", "up"]));
    let www = tmp.path().join("www");
    fs::create_dir_all(&www).unwrap();
    fs::write(www.join("hello"), "outside-ok\n").unwrap();
    let _outside_http = HttpServer::start(&outside, &format!("0.0.0.0:{OUTSIDE_PORT}"), &www);
    // The host serves something on all its addresses too: guests must not reach it.
    let _host_http = HttpServer::start(&ns, &format!("0.0.0.0:{HOST_PORT}"), &www);

    // Both servers answer the host itself: a guest that cannot reach them is filtered.
    let http_get = |ns: &NetNs, host: &str, port: &str| {
        let out = run_ok(ns.command("sh").args([
            "-c",
            "printf 'GET /hello HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 4 \"$0\" \"$1\"",
            host,
            port,
        ]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for (host, port) in [("169.254.169.254", OUTSIDE_PORT), (UPLINK, HOST_PORT)] {
        let served = wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
            http_get(&ns, host, port)
                .contains("outside-ok")
                .then_some(())
        });
        assert!(served.is_some(), "{host}:{port} does not answer the host");
    }

    let d = Daemon::start(&ns, tmp.path(), &["--resync", "5s"]);
    let specs = tmp.path().join("apply");
    fs::create_dir_all(&specs).unwrap();
    fs::write(specs.join("image.yaml"), image_yaml(&kit)).unwrap();
    fs::write(specs.join("a.yaml"), vm_yaml("a", true)).unwrap();
    fs::write(specs.join("b.yaml"), vm_yaml("b", true)).unwrap();
    let specs_arg = specs.to_str().unwrap();
    d.cli_ok(&["apply", "-f", specs_arg]);
    let a = wait_ready(&d, "a");
    let b = wait_ready(&d, "b");
    let ip = |vm: &Value| vm["status"]["ip"].as_str().expect("status.ip").to_owned();
    let pid = |vm: &Value| vm["status"]["pid"].as_i64().expect("status.pid");
    let (ip_a, ip_b) = (ip(&a), ip(&b));
    let (pid_a, pid_b) = (pid(&a), pid(&b));
    let uids: Vec<String> = [&a, &b]
        .iter()
        .map(|v| v["metadata"]["uid"].as_str().unwrap().to_owned())
        .collect();

    // The host reaches each guest (this very ssh), and each guest its gateway.
    let ping_gateway = verdict("ping -c 1 -W 3 172.30.0.1");
    assert_eq!(in_guest(&ns, &kit, &ip_a, &ping_gateway).trim(), "REACHED");

    // NAT still works, and the outside host is reached, but not the metadata address
    // (the same server, behind another address).
    // busybox nc speaking HTTP/1.0 (the guest's static busybox wget crashes resolving).
    let fetch = |host: &str, port: &str| {
        format!(
            "printf 'GET /hello HTTP/1.0\\r\\n\\r\\n' | nc -w 4 {host} {port} | grep outside-ok"
        )
    };
    assert_eq!(
        in_guest(&ns, &kit, &ip_a, &fetch(OUTSIDE, OUTSIDE_PORT)).trim(),
        "outside-ok"
    );
    let metadata = verdict(&fetch("169.254.169.254", OUTSIDE_PORT));
    assert_eq!(in_guest(&ns, &kit, &ip_a, &metadata).trim(), "BLOCKED");

    // None of the host's own addresses serve a guest.
    for host in ["172.30.0.1", UPLINK] {
        let probe = verdict(&fetch(host, HOST_PORT));
        assert_eq!(
            in_guest(&ns, &kit, &ip_a, &probe).trim(),
            "BLOCKED",
            "guest reached the host at {host}"
        );
    }

    // a cannot reach b: no ping, no TCP to its SSH server.
    let ping_b = verdict(&format!("ping -c 1 -W 3 {ip_b}"));
    assert_eq!(in_guest(&ns, &kit, &ip_a, &ping_b).trim(), "BLOCKED");
    let ssh_banner_of_b = format!("echo | nc -w 3 {ip_b} 22");
    assert!(!in_guest(&ns, &kit, &ip_a, &ssh_banner_of_b).contains("SSH-"));

    // A spoofed source never reaches the host: count what the host's IP layer sees.
    run_ok(ns.command("nft").args(["add", "table", "ip", "observe"]));
    run_ok(ns.command("nft").args([
        "add",
        "chain",
        "ip",
        "observe",
        "pre",
        "{ type filter hook prerouting priority -400; policy accept; }",
    ]));
    for source in [SPOOFED, ip_a.as_str()] {
        run_ok(ns.command("nft").args([
            "add",
            "rule",
            "ip",
            "observe",
            "pre",
            "ip",
            "saddr",
            source,
            "icmp",
            "type",
            "echo-request",
            "counter",
        ]));
    }
    let spoof = format!(
        "ip addr add {SPOOFED}/24 dev eth0; ping -c 2 -W 2 -I {SPOOFED} 172.30.0.1; ping -c 2 -W 2 172.30.0.1; ip addr del {SPOOFED}/24 dev eth0"
    );
    in_guest(&ns, &kit, &ip_a, &spoof);
    assert_eq!(
        counted(&ns, SPOOFED),
        0,
        "a spoofed packet reached the host"
    );
    assert!(
        counted(&ns, &ip_a) >= 2,
        "the guest's own pings were not counted: the observation is broken"
    );

    // Both leave isolation: a live change (the same VMMs), after which a reaches b.
    fs::write(specs.join("a.yaml"), vm_yaml("a", false)).unwrap();
    fs::write(specs.join("b.yaml"), vm_yaml("b", false)).unwrap();
    let diff = d.cli(&["diff", "-f", specs_arg]);
    let diff_text = String::from_utf8_lossy(&diff.stdout).into_owned();
    assert!(
        diff_text.contains("network.isolated true -> false") && diff_text.contains("live"),
        "{diff_text}"
    );
    assert!(!diff_text.contains("restart"), "{diff_text}");
    d.cli_ok(&["apply", "-f", specs_arg]);
    let reached = wait_for(Duration::from_secs(90), Duration::from_secs(1), || {
        in_guest(&ns, &kit, &ip_a, &ssh_banner_of_b)
            .contains("SSH-")
            .then_some(())
    });
    assert!(
        reached.is_some(),
        "a never reached b after both left isolation"
    );
    assert_eq!(in_guest(&ns, &kit, &ip_a, &ping_b).trim(), "REACHED");
    // Still no host address, still no metadata.
    assert_eq!(in_guest(&ns, &kit, &ip_a, &metadata).trim(), "BLOCKED");
    let now_a = d.get_json("vm", "a").unwrap();
    let now_b = d.get_json("vm", "b").unwrap();
    assert_eq!(
        (pid(&now_a), pid(&now_b)),
        (pid_a, pid_b),
        "the change restarted a VMM"
    );

    // Deleting the VMs leaves no guest filter rule behind.
    d.cli_ok(&["delete", "vm", "a", "b", "--wait", "--timeout", "120s"]);
    let out = run_ok(ns.command("nft").args(["list", "ruleset"]));
    let ruleset = String::from_utf8_lossy(&out.stdout).into_owned();
    for uid in &uids {
        assert!(
            !ruleset.contains(uid.as_str()),
            "rules of {uid} left:\n{ruleset}"
        );
    }
}
