//! Deterministic names for the host objects banger creates, derived from an object uid.
//!
//! # Uids
//! An object uid (see [`ObjectUid`]) is 1 to 64 characters, each a lowercase hex digit
//! or `-` (a UUID in its usual text form qualifies), with at least one hex digit. The
//! charset is checked once, when an [`ObjectUid`] is parsed, so every name built from it
//! is safe to use as a file name, an interface name or inside an nftables comment.
//!
//! # Names
//! Interface names are limited to 15 bytes (`IFNAMSIZ` is 16 with the NUL), so a tap
//! cannot carry the whole uid. Its name is [`TAP_PREFIX`] followed by the first 12 hex
//! digits of SHA-256 of the uid text. Hashing (rather than taking a prefix of the uid)
//! keeps names distinct for uids that share a prefix, such as time-ordered UUIDv7s made
//! in the same millisecond; 48 bits leave collisions negligible at banger's scale. The
//! guest MAC is `02:` + the next 5 bytes of the same digest (locally administered,
//! unicast). A name cannot be reversed to its uid: garbage collection computes the names
//! of every known uid and treats any other name carrying banger's prefix as garbage.
//!
//! NAT rules carry the full uid in their comment ([`nat_rule_comment`]), and a VM's
//! directory is named by the bare uid (`<state_dir>/vms/<uid>`,
//! [`crate::config::DaemonConfig::vm_dir`]), so both map back to their VM: a directory
//! name is read back with [`ObjectUid::parse`].

use std::fmt;

use sha2::{Digest, Sha256};

/// Prefix of every tap device banger creates (`bgt` + 12 hex digits).
pub const TAP_PREFIX: &str = "bgt";
/// Name of the nftables table (family `ip`) that holds all of banger's rules.
pub const NFT_TABLE: &str = "banger";
/// Chain in [`NFT_TABLE`] holding one masquerade rule per VM with NAT.
pub const NFT_POSTROUTING_CHAIN: &str = "postrouting";
/// Chain in [`NFT_TABLE`] accepting traffic from and to the bridge.
pub const NFT_FORWARD_CHAIN: &str = "forward";
/// Chain in [`NFT_TABLE`] deciding what guests may send to the host's own addresses.
pub const NFT_INPUT_CHAIN: &str = "input";
/// The cloud metadata address, which no guest may reach.
pub const METADATA_ADDRESS: &str = "169.254.169.254";
/// Prefix of the comment on a VM's NAT rule; the uid follows.
pub const NAT_COMMENT_PREFIX: &str = "banger-vm:";
/// Longest interface name the kernel accepts (`IFNAMSIZ - 1`).
pub const IFNAME_MAX: usize = 15;

const TAP_HEX_LEN: usize = 12;
const UID_MAX: usize = 64;

/// Why a uid or interface name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The uid is empty, too long, or has a character outside `[0-9a-f-]`.
    #[error("invalid object uid {uid:?}: {reason}")]
    InvalidUid {
        /// The rejected text.
        uid: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The interface name is empty, too long, or has an unsafe character.
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidIfName {
        /// The rejected text.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A validated object uid: 1..=64 characters of `[0-9a-f-]`, at least one hex digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectUid(String);

impl ObjectUid {
    /// Validates `text` as an object uid.
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let invalid = |reason| NameError::InvalidUid {
            uid: text.to_string(),
            reason,
        };
        if text.is_empty() {
            return Err(invalid("empty"));
        }
        if text.len() > UID_MAX {
            return Err(invalid("longer than 64 characters"));
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-')
        {
            return Err(invalid("only lowercase hex digits and '-' are allowed"));
        }
        if !text.bytes().any(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("no hex digit"));
        }
        Ok(ObjectUid(text.to_string()))
    }

    /// The uid text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

impl fmt::Display for ObjectUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The tap device name of the VM with this uid: `bgt` + 12 hex digits (15 bytes).
pub fn tap_name(uid: &ObjectUid) -> String {
    let digest = uid.digest();
    let hex = hex::encode(&digest[..TAP_HEX_LEN / 2]);
    format!("{TAP_PREFIX}{hex}")
}

/// Whether `name` has the shape of a banger tap name (prefix + exactly 12 hex digits).
pub fn is_banger_tap(name: &str) -> bool {
    name.strip_prefix(TAP_PREFIX).is_some_and(|rest| {
        rest.len() == TAP_HEX_LEN
            && rest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The guest MAC address of the VM with this uid, as six bytes: `02` (locally
/// administered, unicast) followed by five bytes of the uid's digest.
pub fn mac_bytes(uid: &ObjectUid) -> [u8; 6] {
    mac_bytes_of(uid.as_str())
}

/// [`mac_bytes`] of a uid given as text (the digest needs no validation).
fn mac_bytes_of(uid: &str) -> [u8; 6] {
    let digest: [u8; 32] = Sha256::digest(uid.as_bytes()).into();
    let mut mac = [0u8; 6];
    mac[0] = 0x02;
    mac[1..].copy_from_slice(&digest[TAP_HEX_LEN / 2..TAP_HEX_LEN / 2 + 5]);
    mac
}

/// [`mac_address`] of a uid given as text, as the store records it with the lease.
pub fn mac_address_of(uid: &str) -> String {
    format_mac(mac_bytes_of(uid))
}

fn format_mac(bytes: [u8; 6]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The guest MAC address of the VM with this uid, as `02:xx:xx:xx:xx:xx`.
pub fn mac_address(uid: &ObjectUid) -> String {
    format_mac(mac_bytes(uid))
}

/// The comment on the NAT rule of the VM with this uid: `banger-vm:<uid>`.
pub fn nat_rule_comment(uid: &ObjectUid) -> String {
    format!("{NAT_COMMENT_PREFIX}{uid}")
}

/// The uid in a NAT rule comment made by [`nat_rule_comment`], if it is one.
pub fn uid_from_nat_comment(comment: &str) -> Option<ObjectUid> {
    comment
        .strip_prefix(NAT_COMMENT_PREFIX)
        .and_then(|uid| ObjectUid::parse(uid).ok())
}

/// Checks that `name` is a usable interface name (for example a configured bridge):
/// 1..=15 bytes of ASCII letters, digits, `-`, `_` or `.`, and not `.` or `..`.
///
/// This charset also makes the name safe to quote inside an nftables ruleset.
pub fn validate_ifname(name: &str) -> Result<(), NameError> {
    let invalid = |reason| NameError::InvalidIfName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > IFNAME_MAX {
        return Err(invalid("longer than 15 bytes (IFNAMSIZ)"));
    }
    if name == "." || name == ".." {
        return Err(invalid("reserved"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(invalid(
            "only ASCII letters, digits, '-', '_' and '.' are allowed",
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn uid(s: &str) -> ObjectUid {
        ObjectUid::parse(s).unwrap()
    }

    #[test]
    fn uid_validation() {
        assert!(ObjectUid::parse("0b6d8f1e-4a2c-4f7e-9d51-3c2a1b0e9f88").is_ok());
        assert!(ObjectUid::parse("abc123").is_ok());
        assert!(ObjectUid::parse("").is_err());
        assert!(ObjectUid::parse("ABC").is_err());
        assert!(ObjectUid::parse("a b").is_err());
        assert!(ObjectUid::parse("a\"b").is_err());
        assert!(ObjectUid::parse("../etc").is_err());
        assert!(ObjectUid::parse("---").is_err());
        assert!(ObjectUid::parse(&"a".repeat(65)).is_err());
        assert!(ObjectUid::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn tap_name_is_deterministic_short_and_recognised() {
        let a = uid("0b6d8f1e-4a2c-4f7e-9d51-3c2a1b0e9f88");
        let name = tap_name(&a);
        assert_eq!(name, tap_name(&a.clone()));
        assert!(name.len() <= IFNAME_MAX, "{name}");
        assert_eq!(name.len(), 15);
        assert!(name.starts_with("bgt"));
        assert!(is_banger_tap(&name));
        assert!(validate_ifname(&name).is_ok());
    }

    #[test]
    fn shared_prefix_uids_get_distinct_names() {
        let a = uid("01890a5d-ac96-774b-bcce-b302099a8057");
        let b = uid("01890a5d-ac96-774b-bcce-b302099a8058");
        assert_ne!(tap_name(&a), tap_name(&b));
        assert_ne!(mac_address(&a), mac_address(&b));
    }

    #[test]
    fn is_banger_tap_rejects_other_names() {
        assert!(!is_banger_tap("eth0"));
        assert!(!is_banger_tap("bgt"));
        assert!(!is_banger_tap("bgt0123456789a"));
        assert!(!is_banger_tap("bgt0123456789abc"));
        assert!(!is_banger_tap("bgt0123456789AB"));
        assert!(!is_banger_tap("xbgt0123456789a"));
        assert!(is_banger_tap("bgt0123456789ab"));
    }

    #[test]
    fn mac_is_local_unicast_and_stable() {
        let a = uid("deadbeef");
        let mac = mac_bytes(&a);
        assert_eq!(mac[0], 0x02);
        assert_eq!(mac[0] & 0x01, 0, "unicast");
        assert_eq!(mac[0] & 0x02, 0x02, "locally administered");
        let text = mac_address(&a);
        assert_eq!(text.len(), 17);
        assert!(text.starts_with("02:"));
        assert_eq!(text, mac_address(&uid("deadbeef")));
        let parts: Vec<u8> = text
            .split(':')
            .map(|p| u8::from_str_radix(p, 16).unwrap())
            .collect();
        assert_eq!(parts, mac.to_vec());
    }

    #[test]
    fn comments_and_dirs_round_trip() {
        let a = uid("0b6d8f1e-4a2c-4f7e-9d51-3c2a1b0e9f88");
        assert_eq!(
            nat_rule_comment(&a),
            "banger-vm:0b6d8f1e-4a2c-4f7e-9d51-3c2a1b0e9f88"
        );
        assert_eq!(uid_from_nat_comment(&nat_rule_comment(&a)), Some(a.clone()));
        assert_eq!(uid_from_nat_comment("other"), None);
        assert_eq!(uid_from_nat_comment("banger-vm:X"), None);
        // A VM directory is named by the bare uid, read back by parsing it.
        assert_eq!(ObjectUid::parse(a.as_str()), Ok(a));
        assert!(ObjectUid::parse("images").is_err());
    }

    #[test]
    fn ifname_validation() {
        assert!(validate_ifname("banger0").is_ok());
        assert!(validate_ifname("br-test_1.2").is_ok());
        assert!(validate_ifname("").is_err());
        assert!(validate_ifname("a-very-long-name0").is_err());
        assert!(validate_ifname("br\"0").is_err());
        assert!(validate_ifname("br 0").is_err());
        assert!(validate_ifname("br/0").is_err());
        assert!(validate_ifname("..").is_err());
    }
}
