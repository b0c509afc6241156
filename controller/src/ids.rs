//! Fresh object uids: 32 hex characters from the OS random number generator. Every
//! host object banger makes for an object is named from its uid
//! ([`crate::host::names`]).

/// A fresh object uid.
pub fn new_uid() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}
