//! The daemon's heap: few malloc arenas, and freed memory given back after a burst.
//!
//! glibc's malloc keeps what the program frees: a burst (an apply of 1,000 VMs, a list
//! of 2 MB of JSON) leaves pages that are free to malloc but still resident, and free()
//! gives back only the top of a heap, so scattered free chunks stay resident until the
//! next burst. Measured on a simulated daemon with 1,000 VMs (BENCHMARKS.md, P5): 17 MB
//! held by malloc for 7 MB in use. Two remedies, both process-wide:
//!
//! - [`limit_arenas`]: at most as many malloc arenas as cores. glibc makes an arena
//!   per thread that allocates (up to 8 × cores: tokio workers, the store's thread,
//!   the blocking pool's threads as they come and go), each with its own partly used
//!   pages; at most `cores` threads run at once, so more arenas buy no parallelism.
//! - [`HeapTrimmer`]: a thread (`banger-heap`) that reads the resident size once per
//!   [`TrimConfig::period`] and, once it grew by [`TrimConfig::slack`] and stopped
//!   growing (the burst is over), asks malloc to give the free pages of every arena
//!   back ([`trim`]). Idle, it costs one read of `/proc/self/statm` per period; the
//!   decision is [`TrimPolicy`], a pure type.
//!
//! Outside glibc both are no-ops ([`trim`] reports that it did nothing).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Limits malloc to `max` arenas (glibc's `M_ARENA_MAX`). Call it first thing in
/// `main`, before threads start allocating: an arena made before stays. Returns
/// whether malloc took the setting (always false outside glibc).
pub fn limit_arenas(max: usize) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let max = libc::c_int::try_from(max.max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets a malloc parameter; M_ARENA_MAX takes any positive
        // count and affects only arenas made after the call.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, max) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = max;
        false
    }
}

/// Gives the free pages of every malloc arena back to the kernel (glibc's
/// `malloc_trim(0)`); returns whether any memory was given back. Blocks for about a
/// millisecond per few MB of free heap: call it off the async workers.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes malloc's own locks; with a pad of 0 it only
        // releases pages no allocation uses (MADV_DONTNEED), so no pointer is affected.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// The process's resident set size in bytes, read from an open `/proc/self/statm`.
#[derive(Debug)]
pub struct ResidentSize {
    statm: File,
    page: u64,
}

impl ResidentSize {
    /// Opens `/proc/self/statm` (kept open: each read is one `pread`, no allocation).
    pub fn open() -> io::Result<ResidentSize> {
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|p| u64::try_from(p).ok())
            .unwrap_or(4096);
        Ok(ResidentSize {
            statm: File::open("/proc/self/statm")?,
            page,
        })
    }

    /// The resident size now, in bytes.
    pub fn bytes(&self) -> io::Result<u64> {
        let mut buf = [0u8; 128];
        let n = self.statm.read_at(&mut buf, 0)?;
        let pages = parse_statm_resident(&buf[..n]).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "/proc/self/statm: no resident page count",
            )
        })?;
        Ok(pages * self.page)
    }
}

/// The second field of `/proc/PID/statm` (resident pages).
fn parse_statm_resident(text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?;
    text.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// When the trimmer reads the resident size and how much growth it lets stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrimConfig {
    /// Time between two reads of the resident size.
    pub period: Duration,
    /// Growth over the size after the last trim that is left alone.
    pub slack: u64,
}

impl Default for TrimConfig {
    /// One read a second; 1 MiB of slack.
    fn default() -> TrimConfig {
        TrimConfig {
            period: Duration::from_secs(1),
            slack: 1 << 20,
        }
    }
}

/// The trimmer's decision, from successive resident sizes: trim once the size grew by
/// more than the slack over the last trim's result (or the lowest size seen since) and
/// did not grow since the previous reading (a burst still growing would fault the
/// pages straight back in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrimPolicy {
    slack: u64,
    floor: Option<u64>,
    last: Option<u64>,
}

impl TrimPolicy {
    /// A policy with nothing seen yet.
    pub fn new(slack: u64) -> TrimPolicy {
        TrimPolicy {
            slack,
            floor: None,
            last: None,
        }
    }

    /// Takes one reading; true when it is time to trim.
    pub fn observe(&mut self, resident: u64) -> bool {
        let floor = *self.floor.get_or_insert(resident);
        let grew_since_last = self.last.is_some_and(|last| resident > last);
        self.last = Some(resident);
        if resident < floor {
            self.floor = Some(resident);
            return false;
        }
        resident - floor > self.slack && !grew_since_last
    }

    /// Records the resident size right after a trim: the new floor.
    pub fn trimmed(&mut self, resident: u64) {
        self.floor = Some(resident);
        self.last = Some(resident);
    }
}

/// The running trimmer thread; [`HeapTrimmer::stop`] or dropping it ends the thread
/// (at once: it waits on a channel, not in a sleep).
#[derive(Debug)]
pub struct HeapTrimmer {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl HeapTrimmer {
    /// Starts the `banger-heap` thread.
    pub fn start(config: TrimConfig) -> io::Result<HeapTrimmer> {
        let resident = ResidentSize::open()?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("banger-heap".into())
            .spawn(move || run(resident, config, stopped))?;
        Ok(HeapTrimmer { stop, thread })
    }

    /// Tells the thread to end; returns it, for a caller that may block to wait.
    pub fn stop(self) -> JoinHandle<()> {
        drop(self.stop);
        self.thread
    }
}

fn run(resident: ResidentSize, config: TrimConfig, stopped: mpsc::Receiver<()>) {
    let mut policy = TrimPolicy::new(config.slack);
    // Ends when the sender goes (stop or drop).
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(config.period) {
        let before = match resident.bytes() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "heap trimmer: cannot read the resident size; stopped");
                return;
            }
        };
        if !policy.observe(before) {
            continue;
        }
        let started = Instant::now();
        trim();
        let took = started.elapsed();
        match resident.bytes() {
            Ok(after) => {
                policy.trimmed(after);
                tracing::debug!(
                    before_kib = before / 1024,
                    after_kib = after / 1024,
                    took_us = took.as_micros() as u64,
                    "heap trimmed"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "heap trimmer: cannot read the resident size; stopped");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn statm_resident_is_the_second_field() {
        assert_eq!(
            parse_statm_resident(b"10543 7360 2620 3540 0 4411 0\n"),
            Some(7360)
        );
        assert_eq!(parse_statm_resident(b"10543\n"), None);
        assert_eq!(parse_statm_resident(b"10543 x 1\n"), None);
    }

    #[test]
    fn reads_a_plausible_resident_size() {
        let r = ResidentSize::open().unwrap();
        let bytes = r.bytes().unwrap();
        // A running test binary: a whole number of pages, more than one.
        assert!(bytes > r.page && bytes.is_multiple_of(r.page), "{bytes}");
    }

    #[test]
    fn growth_within_the_slack_is_left_alone() {
        let mut p = TrimPolicy::new(MIB);
        assert!(!p.observe(20 * MIB));
        assert!(!p.observe(20 * MIB + MIB / 2));
        assert!(!p.observe(21 * MIB));
        assert!(!p.observe(21 * MIB));
    }

    #[test]
    fn trims_once_the_growth_stopped() {
        let mut p = TrimPolicy::new(MIB);
        assert!(!p.observe(20 * MIB));
        // Still growing: not yet.
        assert!(!p.observe(30 * MIB));
        assert!(!p.observe(40 * MIB));
        // The peak passed (same or lower): trim.
        assert!(p.observe(40 * MIB));
        p.trimmed(24 * MIB);
        // The trim's result is the new floor.
        assert!(!p.observe(24 * MIB));
        assert!(!p.observe(25 * MIB));
        assert!(!p.observe(25 * MIB));
        assert!(!p.observe(26 * MIB));
        assert!(p.observe(25 * MIB + MIB / 2));
    }

    #[test]
    fn a_shrinking_size_lowers_the_floor() {
        let mut p = TrimPolicy::new(MIB);
        assert!(!p.observe(30 * MIB));
        assert!(!p.observe(22 * MIB));
        assert!(!p.observe(23 * MIB + MIB / 2));
        assert!(p.observe(23 * MIB + MIB / 2));
    }

    #[test]
    fn the_trimmer_thread_stops_when_asked() {
        let t = HeapTrimmer::start(TrimConfig {
            period: Duration::from_millis(1),
            slack: MIB,
        })
        .unwrap();
        t.stop().join().unwrap();
    }
}
