//! One VM's network, composed: forwarding, bridge, tap and (optionally) its NAT rule —
//! ensured, probed and removed together, plus the garbage finder for `banger gc`.
//!
//! The engine records the VM's tap name, MAC and IP (from [`names`] and its lease)
//! *before* calling [`ensure_vm_network`], so a delete can always tear down what an
//! interrupted ensure may have made.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::bridge::{ensure_bridge, probe_bridge, BridgeProbe};
use super::nat::{NatError, NatRule, Nftables};
use super::tap::{ensure_tap, list_banger_taps, probe_tap, remove_tap, TapProbe};
use super::{enable_ipv4_forwarding, BridgeConfig, NetError, Netlink};
use crate::host::names::{self, ObjectUid};

/// Why a VM network step failed.
#[derive(Debug, thiserror::Error)]
pub enum VmNetError {
    /// A netlink, tun or sysctl step failed.
    #[error("VM {uid}: {source}")]
    Net {
        /// The VM's uid.
        uid: String,
        /// What failed.
        #[source]
        source: NetError,
    },
    /// An nftables step failed.
    #[error("VM {uid}: {source}")]
    Nat {
        /// The VM's uid.
        uid: String,
        /// What failed.
        #[source]
        source: NatError,
    },
}

/// What one VM's network should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmNetworkSpec {
    /// The VM's uid (names its tap and NAT rule).
    pub uid: ObjectUid,
    /// The VM's leased address (inside the bridge's pool).
    pub ip: Ipv4Addr,
    /// Whether the VM gets NAT masquerade (`network.nat`).
    pub nat: bool,
}

/// What a probe of one VM's network found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmNetworkProbe {
    /// The bridge.
    pub bridge: BridgeProbe,
    /// The VM's tap.
    pub tap: TapProbe,
    /// The VM's NAT rule, if any.
    pub nat_rule: Option<NatRule>,
}

impl VmNetworkProbe {
    /// Whether everything matches `spec` (a rule exists with the right address exactly
    /// when NAT is wanted).
    pub fn matches(&self, spec: &VmNetworkSpec) -> bool {
        let nat_ok = match (&self.nat_rule, spec.nat) {
            (Some(rule), true) => rule.ip == Some(spec.ip),
            (None, false) => true,
            _ => false,
        };
        self.bridge.is_healthy() && self.tap.is_healthy() && nat_ok
    }
}

/// Makes the VM's network match `spec` (idempotent): forwarding on, bridge up with the
/// gateway, tap attached and up, NAT rule present iff `spec.nat`.
pub async fn ensure_vm_network(
    nl: &Netlink,
    nft: &Nftables,
    bridge: &BridgeConfig,
    spec: &VmNetworkSpec,
) -> Result<VmNetworkProbe, VmNetError> {
    let uid = spec.uid.to_string();
    let net = |source| VmNetError::Net {
        uid: uid.clone(),
        source,
    };
    let nat = |source| VmNetError::Nat {
        uid: uid.clone(),
        source,
    };
    enable_ipv4_forwarding().map_err(net)?;
    let bridge_probe = ensure_bridge(nl, bridge).await.map_err(net)?;
    let tap = ensure_tap(nl, &spec.uid, bridge).await.map_err(net)?;
    let nat_rule = if spec.nat {
        Some(nft.ensure_vm(&spec.uid, spec.ip, bridge).map_err(nat)?)
    } else {
        nft.remove_vm(&spec.uid).map_err(nat)?;
        None
    };
    Ok(VmNetworkProbe {
        bridge: bridge_probe,
        tap,
        nat_rule,
    })
}

/// Probes the VM's network without changing anything.
pub async fn probe_vm_network(
    nl: &Netlink,
    nft: &Nftables,
    bridge: &BridgeConfig,
    uid: &ObjectUid,
) -> Result<VmNetworkProbe, VmNetError> {
    let net = |source| VmNetError::Net {
        uid: uid.to_string(),
        source,
    };
    Ok(VmNetworkProbe {
        bridge: probe_bridge(nl, bridge).await.map_err(net)?,
        tap: probe_tap(nl, &names::tap_name(uid), bridge)
            .await
            .map_err(net)?,
        nat_rule: nft.probe_vm(uid).map_err(|source| VmNetError::Nat {
            uid: uid.to_string(),
            source,
        })?,
    })
}

/// Removes the VM's NAT rule and tap (idempotent). The bridge is shared and stays.
pub async fn remove_vm_network(
    nl: &Netlink,
    nft: &Nftables,
    uid: &ObjectUid,
) -> Result<(), VmNetError> {
    nft.remove_vm(uid).map_err(|source| VmNetError::Nat {
        uid: uid.to_string(),
        source,
    })?;
    remove_tap(nl, &names::tap_name(uid))
        .await
        .map_err(|source| VmNetError::Net {
            uid: uid.to_string(),
            source,
        })
}

/// Network objects carrying banger's naming that belong to no known VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetGarbage {
    /// Taps named like banger's whose name is no known VM's.
    pub taps: Vec<String>,
    /// NAT rules whose comment names an unknown uid.
    pub nat_rules: Vec<NatRule>,
}

/// Pure: which of the listed taps and rules belong to none of `known` VMs.
pub fn find_garbage(known: &BTreeSet<ObjectUid>, taps: &[String], rules: &[NatRule]) -> NetGarbage {
    let known_taps: BTreeSet<String> = known.iter().map(names::tap_name).collect();
    NetGarbage {
        taps: taps
            .iter()
            .filter(|t| names::is_banger_tap(t) && !known_taps.contains(*t))
            .cloned()
            .collect(),
        nat_rules: rules
            .iter()
            .filter(|r| !known.contains(&r.uid))
            .cloned()
            .collect(),
    }
}

/// Lists taps and NAT rules and returns those of no known VM (nothing is removed).
pub async fn list_net_garbage(
    nl: &Netlink,
    nft: &Nftables,
    known: &BTreeSet<ObjectUid>,
) -> Result<NetGarbage, VmNetError> {
    let taps = list_banger_taps(nl)
        .await
        .map_err(|source| VmNetError::Net {
            uid: "*".to_string(),
            source,
        })?;
    let rules = nft.list_vm_rules().map_err(|source| VmNetError::Nat {
        uid: "*".to_string(),
        source,
    })?;
    Ok(find_garbage(known, &taps, &rules))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn uid(s: &str) -> ObjectUid {
        ObjectUid::parse(s).unwrap()
    }

    #[test]
    fn garbage_is_what_no_known_vm_owns() {
        let a = uid("aaaa");
        let b = uid("bbbb");
        let gone = uid("cccc");
        let known: BTreeSet<ObjectUid> = [a.clone(), b.clone()].into_iter().collect();
        let taps = vec![
            names::tap_name(&a),
            names::tap_name(&gone),
            "eth0".to_string(),
            names::tap_name(&b),
        ];
        let rules = vec![
            NatRule {
                uid: a.clone(),
                ip: Some(Ipv4Addr::new(172, 30, 0, 2)),
                handle: 4,
            },
            NatRule {
                uid: gone.clone(),
                ip: Some(Ipv4Addr::new(172, 30, 0, 3)),
                handle: 5,
            },
        ];
        let garbage = find_garbage(&known, &taps, &rules);
        assert_eq!(garbage.taps, vec![names::tap_name(&gone)]);
        assert_eq!(garbage.nat_rules.len(), 1);
        assert_eq!(garbage.nat_rules[0].uid, gone);
        assert_eq!(find_garbage(&known, &[], &[]), NetGarbage::default());
    }

    #[test]
    fn probe_matching_follows_the_nat_flag() {
        let spec = VmNetworkSpec {
            uid: uid("aaaa"),
            ip: Ipv4Addr::new(172, 30, 0, 2),
            nat: true,
        };
        let healthy_bridge = BridgeProbe {
            index: Some(2),
            is_bridge: true,
            has_address: true,
            up: true,
        };
        let healthy_tap = TapProbe {
            name: names::tap_name(&spec.uid),
            index: Some(3),
            is_tap: true,
            attached: true,
            up: true,
        };
        let rule = NatRule {
            uid: spec.uid.clone(),
            ip: Some(spec.ip),
            handle: 1,
        };
        let probe = VmNetworkProbe {
            bridge: healthy_bridge,
            tap: healthy_tap,
            nat_rule: Some(rule.clone()),
        };
        assert!(probe.matches(&spec));
        let no_nat = VmNetworkSpec {
            nat: false,
            ..spec.clone()
        };
        assert!(!probe.matches(&no_nat));
        let moved = VmNetworkSpec {
            ip: Ipv4Addr::new(172, 30, 0, 9),
            ..spec.clone()
        };
        assert!(!probe.matches(&moved));
        let without_rule = VmNetworkProbe {
            nat_rule: None,
            ..probe.clone()
        };
        assert!(without_rule.matches(&no_nat));
        assert!(!without_rule.matches(&spec));
    }
}
