//! What `/proc` says about a process: CPU time, resident memory, start time, argv.
//!
//! CPU time is `utime + stime` of `/proc/<pid>/stat` (all threads, the exited ones
//! included), in clock ticks (`sysconf(_SC_CLK_TCK)`, 100 per second on Linux): 10 ms
//! resolution, so the harness measures CPU over windows of seconds. The start time is
//! in the same ticks since boot, which makes two processes' start times comparable.

use std::path::PathBuf;

use crate::error::{BenchError, Result};

/// Fields of `/proc/<pid>/stat` the harness uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Start time after boot, in clock ticks.
    pub start_ticks: u64,
}

/// Parses the text of `/proc/<pid>/stat`. The command name (field 2) is in parentheses
/// and may hold spaces and parentheses itself, so fields are counted after the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3; utime 14, stime 15, starttime 22.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(ProcStat {
        cpu_ticks: field(14)? + field(15)?,
        start_ticks: field(22)?,
    })
}

fn read(pid: u32, file: &str) -> Result<String> {
    let path = PathBuf::from(format!("/proc/{pid}/{file}"));
    std::fs::read_to_string(&path).map_err(BenchError::io("read", path))
}

/// `/proc/<pid>/stat`.
pub fn stat(pid: u32) -> Result<ProcStat> {
    parse_stat(&read(pid, "stat")?)
        .ok_or_else(|| BenchError::Unexpected(format!("/proc/{pid}/stat: unexpected format")))
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
}

/// Resident set size and its peak, in KiB.
pub fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let text = read(pid, "status")?;
    let get = |key| {
        status_kib(&text, key)
            .ok_or_else(|| BenchError::Unexpected(format!("/proc/{pid}/status has no {key}")))
    };
    Ok((get("VmRSS")?, get("VmHWM")?))
}

/// The argv of a process.
pub fn cmdline(pid: u32) -> Result<Vec<String>> {
    let path = PathBuf::from(format!("/proc/{pid}/cmdline"));
    let bytes = std::fs::read(&path).map_err(BenchError::io("read", path))?;
    Ok(bytes
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect())
}

/// Clock ticks per second of `/proc` times.
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value; it touches no memory of ours.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if n > 0 {
        n as f64
    } else {
        100.0
    }
}

/// Ticks as milliseconds.
pub fn ticks_to_ms(ticks: u64) -> f64 {
    ticks as f64 * 1000.0 / ticks_per_second()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_name_with_spaces_and_parentheses() {
        let text = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 4 0 12345 1000 50";
        assert_eq!(
            parse_stat(text),
            Some(ProcStat {
                cpu_ticks: 10,
                start_ticks: 12345
            })
        );
        assert_eq!(parse_stat("42 (x) S 1"), None);
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        let s = stat(pid).expect("own stat");
        assert!(s.start_ticks > 0);
        let (rss, peak) = memory_kib(pid).expect("own status");
        assert!(rss > 0 && peak >= rss);
        assert!(!cmdline(pid).expect("own cmdline").is_empty());
        assert!(ticks_per_second() >= 1.0);
    }

    #[test]
    fn reads_kb_lines() {
        let text = "Name:\tx\nVmHWM:\t   2048 kB\nVmRSS:\t   1024 kB\n";
        assert_eq!(status_kib(text, "VmRSS"), Some(1024));
        assert_eq!(status_kib(text, "VmHWM"), Some(2048));
        assert_eq!(status_kib(text, "VmSwap"), None);
    }
}
