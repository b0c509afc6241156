//! The host's neighbour (ARP) entry for each guest. banger knows a guest's address and
//! MAC before the guest boots (both come from the VM's uid and lease), so it tells the
//! kernel at once: an entry in state `STALE` ("known, not confirmed") on the bridge.
//!
//! Why: while a guest boots, the host's first packets to it (banger's readiness checks)
//! find no answer to ARP, the kernel's entry for the address goes `INCOMPLETE` and then
//! `FAILED`, and a new resolution waits for the next ARP request, up to a second
//! (`retrans_time`) after the guest started listening. A `STALE` entry is used to send
//! right away; the kernel confirms it itself (`DELAY`, then unicast probes) and ages it
//! like any other. The guest filter only lets this MAC use this address, so the hint
//! cannot point at another guest.
//!
//! Both calls are hints: a failure costs only the wait above, so callers log it and go
//! on. The entry is dropped again when the VM's tap is removed.

use std::net::{IpAddr, Ipv4Addr};

use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::AddressFamily;

use super::bridge::find_link;
use super::{deleted, BridgeConfig, NetError, Netlink};

/// The bridge's interface index (`Missing` when there is no bridge).
async fn bridge_index(nl: &Netlink, bridge: &BridgeConfig) -> Result<u32, NetError> {
    find_link(nl, bridge.name())
        .await?
        .map(|link| link.header.index)
        .ok_or_else(|| NetError::Missing {
            device: bridge.name().to_string(),
        })
}

/// Sets the bridge's neighbour entry for `ip` to `mac`, state `STALE` (replacing what
/// the kernel had for that address).
pub async fn prime_guest_neighbour(
    nl: &Netlink,
    bridge: &BridgeConfig,
    ip: Ipv4Addr,
    mac: [u8; 6],
) -> Result<(), NetError> {
    let index = bridge_index(nl, bridge).await?;
    nl.handle()
        .neighbours()
        .add(index, IpAddr::V4(ip))
        .link_local_address(&mac)
        .state(NeighbourState::Stale)
        .replace()
        .execute()
        .await
        .map_err(|source| NetError::Netlink {
            step: "set the guest's neighbour entry",
            device: bridge.name().to_string(),
            source,
        })
}

/// Drops the bridge's neighbour entry for `ip`, if there is one (and the bridge).
pub async fn forget_guest_neighbour(
    nl: &Netlink,
    bridge: &BridgeConfig,
    ip: Ipv4Addr,
) -> Result<(), NetError> {
    let index = match bridge_index(nl, bridge).await {
        Ok(index) => index,
        Err(NetError::Missing { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut message = NeighbourMessage::default();
    message.header.family = AddressFamily::Inet;
    message.header.ifindex = index;
    message
        .attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    let answer = nl.handle().neighbours().del(message).execute().await;
    deleted(answer, "drop the guest's neighbour entry", bridge.name())
}
