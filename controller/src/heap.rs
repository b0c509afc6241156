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
//! - [`HeapTrimmer`]: a thread (`banger-heap`) that reads the process's CPU time once
//!   per [`TrimConfig::period`] and, when a busy spell ends (a period that used at
//!   least [`TrimConfig::busy_cpu`] followed by one that did not), asks malloc to give
//!   the free pages of every arena back ([`trim`], ~2 ms after an apply of 1,000 VMs).
//!   Idle, it costs one `clock_gettime` per period; the decision is [`TrimPolicy`], a
//!   pure type. The end of the work, not the resident size, is the signal: what a
//!   burst frees after a trim made in its middle would otherwise stay.
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

/// How often the trimmer looks and what counts as busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrimConfig {
    /// Time between two readings of the process's CPU time.
    pub period: Duration,
    /// CPU time used within one period that makes it busy.
    pub busy_cpu: Duration,
}

impl Default for TrimConfig {
    /// One reading a second; busy from 10 ms of CPU in it (1 % of a core).
    fn default() -> TrimConfig {
        TrimConfig {
            period: Duration::from_secs(1),
            busy_cpu: Duration::from_millis(10),
        }
    }
}

/// The trimmer's decision, from successive readings of the process's CPU time: trim
/// once, at the first quiet period after one or more busy ones (while the work goes
/// on, its pages would fault straight back in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrimPolicy {
    busy_cpu: Duration,
    last: Option<Duration>,
    worked: bool,
}

impl TrimPolicy {
    /// A policy with nothing seen yet.
    pub fn new(busy_cpu: Duration) -> TrimPolicy {
        TrimPolicy {
            busy_cpu,
            last: None,
            worked: false,
        }
    }

    /// Takes one reading of the process's CPU time; true when it is time to trim.
    pub fn observe(&mut self, cpu: Duration) -> bool {
        let used = self.last.map(|last| cpu.saturating_sub(last));
        self.last = Some(cpu);
        match used {
            None => false,
            Some(used) if used >= self.busy_cpu => {
                self.worked = true;
                false
            }
            Some(_) => std::mem::take(&mut self.worked),
        }
    }
}

/// The CPU time the whole process used so far (all threads).
pub fn process_cpu_time() -> io::Result<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a pointer to a live local.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u32::try_from(ts.tv_nsec).unwrap_or(0);
    Ok(Duration::new(secs, nanos))
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
    let mut policy = TrimPolicy::new(config.busy_cpu);
    // Ends when the sender goes (stop or drop).
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(config.period) {
        let cpu = match process_cpu_time() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "heap trimmer: cannot read the process's CPU time; stopped");
                return;
            }
        };
        if !policy.observe(cpu) {
            continue;
        }
        let before = resident.bytes().unwrap_or(0);
        let started = Instant::now();
        trim();
        let took = started.elapsed();
        let after = resident.bytes().unwrap_or(0);
        tracing::debug!(
            before_kib = before / 1024,
            after_kib = after / 1024,
            took_us = took.as_micros() as u64,
            "heap trimmed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    const BUSY: Duration = Duration::from_millis(10);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn quiet_periods_never_trim() {
        let mut p = TrimPolicy::new(BUSY);
        assert!(!p.observe(ms(500)));
        for cpu in [501, 505, 514, 523] {
            assert!(!p.observe(ms(cpu)));
        }
    }

    #[test]
    fn trims_once_at_the_first_quiet_period_after_work() {
        let mut p = TrimPolicy::new(BUSY);
        assert!(!p.observe(ms(500)));
        // Busy: not while it lasts.
        assert!(!p.observe(ms(900)));
        assert!(!p.observe(ms(1300)));
        // Quiet: trim, then not again.
        assert!(p.observe(ms(1302)));
        assert!(!p.observe(ms(1303)));
        assert!(!p.observe(ms(1304)));
        // The next spell.
        assert!(!p.observe(ms(1320)));
        assert!(p.observe(ms(1320)));
    }

    #[test]
    fn the_first_reading_is_only_a_start() {
        // The CPU used before the trimmer started says nothing about the last period.
        let mut p = TrimPolicy::new(BUSY);
        assert!(!p.observe(ms(5000)));
        assert!(!p.observe(ms(5001)));
    }

    #[test]
    fn process_cpu_time_moves_forward() {
        let a = process_cpu_time().unwrap();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(x);
        let b = process_cpu_time().unwrap();
        assert!(b > a, "{a:?} then {b:?}");
    }

    #[test]
    fn the_trimmer_thread_stops_when_asked() {
        let t = HeapTrimmer::start(TrimConfig {
            period: Duration::from_millis(1),
            busy_cpu: BUSY,
        })
        .unwrap();
        t.stop().join().unwrap();
    }
}
