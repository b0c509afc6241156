//! VMM processes: spawned detached, identified across PID reuse, watched, signalled.
//!
//! Guarantees this module keeps:
//!
//! - **Detached.** [`spawn_detached`] starts the VMM in a new session (`setsid` in the
//!   child), with stdin on `/dev/null`, stdout and stderr appended to a log file (never a
//!   pipe back to the daemon, so a dead daemon cannot SIGPIPE it), no parent-death
//!   signal, and every inherited descriptor above stderr marked close-on-exec except
//!   those the caller hands over. Killing the daemon (even with SIGKILL, even its whole
//!   process group) leaves the VMM running.
//! - **Confined from its first instruction.** Between fork and exec the child joins the
//!   cgroups it is given (while still root) and then takes the credentials it is given
//!   (supplementary groups, group, user, `no_new_privs`): the program never runs
//!   privileged or outside its cgroup ([`DetachedCommand::credentials`],
//!   [`DetachedCommand::cgroup_join_files`]).
//! - **Reaping.** The VMM is a plain child of the daemon that spawned it; that daemon
//!   reaps it in the background once its pidfd reports the exit (a tokio task, or a
//!   thread outside a runtime), so no zombie is left while the daemon lives. When the
//!   daemon dies first, the kernel reparents the VMM to the nearest subreaper or init,
//!   which reaps it. We chose this over a double fork because it needs no fork inside
//!   `pre_exec` (unsafe in a multi-threaded process) and the pid comes straight from
//!   `spawn`. A later daemon adopts the VMM as a non-child: everything below works for
//!   non-children too (pidfds, `/proc`).
//! - **Identity.** A process is ours only if the pid, its start time (`/proc/PID/stat`
//!   field 22) and a uid marker on its command line all match ([`ProcessIdentity`]). A
//!   zombie counts as exited.
//! - **Signals never hit a reused pid.** [`ProcessIdentity::attach`] opens a pidfd first
//!   and checks the identity afterwards; signals are sent through that pidfd
//!   (`pidfd_send_signal`), which targets exactly that process even if the pid is reused
//!   later.
//! - **Bounded.** Every wait takes a deadline.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// The marker put on a VMM's command line so that a pid can be tied to a VM uid:
/// `banger-<uid>`.
pub fn uid_marker(uid: &str) -> String {
    format!("banger-{uid}")
}

/// Errors of process handling, naming the pid or program and what was attempted.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program could not be started.
    #[error("spawn {program}: {reason}")]
    Spawn {
        /// Program path or name.
        program: String,
        /// What went wrong.
        reason: String,
    },
    /// The output log could not be opened.
    #[error("open output log {path}: {source}")]
    OutputLog {
        /// Log path.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// A `/proc` file could not be read.
    #[error("read {path}: {source}")]
    Proc {
        /// The `/proc` path.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// `/proc/PID/stat` had an unexpected shape.
    #[error("parse /proc/{pid}/stat: {reason}")]
    StatFormat {
        /// Process id.
        pid: i32,
        /// What is wrong.
        reason: String,
    },
    /// A pidfd operation failed.
    #[error("pid {pid}: {operation}: {source}")]
    Pidfd {
        /// Process id.
        pid: i32,
        /// `pidfd_open`, `pidfd_send_signal SIGTERM`, `register pidfd`, …
        operation: String,
        /// Underlying error.
        source: io::Error,
    },
    /// The process did not exit within the deadline even after SIGKILL.
    #[error("pid {pid}: still alive {waited:?} after SIGKILL")]
    StillAlive {
        /// Process id.
        pid: i32,
        /// How long we waited after SIGKILL.
        waited: Duration,
    },
}

/// The fields of `/proc/PID/stat` banger uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 1: process id.
    pub pid: i32,
    /// Field 2: command name (without the parentheses; may contain spaces and parens).
    pub comm: String,
    /// Field 3: state (`R`, `S`, `D`, `Z`, `X`, …).
    pub state: char,
    /// Field 4: parent pid.
    pub ppid: i32,
    /// Field 5: process group id.
    pub pgrp: i32,
    /// Field 6: session id.
    pub session: i32,
    /// Field 22: start time in clock ticks since boot.
    pub start_time: u64,
}

impl ProcStat {
    /// Whether the process has exited and only awaits reaping (`Z` zombie, `X` dead).
    pub fn is_exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses the text of `/proc/PID/stat`. The command name is everything between the first
/// `(` and the last `)`, so names containing spaces or parentheses parse correctly.
pub fn parse_stat(text: &[u8]) -> Result<ProcStat, String> {
    let open = text
        .iter()
        .position(|&b| b == b'(')
        .ok_or("no '(' before the command name")?;
    let close = text
        .iter()
        .rposition(|&b| b == b')')
        .ok_or("no ')' after the command name")?;
    if close < open {
        return Err("')' before '('".to_owned());
    }
    let pid_text = std::str::from_utf8(&text[..open])
        .map_err(|_| "pid is not UTF-8")?
        .trim();
    let pid: i32 = pid_text
        .parse()
        .map_err(|_| format!("pid {pid_text:?} is not a number"))?;
    let comm = String::from_utf8_lossy(&text[open + 1..close]).into_owned();
    let rest = std::str::from_utf8(&text[close + 1..])
        .map_err(|_| "fields after the command name are not UTF-8")?;
    // `rest` holds fields 3.. ; field N is at index N - 3.
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |number: usize| -> Result<&str, String> {
        fields.get(number - 3).copied().ok_or_else(|| {
            format!(
                "field {number} missing ({} fields after the command name)",
                fields.len()
            )
        })
    };
    let number = |n: usize| -> Result<i64, String> {
        let text = field(n)?;
        text.parse()
            .map_err(|_| format!("field {n} {text:?} is not a number"))
    };
    let state_text = field(3)?;
    let mut state_chars = state_text.chars();
    let state = match (state_chars.next(), state_chars.next()) {
        (Some(c), None) => c,
        _ => {
            return Err(format!(
                "field 3 (state) {state_text:?} is not one character"
            ))
        }
    };
    let start_text = field(22)?;
    let start_time: u64 = start_text
        .parse()
        .map_err(|_| format!("field 22 (starttime) {start_text:?} is not a number"))?;
    let to_i32 = |n: usize| -> Result<i32, String> {
        i32::try_from(number(n)?).map_err(|_| format!("field {n} out of range"))
    };
    Ok(ProcStat {
        pid,
        comm,
        state,
        ppid: to_i32(4)?,
        pgrp: to_i32(5)?,
        session: to_i32(6)?,
        start_time,
    })
}

/// Reads and parses `/proc/PID/stat`. `Ok(None)` when there is no such process.
pub fn read_stat(pid: i32) -> Result<Option<ProcStat>, ProcessError> {
    let path = PathBuf::from(format!("/proc/{pid}/stat"));
    match std::fs::read(&path) {
        Ok(bytes) => parse_stat(&bytes)
            .map(Some)
            .map_err(|reason| ProcessError::StatFormat { pid, reason }),
        Err(e) if is_no_such_process(&e) => Ok(None),
        Err(source) => Err(ProcessError::Proc { path, source }),
    }
}

/// Reads `/proc/PID/cmdline` as its NUL-separated arguments. `Ok(None)` when there is no
/// such process. A zombie or kernel thread has an empty command line.
pub fn read_cmdline(pid: i32) -> Result<Option<Vec<OsString>>, ProcessError> {
    let path = PathBuf::from(format!("/proc/{pid}/cmdline"));
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(split_cmdline(&bytes))),
        Err(e) if is_no_such_process(&e) => Ok(None),
        Err(source) => Err(ProcessError::Proc { path, source }),
    }
}

/// Splits the raw bytes of `/proc/PID/cmdline` into arguments.
pub fn split_cmdline(bytes: &[u8]) -> Vec<OsString> {
    let trimmed = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    if trimmed.is_empty() {
        return Vec::new();
    }
    trimmed
        .split(|&b| b == 0)
        .map(|arg| OsStr::from_bytes(arg).to_os_string())
        .collect()
}

fn is_no_such_process(e: &io::Error) -> bool {
    // ENOENT: no such pid; ESRCH: the process vanished while we read.
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ESRCH))
}

/// Who a recorded pid must be for us to touch it: the pid and its start time. Together
/// with the uid marker on the command line this survives PID reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessIdentity {
    /// Process id.
    pub pid: i32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_time: u64,
}

/// The outcome of an identity check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityCheck {
    /// The pid is alive and is our process.
    Ours,
    /// No such process, or it has exited and awaits reaping.
    Exited,
    /// The pid belongs to another process now.
    Reused {
        /// What differed.
        reason: String,
    },
}

impl IdentityCheck {
    /// Whether our process is alive.
    pub fn is_ours(&self) -> bool {
        matches!(self, IdentityCheck::Ours)
    }
}

/// Decides an identity check from what `/proc` showed: the pure part of
/// [`ProcessIdentity::check`].
pub fn judge_identity(
    identity: &ProcessIdentity,
    marker: &str,
    stat: Option<&ProcStat>,
    cmdline: Option<&[OsString]>,
) -> IdentityCheck {
    let Some(stat) = stat else {
        return IdentityCheck::Exited;
    };
    if stat.start_time != identity.start_time {
        return IdentityCheck::Reused {
            reason: format!(
                "start time {} instead of {}",
                stat.start_time, identity.start_time
            ),
        };
    }
    if stat.is_exited() {
        return IdentityCheck::Exited;
    }
    let Some(cmdline) = cmdline else {
        return IdentityCheck::Exited;
    };
    let needle = marker.as_bytes();
    let found = !needle.is_empty()
        && cmdline
            .iter()
            .any(|arg| arg.as_bytes().windows(needle.len()).any(|w| w == needle));
    if found {
        IdentityCheck::Ours
    } else {
        IdentityCheck::Reused {
            reason: format!("command line of {:?} lacks marker {marker:?}", stat.comm),
        }
    }
}

impl ProcessIdentity {
    /// Reads the identity of a live pid (its current start time).
    pub fn of_pid(pid: i32) -> Result<Option<ProcessIdentity>, ProcessError> {
        Ok(read_stat(pid)?.map(|stat| ProcessIdentity {
            pid,
            start_time: stat.start_time,
        }))
    }

    /// Checks that the pid is still our process: same start time, alive, and `marker` is
    /// part of one of its arguments.
    pub fn check(&self, marker: &str) -> Result<IdentityCheck, ProcessError> {
        let stat = read_stat(self.pid)?;
        let cmdline = match &stat {
            Some(_) => read_cmdline(self.pid)?,
            None => None,
        };
        Ok(judge_identity(
            self,
            marker,
            stat.as_ref(),
            cmdline.as_deref(),
        ))
    }

    /// [`Self::check`] on a thread of the blocking pool (it reads `/proc`), for async
    /// code.
    pub async fn check_async(&self, marker: &str) -> Result<IdentityCheck, ProcessError> {
        let identity = *self;
        let marker = marker.to_owned();
        tokio::task::spawn_blocking(move || identity.check(&marker))
            .await
            .map_err(|e| ProcessError::Proc {
                path: PathBuf::from(format!("/proc/{}", identity.pid)),
                source: io::Error::other(e),
            })?
    }

    /// Opens a pidfd on the pid and then checks the identity, so the returned handle
    /// refers to exactly our process (see the module docs). `Ok(None)` when our process
    /// is gone or the pid was reused.
    pub fn attach(&self, marker: &str) -> Result<Option<TrackedProcess>, ProcessError> {
        let pidfd = match pidfd_open(self.pid) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
            Err(source) => {
                return Err(ProcessError::Pidfd {
                    pid: self.pid,
                    operation: "pidfd_open".to_owned(),
                    source,
                })
            }
        };
        // The process the pidfd refers to held the pid when it was opened; if the pid
        // shows our start time now, that process is ours (a pid names one process at a
        // time, and ours started before the pidfd was opened).
        match self.check(marker)? {
            IdentityCheck::Ours => Ok(Some(TrackedProcess {
                identity: *self,
                pidfd,
            })),
            IdentityCheck::Exited | IdentityCheck::Reused { .. } => Ok(None),
        }
    }
}

/// A verified handle on our live process (a pidfd), safe to signal and wait on.
#[derive(Debug)]
pub struct TrackedProcess {
    identity: ProcessIdentity,
    pidfd: OwnedFd,
}

impl TrackedProcess {
    /// The identity this handle was verified against.
    pub fn identity(&self) -> ProcessIdentity {
        self.identity
    }

    /// Sends `signal` through the pidfd. `Ok(false)` when the process had already exited.
    pub fn signal(&self, signal: Signal) -> Result<bool, ProcessError> {
        // A zombie still accepts signals; report it as exited.
        if self.has_exited() {
            return Ok(false);
        }
        // SAFETY: pidfd_send_signal takes a valid pidfd (owned by self), a signal number,
        // a null siginfo pointer (allowed: the kernel fills in a default) and flags 0.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc == 0 {
            return Ok(true);
        }
        let source = io::Error::last_os_error();
        if source.raw_os_error() == Some(libc::ESRCH) {
            return Ok(false);
        }
        Err(ProcessError::Pidfd {
            pid: self.identity.pid,
            operation: format!("pidfd_send_signal {signal}"),
            source,
        })
    }

    /// Whether the process has exited (non-blocking).
    pub fn has_exited(&self) -> bool {
        let mut poll = libc::pollfd {
            fd: self.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `poll` points at one valid pollfd for the duration of the call; timeout 0
        // means the call does not block.
        let rc = unsafe { libc::poll(&mut poll, 1, 0) };
        rc > 0 && (poll.revents & (libc::POLLIN | libc::POLLHUP)) != 0
    }

    /// A future that resolves when the process exits. Must be called inside a tokio
    /// runtime (the pidfd is registered with its reactor).
    pub fn exited(&self) -> Result<impl Future<Output = ()> + Send + 'static, ProcessError> {
        let pid = self.identity.pid;
        let dup = self
            .pidfd
            .try_clone()
            .map_err(|source| ProcessError::Pidfd {
                pid,
                operation: "dup pidfd".to_owned(),
                source,
            })?;
        pidfd_exit_future(pid, dup)
    }

    /// Waits at most `timeout` for the process to exit; returns whether it did.
    pub async fn wait_exit(&self, timeout: Duration) -> Result<bool, ProcessError> {
        if self.has_exited() {
            return Ok(true);
        }
        let exited = self.exited()?;
        Ok(tokio::time::timeout(timeout, exited).await.is_ok())
    }
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags 0 and returns a new descriptor or -1; it
    // touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(fd)
        .map_err(|_| io::Error::other("pidfd_open returned an out-of-range descriptor"))?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn pidfd_exit_future(
    pid: i32,
    pidfd: OwnedFd,
) -> Result<impl Future<Output = ()> + Send + 'static, ProcessError> {
    if tokio::runtime::Handle::try_current().is_err() {
        let source = io::Error::other("not inside a tokio runtime");
        return Err(ProcessError::Pidfd {
            pid,
            operation: "register pidfd with the runtime".to_owned(),
            source,
        });
    }
    // SAFETY: `pidfd` is an OwnedFd moved into the AsyncFd: it stays open and refers to
    // the same pidfd until the AsyncFd is dropped, and as_raw_fd always returns it.
    let registered = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) };
    let async_fd = registered.map_err(|e| {
        let (_, source) = e.into_parts();
        ProcessError::Pidfd {
            pid,
            operation: "register pidfd with the runtime".to_owned(),
            source,
        }
    })?;
    Ok(async move {
        // A pidfd becomes readable once the process has exited (including as a zombie);
        // it never becomes unreadable again, so one readiness event is the answer. An
        // error from the reactor means it is shutting down: resolve rather than hang.
        let _ = async_fd.readable().await;
    })
}

/// A future that resolves when our process exits (or at once if it is already gone or
/// the pid was reused). Works for processes that are not our children. Call inside a
/// tokio runtime.
pub fn watch_exit(
    identity: &ProcessIdentity,
    marker: &str,
) -> Result<impl Future<Output = ()> + Send + 'static, ProcessError> {
    let exited = match identity.attach(marker)? {
        Some(tracked) => Some(tracked.exited()?),
        None => None,
    };
    Ok(async move {
        if let Some(exited) = exited {
            exited.await;
        }
    })
}

/// Waits at most `timeout` for our process to exit; `Ok(true)` once it is gone (also when
/// it was gone already or the pid was reused). Call inside a tokio runtime.
pub async fn wait_for_exit(
    identity: &ProcessIdentity,
    marker: &str,
    timeout: Duration,
) -> Result<bool, ProcessError> {
    match identity.attach(marker)? {
        Some(process) => process.wait_exit(timeout).await,
        None => Ok(true),
    }
}

/// How [`terminate`] ended a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// It was not running (or the pid belonged to someone else): nothing was signalled.
    AlreadyGone,
    /// It exited after SIGTERM.
    Terminated,
    /// It had to be killed with SIGKILL.
    Killed,
}

/// Stops our process: SIGTERM, wait at most `term_grace`, SIGKILL, wait at most
/// `kill_grace`. Signals only after an identity check through a pidfd.
pub async fn terminate(
    identity: &ProcessIdentity,
    marker: &str,
    term_grace: Duration,
    kill_grace: Duration,
) -> Result<StopOutcome, ProcessError> {
    let Some(process) = identity.attach(marker)? else {
        return Ok(StopOutcome::AlreadyGone);
    };
    terminate_tracked(&process, term_grace, kill_grace).await
}

/// [`terminate`] for an already verified handle.
pub async fn terminate_tracked(
    process: &TrackedProcess,
    term_grace: Duration,
    kill_grace: Duration,
) -> Result<StopOutcome, ProcessError> {
    if process.has_exited() {
        return Ok(StopOutcome::AlreadyGone);
    }
    if process.signal(Signal::SIGTERM)? && !process.wait_exit(term_grace).await? {
        process.signal(Signal::SIGKILL)?;
        if !process.wait_exit(kill_grace).await? {
            return Err(ProcessError::StillAlive {
                pid: process.identity.pid,
                waited: kill_grace,
            });
        }
        return Ok(StopOutcome::Killed);
    }
    Ok(StopOutcome::Terminated)
}

/// Who a detached process runs as: set between fork and exec, after the process has
/// joined its cgroups (which needs root) and before it runs a single instruction of its
/// program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (every other group of the parent is dropped).
    pub groups: Vec<u32>,
}

/// What to spawn detached.
#[derive(Debug, Clone)]
pub struct DetachedCommand {
    /// Program path, or a name looked up in `PATH`.
    pub program: PathBuf,
    /// Arguments (one of them must contain `marker`).
    pub args: Vec<OsString>,
    /// Where the process's stdout and stderr are appended.
    pub output_log: PathBuf,
    /// Working directory of the process.
    pub cwd: PathBuf,
    /// The uid marker ([`uid_marker`]) that identifies the process later.
    pub marker: String,
    /// Who it runs as; `None` keeps the daemon's own user. With credentials the process
    /// also gets `no_new_privs`, so no setuid program can give privileges back.
    pub credentials: Option<Credentials>,
    /// Files the process writes `0` into before exec to join its cgroups
    /// ([`crate::host::cgroup::VmCgroup::join_files`]); empty keeps the daemon's cgroups.
    pub cgroup_join_files: Vec<PathBuf>,
}

/// Spawns `command` detached (see the module docs) and returns its identity. The process
/// has exec'd the program when this returns.
///
/// `inherit` are descriptors the program gets, at their current numbers (every other
/// descriptor above stderr is closed on exec): how a VMM that runs unprivileged receives
/// files it could not open itself. They must stay open until this returns.
pub fn spawn_detached(
    command: &DetachedCommand,
    inherit: &[BorrowedFd<'_>],
) -> Result<ProcessIdentity, ProcessError> {
    let program = command.program.display().to_string();
    let needle = command.marker.as_bytes();
    if needle.is_empty()
        || !command
            .args
            .iter()
            .any(|a| a.as_bytes().windows(needle.len()).any(|w| w == needle))
    {
        return Err(ProcessError::Spawn {
            program,
            reason: format!("no argument carries the marker {:?}", command.marker),
        });
    }
    let log = open_output_log(&command.output_log)?;
    let log_err = log.try_clone().map_err(|source| ProcessError::OutputLog {
        path: command.output_log.clone(),
        source,
    })?;
    let mut cmd = Command::new(&command.program);
    cmd.args(&command.args)
        .current_dir(&command.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err));
    let setup = ChildSetup::new(command, inherit).map_err(|reason| ProcessError::Spawn {
        program: program.clone(),
        reason,
    })?;
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (setsid, open/write/close, close_range/fcntl,
    // getrlimit, setgroups/setgid/setuid, prctl) on data prepared before the fork; it
    // allocates nothing and touches no lock.
    unsafe {
        cmd.pre_exec(move || setup.run());
    }
    let child = cmd.spawn().map_err(|e| ProcessError::Spawn {
        program: program.clone(),
        reason: format!(
            "{e} (exec, or the child's setup: session, cgroups {:?}, credentials {:?})",
            command.cgroup_join_files, command.credentials
        ),
    })?;
    let pid = i32::try_from(child.id()).map_err(|_| ProcessError::Spawn {
        program: program.clone(),
        reason: "pid out of range".to_owned(),
    })?;
    // The child is not reaped before `reap_in_background` takes it, so the pid cannot be
    // reused while we read its start time.
    let stat = read_stat(pid)?;
    let identity = match stat {
        Some(stat) => ProcessIdentity {
            pid,
            start_time: stat.start_time,
        },
        None => {
            return Err(ProcessError::Spawn {
                program,
                reason: format!("pid {pid} vanished right after spawn"),
            })
        }
    };
    reap_in_background(pid, child);
    Ok(identity)
}

fn open_output_log(path: &Path) -> Result<File, ProcessError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| ProcessError::OutputLog {
            path: path.to_path_buf(),
            source,
        })
}

/// What the child does between fork and exec, prepared in the parent so that the child
/// only makes system calls: no allocation, no lock.
struct ChildSetup {
    /// Files to write `0` (this process, single-threaded) into to join its cgroups.
    cgroup_join_files: Vec<CString>,
    /// Descriptors to keep open across exec.
    inherit: Vec<RawFd>,
    /// `(uid, gid, supplementary groups)` to switch to last.
    credentials: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
}

impl ChildSetup {
    fn new(command: &DetachedCommand, inherit: &[BorrowedFd<'_>]) -> Result<ChildSetup, String> {
        let cgroup_join_files = command
            .cgroup_join_files
            .iter()
            .map(|p| {
                CString::new(p.as_os_str().as_bytes())
                    .map_err(|_| format!("cgroup file {} contains a NUL byte", p.display()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ChildSetup {
            cgroup_join_files,
            inherit: inherit.iter().map(AsRawFd::as_raw_fd).collect(),
            credentials: command
                .credentials
                .as_ref()
                .map(|c| (c.uid, c.gid, c.groups.clone())),
        })
    }

    /// Runs in the forked child: new session, into the cgroups (as root still), every
    /// descriptor above stderr closed on exec except the inherited ones, then the
    /// credentials.
    fn run(&self) -> io::Result<()> {
        // SAFETY: setsid has no memory arguments; the child is not a process group
        // leader (fresh fork), so it succeeds.
        if unsafe { libc::setsid() } == -1 {
            return Err(io::Error::last_os_error());
        }
        for path in &self.cgroup_join_files {
            join_cgroup(path)?;
        }
        close_on_exec_above_stderr();
        for &fd in &self.inherit {
            // SAFETY: F_SETFD with 0 only clears close-on-exec of a descriptor the parent
            // holds open for the whole spawn.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        if let Some((uid, gid, groups)) = &self.credentials {
            // SAFETY: `groups` is a live slice of gid_t for the duration of the call.
            if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } == -1 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: setgid/setuid take plain integers.
            if unsafe { libc::setgid(*gid) } == -1 || unsafe { libc::setuid(*uid) } == -1 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Writes `0` (the calling process) into a cgroup's `tasks` or `cgroup.procs` file.
/// Async-signal-safe.
fn join_cgroup(path: &CString) -> io::Result<()> {
    // SAFETY: `path` is a NUL-terminated string that outlives the call.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: writes one byte from a static buffer to the descriptor just opened.
    let written = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
    let result = if written == 1 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    };
    // SAFETY: closes the descriptor opened above, exactly once.
    unsafe { libc::close(fd) };
    result
}

/// Marks every descriptor above stderr close-on-exec (std already did so for its own,
/// including the exec-status pipe it still needs until exec). Async-signal-safe.
fn close_on_exec_above_stderr() {
    // SAFETY: close_range takes plain integers; CLOSE_RANGE_CLOEXEC only sets flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc != 0 {
        // Kernels before 5.11: walk the descriptor table up to the (capped) limit.
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `limit` is a valid rlimit for the kernel to fill.
        let top = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            limit.rlim_cur.min(65_536)
        } else {
            1024
        };
        let top = libc::c_int::try_from(top).unwrap_or(1024);
        for fd in 3..top {
            // SAFETY: fcntl on an arbitrary integer is harmless: EBADF for closed ones.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}

/// Reaps the child once it exits so the daemon leaves no zombie: a tokio task awaiting
/// its pidfd inside a runtime, else a thread blocked in `wait`.
fn reap_in_background(pid: i32, mut child: Child) {
    let exit_future = tokio::runtime::Handle::try_current()
        .ok()
        .and_then(|handle| {
            let pidfd = pidfd_open(pid).ok()?;
            let _guard = handle.enter();
            let future = pidfd_exit_future(pid, pidfd).ok()?;
            Some((handle, future))
        });
    match exit_future {
        Some((handle, exited)) => {
            handle.spawn(async move {
                exited.await;
                match child.try_wait() {
                    Ok(Some(status)) => tracing::debug!(pid, %status, "reaped VMM process"),
                    Ok(None) => {
                        // The runtime shut down before the exit; fall back to a thread.
                        std::thread::spawn(move || child.wait());
                    }
                    Err(e) => tracing::warn!(pid, error = %e, "could not reap VMM process"),
                }
            });
        }
        None => {
            std::thread::spawn(move || {
                if let Ok(status) = child.wait() {
                    tracing::debug!(pid, %status, "reaped VMM process");
                }
            });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn stat_line(comm: &str, state: char, start: u64) -> Vec<u8> {
        // Fields 3..=22 then a few more, as the kernel writes them.
        format!("4242 ({comm}) {state} 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 {start} 123456 789 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n")
            .into_bytes()
    }

    #[test]
    fn parses_plain_stat() {
        let stat = parse_stat(&stat_line("qemu-system-x86", 'S', 987654)).unwrap();
        assert_eq!(stat.pid, 4242);
        assert_eq!(stat.comm, "qemu-system-x86");
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.ppid, 1);
        assert_eq!(stat.pgrp, 4242);
        assert_eq!(stat.session, 4242);
        assert_eq!(stat.start_time, 987654);
    }

    #[test]
    fn parses_comm_with_spaces_and_parens() {
        for comm in ["a b", "x) S 1 2 3 (y", "((", "))", ") ) )", "", "tab\there"] {
            let stat = parse_stat(&stat_line(comm, 'R', 77)).unwrap();
            assert_eq!(stat.comm, comm, "comm {comm:?}");
            assert_eq!(stat.start_time, 77, "comm {comm:?}");
            assert_eq!(stat.state, 'R');
        }
    }

    #[test]
    fn parses_non_utf8_comm() {
        let mut line = b"7 (bad\xff) Z 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55 0 0".to_vec();
        line.push(b'\n');
        let stat = parse_stat(&line).unwrap();
        assert_eq!(stat.start_time, 55);
        assert!(stat.is_exited());
    }

    #[test]
    fn rejects_malformed_stat() {
        assert!(parse_stat(b"").is_err());
        assert!(parse_stat(b"12 comm S 1").is_err());
        assert!(parse_stat(b"12 (comm) S 1 2 3")
            .unwrap_err()
            .contains("field"));
        assert!(
            parse_stat(b"x (comm) S 1 2 3 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 5")
                .unwrap_err()
                .contains("pid")
        );
        let bad_start = String::from_utf8(stat_line("c", 'S', 1))
            .unwrap()
            .replace(" 1 0 1 123456", " 1 0 nope 123456");
        assert!(parse_stat(bad_start.as_bytes()).unwrap_err().contains("22"));
    }

    #[test]
    fn reads_own_stat() {
        let me = i32::try_from(std::process::id()).unwrap();
        let stat = read_stat(me).unwrap().unwrap();
        assert_eq!(stat.pid, me);
        assert!(stat.start_time > 0);
        assert!(read_stat(i32::MAX).unwrap().is_none());
    }

    #[test]
    fn splits_cmdline() {
        assert_eq!(
            split_cmdline(b"qemu\0-name\0banger-x\0"),
            vec![OsString::from("qemu"), "-name".into(), "banger-x".into()]
        );
        assert!(split_cmdline(b"").is_empty());
        assert_eq!(
            split_cmdline(b"a\0\0b\0"),
            vec![OsString::from("a"), "".into(), "b".into()]
        );
    }

    #[test]
    fn judges_identity() {
        let id = ProcessIdentity {
            pid: 4242,
            start_time: 100,
        };
        let live = parse_stat(&stat_line("qemu", 'S', 100)).unwrap();
        let args = vec![OsString::from("qemu"), "-name".into(), "banger-abc".into()];
        assert_eq!(
            judge_identity(&id, "banger-abc", Some(&live), Some(&args)),
            IdentityCheck::Ours
        );
        assert!(matches!(
            judge_identity(&id, "banger-xyz", Some(&live), Some(&args)),
            IdentityCheck::Reused { .. }
        ));
        assert!(matches!(
            judge_identity(&id, "", Some(&live), Some(&args)),
            IdentityCheck::Reused { .. }
        ));
        let other = ProcessIdentity {
            pid: 4242,
            start_time: 101,
        };
        assert!(matches!(
            judge_identity(&other, "banger-abc", Some(&live), Some(&args)),
            IdentityCheck::Reused { .. }
        ));
        assert_eq!(
            judge_identity(&id, "banger-abc", None, None),
            IdentityCheck::Exited
        );
        let zombie = parse_stat(&stat_line("qemu", 'Z', 100)).unwrap();
        assert_eq!(
            judge_identity(&id, "banger-abc", Some(&zombie), Some(&[])),
            IdentityCheck::Exited
        );
    }

    #[test]
    fn marker_is_derived_from_uid() {
        assert_eq!(uid_marker("0f3c"), "banger-0f3c");
    }
}
