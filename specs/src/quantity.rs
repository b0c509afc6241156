//! Byte sizes such as `512MiB`, `1Gi`, `2G`.
//!
//! Every suffix is a **binary** multiple, as in QEMU and Firecracker: `2G` is two GiB
//! (2 × 1024³ bytes), never two billion bytes.
//!
//! | suffix              | factor  |
//! |---------------------|---------|
//! | none, `B`           | 1 (bytes) |
//! | `K`, `Ki`, `KiB`    | 1024    |
//! | `M`, `Mi`, `MiB`    | 1024²   |
//! | `G`, `Gi`, `GiB`    | 1024³   |
//! | `T`, `Ti`, `TiB`    | 1024⁴   |
//!
//! The number is a whole, positive decimal integer; a space between number and suffix
//! is allowed. Zero, negative numbers, fractions, unknown suffixes (`MB`, `g`) and
//! values above `u64::MAX` bytes are errors. A YAML integer (`memory: 536870912`) is a
//! number of bytes.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// A size in bytes. Canonical form is the integer number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

/// Why a size could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Nothing was given.
    #[error("empty size; write a number with an optional binary suffix such as `512MiB`")]
    Empty,
    /// A minus sign.
    #[error("size `{0}` is negative")]
    Negative(String),
    /// A decimal point or exponent.
    #[error("size `{0}` is not a whole number; write e.g. `1536MiB` instead of `1.5GiB`")]
    Fractional(String),
    /// Zero bytes.
    #[error("size `{0}` is zero")]
    Zero(String),
    /// More than `u64::MAX` bytes.
    #[error("size `{0}` is too large")]
    Overflow(String),
    /// Not a number followed by a known suffix.
    #[error(
        "size `{0}` is not a number with a suffix; use bytes or one of B, K, Ki, KiB, M, Mi, MiB, G, Gi, GiB, T, Ti, TiB (all binary: 1G = 1GiB)"
    )]
    Garbage(String),
}

impl ByteSize {
    /// One kibibyte.
    pub const KIB: u64 = 1024;
    /// One mebibyte.
    pub const MIB: u64 = 1024 * 1024;
    /// One gibibyte.
    pub const GIB: u64 = 1024 * 1024 * 1024;
    /// One tebibyte.
    pub const TIB: u64 = 1024 * 1024 * 1024 * 1024;

    /// The size in whole MiB (rounded down).
    pub fn mib(self) -> u64 {
        self.0 / Self::MIB
    }

    /// The number of bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// A size of `n` MiB (saturating).
    pub const fn from_mib(n: u64) -> ByteSize {
        ByteSize(n.saturating_mul(Self::MIB))
    }

    /// Parses a size written as text (see the module docs for the accepted forms).
    pub fn parse(text: &str) -> Result<ByteSize, SizeError> {
        let original = text;
        let text = text.trim();
        if text.is_empty() {
            return Err(SizeError::Empty);
        }
        if text.starts_with('-') {
            return Err(SizeError::Negative(original.to_string()));
        }
        let digits_end = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, rest) = text.split_at(digits_end);
        if number.is_empty() {
            return Err(SizeError::Garbage(original.to_string()));
        }
        if rest.starts_with(['.', 'e', 'E']) && rest[1..].starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(SizeError::Fractional(original.to_string()));
        }
        let factor = match rest.trim_start() {
            "" | "B" => 1,
            "K" | "Ki" | "KiB" => Self::KIB,
            "M" | "Mi" | "MiB" => Self::MIB,
            "G" | "Gi" | "GiB" => Self::GIB,
            "T" | "Ti" | "TiB" => Self::TIB,
            _ => return Err(SizeError::Garbage(original.to_string())),
        };
        let n: u64 = number
            .parse()
            .map_err(|_| SizeError::Overflow(original.to_string()))?;
        let bytes = n
            .checked_mul(factor)
            .ok_or_else(|| SizeError::Overflow(original.to_string()))?;
        if bytes == 0 {
            return Err(SizeError::Zero(original.to_string()));
        }
        Ok(ByteSize(bytes))
    }

    /// Builds a size from a YAML/JSON integer number of bytes.
    pub fn from_int(n: i128) -> Result<ByteSize, SizeError> {
        if n < 0 {
            return Err(SizeError::Negative(n.to_string()));
        }
        if n == 0 {
            return Err(SizeError::Zero(n.to_string()));
        }
        u64::try_from(n)
            .map(ByteSize)
            .map_err(|_| SizeError::Overflow(n.to_string()))
    }
}

impl fmt::Display for ByteSize {
    /// The largest binary unit that divides the size exactly: `512MiB`, `2GiB`, `1000B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (factor, unit) in [
            (Self::TIB, "TiB"),
            (Self::GIB, "GiB"),
            (Self::MIB, "MiB"),
            (Self::KIB, "KiB"),
        ] {
            if n != 0 && n.is_multiple_of(factor) {
                return write!(f, "{}{unit}", n / factor);
            }
        }
        write!(f, "{n}B")
    }
}

impl std::str::FromStr for ByteSize {
    type Err = SizeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ByteSize::parse(s)
    }
}

/// Accepts the canonical integer and, for convenience, the user's text forms.
impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Int(n) => ByteSize::from_int(i128::from(n)).map_err(serde::de::Error::custom),
            Raw::Text(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl schemars::JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A size: a positive integer number of bytes, or a string such as `512MiB`, `1Gi`, `2G`. All suffixes are binary (K/Ki/KiB = 1024, M/Mi/MiB = 1024², G/Gi/GiB = 1024³, T/Ti/TiB = 1024⁴).",
            "oneOf": [
                { "type": "integer", "minimum": 1 },
                { "type": "string", "pattern": "^ *[0-9]+ ?(B|K|Ki|KiB|M|Mi|MiB|G|Gi|GiB|T|Ti|TiB)? *$" }
            ]
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn every_suffix_is_binary() {
        let cases = [
            ("1", 1),
            ("4096", 4096),
            ("1K", 1024),
            ("1Ki", 1024),
            ("1KiB", 1024),
            ("512M", 512 * ByteSize::MIB),
            ("512Mi", 512 * ByteSize::MIB),
            ("512MiB", 512 * ByteSize::MIB),
            ("1024Mi", ByteSize::GIB),
            ("2G", 2 * ByteSize::GIB),
            ("1Gi", ByteSize::GIB),
            ("1GiB", ByteSize::GIB),
            ("1 GiB", ByteSize::GIB),
            ("3T", 3 * ByteSize::TIB),
            ("1TiB", ByteSize::TIB),
            (" 2G ", 2 * ByteSize::GIB),
        ];
        for (text, bytes) in cases {
            assert_eq!(ByteSize::parse(text), Ok(ByteSize(bytes)), "{text}");
        }
    }

    #[test]
    fn bad_sizes_are_rejected_with_the_reason() {
        assert_eq!(ByteSize::parse(""), Err(SizeError::Empty));
        assert!(matches!(ByteSize::parse("0"), Err(SizeError::Zero(_))));
        assert!(matches!(ByteSize::parse("0GiB"), Err(SizeError::Zero(_))));
        assert!(matches!(
            ByteSize::parse("-1G"),
            Err(SizeError::Negative(_))
        ));
        assert!(matches!(
            ByteSize::parse("1.5G"),
            Err(SizeError::Fractional(_))
        ));
        assert!(matches!(
            ByteSize::parse("1e9"),
            Err(SizeError::Fractional(_))
        ));
        assert!(matches!(
            ByteSize::parse("99999999999999999999"),
            Err(SizeError::Overflow(_))
        ));
        assert!(matches!(
            ByteSize::parse("17179869184GiB"),
            Err(SizeError::Overflow(_))
        ));
        for garbage in [
            "lots", "512MB", "512mb", "1g", "G", "12 34", "0x10", "1GiBs", "1b",
        ] {
            assert!(
                matches!(ByteSize::parse(garbage), Err(SizeError::Garbage(_))),
                "{garbage}"
            );
        }
    }

    #[test]
    fn integers_are_bytes() {
        assert_eq!(ByteSize::from_int(1024), Ok(ByteSize(1024)));
        assert!(matches!(ByteSize::from_int(0), Err(SizeError::Zero(_))));
        assert!(matches!(
            ByteSize::from_int(-5),
            Err(SizeError::Negative(_))
        ));
        assert!(matches!(
            ByteSize::from_int(i128::from(u64::MAX) + 1),
            Err(SizeError::Overflow(_))
        ));
    }

    #[test]
    fn display_uses_the_largest_exact_unit() {
        assert_eq!(ByteSize(512 * ByteSize::MIB).to_string(), "512MiB");
        assert_eq!(ByteSize(2 * ByteSize::GIB).to_string(), "2GiB");
        assert_eq!(ByteSize(1536 * ByteSize::MIB).to_string(), "1536MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
        for n in [1u64, 1000, 4096, 3 * ByteSize::GIB, 5 * ByteSize::TIB] {
            let text = ByteSize(n).to_string();
            assert_eq!(ByteSize::parse(&text), Ok(ByteSize(n)), "{text}");
        }
    }

    #[test]
    fn serde_accepts_integer_and_text() {
        let from_int: ByteSize = serde_json::from_str("1048576").unwrap();
        let from_text: ByteSize = serde_json::from_str("\"1MiB\"").unwrap();
        assert_eq!(from_int, from_text);
        assert_eq!(serde_json::to_string(&from_int).unwrap(), "1048576");
        assert!(serde_json::from_str::<ByteSize>("0").is_err());
    }
}
