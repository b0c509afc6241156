//! Byte sizes such as `512MiB`, `1Gi`, `2G` (binary multiples).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A size in bytes. Canonical form is the integer number of bytes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// One mebibyte.
    pub const MIB: u64 = 1024 * 1024;

    /// The size in whole MiB (rounded down).
    pub fn mib(self) -> u64 {
        self.0 / Self::MIB
    }
}
