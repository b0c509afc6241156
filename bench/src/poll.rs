//! Bounded waiting: every loop of the harness is limited in time (and so in count),
//! sleeps in short slices and stops at once on Ctrl-C.

use std::time::{Duration, Instant};

use crate::error::{BenchError, Result};
use crate::interrupt;

/// Sleeps `d`, waking every 50 ms to honour Ctrl-C.
pub fn pause(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        interrupt::check()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Calls `check` every `every` until it returns `Some`, an error, or `timeout` passes
/// (then [`BenchError::Timeout`] naming `what`).
pub fn until<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        interrupt::check()?;
        if let Some(v) = check()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Timeout {
                what: what.to_string(),
                waited: timeout,
            });
        }
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_returns_the_first_value() {
        let mut n = 0;
        let got = until("count", Duration::from_secs(5), Duration::ZERO, || {
            n += 1;
            Ok((n == 3).then_some(n))
        });
        assert_eq!(got.ok(), Some(3));
    }

    #[test]
    fn until_times_out_naming_what() {
        let err = until::<()>("the thing", Duration::ZERO, Duration::ZERO, || Ok(None))
            .err()
            .map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("the thing: not within 0ns"));
    }
}
