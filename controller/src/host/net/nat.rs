//! NAT masquerade for VMs with `network.nat: true`, in an nftables table banger owns.
//!
//! Layout of `table ip banger` ([`names::NFT_TABLE`]):
//! - chain `postrouting` (nat hook, priority 100): one rule per VM,
//!   `ip saddr <vm ip> oifname != "<bridge>" masquerade comment "banger-vm:<uid>"`;
//! - chain `forward` (filter hook, priority 0): three rules, tagged
//!   `banger-bridge:<bridge>`: traffic from the bridge to `169.254.169.254` (the cloud
//!   metadata address) is dropped, other traffic from the bridge is accepted, and
//!   established/related traffic to it too;
//! - chain `input` (filter hook, priority 0): what guests may send to the host's own
//!   addresses, tagged the same way: replies to connections the host opened
//!   (established/related), ICMP echo to the gateway address, nothing else. banger
//!   serves guests nothing on the host (no DNS, no DHCP: a guest's address comes on its
//!   kernel command line), so nothing else is let in.
//!
//! The per-guest rules (source MAC and IP, guest to guest) live in `table bridge banger`
//! ([`super::guest_filter`]).
//!
//! # Why this is not shell interpolation
//! `nft` is spawned directly with an argv vector (`nft -f -`, no shell), and the
//! ruleset is written to its stdin. Every value placed in the ruleset text is typed and
//! validated before it gets there: IPs are [`Ipv4Addr`] (rendered as digits and dots),
//! interface names passed [`names::validate_ifname`] (ASCII letters, digits, `-_.`), and
//! uids are [`ObjectUid`]s (`[0-9a-f-]`). None can contain a quote, whitespace, `;`,
//! `#`, a brace or a newline, so no value can change the structure of the ruleset.
//! Reading uses `nft -j list table ip banger`, parsed with serde_json; a VM's new rule
//! is written with `nft --echo --handle -f -`, and its handle is taken from the
//! kernel's echo of the transaction ([`echoed_vm_rule`]); rules are deleted by handle
//! (`nft delete rule ip banger postrouting handle N`, argv again).
//!
//! A ruleset file is applied by nft as one atomic transaction.
//!
//! Concurrency: an ensure/remove for one VM must run under that VM's lock (probe and
//! write are two steps); different VMs touch different rules.
//!
//! Every method is async: `nft` runs as a [`tokio::process`] child, so no async worker
//! waits on it. Like every child process, `nft` acts in the network namespace of the
//! thread that spawns it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use serde_json::Value;

use crate::host::names::{self, ObjectUid};
use crate::host::which::find_executable;

use super::BridgeConfig;

/// Comment prefix of the forward-chain rules; the bridge name follows.
const BRIDGE_COMMENT_PREFIX: &str = "banger-bridge:";

/// Why an nftables operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    /// `nft` could not be started or talked to.
    #[error("cannot run {bin} ({step}): {source}")]
    Spawn {
        /// The nft binary.
        bin: PathBuf,
        /// What banger was doing.
        step: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `nft` exited non-zero.
    #[error("{bin} failed ({step}): {stderr}")]
    Failed {
        /// The nft binary.
        bin: PathBuf,
        /// What banger was doing.
        step: String,
        /// nft's error output.
        stderr: String,
    },
    /// `nft -j` printed something that is not the JSON banger expects.
    #[error("cannot parse `nft -j list table ip {table}` output: {reason}")]
    Parse {
        /// The table.
        table: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// A VM's masquerade rule as found in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatRule {
    /// The VM's uid (from the rule's comment).
    pub uid: ObjectUid,
    /// The source address the rule matches, if it has the expected shape.
    pub ip: Option<Ipv4Addr>,
    /// The rule's handle (for deletion).
    pub handle: u64,
}

/// What banger's table holds, as parsed from `nft -j`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatTable {
    /// Whether the table exists at all.
    pub exists: bool,
    /// The names of its chains.
    pub chains: Vec<String>,
    /// Per-VM masquerade rules in the postrouting chain.
    pub vm_rules: Vec<NatRule>,
    /// Bridge names with forward-chain rules, one entry per rule.
    pub forward_bridges: Vec<String>,
    /// Bridge names with input-chain rules, one entry per rule.
    pub input_bridges: Vec<String>,
}

impl NatTable {
    /// Whether the table exists with its three chains and exactly the base forward and
    /// input rules of `bridge`.
    pub fn has_base_for(&self, bridge: &BridgeConfig) -> bool {
        let only_this = |bridges: &[String], count: usize| {
            bridges.len() == count && bridges.iter().all(|b| b == bridge.name())
        };
        let chains = [
            names::NFT_POSTROUTING_CHAIN,
            names::NFT_FORWARD_CHAIN,
            names::NFT_INPUT_CHAIN,
        ];
        self.exists
            && chains
                .iter()
                .all(|c| self.chains.iter().any(|have| have == c))
            && only_this(&self.forward_bridges, FORWARD_BASE_RULES)
            && only_this(&self.input_bridges, INPUT_BASE_RULES)
    }
}

/// What one read of banger's table says about one VM's masquerade rule: all a write of
/// that rule needs ([`Nftables::ensure_vm_as_read`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmNatRead {
    /// The table had its chains and exactly the bridge's base rules
    /// ([`NatTable::has_base_for`]).
    pub base_ok: bool,
    /// The VM's rules in it.
    pub rules: Vec<NatRule>,
}

impl NatTable {
    /// What this read says about VM `uid`'s rule on `bridge`. Pure.
    pub fn vm_read(&self, uid: &ObjectUid, bridge: &BridgeConfig) -> VmNatRead {
        VmNatRead {
            base_ok: self.has_base_for(bridge),
            rules: self
                .vm_rules
                .iter()
                .filter(|r| &r.uid == uid)
                .cloned()
                .collect(),
        }
    }
}

/// The nftables command banger drives (binary path configurable for tests/doctor).
#[derive(Debug, Clone)]
pub struct Nftables {
    bin: PathBuf,
}

impl Default for Nftables {
    /// `nft` from `PATH` (or `/usr/sbin`, `/sbin`).
    fn default() -> Self {
        Nftables {
            bin: find_executable(Path::new("nft")).unwrap_or_else(|| PathBuf::from("nft")),
        }
    }
}

impl Nftables {
    /// Uses the nft binary at `bin`.
    pub fn new(bin: impl AsRef<Path>) -> Self {
        Nftables {
            bin: bin.as_ref().to_path_buf(),
        }
    }

    /// The nft binary.
    pub(super) fn bin(&self) -> &Path {
        &self.bin
    }

    /// Reads banger's table. A missing table is an empty, non-existent [`NatTable`].
    pub async fn read_table(&self) -> Result<NatTable, NatError> {
        match self.list_json("ip", names::NFT_TABLE).await? {
            Some(json) => parse_table(&json),
            None => Ok(NatTable::default()),
        }
    }

    /// Makes the table, its chains and the bridge's forward and input rules exist
    /// (idempotent: both filter chains are rewritten in one transaction only when their
    /// rules are not exactly those of this bridge).
    pub async fn ensure_base(&self, bridge: &BridgeConfig) -> Result<(), NatError> {
        if self.read_table().await?.has_base_for(bridge) {
            return Ok(());
        }
        self.apply(
            "ensure table, chains and forward rules",
            &base_ruleset(bridge),
        )
        .await
    }

    /// Makes the masquerade rule of VM `uid` (source `ip`) exist, with the table, its
    /// chains and the bridge's base rules ([`Self::ensure_base`]), replacing a rule
    /// of that VM with another address, all in one transaction; returns the rule. One
    /// `nft` run when everything is there, else two: read, then apply with the
    /// kernel's echo of the new rule ([`echoed_vm_rule`]).
    pub async fn ensure_vm(
        &self,
        uid: &ObjectUid,
        ip: Ipv4Addr,
        bridge: &BridgeConfig,
    ) -> Result<NatRule, NatError> {
        let read = self.read_table().await?.vm_read(uid, bridge);
        self.ensure_vm_as_read(uid, ip, bridge, &read).await
    }

    /// [`Self::ensure_vm`] from a read made before (under the VM's lock, so nothing
    /// else has written the VM's rules since): no `nft` run when the read shows the
    /// rule, else one write. If the table lost a chain since the read, the transaction
    /// fails whole and changes nothing.
    pub async fn ensure_vm_as_read(
        &self,
        uid: &ObjectUid,
        ip: Ipv4Addr,
        bridge: &BridgeConfig,
        read: &VmNatRead,
    ) -> Result<NatRule, NatError> {
        if let [only] = read.rules.as_slice() {
            if only.ip == Some(ip) {
                if !read.base_ok {
                    self.apply("ensure table, chains and base rules", &base_ruleset(bridge))
                        .await?;
                }
                return Ok(only.clone());
            }
        }
        let stale: Vec<u64> = read.rules.iter().map(|r| r.handle).collect();
        let mut text = if read.base_ok {
            String::new()
        } else {
            base_ruleset(bridge)
        };
        text.push_str(&vm_rule_ruleset(uid, ip, bridge, &stale));
        let step = format!("add NAT rule for VM {uid}");
        // The kernel's echo of the committed rule (`nft --echo --handle`) gives its
        // handle: no second `nft` run to read it back.
        let echo = self.apply_echo(&step, &text).await?;
        echoed_vm_rule(&echo, uid, ip).ok_or_else(|| NatError::Failed {
            bin: self.bin.clone(),
            step,
            stderr: format!("the rule is not in nft's echo of the transaction: {echo}"),
        })
    }

    /// The masquerade rule of VM `uid`, if there is one (the first, if several).
    pub async fn probe_vm(&self, uid: &ObjectUid) -> Result<Option<NatRule>, NatError> {
        Ok(self
            .read_table()
            .await?
            .vm_rules
            .into_iter()
            .find(|r| &r.uid == uid))
    }

    /// Deletes every masquerade rule of VM `uid`, by handle (idempotent).
    pub async fn remove_vm(&self, uid: &ObjectUid) -> Result<(), NatError> {
        let handles: Vec<u64> = self
            .read_table()
            .await?
            .vm_rules
            .iter()
            .filter(|r| &r.uid == uid)
            .map(|r| r.handle)
            .collect();
        for handle in handles {
            self.delete_rule(handle, &format!("delete NAT rule of VM {uid}"))
                .await?;
        }
        Ok(())
    }

    /// Every per-VM masquerade rule in the table: the candidates for garbage collection.
    pub async fn list_vm_rules(&self) -> Result<Vec<NatRule>, NatError> {
        Ok(self.read_table().await?.vm_rules)
    }

    /// Deletes banger's whole table (idempotent).
    pub async fn remove_table(&self) -> Result<(), NatError> {
        if !self.read_table().await?.exists {
            return Ok(());
        }
        self.run_argv("delete table", &["delete", "table", "ip", names::NFT_TABLE])
            .await
    }

    async fn delete_rule(&self, handle: u64, step: &str) -> Result<(), NatError> {
        let handle = handle.to_string();
        self.run_argv(
            step,
            &[
                "delete",
                "rule",
                "ip",
                names::NFT_TABLE,
                names::NFT_POSTROUTING_CHAIN,
                "handle",
                &handle,
            ],
        )
        .await
    }

    /// `nft -j list table FAMILY TABLE`: the JSON text, or `None` when there is no such
    /// table.
    pub(super) async fn list_json(
        &self,
        family: &str,
        table: &str,
    ) -> Result<Option<String>, NatError> {
        let step = format!("list table {family} {table}");
        let output = Command::new(&self.bin)
            .args(["-j", "list", "table", family, table])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|source| self.spawn_err(&step, source))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
            if stderr.contains("No such file or directory") {
                return Ok(None);
            }
            return Err(NatError::Failed {
                bin: self.bin.clone(),
                step,
                stderr,
            });
        }
        Ok(Some(String::from_utf8_lossy(&output.stdout).into_owned()))
    }

    pub(super) async fn run_argv(&self, step: &str, args: &[&str]) -> Result<(), NatError> {
        let output = Command::new(&self.bin)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|source| self.spawn_err(step, source))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(NatError::Failed {
                bin: self.bin.clone(),
                step: step.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            })
        }
    }

    /// Feeds `ruleset` to `nft -f -` (one atomic transaction).
    pub(super) async fn apply(&self, step: &str, ruleset: &str) -> Result<(), NatError> {
        let mut child = Command::new(&self.bin)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| self.spawn_err(step, source))?;
        // Written before waiting, then closed (dropped) so nft sees the end of input.
        let write_result = match child.stdin.take() {
            Some(mut stdin) => stdin.write_all(ruleset.as_bytes()).await,
            None => Ok(()),
        };
        let output = child
            .wait_with_output()
            .await
            .map_err(|source| self.spawn_err(step, source))?;
        if !output.status.success() {
            return Err(NatError::Failed {
                bin: self.bin.clone(),
                step: step.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        write_result.map_err(|source| self.spawn_err(step, source))
    }

    /// [`Self::apply`] with `--echo --handle`: returns nft's echo of what the kernel
    /// committed, one command per line, each ending in `# handle N`.
    pub(super) async fn apply_echo(&self, step: &str, ruleset: &str) -> Result<String, NatError> {
        let mut child = Command::new(&self.bin)
            .args(["--echo", "--handle", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| self.spawn_err(step, source))?;
        // Written before waiting, then closed (dropped) so nft sees the end of input;
        // the echo is small (a few lines), so nft never blocks on a full stdout pipe
        // while the ruleset is being written.
        let write_result = match child.stdin.take() {
            Some(mut stdin) => stdin.write_all(ruleset.as_bytes()).await,
            None => Ok(()),
        };
        let output = child
            .wait_with_output()
            .await
            .map_err(|source| self.spawn_err(step, source))?;
        if !output.status.success() {
            return Err(NatError::Failed {
                bin: self.bin.clone(),
                step: step.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        write_result.map_err(|source| self.spawn_err(step, source))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn spawn_err(&self, step: &str, source: std::io::Error) -> NatError {
        NatError::Spawn {
            bin: self.bin.clone(),
            step: step.to_string(),
            source,
        }
    }
}

fn table_and_chains() -> String {
    let t = names::NFT_TABLE;
    let post = names::NFT_POSTROUTING_CHAIN;
    let fwd = names::NFT_FORWARD_CHAIN;
    let input = names::NFT_INPUT_CHAIN;
    format!(
        "add table ip {t}\n\
         add chain ip {t} {post} {{ type nat hook postrouting priority 100; policy accept; }}\n\
         add chain ip {t} {fwd} {{ type filter hook forward priority 0; policy accept; }}\n\
         add chain ip {t} {input} {{ type filter hook input priority 0; policy accept; }}\n"
    )
}

/// Rules [`base_ruleset`] puts in the forward chain.
const FORWARD_BASE_RULES: usize = 3;
/// Rules [`base_ruleset`] puts in the input chain.
const INPUT_BASE_RULES: usize = 3;

/// The ruleset making the table, its chains and the bridge's forward and input rules
/// (both filter chains are flushed and refilled in the same transaction).
pub fn base_ruleset(bridge: &BridgeConfig) -> String {
    let t = names::NFT_TABLE;
    let fwd = names::NFT_FORWARD_CHAIN;
    let input = names::NFT_INPUT_CHAIN;
    let br = bridge.name();
    let gateway = bridge.cidr().gateway();
    let metadata = names::METADATA_ADDRESS;
    let tag = format!("comment \"{BRIDGE_COMMENT_PREFIX}{br}\"");
    format!(
        "{head}flush chain ip {t} {fwd}\n\
         flush chain ip {t} {input}\n\
         add rule ip {t} {fwd} iifname \"{br}\" ip daddr {metadata} drop {tag}\n\
         add rule ip {t} {fwd} iifname \"{br}\" accept {tag}\n\
         add rule ip {t} {fwd} oifname \"{br}\" ct state established,related accept {tag}\n\
         add rule ip {t} {input} iifname \"{br}\" ct state established,related accept {tag}\n\
         add rule ip {t} {input} iifname \"{br}\" ip daddr {gateway} icmp type echo-request accept {tag}\n\
         add rule ip {t} {input} iifname \"{br}\" drop {tag}\n",
        head = table_and_chains()
    )
}

/// The ruleset adding VM `uid`'s masquerade rule (after deleting `stale` handles). It
/// needs the table and its chains: when they may be missing, [`base_ruleset`] goes
/// first in the same transaction. (Adding an existing table or chain changes nothing,
/// but costs the kernel's commit ~10 ms here: a write without them is ~3x cheaper.)
pub fn vm_rule_ruleset(
    uid: &ObjectUid,
    ip: Ipv4Addr,
    bridge: &BridgeConfig,
    stale: &[u64],
) -> String {
    let t = names::NFT_TABLE;
    let post = names::NFT_POSTROUTING_CHAIN;
    let mut text = String::new();
    for handle in stale {
        text.push_str(&format!("delete rule ip {t} {post} handle {handle}\n"));
    }
    text.push_str(&format!(
        "add rule ip {t} {post} ip saddr {ip} oifname != \"{br}\" masquerade comment \"{comment}\"\n",
        br = bridge.name(),
        comment = names::nat_rule_comment(uid)
    ));
    text
}

/// VM `uid`'s masquerade rule for source `ip` in nft's echo of a transaction
/// ([`Nftables::apply_echo`]): the `add rule` line in banger's postrouting chain with
/// the VM's comment and that source address, and its handle. `None` when there is no
/// such line. Pure.
pub fn echoed_vm_rule(echo: &str, uid: &ObjectUid, ip: Ipv4Addr) -> Option<NatRule> {
    let prefix = format!(
        "add rule ip {} {} ",
        names::NFT_TABLE,
        names::NFT_POSTROUTING_CHAIN
    );
    let comment = format!("comment \"{}\"", names::nat_rule_comment(uid));
    let source = format!("ip saddr {ip} ");
    echo.lines().find_map(|line| {
        let body = line.strip_prefix(&prefix)?;
        let (rule, handle) = body.rsplit_once(" # handle ")?;
        let handle = handle.trim().parse().ok()?;
        (rule.starts_with(&source) && rule.trim_end().ends_with(&comment)).then(|| NatRule {
            uid: uid.clone(),
            ip: Some(ip),
            handle,
        })
    })
}

/// Parses `nft -j list table ip banger` output.
pub fn parse_table(json: &str) -> Result<NatTable, NatError> {
    let parse_err = |reason: &str| NatError::Parse {
        table: names::NFT_TABLE,
        reason: reason.to_string(),
    };
    let value: Value = serde_json::from_str(json).map_err(|e| parse_err(&e.to_string()))?;
    let items = value
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| parse_err("no top-level `nftables` array"))?;
    let mut table = NatTable::default();
    for item in items {
        if let Some(t) = item.get("table") {
            if t.get("name").and_then(Value::as_str) == Some(names::NFT_TABLE) {
                table.exists = true;
            }
            continue;
        }
        if let Some(c) = item.get("chain") {
            if c.get("table").and_then(Value::as_str) == Some(names::NFT_TABLE) {
                if let Some(name) = c.get("name").and_then(Value::as_str) {
                    table.chains.push(name.to_owned());
                }
            }
            continue;
        }
        let Some(rule) = item.get("rule") else {
            continue;
        };
        if rule.get("table").and_then(Value::as_str) != Some(names::NFT_TABLE) {
            continue;
        }
        let chain = rule
            .get("chain")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let comment = rule
            .get("comment")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if chain == names::NFT_POSTROUTING_CHAIN {
            let Some(uid) = names::uid_from_nat_comment(comment) else {
                continue;
            };
            let handle = rule
                .get("handle")
                .and_then(Value::as_u64)
                .ok_or_else(|| parse_err("a rule has no numeric handle"))?;
            table.vm_rules.push(NatRule {
                uid,
                ip: rule_saddr(rule),
                handle,
            });
        } else if chain == names::NFT_FORWARD_CHAIN {
            if let Some(bridge) = comment.strip_prefix(BRIDGE_COMMENT_PREFIX) {
                table.forward_bridges.push(bridge.to_string());
            }
        } else if chain == names::NFT_INPUT_CHAIN {
            if let Some(bridge) = comment.strip_prefix(BRIDGE_COMMENT_PREFIX) {
                table.input_bridges.push(bridge.to_string());
            }
        }
    }
    Ok(table)
}

/// The address of an `ip saddr == X` match in a rule's expressions.
fn rule_saddr(rule: &Value) -> Option<Ipv4Addr> {
    rule.get("expr")?.as_array()?.iter().find_map(|expr| {
        let m = expr.get("match")?;
        let payload = m.get("left")?.get("payload")?;
        let is_saddr = payload.get("protocol")?.as_str()? == "ip"
            && payload.get("field")?.as_str()? == "saddr"
            && m.get("op")?.as_str()? == "==";
        if !is_saddr {
            return None;
        }
        m.get("right")?.as_str()?.parse().ok()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn uid() -> ObjectUid {
        ObjectUid::parse("0b6d8f1e-4a2c-4f7e-9d51-3c2a1b0e9f88").unwrap()
    }

    #[test]
    fn the_vm_rule_is_found_in_nfts_echo() {
        let uid = uid();
        let ip = Ipv4Addr::new(172, 30, 0, 5);
        let echo = format!(
            "add table ip banger # handle 1\n\
             add chain ip banger postrouting {{ type nat hook postrouting priority srcnat; policy accept; }} # handle 1\n\
             delete rule ip banger postrouting handle 4\n\
             add rule ip banger postrouting ip saddr 172.30.0.5 oifname != \"banger0\" masquerade comment \"banger-vm:{uid}\" # handle 12\n\
             # new generation 9 by process 77 (nft)\n"
        );
        assert_eq!(
            echoed_vm_rule(&echo, &uid, ip),
            Some(NatRule {
                uid: uid.clone(),
                ip: Some(ip),
                handle: 12
            })
        );
        // Another address, another VM's comment, or no handle: not this VM's rule.
        assert_eq!(
            echoed_vm_rule(&echo, &uid, Ipv4Addr::new(172, 30, 0, 6)),
            None
        );
        let other = ObjectUid::parse("7f000000-0000-4000-8000-000000000001").unwrap();
        assert_eq!(echoed_vm_rule(&echo, &other, ip), None);
        let without_handle = echo.replace(" # handle 12", "");
        assert_eq!(echoed_vm_rule(&without_handle, &uid, ip), None);
        // 172.30.0.5 must not match a rule of 172.30.0.50.
        let longer = echo.replace("172.30.0.5 ", "172.30.0.50 ");
        assert_eq!(echoed_vm_rule(&longer, &uid, ip), None);
    }

    #[test]
    fn base_ruleset_text() {
        let text = base_ruleset(&BridgeConfig::default());
        assert_eq!(
            text,
            "add table ip banger\n\
             add chain ip banger postrouting { type nat hook postrouting priority 100; policy accept; }\n\
             add chain ip banger forward { type filter hook forward priority 0; policy accept; }\n\
             add chain ip banger input { type filter hook input priority 0; policy accept; }\n\
             flush chain ip banger forward\n\
             flush chain ip banger input\n\
             add rule ip banger forward iifname \"banger0\" ip daddr 169.254.169.254 drop comment \"banger-bridge:banger0\"\n\
             add rule ip banger forward iifname \"banger0\" accept comment \"banger-bridge:banger0\"\n\
             add rule ip banger forward oifname \"banger0\" ct state established,related accept comment \"banger-bridge:banger0\"\n\
             add rule ip banger input iifname \"banger0\" ct state established,related accept comment \"banger-bridge:banger0\"\n\
             add rule ip banger input iifname \"banger0\" ip daddr 172.30.0.1 icmp type echo-request accept comment \"banger-bridge:banger0\"\n\
             add rule ip banger input iifname \"banger0\" drop comment \"banger-bridge:banger0\"\n"
        );
        // The metadata drop comes before the bridge's accept.
        let drop = text.find("169.254.169.254 drop").unwrap();
        let accept = text.find("forward iifname \"banger0\" accept").unwrap();
        assert!(drop < accept);
    }

    #[test]
    fn vm_rule_text_with_and_without_stale_handles() {
        let bridge = BridgeConfig::default();
        let ip = Ipv4Addr::new(172, 30, 0, 5);
        let text = vm_rule_ruleset(&uid(), ip, &bridge, &[]);
        assert!(text.ends_with(
            "add rule ip banger postrouting ip saddr 172.30.0.5 oifname != \"banger0\" masquerade comment \"banger-vm:0b6d8f1e-4a2c-4f7e-9d51-3c2a1b0e9f88\"\n"
        ), "{text}");
        assert!(!text.contains("delete"));
        let text = vm_rule_ruleset(&uid(), ip, &bridge, &[7, 9]);
        let delete7 = text
            .find("delete rule ip banger postrouting handle 7\n")
            .unwrap();
        let delete9 = text
            .find("delete rule ip banger postrouting handle 9\n")
            .unwrap();
        let add = text.find("add rule ip banger postrouting").unwrap();
        assert!(delete7 < add && delete9 < add);
    }

    #[test]
    fn parses_nft_json() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
          {"table": {"family": "ip", "name": "banger", "handle": 1}},
          {"chain": {"family": "ip", "table": "banger", "name": "postrouting", "handle": 1, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
          {"rule": {"family": "ip", "table": "banger", "chain": "postrouting", "handle": 5, "comment": "banger-vm:0b6d8f1e-4a2c-4f7e-9d51-3c2a1b0e9f88",
            "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "172.30.0.5"}},
                     {"match": {"op": "!=", "left": {"meta": {"key": "oifname"}}, "right": "banger0"}}, {"masquerade": null}]}},
          {"rule": {"family": "ip", "table": "banger", "chain": "postrouting", "handle": 6, "comment": "someone else's", "expr": []}},
          {"rule": {"family": "ip", "table": "banger", "chain": "forward", "handle": 3, "comment": "banger-bridge:banger0", "expr": []}},
          {"rule": {"family": "ip", "table": "banger", "chain": "forward", "handle": 4, "comment": "banger-bridge:banger0", "expr": []}}]}"#;
        let table = parse_table(json).unwrap();
        assert!(table.exists);
        assert_eq!(
            table.vm_rules,
            vec![NatRule {
                uid: uid(),
                ip: Some(Ipv4Addr::new(172, 30, 0, 5)),
                handle: 5
            }]
        );
        assert_eq!(table.forward_bridges, vec!["banger0", "banger0"]);
        assert_eq!(table.chains, ["postrouting"]);
    }

    #[test]
    fn the_base_needs_all_three_chains_and_the_bridges_rules() {
        let bridge = BridgeConfig::default();
        let name = bridge.name().to_string();
        let complete = NatTable {
            exists: true,
            chains: vec!["postrouting".into(), "forward".into(), "input".into()],
            vm_rules: vec![],
            forward_bridges: vec![name.clone(); FORWARD_BASE_RULES],
            input_bridges: vec![name.clone(); INPUT_BASE_RULES],
        };
        assert!(complete.has_base_for(&bridge));
        // A VM rule written without the table and chains needs every one of them.
        let mut no_postrouting = complete.clone();
        no_postrouting.chains.retain(|c| c != "postrouting");
        assert!(!no_postrouting.has_base_for(&bridge));
        let mut other_bridge = complete.clone();
        other_bridge.input_bridges[0] = "br-other".into();
        assert!(!other_bridge.has_base_for(&bridge));
        assert!(!NatTable::default().has_base_for(&bridge));
        // And the VM's rule itself carries no table or chain.
        let rule = vm_rule_ruleset(&uid(), Ipv4Addr::new(172, 30, 0, 5), &bridge, &[]);
        assert!(
            !rule.contains("add table") && !rule.contains("add chain"),
            "{rule}"
        );
    }

    #[test]
    fn a_vm_read_keeps_the_base_and_only_that_vms_rules() {
        let bridge = BridgeConfig::default();
        let name = bridge.name().to_string();
        let other = ObjectUid::parse("7f000000-0000-4000-8000-000000000001").unwrap();
        let rule = |uid: &ObjectUid, handle| NatRule {
            uid: uid.clone(),
            ip: Some(Ipv4Addr::new(172, 30, 0, 5)),
            handle,
        };
        let mut table = NatTable {
            exists: true,
            chains: vec!["postrouting".into(), "forward".into(), "input".into()],
            vm_rules: vec![rule(&uid(), 4), rule(&other, 5), rule(&uid(), 6)],
            forward_bridges: vec![name.clone(); FORWARD_BASE_RULES],
            input_bridges: vec![name; INPUT_BASE_RULES],
        };
        let read = table.vm_read(&uid(), &bridge);
        assert!(read.base_ok);
        assert_eq!(read.rules, vec![rule(&uid(), 4), rule(&uid(), 6)]);
        table.chains.pop();
        assert!(!table.vm_read(&other, &bridge).base_ok);
        assert_eq!(table.vm_read(&other, &bridge).rules, vec![rule(&other, 5)]);
    }

    #[test]
    fn rejects_non_nft_json() {
        assert!(parse_table("[]").is_err());
        assert!(parse_table("not json").is_err());
        let empty = parse_table(r#"{"nftables": []}"#).unwrap();
        assert!(!empty.exists);
    }
}
