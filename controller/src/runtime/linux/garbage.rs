//! Garbage: host objects carrying banger's naming that belong to no known VM (stray
//! VMMs of this daemon, cgroups below this daemon's parent cgroup, taps, NAT rules,
//! guest filter rules, VM directories), found and removed one by one.
//! `/proc` scans and directory work run on the blocking pool, and so do the stores'
//! own collections ([`prune_on_blocking_pool`]).

use std::collections::BTreeSet;

use super::LinuxRuntime;
use crate::host::cgroup;
use crate::host::garbage;
use crate::host::names::{self, ObjectUid};
use crate::host::net::tap::remove_tap;
use crate::host::net::vm::{list_net_garbage, remove_vm_filter, remove_vm_nat};
use crate::host::oci::store::StoreItem;
use crate::runtime::{Garbage, GarbageKind, RuntimeError};

/// Runs a store's garbage collection (`prune`, blocking) on the blocking pool; its
/// failure is the `gc` step of `object` (e.g. `image-store/<dir>`).
pub(super) async fn prune_on_blocking_pool(
    object: String,
    prune: impl FnOnce() -> std::io::Result<Vec<StoreItem>> + Send + 'static,
) -> Result<Vec<StoreItem>, RuntimeError> {
    tokio::task::spawn_blocking(prune)
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(|e| RuntimeError::Step {
            object,
            step: "gc".into(),
            message: e.to_string(),
        })
}

impl LinuxRuntime {
    /// [`crate::runtime::VmRuntime::find_garbage`] on this host.
    pub(super) async fn host_garbage(&self, known_vm_uids: &BTreeSet<String>) -> Vec<Garbage> {
        let state_dir = self.config.state_dir.clone();
        let known = known_vm_uids.clone();
        let cgroups = self.cgroups.clone().ok();
        let parent = self.cgroup_parent.clone();
        let scanned = tokio::task::spawn_blocking(move || {
            (
                garbage::find_stray_vmms(&state_dir, &known),
                garbage::find_stray_vm_dirs(&state_dir, &known),
                cgroups.map(|layout| cgroup::list_vm_cgroups(&layout, &parent)),
            )
        })
        .await;
        let (vmms, dirs, cgroups) = match scanned {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "gc: the scan of processes, cgroups and VM directories failed");
                (Vec::new(), Ok(Vec::new()), None)
            }
        };
        let mut items: Vec<Garbage> = vmms
            .into_iter()
            .map(|vmm| Garbage {
                kind: GarbageKind::Process,
                name: vmm.identity.pid.to_string(),
                uid: Some(vmm.uid.to_string()),
                detail: vmm.cmdline,
            })
            .collect();
        match cgroups {
            Some(Ok(found)) => items.extend(
                found
                    .into_iter()
                    .filter_map(|c| cgroup::uid_of_leaf(c.leaf()).map(|uid| (uid, c)))
                    .filter(|(uid, _)| !known_vm_uids.contains(uid.as_str()))
                    .map(|(uid, c)| Garbage {
                        kind: GarbageKind::Cgroup,
                        name: c.leaf().to_owned(),
                        uid: Some(uid.to_string()),
                        detail: c
                            .dirs()
                            .iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(" "),
                    }),
            ),
            Some(Err(e)) => tracing::warn!(error = %e, "gc: cannot list VM cgroups"),
            None => {}
        }
        // Known uids that are not valid ObjectUids own no host object banger names.
        let known: BTreeSet<ObjectUid> = known_vm_uids
            .iter()
            .filter_map(|u| ObjectUid::parse(u).ok())
            .collect();
        match list_net_garbage(&self.netlink, &self.nft, &known).await {
            Ok(net) => {
                items.extend(net.nat_rules.into_iter().map(|rule| Garbage {
                    kind: GarbageKind::NatRule,
                    name: names::nat_rule_comment(&rule.uid),
                    uid: Some(rule.uid.to_string()),
                    detail: match rule.ip {
                        Some(ip) => format!(
                            "table ip {} handle {} saddr {ip}",
                            names::NFT_TABLE,
                            rule.handle
                        ),
                        None => format!("table ip {} handle {}", names::NFT_TABLE, rule.handle),
                    },
                }));
                items.extend(net.filters.into_iter().map(|(uid, rules)| Garbage {
                    kind: GarbageKind::FilterRules,
                    name: names::nat_rule_comment(&uid),
                    uid: Some(uid.to_string()),
                    detail: format!("{rules} rule(s) in table bridge {}", names::NFT_TABLE),
                }));
                items.extend(net.taps.into_iter().map(|tap| Garbage {
                    kind: GarbageKind::Tap,
                    name: tap,
                    uid: None,
                    detail: "tap device named like banger's, of no known VM".into(),
                }));
            }
            Err(e) => tracing::warn!(error = %e, "gc: cannot list taps and NAT rules"),
        }
        match dirs {
            Ok(dirs) => items.extend(dirs.into_iter().map(|d| Garbage {
                kind: GarbageKind::VmDir,
                name: d.uid.to_string(),
                uid: Some(d.uid.to_string()),
                detail: d.path.display().to_string(),
            })),
            Err(e) => tracing::warn!(
                dir = %self.config.state_dir.join("vms").display(),
                error = %e,
                "gc: cannot list VM directories"
            ),
        }
        items.sort();
        items
    }

    /// [`crate::runtime::VmRuntime::remove_garbage`] on this host: the item is checked
    /// against the host again before anything is removed.
    pub(super) async fn remove_host_garbage(&self, item: &Garbage) -> Result<(), RuntimeError> {
        let err = |m: String| RuntimeError::Step {
            object: item.to_string(),
            step: "gc".into(),
            message: m,
        };
        match item.kind {
            GarbageKind::Process => {
                let uid = item
                    .uid
                    .as_deref()
                    .ok_or_else(|| err("no uid recorded for the process".into()))?;
                garbage::stop_stray_vmm(&item.name, uid, &self.config.state_dir)
                    .await
                    .map_err(|e| err(e.to_string()))
            }
            GarbageKind::Cgroup => {
                let uid = cgroup::uid_of_leaf(&item.name)
                    .ok_or_else(|| err("not a VM cgroup name".into()))?;
                // A VMM still in it is this daemon's (the cgroup's path says so) and of an
                // unknown VM: stopped first, as a stray VMM would be.
                self.stop_vmms_in_cgroup(&uid).await.map_err(err)?;
                self.remove_cgroup(&uid).await.map_err(err)
            }
            GarbageKind::NatRule => {
                let uid = names::uid_from_nat_comment(&item.name)
                    .ok_or_else(|| err("not a banger NAT rule comment".into()))?;
                remove_vm_nat(&self.nft, &uid)
                    .await
                    .map_err(|e| err(e.to_string()))
            }
            GarbageKind::FilterRules => {
                let uid = names::uid_from_nat_comment(&item.name)
                    .ok_or_else(|| err("not a banger guest filter comment".into()))?;
                remove_vm_filter(&self.nft, &uid)
                    .await
                    .map_err(|e| err(e.to_string()))
            }
            GarbageKind::Tap => {
                if !names::is_banger_tap(&item.name) {
                    return Err(err("not a banger tap name".into()));
                }
                remove_tap(&self.netlink, &item.name)
                    .await
                    .map_err(|e| err(e.to_string()))
            }
            GarbageKind::VmDir => {
                let (state_dir, name) = (self.config.state_dir.clone(), item.name.clone());
                tokio::task::spawn_blocking(move || garbage::remove_stray_vm_dir(&state_dir, &name))
                    .await
                    .map_err(|e| err(e.to_string()))?
                    .map_err(|e| err(e.to_string()))
            }
        }
    }
}
