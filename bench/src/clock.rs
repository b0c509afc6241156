//! Wall-clock instants shared with the daemon.
//!
//! The daemon stamps journal rows, events and condition transitions with RFC 3339 UTC
//! times (nanosecond digits); the harness reads the same host clock, so the two can be
//! subtracted. Durations are reported in milliseconds as `f64`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::{BenchError, Result};

/// Parses an RFC 3339 time the daemon wrote.
pub fn parse(text: &str) -> Result<SystemTime> {
    let t = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| BenchError::Unexpected(format!("time {text:?} from the daemon: {e}")))?;
    let nanos = t.unix_timestamp_nanos();
    let since = u64::try_from(nanos)
        .map(Duration::from_nanos)
        .map_err(|_| BenchError::Unexpected(format!("time {text:?} is before 1970")))?;
    Ok(UNIX_EPOCH + since)
}

/// `later - earlier` in milliseconds; negative when `later` is earlier.
pub fn ms_between(earlier: SystemTime, later: SystemTime) -> f64 {
    match later.duration_since(earlier) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -e.duration().as_secs_f64() * 1000.0,
    }
}

/// Now, as RFC 3339 UTC (for the report's date).
pub fn now_rfc3339() -> String {
    let now = OffsetDateTime::now_utc();
    now.format(&Rfc3339)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_daemons_times() {
        let a = parse("2026-11-30T10:00:00.25Z").expect("parse");
        let b = parse("2026-11-30T10:00:01.000000001Z").expect("parse");
        assert!((ms_between(a, b) - 750.000001).abs() < 1e-6);
        assert!((ms_between(b, a) + 750.000001).abs() < 1e-6);
        assert!(parse("yesterday").is_err());
    }

    #[test]
    fn formats_now_parseably() {
        let now = now_rfc3339();
        assert!(parse(&now).is_ok(), "{now}");
    }
}
