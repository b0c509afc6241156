//! IPv4 subnets of the VM bridge and guest address allocation (pure).
//!
//! The bridge's subnet is an [`Ipv4Cidr`]. Its first host address (`.1` in a /24) is the
//! gateway, held by the bridge; the usable pool for guests is every other host address
//! (the network and broadcast addresses are never handed out). The lease table itself
//! lives in the engine's store; [`next_free`] picks the lowest free address of a pool.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Why a CIDR or an address was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The text is not `a.b.c.d/len`.
    #[error("invalid CIDR {text:?}: {reason}")]
    Parse {
        /// The rejected text.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The address is not inside the subnet.
    #[error("{ip} is not inside {cidr}")]
    Outside {
        /// The address.
        ip: Ipv4Addr,
        /// The subnet.
        cidr: Ipv4Cidr,
    },
    /// The address is the subnet's network, gateway or broadcast address.
    #[error("{ip} is the {role} address of {cidr} and cannot be given to a VM")]
    Reserved {
        /// The address.
        ip: Ipv4Addr,
        /// `network`, `gateway` or `broadcast`.
        role: &'static str,
        /// The subnet.
        cidr: Ipv4Cidr,
    },
}

/// An IPv4 subnet whose prefix is 8..=29 bits, so it has a gateway and at least one
/// guest address. Host bits of the written address must be zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// Builds a subnet, checking the prefix range and that host bits are zero.
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Self, CidrError> {
        let text = format!("{network}/{prefix}");
        if !(8..=29).contains(&prefix) {
            return Err(CidrError::Parse {
                text,
                reason: "prefix length must be between 8 and 29".into(),
            });
        }
        let mask = mask_bits(prefix);
        if u32::from(network) & !mask != 0 {
            return Err(CidrError::Parse {
                text,
                reason: format!(
                    "host bits are set (did you mean {}/{prefix}?)",
                    Ipv4Addr::from(u32::from(network) & mask)
                ),
            });
        }
        Ok(Ipv4Cidr { network, prefix })
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The netmask, e.g. `255.255.255.0` for a /24.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask_bits(self.prefix))
    }

    /// The broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask_bits(self.prefix))
    }

    /// The gateway: the first host address, held by the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// Whether `ip` is inside the subnet (any address, reserved ones included).
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask_bits(self.prefix) == u32::from(self.network)
    }

    /// Checks that `ip` may be given to a guest: inside, and not network, gateway or
    /// broadcast.
    pub fn check_guest_ip(&self, ip: Ipv4Addr) -> Result<(), CidrError> {
        if !self.contains(ip) {
            return Err(CidrError::Outside { ip, cidr: *self });
        }
        let role = if ip == self.network {
            Some("network")
        } else if ip == self.gateway() {
            Some("gateway")
        } else if ip == self.broadcast() {
            Some("broadcast")
        } else {
            None
        };
        match role {
            Some(role) => Err(CidrError::Reserved {
                ip,
                role,
                cidr: *self,
            }),
            None => Ok(()),
        }
    }

    /// The guest address pool: every host address but the gateway, in order.
    pub fn pool(&self) -> GuestPool {
        GuestPool {
            first: u32::from(self.gateway()) + 1,
            last: u32::from(self.broadcast()) - 1,
        }
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parse_err = |reason: &str| CidrError::Parse {
            text: text.to_string(),
            reason: reason.to_string(),
        };
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| parse_err("expected ADDRESS/PREFIX, e.g. 172.30.0.0/24"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| parse_err("the address is not an IPv4 address"))?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) || prefix.len() > 2 {
            return Err(parse_err("the prefix length is not a number"));
        }
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| parse_err("the prefix length is not a number"))?;
        Ipv4Cidr::new(addr, prefix)
    }
}

impl Default for Ipv4Cidr {
    /// `172.30.0.0/24`, banger's default bridge subnet.
    fn default() -> Self {
        Ipv4Cidr {
            network: Ipv4Addr::new(172, 30, 0, 0),
            prefix: 24,
        }
    }
}

fn mask_bits(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

/// The guest addresses of a subnet, lowest first (see [`Ipv4Cidr::pool`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestPool {
    first: u32,
    last: u32,
}

impl GuestPool {
    /// Number of addresses in the pool.
    pub fn len(&self) -> usize {
        if self.first > self.last {
            return 0;
        }
        usize::try_from(self.last - self.first).map_or(usize::MAX, |n| n.saturating_add(1))
    }

    /// Whether the pool has no address (never, for a valid [`Ipv4Cidr`]).
    pub fn is_empty(&self) -> bool {
        self.first > self.last
    }

    /// The addresses, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        (self.first..=self.last).map(Ipv4Addr::from)
    }
}

/// The lowest address of `pool` not in `taken`, or `None` when the pool is exhausted.
pub fn next_free(pool: &GuestPool, taken: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    pool.iter().find(|ip| !taken.contains(ip))
}

/// The kernel command-line argument that tells banger's guest init its address:
/// `ip=<ip>::<gateway>:<netmask>::eth0:off`, plus `:<dns>` when a nameserver is given.
///
/// The fields follow the kernel's `ip=` syntax (client, server, gateway, netmask,
/// hostname, device, autoconf[, dns0]); the server and hostname fields stay empty.
pub fn kernel_ip_arg(ip: Ipv4Addr, cidr: &Ipv4Cidr, nameserver: Option<Ipv4Addr>) -> String {
    let base = format!(
        "ip={ip}::{gw}:{mask}::eth0:off",
        gw = cidr.gateway(),
        mask = cidr.netmask()
    );
    match nameserver {
        Some(dns) => format!("{base}:{dns}"),
        None => base,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_describes_a_24() {
        let c = cidr("172.30.0.0/24");
        assert_eq!(c, Ipv4Cidr::default());
        assert_eq!(c.to_string(), "172.30.0.0/24");
        assert_eq!(c.gateway(), Ipv4Addr::new(172, 30, 0, 1));
        assert_eq!(c.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(c.broadcast(), Ipv4Addr::new(172, 30, 0, 255));
        let pool = c.pool();
        assert_eq!(pool.len(), 253);
        assert_eq!(pool.iter().next(), Some(Ipv4Addr::new(172, 30, 0, 2)));
        assert_eq!(pool.iter().last(), Some(Ipv4Addr::new(172, 30, 0, 254)));
    }

    #[test]
    fn rejects_bad_cidrs() {
        for bad in [
            "172.30.0.0",
            "172.30.0.0/",
            "172.30.0.0/33",
            "172.30.0.0/30",
            "172.30.0.0/4",
            "172.30.0.1/24",
            "172.30.0/24",
            "x/24",
            "172.30.0.0/+4",
            "172.30.0.0/024x",
        ] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad} accepted");
        }
        let err = "172.30.0.1/24".parse::<Ipv4Cidr>().unwrap_err().to_string();
        assert!(err.contains("172.30.0.0/24"), "{err}");
    }

    #[test]
    fn smallest_subnet_has_one_guest() {
        let c = cidr("10.0.0.8/29");
        assert_eq!(c.pool().len(), 5);
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 0, 0, 9));
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 0, 0, 15));
    }

    #[test]
    fn static_ip_checks() {
        let c = cidr("172.30.0.0/24");
        assert!(c.check_guest_ip(Ipv4Addr::new(172, 30, 0, 7)).is_ok());
        assert!(matches!(
            c.check_guest_ip(Ipv4Addr::new(172, 30, 1, 7)),
            Err(CidrError::Outside { .. })
        ));
        for (ip, role) in [
            (Ipv4Addr::new(172, 30, 0, 0), "network"),
            (Ipv4Addr::new(172, 30, 0, 1), "gateway"),
            (Ipv4Addr::new(172, 30, 0, 255), "broadcast"),
        ] {
            match c.check_guest_ip(ip) {
                Err(CidrError::Reserved { role: r, .. }) => assert_eq!(r, role),
                other => panic!("{ip}: {other:?}"),
            }
        }
    }

    #[test]
    fn next_free_picks_lowest_gap_and_reports_exhaustion() {
        let c = cidr("10.1.0.0/29");
        let pool = c.pool();
        let mut taken = BTreeSet::new();
        assert_eq!(next_free(&pool, &taken), Some(Ipv4Addr::new(10, 1, 0, 2)));
        taken.insert(Ipv4Addr::new(10, 1, 0, 2));
        taken.insert(Ipv4Addr::new(10, 1, 0, 4));
        assert_eq!(next_free(&pool, &taken), Some(Ipv4Addr::new(10, 1, 0, 3)));
        for ip in pool.iter() {
            taken.insert(ip);
        }
        assert_eq!(next_free(&pool, &taken), None);
        // Addresses outside the pool in `taken` do not matter.
        let mut other = BTreeSet::new();
        other.insert(Ipv4Addr::new(192, 168, 0, 2));
        assert_eq!(next_free(&pool, &other), Some(Ipv4Addr::new(10, 1, 0, 2)));
    }

    #[test]
    fn kernel_ip_argument_forms() {
        let c = cidr("172.30.0.0/24");
        let ip = Ipv4Addr::new(172, 30, 0, 5);
        assert_eq!(
            kernel_ip_arg(ip, &c, None),
            "ip=172.30.0.5::172.30.0.1:255.255.255.0::eth0:off"
        );
        assert_eq!(
            kernel_ip_arg(ip, &c, Some(Ipv4Addr::new(1, 1, 1, 1))),
            "ip=172.30.0.5::172.30.0.1:255.255.255.0::eth0:off:1.1.1.1"
        );
        let c16 = cidr("10.20.0.0/16");
        assert_eq!(
            kernel_ip_arg(Ipv4Addr::new(10, 20, 3, 4), &c16, None),
            "ip=10.20.3.4::10.20.0.1:255.255.0.0::eth0:off"
        );
    }
}
