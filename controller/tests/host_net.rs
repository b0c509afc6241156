//! Bridge, tap, forwarding and NAT against the real kernel, inside a network namespace
//! each test creates (the host's own namespace is never touched).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod netns_support;

use std::net::Ipv4Addr;
use std::process::Command;

use banger_controller::host::names::{self, ObjectUid};
use banger_controller::host::net::bridge::{ensure_bridge, probe_bridge, remove_bridge};
use banger_controller::host::net::guest_filter::{FilterProbe, GuestFilter};
use banger_controller::host::net::nat::Nftables;
use banger_controller::host::net::neighbour::{forget_guest_neighbour, prime_guest_neighbour};
use banger_controller::host::net::tap::{ensure_tap, list_banger_taps, probe_tap, remove_tap};
use banger_controller::host::net::{
    enable_ipv4_forwarding, ipv4_forwarding_enabled, BridgeConfig, NetError, Netlink,
};
use netns_support::{host_links, TestNetns};

fn uid(text: &str) -> ObjectUid {
    ObjectUid::parse(text).unwrap()
}

#[test]
#[ignore = "needs root (network namespaces)"]
fn bridge_ensure_is_idempotent_and_probed() {
    let host_before = host_links(&["banger0"]);
    let ns = TestNetns::new();
    let cfg = BridgeConfig::default();
    let index = ns.run({
        let cfg = cfg.clone();
        move || async move {
            let nl = Netlink::connect().unwrap();
            let before = probe_bridge(&nl, &cfg).await.unwrap();
            assert_eq!(before.index, None);
            assert!(!before.is_healthy());

            let first = ensure_bridge(&nl, &cfg).await.unwrap();
            assert!(first.is_healthy(), "{first:?}");
            let second = ensure_bridge(&nl, &cfg).await.unwrap();
            assert_eq!(first, second, "second ensure changed something");
            second.index.unwrap()
        }
    });

    // Inspect from outside with ip(8).
    let addr = ns.ip(&["-4", "-o", "addr", "show", "dev", "banger0"]);
    assert!(addr.contains("inet 172.30.0.1/24"), "{addr}");
    assert_eq!(addr.lines().count(), 1, "address added twice: {addr}");
    let link = ns.ip(&["-d", "-o", "link", "show", "dev", "banger0"]);
    assert!(link.contains("bridge"), "{link}");
    assert!(link.contains("<") && link.contains("UP"), "{link}");
    assert!(link.starts_with(&format!("{index}:")), "{link}");

    // A missing address and a downed bridge are repaired.
    ns.ip(&["addr", "flush", "dev", "banger0"]);
    ns.ip(&["link", "set", "banger0", "down"]);
    ns.run({
        let cfg = cfg.clone();
        move || async move {
            let nl = Netlink::connect().unwrap();
            let probe = probe_bridge(&nl, &cfg).await.unwrap();
            assert!(!probe.has_address && !probe.up, "{probe:?}");
            assert!(ensure_bridge(&nl, &cfg).await.unwrap().is_healthy());
            remove_bridge(&nl, &cfg).await.unwrap();
            assert_eq!(probe_bridge(&nl, &cfg).await.unwrap().index, None);
            remove_bridge(&nl, &cfg).await.unwrap();
        }
    });
    assert_eq!(
        host_links(&["banger0"]),
        host_before,
        "host interfaces changed"
    );
}

#[test]
#[ignore = "needs root (network namespaces)"]
fn bridge_name_taken_by_another_kind_is_an_error() {
    let ns = TestNetns::new();
    ns.ip(&[
        "link",
        "add",
        "notabridge",
        "type",
        "veth",
        "peer",
        "name",
        "nb-peer",
    ]);
    let cfg = BridgeConfig::new("notabridge", "10.9.0.0/24".parse().unwrap()).unwrap();
    ns.run(move || async move {
        let nl = Netlink::connect().unwrap();
        let err = ensure_bridge(&nl, &cfg).await.unwrap_err();
        assert!(matches!(err, NetError::WrongKind { .. }), "{err}");
        assert!(err.to_string().contains("notabridge"), "{err}");
        assert!(remove_bridge(&nl, &cfg).await.is_err());
    });
    // Left as it was.
    let link = ns.ip(&["-d", "-o", "link", "show", "dev", "notabridge"]);
    assert!(link.contains("veth"), "{link}");
}

#[test]
#[ignore = "needs root (network namespaces)"]
fn tap_create_attach_probe_remove_recreate() {
    let ns = TestNetns::new();
    let cfg = BridgeConfig::new("br-test", "10.77.0.0/24".parse().unwrap()).unwrap();
    let vm = uid("0b6d8f1e-4a2c-4f7e-9d51-3c2a1b0e9f88");
    let other = uid("7f000000-0000-4000-8000-000000000001");
    let tap = names::tap_name(&vm);
    let other_tap = names::tap_name(&other);
    let watched = ["br-test", tap.as_str(), other_tap.as_str()];
    let host_before = host_links(&watched);

    ns.run({
        let (cfg, vm, other, tap) = (cfg.clone(), vm.clone(), other.clone(), tap.clone());
        move || async move {
            let nl = Netlink::connect().unwrap();
            ensure_bridge(&nl, &cfg).await.unwrap();
            let absent = probe_tap(&nl, &tap, &cfg).await.unwrap();
            assert_eq!(absent.index, None);

            let made = ensure_tap(&nl, &vm, &cfg).await.unwrap();
            assert!(made.is_healthy(), "{made:?}");
            assert_eq!(made.name, tap);
            let again = ensure_tap(&nl, &vm, &cfg).await.unwrap();
            assert_eq!(made, again);

            ensure_tap(&nl, &other, &cfg).await.unwrap();
            let listed = list_banger_taps(&nl).await.unwrap();
            let mut expected = vec![tap.clone(), names::tap_name(&other)];
            expected.sort();
            assert_eq!(listed, expected);
        }
    });

    // Persistent tun device in tap mode, master = bridge, up.
    let link = ns.ip(&["-d", "-o", "link", "show", "dev", &tap]);
    assert!(link.contains("master br-test"), "{link}");
    assert!(link.contains("tun type tap"), "{link}");
    assert!(link.contains("UP"), "{link}");

    // Detach and down: the probe sees it and ensure repairs it.
    ns.ip(&["link", "set", &tap, "nomaster"]);
    ns.ip(&["link", "set", &tap, "down"]);
    ns.run({
        let (cfg, vm, tap) = (cfg.clone(), vm.clone(), tap.clone());
        move || async move {
            let nl = Netlink::connect().unwrap();
            let probe = probe_tap(&nl, &tap, &cfg).await.unwrap();
            assert!(probe.is_tap && !probe.attached && !probe.up, "{probe:?}");
            assert!(ensure_tap(&nl, &vm, &cfg).await.unwrap().is_healthy());

            remove_tap(&nl, &tap).await.unwrap();
            assert_eq!(probe_tap(&nl, &tap, &cfg).await.unwrap().index, None);
            remove_tap(&nl, &tap).await.unwrap();
            assert_eq!(list_banger_taps(&nl).await.unwrap().len(), 1);

            let recreated = ensure_tap(&nl, &vm, &cfg).await.unwrap();
            assert!(recreated.is_healthy(), "{recreated:?}");
        }
    });
    let link = ns.ip(&["-d", "-o", "link", "show", "dev", &tap]);
    assert!(link.contains("master br-test"), "{link}");

    // remove_tap refuses a non-tap device.
    ns.ip(&[
        "link",
        "add",
        "bgt000000000000",
        "type",
        "veth",
        "peer",
        "name",
        "bgt-peer",
    ]);
    ns.run(|| async {
        let nl = Netlink::connect().unwrap();
        let err = remove_tap(&nl, "bgt000000000000").await.unwrap_err();
        assert!(matches!(err, NetError::WrongKind { .. }), "{err}");
    });
    assert_eq!(host_links(&watched), host_before, "host interfaces changed");
}

#[test]
#[ignore = "needs root (network namespaces)"]
fn tap_without_bridge_is_reported() {
    let ns = TestNetns::new();
    ns.run(|| async {
        let nl = Netlink::connect().unwrap();
        let cfg = BridgeConfig::default();
        let err = ensure_tap(&nl, &uid("abc123"), &cfg).await.unwrap_err();
        assert!(
            matches!(err, NetError::Missing { ref device } if device == "banger0"),
            "{err}"
        );
        assert!(
            list_banger_taps(&nl).await.unwrap().is_empty(),
            "tap left behind"
        );
    });
}

#[test]
#[ignore = "needs root (network namespaces)"]
fn ipv4_forwarding_is_per_namespace() {
    let host_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let ns = TestNetns::new();
    // A new namespace copies the host's IPv4 settings (forwarding is on after
    // `scripts/up.sh`): the test compares with the value it started with, then turns
    // forwarding off inside the namespace so that enabling it is really exercised.
    let started = ns_forwarding(&ns);
    ns.run(move || async move {
        assert_eq!(ipv4_forwarding_enabled().await.unwrap(), started == "1");
        std::fs::write("/proc/sys/net/ipv4/ip_forward", b"0\n").unwrap();
        assert!(!ipv4_forwarding_enabled().await.unwrap());
        enable_ipv4_forwarding().await.unwrap();
        enable_ipv4_forwarding().await.unwrap();
        assert!(ipv4_forwarding_enabled().await.unwrap());
    });
    assert_eq!(ns_forwarding(&ns), "1");
    let host_after = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    assert_eq!(host_before, host_after, "host forwarding changed");
}

/// `net.ipv4.ip_forward` inside `ns`, read from outside with `ip netns exec`.
/// A guest's neighbour entry is set before it boots (its MAC, state STALE), replaced
/// for a new MAC, dropped with the tap, and dropping twice or without a bridge is fine.
#[test]
#[ignore = "needs root (network namespaces)"]
fn guest_neighbour_prime_replace_forget() {
    let ns = TestNetns::new();
    let cfg = BridgeConfig::default();
    let guest = Ipv4Addr::new(172, 30, 0, 7);
    let mac = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x07];
    ns.run({
        let cfg = cfg.clone();
        move || async move {
            let nl = Netlink::connect().unwrap();
            // No bridge yet: priming says so, forgetting has nothing to do.
            assert!(matches!(
                prime_guest_neighbour(&nl, &cfg, guest, mac).await,
                Err(NetError::Missing { .. })
            ));
            forget_guest_neighbour(&nl, &cfg, guest).await.unwrap();
            ensure_bridge(&nl, &cfg).await.unwrap();
            prime_guest_neighbour(&nl, &cfg, guest, mac).await.unwrap();
        }
    });
    let shown = ns.ip(&["-4", "neigh", "show", "dev", "banger0", "172.30.0.7"]);
    assert!(shown.contains("lladdr 02:aa:bb:cc:dd:07"), "{shown}");
    assert!(shown.contains("STALE"), "{shown}");

    let other = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x08];
    ns.run({
        let cfg = cfg.clone();
        move || async move {
            let nl = Netlink::connect().unwrap();
            prime_guest_neighbour(&nl, &cfg, guest, other)
                .await
                .unwrap();
        }
    });
    let shown = ns.ip(&["-4", "neigh", "show", "dev", "banger0"]);
    assert!(shown.contains("lladdr 02:aa:bb:cc:dd:08"), "{shown}");
    assert_eq!(shown.lines().count(), 1, "{shown}");

    ns.run({
        let cfg = cfg.clone();
        move || async move {
            let nl = Netlink::connect().unwrap();
            forget_guest_neighbour(&nl, &cfg, guest).await.unwrap();
            forget_guest_neighbour(&nl, &cfg, guest).await.unwrap();
            remove_bridge(&nl, &cfg).await.unwrap();
        }
    });
    let left = ns.ip(&["-4", "neigh", "show"]);
    assert!(!left.contains("172.30.0.7"), "{left}");
}

fn ns_forwarding(ns: &TestNetns) -> String {
    let inside = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "cat",
            "/proc/sys/net/ipv4/ip_forward",
        ])
        .output()
        .unwrap();
    assert!(inside.status.success(), "{inside:?}");
    String::from_utf8_lossy(&inside.stdout).trim().to_owned()
}

fn nft_in(ns: &TestNetns, args: &[&str]) -> (bool, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "nft"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
#[ignore = "needs root (network namespaces, nftables)"]
fn nat_rule_ensure_probe_replace_remove() {
    let ns = TestNetns::new();
    let cfg = BridgeConfig::default();
    let a = uid("0b6d8f1e-4a2c-4f7e-9d51-3c2a1b0e9f88");
    let b = uid("7f000000-0000-4000-8000-000000000001");
    let host_before = host_nat_view(&[&a, &b]);
    let ip_a = Ipv4Addr::new(172, 30, 0, 2);
    let ip_b = Ipv4Addr::new(172, 30, 0, 3);

    ns.run({
        let (cfg, a, b) = (cfg.clone(), a.clone(), b.clone());
        move || async move {
            let nft = Nftables::default();
            assert!(!nft.read_table().await.unwrap().exists);
            assert_eq!(nft.probe_vm(&a).await.unwrap(), None);
            nft.remove_vm(&a).await.unwrap(); // nothing there: still fine

            let rule = nft.ensure_vm(&a, ip_a, &cfg).await.unwrap();
            assert_eq!(rule.uid, a);
            assert_eq!(rule.ip, Some(ip_a));
            let again = nft.ensure_vm(&a, ip_a, &cfg).await.unwrap();
            assert_eq!(rule, again, "second ensure rewrote the rule");
            assert_eq!(nft.probe_vm(&a).await.unwrap(), Some(rule.clone()));

            // Lost forward rules come back with the next ensure; the VM's rule is kept.
            let flushed = tokio::process::Command::new("nft")
                .args(["flush", "chain", "ip", "banger", "forward"])
                .status()
                .await
                .unwrap();
            assert!(flushed.success());
            assert!(nft.read_table().await.unwrap().forward_bridges.is_empty());
            let repaired = nft.ensure_vm(&a, ip_a, &cfg).await.unwrap();
            assert_eq!(repaired, rule, "the VM's rule was replaced");

            let table = nft.read_table().await.unwrap();
            assert_eq!(table.forward_bridges, vec!["banger0"; 3]);
            assert_eq!(table.input_bridges, vec!["banger0"; 3]);
            assert_eq!(table.vm_rules.len(), 1);

            nft.ensure_vm(&b, ip_b, &cfg).await.unwrap();
            // A changed address replaces the rule (one rule per VM, new handle).
            let moved = nft
                .ensure_vm(&a, Ipv4Addr::new(172, 30, 0, 9), &cfg)
                .await
                .unwrap();
            assert_ne!(moved.handle, rule.handle);
            assert_eq!(
                nft.probe_vm(&a).await.unwrap(),
                Some(moved.clone()),
                "the rule returned is the one in the table"
            );
            let rules = nft.list_vm_rules().await.unwrap();
            assert_eq!(rules.len(), 2, "{rules:?}");
            assert_eq!(rules.iter().filter(|r| r.uid == a).count(), 1);
        }
    });

    let (ok, text) = nft_in(&ns, &["list", "table", "ip", "banger"]);
    assert!(ok);
    assert!(
        text.contains(&format!(
            "ip saddr 172.30.0.9 oifname != \"banger0\" masquerade comment \"banger-vm:{a}\""
        )),
        "{text}"
    );
    assert!(text.contains("ip saddr 172.30.0.3"), "{text}");
    assert!(!text.contains("172.30.0.2 "), "{text}");

    ns.run({
        let (a, b) = (a.clone(), b.clone());
        move || async move {
            let nft = Nftables::default();
            nft.remove_vm(&a).await.unwrap();
            assert_eq!(nft.probe_vm(&a).await.unwrap(), None);
            nft.remove_vm(&a).await.unwrap();
            let left = nft.list_vm_rules().await.unwrap();
            assert_eq!(left.len(), 1);
            assert_eq!(left[0].uid, b);
            nft.remove_table().await.unwrap();
            assert!(!nft.read_table().await.unwrap().exists);
            nft.remove_table().await.unwrap();
        }
    });
    let (ok, _) = nft_in(&ns, &["list", "table", "ip", "banger"]);
    assert!(!ok, "table still there");
    assert_eq!(
        host_nat_view(&[&a, &b]),
        host_before,
        "host's nftables changed"
    );
}

#[test]
#[ignore = "needs root (network namespaces, nftables)"]
fn guest_filter_ensure_probe_rewrite_remove() {
    let ns = TestNetns::new();
    let cfg = BridgeConfig::default();
    let a = uid("0b6d8f1e-4a2c-4f7e-9d51-3c2a1b0e9f88");
    let b = uid("7f000000-0000-4000-8000-000000000001");
    let ip_a = Ipv4Addr::new(172, 30, 0, 2);
    let filter = |uid: &ObjectUid, ip, isolated| GuestFilter {
        uid: uid.clone(),
        ip,
        isolated,
    };

    ns.run({
        let (cfg, a, b) = (cfg.clone(), a.clone(), b.clone());
        move || async move {
            let nft = Nftables::default();
            assert_eq!(nft.probe_vm_filter(&a).await.unwrap(), None);
            nft.remove_vm_filter(&a).await.unwrap(); // nothing there: still fine

            // Made, and the bridge-wide rules of `table ip banger` with it.
            let isolated = nft
                .ensure_vm_filter(&filter(&a, ip_a, true), &cfg)
                .await
                .unwrap();
            assert_eq!(
                isolated,
                FilterProbe {
                    ip: ip_a,
                    isolated: true
                }
            );
            assert_eq!(nft.read_table().await.unwrap().input_bridges.len(), 3);
            let rules = nft.read_filter_rules().await.unwrap();
            assert_eq!(rules.len(), 9, "{rules:?}");
            // Idempotent: a second ensure rewrites nothing (same handles).
            nft.ensure_vm_filter(&filter(&a, ip_a, true), &cfg)
                .await
                .unwrap();
            assert_eq!(nft.read_filter_rules().await.unwrap(), rules);

            // Leaving isolation drops the forward rules; a new address rewrites the rest.
            nft.ensure_vm_filter(&filter(&b, Ipv4Addr::new(172, 30, 0, 3), true), &cfg)
                .await
                .unwrap();
            let open = nft
                .ensure_vm_filter(&filter(&a, Ipv4Addr::new(172, 30, 0, 9), false), &cfg)
                .await
                .unwrap();
            assert_eq!(
                open,
                FilterProbe {
                    ip: Ipv4Addr::new(172, 30, 0, 9),
                    isolated: false
                }
            );
            assert_eq!(nft.probe_vm_filter(&a).await.unwrap(), Some(open));
            let rules = nft.read_filter_rules().await.unwrap();
            assert_eq!(rules.iter().filter(|r| r.uid == a).count(), 7);
            assert_eq!(rules.iter().filter(|r| r.uid == b).count(), 9);

            // A rule removed by hand makes the filter incomplete: no filter, and the next
            // ensure restores it.
            let one = rules.iter().find(|r| r.uid == b).unwrap();
            let handle = one.handle.to_string();
            let out = tokio::process::Command::new("nft")
                .args([
                    "delete", "rule", "bridge", "banger", &one.chain, "handle", &handle,
                ])
                .output()
                .await
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            assert_eq!(nft.probe_vm_filter(&b).await.unwrap(), None);
            nft.ensure_vm_filter(&filter(&b, Ipv4Addr::new(172, 30, 0, 3), true), &cfg)
                .await
                .unwrap();
            assert!(nft.probe_vm_filter(&b).await.unwrap().is_some());

            nft.remove_vm_filter(&a).await.unwrap();
            assert_eq!(nft.probe_vm_filter(&a).await.unwrap(), None);
            let left = nft.read_filter_rules().await.unwrap();
            assert!(
                left.iter().all(|r| r.uid == b) && left.len() == 9,
                "{left:?}"
            );
        }
    });
    let (ok, text) = nft_in(&ns, &["list", "table", "bridge", "banger"]);
    assert!(ok);
    assert!(!text.contains(a.as_str()), "{text}");
    assert!(
        text.contains(&format!(
            "ip saddr != 172.30.0.3 drop comment \"banger-vm:{b}\""
        )),
        "{text}"
    );
}

/// What this test would change in the host's namespace if it leaked there: whether
/// banger's table exists (the test removes it at the end) and the rules of `uids`. A
/// daemon on the host (after `scripts/up.sh`) rewrites its own rules whenever its VMs
/// change, so those are left out of the comparison.
fn host_nat_view(uids: &[&ObjectUid]) -> (bool, Vec<banger_controller::host::net::nat::NatRule>) {
    // Read (never changed) from this thread, in the host's own namespace.
    let table = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(Nftables::default().read_table())
        .unwrap();
    let rules = table
        .vm_rules
        .into_iter()
        .filter(|r| uids.contains(&&r.uid))
        .collect();
    (table.exists, rules)
}

#[test]
#[ignore = "needs root (network namespaces) and QEMU"]
fn qemu_opens_the_persistent_tap() {
    let ns = TestNetns::new();
    let vm = uid("5eed0000-0000-4000-8000-00000000000a");
    let tap = names::tap_name(&vm);
    let mac = names::mac_address(&vm);
    let output = ns.run(move || async move {
        let nl = Netlink::connect().unwrap();
        let cfg = BridgeConfig::default();
        ensure_bridge(&nl, &cfg).await.unwrap();
        assert!(ensure_tap(&nl, &vm, &cfg).await.unwrap().is_healthy());
        // QEMU paused (-S), driven over QMP on stdio: it must accept the tap, answer,
        // and quit. `timeout` bounds it if anything hangs.
        let mut child = Command::new("timeout")
            .args(["20", "qemu-system-x86_64", "-M", "microvm", "-nodefaults"])
            .args(["-no-user-config", "-display", "none", "-S", "-qmp", "stdio"])
            .arg("-netdev")
            .arg(format!("tap,id=n0,ifname={tap},script=no,downscript=no"))
            .arg("-device")
            .arg(format!("virtio-net-device,netdev=n0,mac={mac}"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("qemu-system-x86_64 (and timeout) must be installed");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin
                .write_all(
                    b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"query-status\"}\n{\"execute\":\"quit\"}\n",
                )
                .unwrap();
        }
        child.wait_with_output().unwrap()
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "qemu failed: {stderr}\n{stdout}");
    assert!(
        stdout.contains("\"status\": \"prelaunch\""),
        "{stdout}\n{stderr}"
    );
}

/// One VM's network made, probed and removed through the functions the Linux
/// runtime's steps call (`ensure-tap`, `ensure-nat`, `remove-nat`, `remove-tap`,
/// `observe`), and the garbage finder.
#[test]
#[ignore = "needs root (network namespaces, nftables)"]
fn vm_network_lifecycle_and_garbage() {
    use banger_controller::host::net::vm::{
        ensure_vm_nat, ensure_vm_tap, list_net_garbage, probe_vm_network, remove_vm_nat,
        remove_vm_tap, VmNetworkProbe,
    };
    use std::collections::BTreeSet;

    /// The probe shows exactly what a VM with `nat` at `ip` needs: a healthy tap, and a
    /// rule for `ip` exactly when NAT is wanted.
    fn matches(probe: &VmNetworkProbe, ip: Ipv4Addr, nat: bool) -> bool {
        probe.tap_healthy() && probe.nat_for(ip) == nat && (nat || probe.nat_rule.is_none())
    }

    let ns = TestNetns::new();
    ns.run(|| async {
        let nl = Netlink::connect().unwrap();
        let nft = Nftables::default();
        let bridge = BridgeConfig::default();
        let a = uid("0b6d8f1e-4a2c-4f7e-9d51-3c2a1b0e9f88");
        let ip_a = Ipv4Addr::new(172, 30, 0, 2);
        let b = uid("7f000000-0000-4000-8000-000000000001");
        let ip_b = Ipv4Addr::new(172, 30, 0, 3);

        // a: tap and NAT; b: tap only.
        let tap_a = ensure_vm_tap(&nl, &bridge, &a).await.unwrap();
        assert!(tap_a.is_healthy(), "{tap_a:?}");
        let rule_a = ensure_vm_nat(&nft, &bridge, &a, ip_a, None).await.unwrap();
        assert_eq!(rule_a.ip, Some(ip_a));
        let tap_b = ensure_vm_tap(&nl, &bridge, &b).await.unwrap();
        assert!(tap_b.is_healthy(), "{tap_b:?}");
        assert!(ipv4_forwarding_enabled().await.unwrap());
        let pa = probe_vm_network(&nl, &nft, &bridge, &a).await;
        assert!(matches(&pa, ip_a, true), "{pa:?}");
        assert_eq!(pa.tap.as_ref(), Some(&tap_a));
        assert_eq!(pa.nat_rule.as_ref(), Some(&rule_a));
        let pb = probe_vm_network(&nl, &nft, &bridge, &b).await;
        assert!(matches(&pb, ip_b, false), "{pb:?}");
        // Ensuring again changes nothing.
        assert_eq!(ensure_vm_tap(&nl, &bridge, &a).await.unwrap(), tap_a);
        assert_eq!(
            ensure_vm_nat(&nft, &bridge, &a, ip_a, None).await.unwrap(),
            rule_a
        );

        // Turning NAT off removes the rule; the probe sees it.
        remove_vm_nat(&nft, &a).await.unwrap();
        let p = probe_vm_network(&nl, &nft, &bridge, &a).await;
        assert!(p.nat_rule.is_none() && matches(&p, ip_a, false));
        assert!(!matches(&p, ip_a, true));
        ensure_vm_nat(&nft, &bridge, &a, ip_a, None).await.unwrap();

        // Only `b` is known: `a`'s tap and rule are garbage.
        let known: BTreeSet<ObjectUid> = [b.clone()].into_iter().collect();
        let garbage = list_net_garbage(&nl, &nft, &known).await.unwrap();
        assert_eq!(garbage.taps, vec![names::tap_name(&a)]);
        assert_eq!(garbage.nat_rules.len(), 1);
        assert_eq!(garbage.nat_rules[0].uid, a);

        for _ in 0..2 {
            remove_vm_nat(&nft, &a).await.unwrap();
            remove_vm_tap(&nl, &a).await.unwrap();
        }
        let after = probe_vm_network(&nl, &nft, &bridge, &a).await;
        assert_eq!(after.tap, None);
        assert_eq!(after.nat_rule, None);
        assert!(
            probe_bridge(&nl, &bridge).await.unwrap().is_healthy(),
            "bridge is shared and stays"
        );
        let garbage = list_net_garbage(&nl, &nft, &known).await.unwrap();
        assert!(garbage.taps.is_empty() && garbage.nat_rules.is_empty());
        assert!(matches(
            &probe_vm_network(&nl, &nft, &bridge, &b).await,
            ip_b,
            false
        ));
    });
}

/// `ensure-nat` written from the read `observe` made (no read of its own): the rule, the
/// table's base with it when the read showed none, a replaced address; and a read gone
/// stale (its rule or a chain deleted since) fails whole and changes nothing.
#[test]
#[ignore = "needs root (network namespaces, nftables)"]
fn nat_rule_written_from_the_observed_read() {
    use banger_controller::host::net::vm::{ensure_vm_nat, probe_vm_network};

    async fn nft_cli(args: &[&str]) {
        let status = tokio::process::Command::new("nft")
            .args(args)
            .status()
            .await
            .unwrap();
        assert!(status.success(), "nft {args:?}");
    }

    let ns = TestNetns::new();
    ns.run(|| async {
        let nl = Netlink::connect().unwrap();
        let nft = Nftables::default();
        let bridge = BridgeConfig::default();
        let a = uid("0b6d8f1e-4a2c-4f7e-9d51-3c2a1b0e9f88");
        let ip = |n| Ipv4Addr::new(172, 30, 0, n);

        // Nothing yet: the read says so, and the rule goes in with the table's base.
        let read = probe_vm_network(&nl, &nft, &bridge, &a)
            .await
            .nat_read
            .unwrap();
        assert!(!read.base_ok && read.rules.is_empty(), "{read:?}");
        let rule = ensure_vm_nat(&nft, &bridge, &a, ip(2), Some(&read))
            .await
            .unwrap();
        assert_eq!(rule.ip, Some(ip(2)));
        assert_eq!(nft.probe_vm(&a).await.unwrap(), Some(rule.clone()));
        assert!(nft.read_table().await.unwrap().has_base_for(&bridge));

        // A read that shows the rule: nothing is written, the rule is returned.
        let read = probe_vm_network(&nl, &nft, &bridge, &a)
            .await
            .nat_read
            .unwrap();
        assert!(read.base_ok);
        assert_eq!(read.rules, vec![rule.clone()]);
        let same = ensure_vm_nat(&nft, &bridge, &a, ip(2), Some(&read))
            .await
            .unwrap();
        assert_eq!(same, rule);

        // Another address: the read's rule is replaced in the same transaction.
        let moved = ensure_vm_nat(&nft, &bridge, &a, ip(9), Some(&read))
            .await
            .unwrap();
        assert_ne!(moved.handle, rule.handle);
        assert_eq!(nft.list_vm_rules().await.unwrap(), vec![moved.clone()]);

        // The same read again is stale (its rule is gone): refused whole.
        ensure_vm_nat(&nft, &bridge, &a, ip(3), Some(&read))
            .await
            .unwrap_err();
        assert_eq!(nft.list_vm_rules().await.unwrap(), vec![moved.clone()]);

        // A chain deleted since the read: refused whole; a read of its own repairs it.
        let read = probe_vm_network(&nl, &nft, &bridge, &a)
            .await
            .nat_read
            .unwrap();
        nft_cli(&["flush", "chain", "ip", "banger", "postrouting"]).await;
        nft_cli(&["delete", "chain", "ip", "banger", "postrouting"]).await;
        ensure_vm_nat(&nft, &bridge, &a, ip(4), Some(&read))
            .await
            .unwrap_err();
        assert!(nft.list_vm_rules().await.unwrap().is_empty());
        let repaired = ensure_vm_nat(&nft, &bridge, &a, ip(4), None).await.unwrap();
        assert_eq!(nft.list_vm_rules().await.unwrap(), vec![repaired]);
        nft.remove_table().await.unwrap();
    });
}

/// Pings `target` once from inside namespace `ns` (busybox ping; bounded by -W).
fn ping_from(ns: &str, target: &str) -> bool {
    Command::new("ip")
        .args([
            "netns", "exec", ns, "busybox", "ping", "-c", "1", "-W", "2", target,
        ])
        .output()
        .unwrap()
        .status
        .success()
}

/// Real traffic: a "guest" namespace behind the bridge reaches an "outside" namespace
/// that has no route back to the bridge subnet only while the VM's masquerade rule is
/// in place.
#[test]
#[ignore = "needs root (network namespaces, nftables)"]
fn masquerade_rule_really_translates() {
    let host = TestNetns::new();
    let guest = TestNetns::new();
    let outside = TestNetns::new();
    let vm = uid("0b6d8f1e-4a2c-4f7e-9d51-3c2a1b0e9f88");

    host.run(|| async {
        let nl = Netlink::connect().unwrap();
        ensure_bridge(&nl, &BridgeConfig::default()).await.unwrap();
        enable_ipv4_forwarding().await.unwrap();
    });
    // The guest: a veth whose host end is a bridge port (stands in for the tap).
    host.ip(&[
        "link", "add", "gveth", "type", "veth", "peer", "name", "gport",
    ]);
    host.ip(&["link", "set", "gveth", "netns", &guest.name]);
    host.ip(&["link", "set", "gport", "master", "banger0", "up"]);
    guest.ip(&["addr", "add", "172.30.0.2/24", "dev", "gveth"]);
    guest.ip(&["link", "set", "gveth", "up"]);
    guest.ip(&["link", "set", "lo", "up"]);
    guest.ip(&["route", "add", "default", "via", "172.30.0.1"]);
    // The outside world: reachable from the host namespace, no route to 172.30.0.0/24.
    host.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "out0"]);
    host.ip(&["link", "set", "out0", "netns", &outside.name]);
    host.ip(&["addr", "add", "10.99.0.1/24", "dev", "up0"]);
    host.ip(&["link", "set", "up0", "up"]);
    outside.ip(&["addr", "add", "10.99.0.2/24", "dev", "out0"]);
    outside.ip(&["link", "set", "out0", "up"]);

    assert!(
        ping_from(&guest.name, "172.30.0.1"),
        "guest cannot reach the bridge"
    );
    assert!(
        !ping_from(&guest.name, "10.99.0.2"),
        "outside reachable without NAT: the test proves nothing"
    );

    host.run({
        let vm = vm.clone();
        move || async move {
            Nftables::default()
                .ensure_vm(&vm, Ipv4Addr::new(172, 30, 0, 2), &BridgeConfig::default())
                .await
                .unwrap();
        }
    });
    assert!(
        ping_from(&guest.name, "10.99.0.2"),
        "masquerade does not work"
    );

    host.run(move || async move {
        Nftables::default().remove_vm(&vm).await.unwrap();
    });
    assert!(
        !ping_from(&guest.name, "10.99.0.2"),
        "outside still reachable after the rule was removed"
    );
}
