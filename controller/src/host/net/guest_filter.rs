//! The guest filter: what each guest may put on banger's bridge, in an nftables table of
//! family `bridge` that banger owns (`table bridge banger`), one set of rules per VM.
//!
//! Rules of VM `uid` (tap `T` and MAC `M` derived from the uid, leased address `I`), all
//! commented `banger-vm:<uid>`:
//!
//! - chain `prerouting` (every frame that enters the bridge from the tap):
//!   a source MAC other than `M` is dropped; anything but IPv4 and ARP is dropped (no
//!   IPv6, no other protocol: nothing reaches another guest or the host that way);
//!   IPv4 from a source other than `I` is dropped, and ARP claiming a MAC other than
//!   `M` or an address other than `I`: a guest cannot spoof another.
//! - chain `forward` (frames the bridge passes from one port to another), only while the
//!   VM is isolated (`network.isolated: true`, the default): every frame from `T` and
//!   every frame to `T` is dropped, so the guest reaches no other guest and none reaches
//!   it, not even by ARP. Two VMs that both say `isolated: false` have no such rules and
//!   talk to each other; a VM that says `false` still cannot reach one that says `true`.
//!   (Every VM belongs to the daemon's one user today, so "VMs of one user" are all of
//!   them.)
//! - chain `input` (frames from `T` for the host itself): IPv4 to another address of the
//!   bridge's network than the gateway is dropped (the host would route it back onto
//!   the bridge to another guest), and so is IPv4 to `169.254.169.254`.
//!
//! What a guest may send to the host's own addresses, and the metadata address when
//! routed, is decided once for the whole bridge in `table ip banger` ([`super::nat`]:
//! replies to connections the host opened and ICMP echo to the gateway, nothing else).
//!
//! Ensuring a VM's rules reads the table, and when the VM's rules are not exactly the
//! wanted ones, deletes them by handle and adds the wanted ones in one `nft -f -`
//! transaction (no moment without a filter), run with `--echo --handle`: the kernel's
//! echo of what it committed must show every wanted rule ([`echoed_filter_rules`]).
//! Removal deletes them by handle. The rules are found again by their comment, so
//! garbage collection finds those of unknown uids.
//! Every value in the ruleset text is typed and validated (the uid, the names derived
//! from it, addresses), as in [`super::nat`].

use std::net::Ipv4Addr;

use serde_json::Value;

use super::nat::{NatError, Nftables};
use super::BridgeConfig;
use crate::host::names::{self, ObjectUid};

/// Family of the guest filter's table.
const FAMILY: &str = "bridge";
/// Its chains, in the order frames meet them.
const PREROUTING: &str = "prerouting";
const FORWARD: &str = "forward";
const INPUT: &str = "input";
/// Rules of one VM in each chain.
const PREROUTING_RULES: usize = 5;
const FORWARD_RULES_ISOLATED: usize = 2;
const INPUT_RULES: usize = 2;

/// What one VM's filter enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFilter {
    /// The VM's uid (its tap, MAC and the rules' comment come from it).
    pub uid: ObjectUid,
    /// The guest's leased address: the only source it may use.
    pub ip: Ipv4Addr,
    /// Whether other guests are kept away (`network.isolated`).
    pub isolated: bool,
}

/// One rule of a VM's filter, as found in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterRule {
    /// The VM's uid (from the rule's comment).
    pub uid: ObjectUid,
    /// Its chain.
    pub chain: String,
    /// Its handle (for deletion).
    pub handle: u64,
    /// The interface it matches (`iifname`/`oifname`), if any.
    pub interface: Option<String>,
    /// The address an `ip saddr !=` or `arp saddr ip !=` match allows, if any.
    pub allowed_ip: Option<Ipv4Addr>,
    /// The MAC an `ether saddr !=` or `arp saddr ether !=` match allows, if any.
    pub allowed_mac: Option<String>,
}

/// What a VM's rules, read back, enforce: the address it may use and whether it is
/// isolated. Only a complete, consistent set of rules makes one (see [`read_filter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterProbe {
    /// The only source address the guest may use.
    pub ip: Ipv4Addr,
    /// Whether the VM is kept away from other guests.
    pub isolated: bool,
}

/// The ruleset making the table and its chains (idempotent: `add` of an existing table
/// or chain changes nothing).
fn table_and_chains() -> String {
    let t = names::NFT_TABLE;
    let mut text = format!("add table {FAMILY} {t}\n");
    for (chain, hook) in [
        (PREROUTING, "prerouting"),
        (FORWARD, "forward"),
        (INPUT, "input"),
    ] {
        text.push_str(&format!(
            "add chain {FAMILY} {t} {chain} {{ type filter hook {hook} priority -200; policy accept; }}\n"
        ));
    }
    text
}

/// The ruleset replacing VM `filter.uid`'s rules (the `stale` ones, `(chain, handle)`)
/// with the wanted ones, in one transaction, making the table and its chains first
/// unless `have_chains` (adding an existing table or chain changes nothing but costs
/// the kernel's commit ~10 ms here: a write without them is ~3x cheaper). Pure.
pub fn vm_ruleset(
    filter: &GuestFilter,
    bridge: &BridgeConfig,
    stale: &[(String, u64)],
    have_chains: bool,
) -> String {
    let t = names::NFT_TABLE;
    let tap = names::tap_name(&filter.uid);
    let mac = names::mac_address(&filter.uid);
    let ip = filter.ip;
    let comment = names::nat_rule_comment(&filter.uid);
    let cidr = bridge.cidr();
    let (network, prefix, gateway) = (cidr.network(), cidr.prefix(), cidr.gateway());
    let metadata = names::METADATA_ADDRESS;
    let mut text = if have_chains {
        String::new()
    } else {
        table_and_chains()
    };
    for (chain, handle) in stale {
        text.push_str(&format!(
            "delete rule {FAMILY} {t} {chain} handle {handle}\n"
        ));
    }
    let mut rule = |chain: &str, body: String| {
        text.push_str(&format!(
            "add rule {FAMILY} {t} {chain} {body} drop comment \"{comment}\"\n"
        ));
    };
    rule(
        PREROUTING,
        format!("iifname \"{tap}\" ether saddr != {mac}"),
    );
    rule(
        PREROUTING,
        format!("iifname \"{tap}\" ether type != {{ ip, arp }}"),
    );
    rule(
        PREROUTING,
        format!("iifname \"{tap}\" ether type ip ip saddr != {ip}"),
    );
    rule(
        PREROUTING,
        format!("iifname \"{tap}\" ether type arp arp saddr ether != {mac}"),
    );
    rule(
        PREROUTING,
        format!("iifname \"{tap}\" ether type arp arp saddr ip != {ip}"),
    );
    if filter.isolated {
        rule(FORWARD, format!("iifname \"{tap}\""));
        rule(FORWARD, format!("oifname \"{tap}\""));
    }
    rule(
        INPUT,
        format!("iifname \"{tap}\" ip daddr {network}/{prefix} ip daddr != {gateway}"),
    );
    rule(INPUT, format!("iifname \"{tap}\" ip daddr {metadata}"));
    text
}

/// The guest filter's table as read: its chains and the rules of VMs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterTable {
    /// The names of its chains.
    pub chains: Vec<String>,
    /// The rules of VMs ([`parse_rules`]).
    pub rules: Vec<FilterRule>,
}

impl FilterTable {
    /// Whether the table has the three chains VM rules go in.
    pub fn has_chains(&self) -> bool {
        [PREROUTING, FORWARD, INPUT]
            .iter()
            .all(|c| self.chains.iter().any(|have| have == c))
    }
}

/// Parses `nft -j list table bridge banger` output into the rules of VMs (rules without
/// a `banger-vm:` comment are not banger's and are skipped). Pure.
pub fn parse_rules(json: &str) -> Result<Vec<FilterRule>, NatError> {
    Ok(parse_filter_table(json)?.rules)
}

/// Parses `nft -j list table bridge banger` output: the chains and [`parse_rules`]. Pure.
pub fn parse_filter_table(json: &str) -> Result<FilterTable, NatError> {
    let parse_err = |reason: &str| NatError::Parse {
        table: names::NFT_TABLE,
        reason: format!("{FAMILY} table: {reason}"),
    };
    let value: Value = serde_json::from_str(json).map_err(|e| parse_err(&e.to_string()))?;
    let items = value
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| parse_err("no top-level `nftables` array"))?;
    let mut rules = Vec::new();
    let chains = items
        .iter()
        .filter_map(|item| item.get("chain"))
        .filter(|c| {
            c.get("family").and_then(Value::as_str) == Some(FAMILY)
                && c.get("table").and_then(Value::as_str) == Some(names::NFT_TABLE)
        })
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect();
    for rule in items.iter().filter_map(|item| item.get("rule")) {
        if rule.get("family").and_then(Value::as_str) != Some(FAMILY)
            || rule.get("table").and_then(Value::as_str) != Some(names::NFT_TABLE)
        {
            continue;
        }
        let comment = rule
            .get("comment")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(uid) = names::uid_from_nat_comment(comment) else {
            continue;
        };
        let handle = rule
            .get("handle")
            .and_then(Value::as_u64)
            .ok_or_else(|| parse_err("a rule has no numeric handle"))?;
        let chain = rule
            .get("chain")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let mut found = FilterRule {
            uid,
            chain,
            handle,
            interface: None,
            allowed_ip: None,
            allowed_mac: None,
        };
        let matches = rule
            .get("expr")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("match"));
        for m in matches {
            let (op, right) = (m.get("op").and_then(Value::as_str), m.get("right"));
            let text = right.and_then(Value::as_str);
            if let Some(key) = m
                .get("left")
                .and_then(|l| l.get("meta"))
                .and_then(|k| k.get("key"))
            {
                if matches!(key.as_str(), Some("iifname" | "oifname")) && op == Some("==") {
                    found.interface = text.map(str::to_owned);
                }
                continue;
            }
            let Some(payload) = m.get("left").and_then(|l| l.get("payload")) else {
                continue;
            };
            let field = (
                payload.get("protocol").and_then(Value::as_str),
                payload.get("field").and_then(Value::as_str),
            );
            if op != Some("!=") {
                continue;
            }
            match field {
                (Some("ip"), Some("saddr")) | (Some("arp"), Some("saddr ip")) => {
                    found.allowed_ip = text.and_then(|t| t.parse().ok());
                }
                (Some("ether"), Some("saddr")) | (Some("arp"), Some("saddr ether")) => {
                    found.allowed_mac = text.map(str::to_owned);
                }
                _ => {}
            }
        }
        rules.push(found);
    }
    Ok(FilterTable { chains, rules })
}

/// What VM `uid`'s rules among `rules` enforce, when they are a complete, consistent
/// set: the wanted number in each chain (forward: none, or two when isolated), every
/// one on the VM's own tap, every address and MAC match allowing one address and the
/// VM's own MAC. `None` otherwise (missing, partial, or made for another address: the
/// next ensure rewrites them). Pure.
pub fn read_filter(rules: &[FilterRule], uid: &ObjectUid) -> Option<FilterProbe> {
    let mine: Vec<&FilterRule> = rules.iter().filter(|r| &r.uid == uid).collect();
    let count = |chain: &str| mine.iter().filter(|r| r.chain == chain).count();
    let forward = count(FORWARD);
    let complete = count(PREROUTING) == PREROUTING_RULES
        && count(INPUT) == INPUT_RULES
        && (forward == 0 || forward == FORWARD_RULES_ISOLATED)
        && mine.len() == PREROUTING_RULES + INPUT_RULES + forward;
    let tap = names::tap_name(uid);
    let mac = names::mac_address(uid);
    let own_tap = mine
        .iter()
        .all(|r| r.interface.as_deref() == Some(tap.as_str()));
    let own_mac = mine
        .iter()
        .filter_map(|r| r.allowed_mac.as_deref())
        .all(|m| m.eq_ignore_ascii_case(&mac));
    let mut ips = mine.iter().filter_map(|r| r.allowed_ip);
    let ip = ips.next()?;
    let one_ip = ips.all(|other| other == ip);
    (complete && own_tap && own_mac && one_ip).then_some(FilterProbe {
        ip,
        isolated: forward == FORWARD_RULES_ISOLATED,
    })
}

/// How many rules of a VM each chain holds when its filter is complete (forward: none
/// unless `isolated`).
fn wanted_counts(isolated: bool) -> [(&'static str, usize); 3] {
    let forward = if isolated { FORWARD_RULES_ISOLATED } else { 0 };
    [
        (PREROUTING, PREROUTING_RULES),
        (FORWARD, forward),
        (INPUT, INPUT_RULES),
    ]
}

/// The rules of VM `uid` that nft's echo of a transaction (`nft --echo --handle`) shows
/// added to the guest filter's table: `(chain, handle)` each, in order. A line counts
/// when it is `add rule bridge banger CHAIN ...` ending in the VM's comment and its
/// handle. Pure.
pub fn echoed_filter_rules(echo: &str, uid: &ObjectUid) -> Vec<(String, u64)> {
    let prefix = format!("add rule {FAMILY} {} ", names::NFT_TABLE);
    let comment = format!("comment \"{}\"", names::nat_rule_comment(uid));
    echo.lines()
        .filter_map(|line| {
            let body = line.strip_prefix(&prefix)?;
            let (rule, handle) = body.rsplit_once(" # handle ")?;
            let handle = handle.trim().parse().ok()?;
            let (chain, _) = rule.split_once(' ')?;
            rule.trim_end()
                .ends_with(&comment)
                .then(|| (chain.to_string(), handle))
        })
        .collect()
}

impl Nftables {
    /// The VM rules in the guest filter's table (none when the table does not exist).
    pub async fn read_filter_rules(&self) -> Result<Vec<FilterRule>, NatError> {
        Ok(self.read_filter_table().await?.rules)
    }

    /// The guest filter's table: its chains and VM rules (empty when it does not exist).
    pub async fn read_filter_table(&self) -> Result<FilterTable, NatError> {
        match self.list_json(FAMILY, names::NFT_TABLE).await? {
            Some(json) => parse_filter_table(&json),
            None => Ok(FilterTable::default()),
        }
    }

    /// Makes VM `filter.uid`'s rules exactly the wanted ones (idempotent; one
    /// transaction when they change), after the bridge-wide rules of `table ip banger`
    /// ([`Nftables::ensure_base`]). Returns what the rules enforce: as read, or as
    /// written once nft's echo shows every wanted rule added.
    pub async fn ensure_vm_filter(
        &self,
        filter: &GuestFilter,
        bridge: &BridgeConfig,
    ) -> Result<FilterProbe, NatError> {
        // Two tables, two `nft` runs, independent of each other: at once.
        let (base, table) = tokio::join!(self.ensure_base(bridge), self.read_filter_table());
        base?;
        let table = table?;
        let have_chains = table.has_chains();
        let rules = table.rules;
        let wanted = FilterProbe {
            ip: filter.ip,
            isolated: filter.isolated,
        };
        if read_filter(&rules, &filter.uid) == Some(wanted) {
            return Ok(wanted);
        }
        let stale: Vec<(String, u64)> = rules
            .iter()
            .filter(|r| r.uid == filter.uid)
            .map(|r| (r.chain.clone(), r.handle))
            .collect();
        let step = format!("write the guest filter of VM {}", filter.uid);
        // The kernel's echo of the committed transaction (`nft --echo --handle`) shows
        // the rules it added: no second `nft` run to read them back.
        let echo = self
            .apply_echo(&step, &vm_ruleset(filter, bridge, &stale, have_chains))
            .await?;
        let added = echoed_filter_rules(&echo, &filter.uid);
        let count = |chain: &str| added.iter().filter(|(c, _)| c == chain).count();
        let expected = wanted_counts(filter.isolated);
        if expected.iter().all(|(chain, n)| count(chain) == *n) {
            Ok(wanted)
        } else {
            Err(NatError::Failed {
                bin: self.bin().to_path_buf(),
                step,
                stderr: format!(
                    "nft's echo of the transaction shows the rules {added:?} (chain, handle), \
                     not {expected:?} (chain, count): {echo}"
                ),
            })
        }
    }

    /// What VM `uid`'s rules enforce, if they are complete ([`read_filter`]).
    pub async fn probe_vm_filter(&self, uid: &ObjectUid) -> Result<Option<FilterProbe>, NatError> {
        Ok(read_filter(&self.read_filter_rules().await?, uid))
    }

    /// Deletes every rule of VM `uid` from the guest filter, by handle (idempotent).
    pub async fn remove_vm_filter(&self, uid: &ObjectUid) -> Result<(), NatError> {
        let stale: Vec<String> = self
            .read_filter_rules()
            .await?
            .into_iter()
            .filter(|r| &r.uid == uid)
            .map(|r| {
                format!(
                    "delete rule {FAMILY} {} {} handle {}\n",
                    names::NFT_TABLE,
                    r.chain,
                    r.handle
                )
            })
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        self.apply(
            &format!("delete the guest filter of VM {uid}"),
            &stale.concat(),
        )
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn uid() -> ObjectUid {
        ObjectUid::parse("0b6d8f1e-4a2c-4f7e-9d51-3c2a1b0e9f88").unwrap()
    }

    fn filter(isolated: bool) -> GuestFilter {
        GuestFilter {
            uid: uid(),
            ip: Ipv4Addr::new(172, 30, 0, 5),
            isolated,
        }
    }

    #[test]
    fn an_isolated_vm_gets_nine_rules_on_its_own_tap() {
        let text = vm_ruleset(&filter(true), &BridgeConfig::default(), &[], false);
        let tap = names::tap_name(&uid());
        let mac = names::mac_address(&uid());
        let comment = "comment \"banger-vm:0b6d8f1e-4a2c-4f7e-9d51-3c2a1b0e9f88\"";
        let expected = [
            format!("add rule bridge banger prerouting iifname \"{tap}\" ether saddr != {mac} drop {comment}"),
            format!("add rule bridge banger prerouting iifname \"{tap}\" ether type != {{ ip, arp }} drop {comment}"),
            format!("add rule bridge banger prerouting iifname \"{tap}\" ether type ip ip saddr != 172.30.0.5 drop {comment}"),
            format!("add rule bridge banger prerouting iifname \"{tap}\" ether type arp arp saddr ether != {mac} drop {comment}"),
            format!("add rule bridge banger prerouting iifname \"{tap}\" ether type arp arp saddr ip != 172.30.0.5 drop {comment}"),
            format!("add rule bridge banger forward iifname \"{tap}\" drop {comment}"),
            format!("add rule bridge banger forward oifname \"{tap}\" drop {comment}"),
            format!("add rule bridge banger input iifname \"{tap}\" ip daddr 172.30.0.0/24 ip daddr != 172.30.0.1 drop {comment}"),
            format!("add rule bridge banger input iifname \"{tap}\" ip daddr 169.254.169.254 drop {comment}"),
        ];
        let rules: Vec<&str> = text.lines().filter(|l| l.starts_with("add rule")).collect();
        assert_eq!(
            rules,
            expected.iter().map(String::as_str).collect::<Vec<_>>()
        );
        assert!(text.starts_with(
            "add table bridge banger\n\
             add chain bridge banger prerouting { type filter hook prerouting priority -200; policy accept; }\n"
        ), "{text}");
        // Into a table that has its chains: the same rules, nothing else.
        let lean = vm_ruleset(&filter(true), &BridgeConfig::default(), &[], true);
        assert!(lean.lines().all(|l| l.starts_with("add rule")), "{lean}");
        assert_eq!(lean.lines().collect::<Vec<_>>(), rules);
    }

    #[test]
    fn a_vm_out_of_isolation_has_no_forward_rules_and_stale_ones_go_first() {
        let text = vm_ruleset(
            &filter(false),
            &BridgeConfig::default(),
            &[("forward".into(), 12), ("prerouting".into(), 4)],
            true,
        );
        assert!(!text.contains("add rule bridge banger forward"), "{text}");
        let delete = text
            .find("delete rule bridge banger forward handle 12\n")
            .unwrap();
        assert!(text.contains("delete rule bridge banger prerouting handle 4\n"));
        assert!(delete < text.find("add rule").unwrap());
    }

    /// The JSON `nft -j` prints for `rules` (one object per rule, as nftables 1.0 does).
    fn json_of(rules: &[(&str, u64, &str, Vec<Value>)]) -> String {
        let mut items =
            vec![serde_json::json!({"table": {"family": "bridge", "name": "banger", "handle": 1}})];
        for (handle, chain) in [PREROUTING, FORWARD, INPUT].iter().enumerate() {
            items.push(
                serde_json::json!({"chain": {"family": "bridge", "table": "banger",
                "name": chain, "handle": handle, "type": "filter", "hook": chain,
                "prio": -200, "policy": "accept"}}),
            );
        }
        for (chain, handle, comment, expr) in rules {
            items.push(
                serde_json::json!({"rule": {"family": "bridge", "table": "banger",
                "chain": chain, "handle": handle, "comment": comment, "expr": expr}}),
            );
        }
        serde_json::json!({ "nftables": items }).to_string()
    }

    fn on(key: &str, tap: &str) -> Value {
        serde_json::json!({"match": {"op": "==", "left": {"meta": {"key": key}}, "right": tap}})
    }

    fn not(protocol: &str, field: &str, value: &str) -> Value {
        serde_json::json!({"match": {"op": "!=", "left": {"payload": {"protocol": protocol, "field": field}}, "right": value}})
    }

    /// A complete set of rules as nftables lists them back.
    fn listed(isolated: bool, ip: &str) -> Vec<(&'static str, u64, String, Vec<Value>)> {
        let tap = names::tap_name(&uid());
        let mac = names::mac_address(&uid());
        let c = names::nat_rule_comment(&uid());
        let drop = serde_json::json!({"drop": null});
        let mut rules = vec![
            (
                "prerouting",
                4,
                c.clone(),
                vec![
                    on("iifname", &tap),
                    not("ether", "saddr", &mac),
                    drop.clone(),
                ],
            ),
            (
                "prerouting",
                5,
                c.clone(),
                vec![on("iifname", &tap), drop.clone()],
            ),
            (
                "prerouting",
                6,
                c.clone(),
                vec![on("iifname", &tap), not("ip", "saddr", ip), drop.clone()],
            ),
            (
                "prerouting",
                7,
                c.clone(),
                vec![
                    on("iifname", &tap),
                    not("arp", "saddr ether", &mac),
                    drop.clone(),
                ],
            ),
            (
                "prerouting",
                8,
                c.clone(),
                vec![
                    on("iifname", &tap),
                    not("arp", "saddr ip", ip),
                    drop.clone(),
                ],
            ),
            (
                "input",
                11,
                c.clone(),
                vec![on("iifname", &tap), drop.clone()],
            ),
            (
                "input",
                12,
                c.clone(),
                vec![on("iifname", &tap), drop.clone()],
            ),
        ];
        if isolated {
            rules.push((
                "forward",
                9,
                c.clone(),
                vec![on("iifname", &tap), drop.clone()],
            ));
            rules.push(("forward", 10, c, vec![on("oifname", &tap), drop]));
        }
        rules
    }

    fn parse(rules: &[(&'static str, u64, String, Vec<Value>)]) -> Vec<FilterRule> {
        let borrowed: Vec<(&str, u64, &str, Vec<Value>)> = rules
            .iter()
            .map(|(c, h, m, e)| (*c, *h, m.as_str(), e.clone()))
            .collect();
        parse_rules(&json_of(&borrowed)).unwrap()
    }

    #[test]
    fn reads_back_what_a_complete_filter_enforces() {
        let rules = parse(&listed(true, "172.30.0.5"));
        assert_eq!(rules.len(), 9);
        assert_eq!(rules[2].allowed_ip, Some(Ipv4Addr::new(172, 30, 0, 5)));
        assert_eq!(rules[0].allowed_mac, Some(names::mac_address(&uid())));
        assert_eq!(
            read_filter(&rules, &uid()),
            Some(FilterProbe {
                ip: Ipv4Addr::new(172, 30, 0, 5),
                isolated: true
            })
        );
        let open = parse(&listed(false, "172.30.0.5"));
        assert_eq!(
            read_filter(&open, &uid()),
            Some(FilterProbe {
                ip: Ipv4Addr::new(172, 30, 0, 5),
                isolated: false
            })
        );
        let other = ObjectUid::parse("aaaa").unwrap();
        assert_eq!(read_filter(&rules, &other), None);
    }

    #[test]
    fn the_table_read_knows_its_chains() {
        let json = json_of(&[]);
        let table = parse_filter_table(&json).unwrap();
        assert_eq!(table.chains, [PREROUTING, FORWARD, INPUT]);
        assert!(table.has_chains() && table.rules.is_empty());
        // A chain missing (or one of another table) means the ruleset must make them.
        let value: Value = serde_json::from_str(&json).unwrap();
        let mut items = value["nftables"].as_array().unwrap().clone();
        items.retain(|i| i["chain"]["name"] != FORWARD);
        items.push(
            serde_json::json!({"chain": {"family": "bridge", "table": "other",
            "name": FORWARD, "handle": 9}}),
        );
        let json = serde_json::json!({ "nftables": items }).to_string();
        let partial = parse_filter_table(&json).unwrap();
        assert_eq!(partial.chains, [PREROUTING, INPUT]);
        assert!(!partial.has_chains());
        assert!(!FilterTable::default().has_chains());
    }

    #[test]
    fn a_partial_or_foreign_filter_is_no_filter() {
        let mut partial = listed(true, "172.30.0.5");
        partial.remove(3);
        assert_eq!(read_filter(&parse(&partial), &uid()), None);
        let mut one_forward = listed(true, "172.30.0.5");
        one_forward.pop();
        assert_eq!(read_filter(&parse(&one_forward), &uid()), None);
        let mut two_addresses = listed(false, "172.30.0.5");
        two_addresses[4].3[1] = not("arp", "saddr ip", "172.30.0.6");
        assert_eq!(read_filter(&parse(&two_addresses), &uid()), None);
        let mut other_tap = listed(false, "172.30.0.5");
        other_tap[0].3[0] = on("iifname", "bgt000000000000");
        assert_eq!(read_filter(&parse(&other_tap), &uid()), None);
        let mut other_mac = listed(false, "172.30.0.5");
        other_mac[0].3[1] = not("ether", "saddr", "02:00:00:00:00:99");
        assert_eq!(read_filter(&parse(&other_mac), &uid()), None);
    }

    #[test]
    fn rules_of_others_are_skipped() {
        let json = json_of(&[
            ("prerouting", 3, "someone else's", vec![]),
            ("prerouting", 4, "banger-vm:NOT-A-UID", vec![]),
        ]);
        assert!(parse_rules(&json).unwrap().is_empty());
        assert!(parse_rules("[]").is_err());
        assert!(parse_rules(r#"{"nftables": []}"#).unwrap().is_empty());
    }

    /// nft 1.0.6's echo of a VM's first filter (the shape it prints, quirks included:
    /// a `handle N` after some chains, dependent matches left out).
    fn echo_of(uid: &str, isolated: bool) -> String {
        let c = format!("comment \"banger-vm:{uid}\"");
        let mut lines = vec![
            "add table bridge banger # handle 3".to_string(),
            "add chain bridge banger prerouting { type filter hook prerouting priority filter; policy accept; } # handle 1".to_string(),
            format!("add rule bridge banger prerouting iifname \"tapx\" ether saddr != 02:aa:bb:cc:dd:ee drop {c} # handle 4"),
            format!("add rule bridge banger prerouting handle 4 iifname \"tapx\" ether type != {{ ip, arp }} drop {c} # handle 6"),
            format!("add rule bridge banger prerouting handle 6 iifname \"tapx\" ip saddr != 10.0.0.5 drop {c} # handle 7"),
            format!("add rule bridge banger prerouting iifname \"tapx\" arp saddr ether != 02:aa:bb:cc:dd:ee drop {c} # handle 8"),
            format!("add rule bridge banger prerouting iifname \"tapx\" arp saddr ip != 10.0.0.5 drop {c} # handle 9"),
        ];
        if isolated {
            lines.push(format!(
                "add rule bridge banger forward iifname \"tapx\" drop {c} # handle 10"
            ));
            lines.push(format!(
                "add rule bridge banger forward oifname \"tapx\" drop {c} # handle 11"
            ));
        }
        lines.push(format!("add rule bridge banger input iifname \"tapx\" ip daddr 10.0.0.0/24 ip daddr != 10.0.0.1 drop {c} # handle 12"));
        lines.push(format!("add rule bridge banger input iifname \"tapx\" ip daddr 169.254.169.254 drop {c} # handle 13"));
        lines.push("# new generation 45 by process 23993 (nft)".to_string());
        lines.join("\n")
    }

    #[test]
    fn the_echo_shows_which_rules_were_added_to_which_chain() {
        let mine = uid().to_string();
        let added = echoed_filter_rules(&echo_of(&mine, true), &uid());
        let chains: Vec<&str> = added.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(
            chains,
            [
                PREROUTING, PREROUTING, PREROUTING, PREROUTING, PREROUTING, FORWARD, FORWARD,
                INPUT, INPUT
            ]
        );
        let handles: Vec<u64> = added.iter().map(|(_, h)| *h).collect();
        assert_eq!(handles, [4, 6, 7, 8, 9, 10, 11, 12, 13]);
        let open = echoed_filter_rules(&echo_of(&mine, false), &uid());
        assert_eq!(open.len(), 7);
        assert!(open.iter().all(|(c, _)| c != FORWARD));
    }

    #[test]
    fn rules_of_another_vm_in_the_echo_do_not_count() {
        let other = "1b6d8f1e-4a2c-4f7e-9d51-3c2a1b0e9f88";
        assert!(echoed_filter_rules(&echo_of(other, true), &uid()).is_empty());
        assert!(echoed_filter_rules("", &uid()).is_empty());
        // A line cut before its handle is not a committed rule.
        let cut = format!(
            "add rule bridge banger input iifname \"tapx\" drop comment \"banger-vm:{}\"",
            uid()
        );
        assert!(echoed_filter_rules(&cut, &uid()).is_empty());
    }

    #[test]
    fn a_complete_filter_has_nine_rules_isolated_and_seven_not() {
        let total = |isolated| {
            wanted_counts(isolated)
                .iter()
                .map(|(_, n)| n)
                .sum::<usize>()
        };
        assert_eq!(total(true), 9);
        assert_eq!(total(false), 7);
        let ruleset = vm_ruleset(&filter(true), &BridgeConfig::default(), &[], false);
        assert_eq!(ruleset.matches("add rule ").count(), total(true));
    }
}
