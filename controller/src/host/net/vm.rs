//! One VM's network objects, as the Linux runtime's steps make, probe and remove them
//! ([`crate::runtime::linux`]: `ensure-tap` (the tap and its guest filter),
//! `ensure-nat`, `remove-nat`, `remove-tap` and `observe`), plus the garbage finder for
//! `banger gc`.
//!
//! A VM's tap, guest filter and NAT rule are named from its uid ([`names`]), so every function here
//! takes the uid, never a recorded name: a delete can always tear down what an
//! interrupted ensure may have made. The bridge is shared by every VM and is never
//! removed here.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::bridge::ensure_bridge;
use super::guest_filter::{FilterProbe, FilterRule, GuestFilter};
use super::nat::{NatError, NatRule, Nftables, VmNatRead};
use super::tap::{ensure_tap, list_banger_taps, probe_tap, remove_tap, TapProbe};
use super::{enable_ipv4_forwarding, BridgeConfig, NetError, Netlink};
use crate::host::names::{self, ObjectUid};

/// Why a VM network step failed.
#[derive(Debug, thiserror::Error)]
pub enum VmNetError {
    /// A netlink, tun or sysctl step failed.
    #[error("VM {uid}: {source}")]
    Net {
        /// The VM's uid (`*` for a listing of every VM's objects).
        uid: String,
        /// What failed.
        #[source]
        source: NetError,
    },
    /// An nftables step failed.
    #[error("VM {uid}: {source}")]
    Nat {
        /// The VM's uid (`*` for a listing of every VM's objects).
        uid: String,
        /// What failed.
        #[source]
        source: NatError,
    },
}

/// What a probe of one VM's network objects could confirm. A probe that fails (no
/// netlink answer, `nft` missing) reports the object as absent: observing never fails.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmNetworkProbe {
    /// The VM's tap, when a device of its name exists.
    pub tap: Option<TapProbe>,
    /// The VM's NAT rule, if any.
    pub nat_rule: Option<NatRule>,
    /// What the read of the NAT table said of the VM's rules (`None` when it failed):
    /// what `ensure-nat` can write from without reading again
    /// ([`Nftables::ensure_vm_as_read`]).
    pub nat_read: Option<VmNatRead>,
    /// What the VM's guest filter enforces, when it is complete.
    pub filter: Option<FilterProbe>,
}

impl VmNetworkProbe {
    /// Whether the VM's NAT rule exists and masquerades `ip` (a rule left from another
    /// address does not count): what `observe` reports as the VM's NAT.
    pub fn nat_for(&self, ip: Ipv4Addr) -> bool {
        self.nat_rule
            .as_ref()
            .is_some_and(|rule| rule.ip == Some(ip))
    }

    /// Whether the tap exists, is a tap, is attached to the bridge and is up.
    pub fn tap_healthy(&self) -> bool {
        self.tap.as_ref().is_some_and(TapProbe::is_healthy)
    }
}

/// `ensure-tap`: IPv4 forwarding on, the bridge up with the gateway, the VM's tap
/// attached to it and up (idempotent). Returns the tap's probe.
pub async fn ensure_vm_tap(
    nl: &Netlink,
    bridge: &BridgeConfig,
    uid: &ObjectUid,
) -> Result<TapProbe, VmNetError> {
    let net = |source| VmNetError::Net {
        uid: uid.to_string(),
        source,
    };
    enable_ipv4_forwarding().await.map_err(net)?;
    ensure_bridge(nl, bridge).await.map_err(net)?;
    ensure_tap(nl, uid, bridge).await.map_err(net)
}

/// `ensure-tap`, its other half (run alongside the tap): the VM's guest filter as `filter`
/// wants it (idempotent).
pub async fn ensure_vm_filter(
    nft: &Nftables,
    bridge: &BridgeConfig,
    filter: &GuestFilter,
) -> Result<FilterProbe, VmNetError> {
    nft.ensure_vm_filter(filter, bridge)
        .await
        .map_err(|source| VmNetError::Nat {
            uid: filter.uid.to_string(),
            source,
        })
}

/// `remove-tap`, first half: deletes the VM's guest filter (idempotent).
pub async fn remove_vm_filter(nft: &Nftables, uid: &ObjectUid) -> Result<(), VmNetError> {
    nft.remove_vm_filter(uid)
        .await
        .map_err(|source| VmNetError::Nat {
            uid: uid.to_string(),
            source,
        })
}

/// `remove-tap`: deletes the VM's tap (idempotent).
pub async fn remove_vm_tap(nl: &Netlink, uid: &ObjectUid) -> Result<(), VmNetError> {
    remove_tap(nl, &names::tap_name(uid))
        .await
        .map_err(|source| VmNetError::Net {
            uid: uid.to_string(),
            source,
        })
}

/// `ensure-nat`: the VM's masquerade rule for source `ip` (idempotent; a rule of the
/// VM with another address is replaced). Returns the rule. With `read`, a read of the
/// table made under the VM's lock, the table is not read again.
pub async fn ensure_vm_nat(
    nft: &Nftables,
    bridge: &BridgeConfig,
    uid: &ObjectUid,
    ip: Ipv4Addr,
    read: Option<&VmNatRead>,
) -> Result<NatRule, VmNetError> {
    let ensured = match read {
        Some(read) => nft.ensure_vm_as_read(uid, ip, bridge, read).await,
        None => nft.ensure_vm(uid, ip, bridge).await,
    };
    ensured.map_err(|source| VmNetError::Nat {
        uid: uid.to_string(),
        source,
    })
}

/// `remove-nat`: deletes every masquerade rule of the VM (idempotent).
pub async fn remove_vm_nat(nft: &Nftables, uid: &ObjectUid) -> Result<(), VmNetError> {
    nft.remove_vm(uid).await.map_err(|source| VmNetError::Nat {
        uid: uid.to_string(),
        source,
    })
}

/// Probes the VM's tap, NAT rule and guest filter without changing anything: the
/// three at once (two of them are an `nft` process each).
pub async fn probe_vm_network(
    nl: &Netlink,
    nft: &Nftables,
    bridge: &BridgeConfig,
    uid: &ObjectUid,
) -> VmNetworkProbe {
    let tap_name = names::tap_name(uid);
    let (tap, nat_table, filter) = tokio::join!(
        probe_tap(nl, &tap_name, bridge),
        nft.read_table(),
        nft.probe_vm_filter(uid)
    );
    let tap = match tap {
        Ok(probe) => probe.index.is_some().then_some(probe),
        Err(e) => {
            tracing::debug!(%uid, error = %e, "cannot probe the VM's tap");
            None
        }
    };
    let nat_read = match nat_table {
        Ok(table) => Some(table.vm_read(uid, bridge)),
        Err(e) => {
            tracing::debug!(%uid, error = %e, "cannot probe the VM's NAT rule");
            None
        }
    };
    let nat_rule = nat_read.as_ref().and_then(|r| r.rules.first().cloned());
    let filter = match filter {
        Ok(filter) => filter,
        Err(e) => {
            tracing::debug!(%uid, error = %e, "cannot probe the VM's guest filter");
            None
        }
    };
    VmNetworkProbe {
        tap,
        nat_rule,
        nat_read,
        filter,
    }
}

/// Network objects carrying banger's naming that belong to no known VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetGarbage {
    /// Taps named like banger's whose name is no known VM's.
    pub taps: Vec<String>,
    /// NAT rules whose comment names an unknown uid.
    pub nat_rules: Vec<NatRule>,
    /// Unknown uids with guest filter rules, and how many rules each has.
    pub filters: Vec<(ObjectUid, usize)>,
}

/// Pure: which of the listed taps and rules belong to none of `known` VMs.
pub fn find_garbage(
    known: &BTreeSet<ObjectUid>,
    taps: &[String],
    rules: &[NatRule],
    filter_rules: &[FilterRule],
) -> NetGarbage {
    let known_taps: BTreeSet<String> = known.iter().map(names::tap_name).collect();
    let mut filters: std::collections::BTreeMap<ObjectUid, usize> = Default::default();
    for rule in filter_rules.iter().filter(|r| !known.contains(&r.uid)) {
        *filters.entry(rule.uid.clone()).or_default() += 1;
    }
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
        filters: filters.into_iter().collect(),
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
    let nat = |source| VmNetError::Nat {
        uid: "*".to_string(),
        source,
    };
    let rules = nft.list_vm_rules().await.map_err(nat)?;
    let filter_rules = nft.read_filter_rules().await.map_err(nat)?;
    Ok(find_garbage(known, &taps, &rules, &filter_rules))
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
        let filter_rule = |uid: &ObjectUid, handle| FilterRule {
            uid: uid.clone(),
            chain: "prerouting".into(),
            handle,
            interface: Some(names::tap_name(uid)),
            allowed_ip: None,
            allowed_mac: None,
        };
        let filter_rules = vec![
            filter_rule(&a, 1),
            filter_rule(&gone, 2),
            filter_rule(&gone, 3),
        ];
        let garbage = find_garbage(&known, &taps, &rules, &filter_rules);
        assert_eq!(garbage.taps, vec![names::tap_name(&gone)]);
        assert_eq!(garbage.nat_rules.len(), 1);
        assert_eq!(garbage.nat_rules[0].uid, gone);
        assert_eq!(garbage.filters, vec![(gone.clone(), 2)]);
        assert_eq!(find_garbage(&known, &[], &[], &[]), NetGarbage::default());
    }

    #[test]
    fn nat_counts_only_for_the_leased_address() {
        let vm = uid("aaaa");
        let ip = Ipv4Addr::new(172, 30, 0, 2);
        let tap = TapProbe {
            name: names::tap_name(&vm),
            index: Some(3),
            is_tap: true,
            attached: true,
            up: true,
        };
        let probe = VmNetworkProbe {
            tap: Some(tap.clone()),
            nat_rule: Some(NatRule {
                uid: vm.clone(),
                ip: Some(ip),
                handle: 1,
            }),
            nat_read: None,
            filter: None,
        };
        assert!(probe.nat_for(ip) && probe.tap_healthy());
        assert!(
            !probe.nat_for(Ipv4Addr::new(172, 30, 0, 9)),
            "moved address"
        );
        let without_rule = VmNetworkProbe {
            nat_rule: None,
            ..probe.clone()
        };
        assert!(!without_rule.nat_for(ip));
        let detached = VmNetworkProbe {
            tap: Some(TapProbe {
                attached: false,
                ..tap
            }),
            ..probe
        };
        assert!(!detached.tap_healthy());
        assert!(!VmNetworkProbe::default().tap_healthy());
    }
}
