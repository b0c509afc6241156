//! Fresh object uids: 32 hex characters that sort in the order this daemon made them.
//! Every host object banger makes for an object is named from its uid
//! ([`crate::host::names`], which hashes it: uids that share a prefix still get
//! distinct names).
//!
//! Layout (like a UUIDv7 with a counter): 12 hex digits of the Unix time in
//! milliseconds, 4 of a per-process counter, 16 from the OS random number generator.
//! The random part alone makes two uids equal with negligible probability; the time and
//! the counter make uids made one after the other sort one after the other. That is
//! what the store's indexes keyed by uid (the journal's, the handles', the leases') want:
//! the objects of one apply are reconciled in the order they were made, so their rows
//! land on neighbouring index pages instead of one page each, and each transaction
//! writes fewer pages to the log.

use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Counts the uids made by this process (wrapping): orders uids of one millisecond.
static COUNTER: AtomicU16 = AtomicU16::new(0);

/// A fresh object uid.
pub fn new_uid() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    uid_from(
        millis,
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand::random(),
    )
}

/// The uid for a time (its low 48 bits), a counter value and random bits.
fn uid_from(millis: u128, counter: u16, random: u64) -> String {
    let time = millis & 0xffff_ffff_ffff;
    format!("{time:012x}{counter:04x}{random:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::names::ObjectUid;

    #[test]
    fn uids_are_valid_distinct_and_sort_in_the_order_they_were_made() {
        let uids: Vec<String> = (0..1000).map(|_| new_uid()).collect();
        for uid in &uids {
            assert_eq!(uid.len(), 32, "{uid}");
            assert!(ObjectUid::parse(uid).is_ok(), "{uid}");
        }
        let mut sorted = uids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), uids.len(), "all distinct");
        // Within this test's thread, only a counter wrap could break the order, and
        // 1,000 uids cross at most one wrap: each pair in a row is ordered but that one.
        let out_of_order = uids.windows(2).filter(|w| w[0] >= w[1]).count();
        assert!(out_of_order <= 1, "{out_of_order} pairs out of order");
    }

    #[test]
    fn the_layout_is_time_counter_random() {
        assert_eq!(
            uid_from(0x0123_4567_89ab, 0x00cd, 0xfedc_ba98_7654_3210),
            "0123456789ab00cdfedcba9876543210"
        );
        assert_eq!(
            uid_from(u128::MAX, u16::MAX, 0),
            "ffffffffffffffff0000000000000000",
            "only 48 bits of time"
        );
    }
}
