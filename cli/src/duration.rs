//! Durations on the command line: `30s`, `5m`, `1h 30m`, `250ms` (humantime).

use std::time::Duration;

/// Parses a duration flag; a bare `0` means zero. Used as a clap value parser.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 5m, 1h30m)"))
}

/// A duration for messages: `5m`, `1m 30s`.
pub fn show(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(
        d.as_millis().try_into().unwrap_or(u64::MAX),
    ))
    .to_string()
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn parses_humantime_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_garbage_with_examples() {
        for bad in ["", "5", "abc", "-5s", "5 parsecs"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains("examples: 30s, 5m"), "{bad}: {err}");
        }
    }

    #[test]
    fn shows_durations() {
        assert_eq!(show(Duration::from_secs(300)), "5m");
        assert_eq!(show(Duration::from_secs(90)), "1m 30s");
    }
}
