//! VM networking on the host: one bridge, one tap per VM, NAT through nftables.
//!
//! - [`cidr`]: the bridge subnet, guest address pool and the kernel `ip=` argument (pure).
//! - [`bridge`]: the bridge, managed over rtnetlink ([`Netlink`]).
//! - [`tap`]: persistent taps made through `/dev/net/tun`, attached to the bridge over
//!   rtnetlink.
//! - [`nat`]: per-VM masquerade rules in banger's own nftables table, and what guests
//!   may send to the host itself.
//! - [`guest_filter`]: per-VM rules on the bridge: a guest's own MAC and address only,
//!   no frame to or from another guest unless both left isolation.
//! - [`neighbour`]: the host's ARP entry for each guest, known before it boots.
//! - [`vm`]: one VM's network objects as the Linux runtime's steps make, probe and
//!   remove them, and the garbage finder.
//!
//! Everything here acts on the network namespace of the *calling thread* (netlink
//! sockets, `/proc/sys/net` and child processes take the namespace of the thread that
//! opens or spawns them; the threads of a tokio runtime, its blocking pool included,
//! are spawned inside the namespace the runtime was started in). The daemon runs
//! entirely inside one namespace; tests enter a namespace they created with `setns` on
//! a dedicated thread and run a current-thread tokio runtime there.

use std::io;
use std::path::PathBuf;

use crate::host::names::{self, NameError};

pub mod bridge;
pub mod cidr;
pub mod guest_filter;
pub mod nat;
pub mod neighbour;
pub mod tap;
pub mod vm;

pub use cidr::Ipv4Cidr;

/// Why a network operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Opening the rtnetlink socket failed.
    #[error("cannot open an rtnetlink socket: {0}")]
    Connect(#[source] io::Error),
    /// A netlink request failed.
    #[error("{step} on {device}: {source}")]
    Netlink {
        /// What banger was doing, e.g. `create bridge`.
        step: &'static str,
        /// The interface concerned.
        device: String,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// A tun/tap ioctl or `/dev/net/tun` failed.
    #[error("{step} on tap {device}: {source}")]
    Tun {
        /// What banger was doing, e.g. `TUNSETIFF`.
        step: &'static str,
        /// The tap concerned.
        device: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The device exists but is of another kind (e.g. a bridge name taken by a veth).
    #[error("{device} exists but is not a {expected}")]
    WrongKind {
        /// The interface concerned.
        device: String,
        /// What banger expected it to be.
        expected: &'static str,
    },
    /// A device banger needs is missing.
    #[error("{device} does not exist")]
    Missing {
        /// The interface concerned.
        device: String,
    },
    /// A name was invalid.
    #[error(transparent)]
    Name(#[from] NameError),
    /// Writing a sysctl failed.
    #[error("cannot write {path}: {source}")]
    Sysctl {
        /// The `/proc/sys` path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// The bridge VMs are attached to: its name and subnet (the bridge holds the gateway).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    name: String,
    cidr: Ipv4Cidr,
}

impl BridgeConfig {
    /// Builds a configuration, validating the interface name.
    pub fn new(name: &str, cidr: Ipv4Cidr) -> Result<Self, NameError> {
        names::validate_ifname(name)?;
        Ok(BridgeConfig {
            name: name.to_string(),
            cidr,
        })
    }

    /// The bridge's interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bridge's subnet.
    pub fn cidr(&self) -> &Ipv4Cidr {
        &self.cidr
    }
}

impl Default for BridgeConfig {
    /// `banger0` on `172.30.0.0/24` (host address `172.30.0.1`).
    fn default() -> Self {
        BridgeConfig {
            name: "banger0".to_string(),
            cidr: Ipv4Cidr::default(),
        }
    }
}

/// An rtnetlink connection bound to the calling thread's network namespace.
///
/// The connection's I/O task is spawned on the current tokio runtime, so this must be
/// created inside one.
#[derive(Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// Opens a connection in the calling thread's network namespace.
    pub fn connect() -> Result<Self, NetError> {
        let (connection, handle, _messages) =
            rtnetlink::new_connection().map_err(NetError::Connect)?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    pub(crate) fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Netlink")
    }
}

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Turns IPv4 forwarding on in the calling thread's network namespace (idempotent).
/// The sysctl file is read and written through [`tokio::fs`] (a thread of the
/// runtime's blocking pool, spawned inside the namespace the runtime was started in).
pub async fn enable_ipv4_forwarding() -> Result<(), NetError> {
    if ipv4_forwarding_enabled().await? {
        return Ok(());
    }
    tokio::fs::write(IP_FORWARD, b"1\n")
        .await
        .map_err(|source| NetError::Sysctl {
            path: PathBuf::from(IP_FORWARD),
            source,
        })
}

/// Whether IPv4 forwarding is on in the calling thread's network namespace.
pub async fn ipv4_forwarding_enabled() -> Result<bool, NetError> {
    let text = tokio::fs::read_to_string(IP_FORWARD)
        .await
        .map_err(|source| NetError::Sysctl {
            path: PathBuf::from(IP_FORWARD),
            source,
        })?;
    Ok(text.trim() == "1")
}

/// The answer to an idempotent delete of `device`: "not found" counts as done, any
/// other error is the `step` that failed.
pub(crate) fn deleted(
    answer: Result<(), rtnetlink::Error>,
    step: &'static str,
    device: &str,
) -> Result<(), NetError> {
    match answer {
        Ok(()) => Ok(()),
        Err(err) if is_not_found(&err) => Ok(()),
        Err(source) => Err(NetError::Netlink {
            step,
            device: device.to_string(),
            source,
        }),
    }
}

/// Whether a netlink error is the kernel's "no such device" (or a missing address).
pub(crate) fn is_not_found(err: &rtnetlink::Error) -> bool {
    match err {
        rtnetlink::Error::NetlinkError(msg) => {
            let code = msg.raw_code().abs();
            code == libc::ENODEV || code == libc::ENOENT || code == libc::EADDRNOTAVAIL
        }
        _ => false,
    }
}
