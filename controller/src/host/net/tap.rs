//! Per-VM tap devices: made persistent through `/dev/net/tun` ioctls, attached to the
//! bridge and set up over rtnetlink, probed, listed for garbage collection, removed.
//!
//! A tap's name comes from its VM's uid ([`names::tap_name`]). A persistent tap
//! outlives the file descriptor that made it, so the hypervisor can open it by name
//! later and banger can re-probe it after a daemon restart.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkMessage};
use rtnetlink::LinkUnspec;

use super::bridge::{find_link, link_is_up, link_kind};
use super::{deleted, BridgeConfig, NetError, Netlink};
use crate::host::names::{self, ObjectUid};

const TUN_DEVICE: &str = "/dev/net/tun";

/// What a probe of a VM's tap found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapProbe {
    /// The tap's name.
    pub name: String,
    /// Interface index, when a device of that name exists.
    pub index: Option<u32>,
    /// The device is a tun/tap device.
    pub is_tap: bool,
    /// The device's master is the bridge.
    pub attached: bool,
    /// The device is administratively up.
    pub up: bool,
}

impl TapProbe {
    /// Whether the tap is exactly as banger wants it.
    pub fn is_healthy(&self) -> bool {
        self.index.is_some() && self.is_tap && self.attached && self.up
    }
}

fn link_controller(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::Controller(index) => Some(*index),
        _ => None,
    })
}

/// Probes the tap called `name`: exists, is a tap, is attached to the bridge, is up.
pub async fn probe_tap(
    nl: &Netlink,
    name: &str,
    bridge: &BridgeConfig,
) -> Result<TapProbe, NetError> {
    let Some(link) = find_link(nl, name).await? else {
        return Ok(TapProbe {
            name: name.to_string(),
            index: None,
            is_tap: false,
            attached: false,
            up: false,
        });
    };
    let bridge_index = find_link(nl, bridge.name()).await?.map(|b| b.header.index);
    Ok(TapProbe {
        name: name.to_string(),
        index: Some(link.header.index),
        is_tap: matches!(link_kind(&link), Some(InfoKind::Tun)),
        attached: bridge_index.is_some() && link_controller(&link) == bridge_index,
        up: link_is_up(&link),
    })
}

/// Makes the tap of the VM with `uid` exist (persistent), be attached to the bridge
/// and be up; returns its probe. Idempotent; the bridge must exist.
pub async fn ensure_tap(
    nl: &Netlink,
    uid: &ObjectUid,
    bridge: &BridgeConfig,
) -> Result<TapProbe, NetError> {
    let name = names::tap_name(uid);
    // The bridge first: never leave a fresh, unattached tap behind.
    let Some(bridge_link) = find_link(nl, bridge.name()).await? else {
        return Err(NetError::Missing {
            device: bridge.name().to_string(),
        });
    };
    let mut probe = probe_tap(nl, &name, bridge).await?;
    if probe.index.is_none() {
        create_persistent_tap(&name)?;
        probe = probe_tap(nl, &name, bridge).await?;
    }
    let Some(index) = probe.index else {
        return Err(NetError::Missing { device: name });
    };
    if !probe.is_tap {
        return Err(NetError::WrongKind {
            device: name,
            expected: "tap",
        });
    }
    if probe.attached && probe.up {
        return Ok(probe);
    }
    nl.handle()
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .controller(bridge_link.header.index)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(|source| NetError::Netlink {
            step: "attach tap to bridge and set it up",
            device: name.clone(),
            source,
        })?;
    probe_tap(nl, &name, bridge).await
}

/// Deletes the tap called `name` if it exists (idempotent). Refuses to delete a device
/// that is not a tap.
pub async fn remove_tap(nl: &Netlink, name: &str) -> Result<(), NetError> {
    let Some(link) = find_link(nl, name).await? else {
        return Ok(());
    };
    if !matches!(link_kind(&link), Some(InfoKind::Tun)) {
        return Err(NetError::WrongKind {
            device: name.to_string(),
            expected: "tap",
        });
    }
    let handle = nl.handle().clone();
    let answer = handle.link().del(link.header.index).execute().await;
    deleted(answer, "delete tap", name)
}

/// Names of every interface carrying banger's tap naming ([`names::is_banger_tap`]),
/// sorted: the candidates for garbage collection.
pub async fn list_banger_taps(nl: &Netlink) -> Result<Vec<String>, NetError> {
    let handle = nl.handle().clone();
    let mut links = handle.link().get().execute();
    let mut found = Vec::new();
    loop {
        match links.try_next().await {
            Ok(Some(link)) => {
                let name = link.attributes.iter().find_map(|attr| match attr {
                    LinkAttribute::IfName(name) => Some(name.clone()),
                    _ => None,
                });
                if let Some(name) = name.filter(|n| names::is_banger_tap(n)) {
                    found.push(name);
                }
            }
            Ok(None) => break,
            Err(source) => {
                return Err(NetError::Netlink {
                    step: "list links",
                    device: "*".to_string(),
                    source,
                })
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Creates (or re-opens) the tap `name` through `/dev/net/tun` and marks it persistent,
/// so it stays after this function closes its file descriptor.
fn create_persistent_tap(name: &str) -> Result<(), NetError> {
    let file = attach_tun(name, libc::IFF_TAP | libc::IFF_NO_PI)?;
    // SAFETY: the fd is still open (owned by `file`) and now bound to the tap;
    // TUNSETPERSIST takes its argument by value as an integer, no memory is passed.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) };
    if rc < 0 {
        return Err(NetError::Tun {
            step: "TUNSETPERSIST",
            device: name.to_string(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Opens a queue of the existing tap `name` (with virtio-net headers, as QEMU would open
/// it itself) and returns its descriptor: what an unprivileged VMM, which may not open
/// taps, is handed. Blocking (one ioctl). The tap stays persistent and attached.
pub fn open_tap_queue(name: &str) -> Result<OwnedFd, NetError> {
    names::validate_ifname(name)?;
    // TUNSETIFF would make a fresh, unattached tap of a missing name: look first (in the
    // calling thread's network namespace, as the ioctl below acts).
    let c_name = std::ffi::CString::new(name).map_err(|_| NetError::Missing {
        device: name.to_string(),
    })?;
    // SAFETY: `c_name` is a NUL-terminated string that outlives the call.
    if unsafe { libc::if_nametoindex(c_name.as_ptr()) } == 0 {
        return Err(NetError::Missing {
            device: name.to_string(),
        });
    }
    attach_tun(name, libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR).map(OwnedFd::from)
}

/// Opens `/dev/net/tun` (close-on-exec) and binds the descriptor to the tap `name` with
/// `flags` (`TUNSETIFF`), creating the tap when it does not exist.
fn attach_tun(name: &str, flags: libc::c_int) -> Result<File, NetError> {
    let tun_err = |step, source| NetError::Tun {
        step,
        device: name.to_string(),
        source,
    };
    names::validate_ifname(name)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(TUN_DEVICE)
        .map_err(|e| tun_err("open /dev/net/tun", e))?;

    // SAFETY: `ifreq` is a plain C struct (a char array and a union of integers and
    // structs of integers); the all-zero bit pattern is a valid value of it.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    // `validate_ifname` bounds the name to 15 ASCII bytes, so it fits with its NUL.
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = libc::c_short::try_from(flags).map_err(|_| {
        tun_err(
            "TUNSETIFF",
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "flags overflow"),
        )
    })?;

    // SAFETY: the fd is an open /dev/net/tun descriptor owned by `file` for the whole
    // call; TUNSETIFF reads and writes one `struct ifreq`, and `ifr` is a valid,
    // initialised, exclusively borrowed `ifreq` that outlives the call.
    let rc = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            libc::TUNSETIFF,
            &mut ifr as *mut libc::ifreq,
        )
    };
    if rc < 0 {
        return Err(tun_err("TUNSETIFF", std::io::Error::last_os_error()));
    }
    Ok(file)
}
