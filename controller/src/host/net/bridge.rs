//! The VM bridge, managed over rtnetlink: ensured (created if missing, gateway address
//! assigned, up), probed and removed.

use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::{LinkBridge, LinkUnspec};

use super::{deleted, is_not_found, BridgeConfig, NetError, Netlink};

/// What a probe of the bridge found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeProbe {
    /// Interface index, when a device of that name exists.
    pub index: Option<u32>,
    /// The device is a Linux bridge.
    pub is_bridge: bool,
    /// The device holds the gateway address with the subnet's prefix.
    pub has_address: bool,
    /// The device is administratively up.
    pub up: bool,
}

impl BridgeProbe {
    /// Whether the bridge is exactly as banger wants it.
    pub fn is_healthy(&self) -> bool {
        self.index.is_some() && self.is_bridge && self.has_address && self.up
    }
}

/// The link called `name`, if one exists.
pub(crate) async fn find_link(nl: &Netlink, name: &str) -> Result<Option<LinkMessage>, NetError> {
    let handle = nl.handle().clone();
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(err) if is_not_found(&err) => Ok(None),
        Err(source) => Err(NetError::Netlink {
            step: "look up link",
            device: name.to_string(),
            source,
        }),
    }
}

/// The `kind` of a link (`bridge`, `tun`, …) as netlink reports it.
pub(crate) fn link_kind(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|info| match info {
            LinkInfo::Kind(kind) => Some(kind),
            _ => None,
        }),
        _ => None,
    })
}

/// Whether the link is administratively up.
pub(crate) fn link_is_up(link: &LinkMessage) -> bool {
    link.header.flags.contains(LinkFlags::Up)
}

/// Probes the bridge: exists, is a bridge, has the gateway address, is up.
pub async fn probe_bridge(nl: &Netlink, cfg: &BridgeConfig) -> Result<BridgeProbe, NetError> {
    let Some(link) = find_link(nl, cfg.name()).await? else {
        return Ok(BridgeProbe {
            index: None,
            is_bridge: false,
            has_address: false,
            up: false,
        });
    };
    let index = link.header.index;
    Ok(BridgeProbe {
        index: Some(index),
        is_bridge: matches!(link_kind(&link), Some(InfoKind::Bridge)),
        has_address: has_gateway_address(nl, cfg, index).await?,
        up: link_is_up(&link),
    })
}

async fn has_gateway_address(
    nl: &Netlink,
    cfg: &BridgeConfig,
    index: u32,
) -> Result<bool, NetError> {
    let gateway = IpAddr::V4(cfg.cidr().gateway());
    let mut addrs = nl
        .handle()
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    loop {
        match addrs.try_next().await {
            Ok(Some(msg)) => {
                let matches = msg.header.prefix_len == cfg.cidr().prefix()
                    && msg.attributes.iter().any(|attr| {
                        matches!(attr, AddressAttribute::Address(ip) | AddressAttribute::Local(ip) if *ip == gateway)
                    });
                if matches {
                    return Ok(true);
                }
            }
            Ok(None) => return Ok(false),
            Err(source) => {
                return Err(NetError::Netlink {
                    step: "list addresses",
                    device: cfg.name().to_string(),
                    source,
                })
            }
        }
    }
}

/// Makes the bridge exist, hold the gateway address and be up; returns its probe.
///
/// Idempotent: each part is measured first and only what is missing is done. A device
/// of that name that is not a bridge is an error (never replaced).
pub async fn ensure_bridge(nl: &Netlink, cfg: &BridgeConfig) -> Result<BridgeProbe, NetError> {
    let netlink_err = |step, source| NetError::Netlink {
        step,
        device: cfg.name().to_string(),
        source,
    };
    let mut probe = probe_bridge(nl, cfg).await?;
    if probe.index.is_none() {
        match nl
            .handle()
            .link()
            .add(LinkBridge::new(cfg.name()).build())
            .execute()
            .await
        {
            Ok(()) => {}
            // Created concurrently by someone else: fall through to the probe.
            Err(rtnetlink::Error::NetlinkError(msg)) if msg.raw_code().abs() == libc::EEXIST => {}
            Err(source) => return Err(netlink_err("create bridge", source)),
        }
        probe = probe_bridge(nl, cfg).await?;
    }
    let Some(index) = probe.index else {
        return Err(NetError::Missing {
            device: cfg.name().to_string(),
        });
    };
    if !probe.is_bridge {
        return Err(NetError::WrongKind {
            device: cfg.name().to_string(),
            expected: "bridge",
        });
    }
    if !probe.has_address {
        let gateway = IpAddr::V4(cfg.cidr().gateway());
        match nl
            .handle()
            .address()
            .add(index, gateway, cfg.cidr().prefix())
            .execute()
            .await
        {
            Ok(()) => {}
            Err(rtnetlink::Error::NetlinkError(msg)) if msg.raw_code().abs() == libc::EEXIST => {}
            Err(source) => return Err(netlink_err("add gateway address", source)),
        }
    }
    if !probe.up {
        nl.handle()
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|source| netlink_err("set bridge up", source))?;
    }
    probe_bridge(nl, cfg).await
}

/// Deletes the bridge if it exists (idempotent). Taps attached to it are detached by
/// the kernel, not deleted.
pub async fn remove_bridge(nl: &Netlink, cfg: &BridgeConfig) -> Result<(), NetError> {
    let Some(link) = find_link(nl, cfg.name()).await? else {
        return Ok(());
    };
    if !matches!(link_kind(&link), Some(InfoKind::Bridge)) {
        return Err(NetError::WrongKind {
            device: cfg.name().to_string(),
            expected: "bridge",
        });
    }
    let handle = nl.handle().clone();
    let answer = handle.link().del(link.header.index).execute().await;
    deleted(answer, "delete bridge", cfg.name())
}
