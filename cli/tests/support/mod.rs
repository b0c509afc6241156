//! Test support: a real `banger daemon --simulate` on temporary directories and a
//! temporary socket, and a way to run `banger` against it.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `banger` binary under test.
pub const BANGER: &str = env!("CARGO_BIN_EXE_banger");

/// How long the daemon may take to answer its first request.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the daemon may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running daemon; killed when dropped.
pub struct Daemon {
    child: Option<Child>,
    /// The extra daemon flags it was started with (kept for [`Daemon::respawn`]).
    extra: Vec<String>,
    /// Root of the test's temporary files.
    pub dir: tempfile::TempDir,
    /// The API socket.
    pub socket: PathBuf,
    /// The watched specs directory.
    pub specs_dir: PathBuf,
    /// Where the test writes files it applies from the CLI.
    pub work_dir: PathBuf,
    log: PathBuf,
}

/// The result of one `banger` run.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Asserts the exit code, showing the output when it differs.
    #[track_caller]
    pub fn expect_code(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// `banger ARGS` talking to `socket`, run in `cwd`; the caller sets up its stdio.
fn banger_command(socket: &Path, cwd: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(BANGER);
    command
        .args(args)
        .env("BANGER_SOCKET", socket)
        .current_dir(cwd);
    command
}

/// Runs `banger ARGS` with the given socket, without stdin.
pub fn banger_at(socket: &Path, cwd: &Path, args: &[&str]) -> Run {
    banger_command(socket, cwd, args)
        .stdin(Stdio::null())
        .output()
        .expect("run banger")
        .into()
}

/// `--socket-group root` unless `extra` names a group: a daemon run as root needs a
/// group that exists, and the tests must not depend on the host having `banger`.
fn socket_group(extra: &[String]) -> Vec<&'static str> {
    if extra.iter().any(|a| a == "--socket-group") {
        Vec::new()
    } else {
        vec!["--socket-group", "root"]
    }
}

impl Daemon {
    /// Starts `banger daemon --simulate` and waits until it answers.
    pub fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    /// Starts `banger daemon --simulate EXTRA…` and waits until it answers.
    pub fn start_with(extra: &[&str]) -> Daemon {
        Daemon::start_prepared(extra, |_| {})
    }

    /// Like [`Daemon::start_with`], with `prepare` run on the (empty) state directory
    /// before the daemon starts (a test mounts a small filesystem there, say).
    pub fn start_prepared(extra: &[&str], prepare: impl FnOnce(&Path)) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let specs_dir = dir.path().join("specs");
        let state_dir = dir.path().join("state");
        let work_dir = dir.path().join("work");
        // The daemon makes its state dir itself (0700).
        for d in [&specs_dir, &work_dir] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        prepare(&state_dir);
        // Files the Image fixtures point to.
        std::fs::write(work_dir.join("vmlinux"), b"kernel").expect("write kernel");
        std::fs::write(work_dir.join("rootfs.ext4"), b"rootfs").expect("write rootfs");
        std::fs::write(specs_dir.join("vmlinux"), b"kernel").expect("write kernel");
        std::fs::write(specs_dir.join("rootfs.ext4"), b"rootfs").expect("write rootfs");
        let socket = dir.path().join("banger.sock");
        let log = dir.path().join("daemon.log");
        let mut daemon = Daemon {
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir,
            socket,
            specs_dir,
            work_dir,
            log,
        };
        daemon.respawn();
        daemon
    }

    /// Starts the daemon process (again) on the same directories and flags, and waits
    /// until it answers.
    pub fn respawn(&mut self) {
        assert!(self.child.is_none(), "the daemon still runs");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(BANGER)
            .arg("daemon")
            .arg("--simulate")
            .arg("--specs-dir")
            .arg(&self.specs_dir)
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .arg("--socket")
            .arg(&self.socket)
            .args(["--resync", "2s"])
            .args(socket_group(&self.extra))
            .args(&self.extra)
            .env("BANGER_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn banger daemon");
        self.child = Some(child);
        self.wait_until_answering();
    }

    /// SIGKILL to the daemon (a crash), reaped.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The daemon's database file.
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("state/banger.db")
    }

    fn wait_until_answering(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("try_wait"))
            {
                panic!(
                    "banger daemon exited with {status} before answering:\n{}",
                    self.log()
                );
            }
            if self.socket.exists() && self.banger(&["get"]).code == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "banger daemon did not answer within {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The daemon's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `banger ARGS` against this daemon in the work directory.
    pub fn banger(&self, args: &[&str]) -> Run {
        banger_at(&self.socket, &self.work_dir, args)
    }

    /// Runs `banger ARGS` with `input` on stdin.
    pub fn banger_stdin(&self, args: &[&str], input: &str) -> Run {
        use std::io::Write;
        let mut child = banger_command(&self.socket, &self.work_dir, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn banger");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("wait banger").into()
    }

    /// Writes a file in the work directory and returns its path.
    pub fn write_work(&self, name: &str, content: &str) -> PathBuf {
        let path = self.work_dir.join(name);
        std::fs::write(&path, content).expect("write spec");
        path
    }

    /// Sends SIGTERM and waits (bounded) for the daemon to exit; returns its exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An Image and a VM, as one file.
pub fn image_and_vm(vm: &str, memory: &str) -> String {
    format!(
        "apiVersion: banger.dev/v1alpha1
kind: Image
metadata:
  name: base
spec:
  kernel: ./vmlinux
  rootfs: ./rootfs.ext4
---
{}",
        vm_only(vm, memory)
    )
}

/// A VM alone.
pub fn vm_only(vm: &str, memory: &str) -> String {
    format!(
        "apiVersion: banger.dev/v1alpha1
kind: VM
metadata:
  name: {vm}
spec:
  image: base
  memory: {memory}
"
    )
}

/// A `banger` process whose stdout is read line by line (for `--follow`); killed when
/// dropped.
pub struct Streaming {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Streaming {
    /// Waits (bounded) for a line that satisfies `pred`; returns it, or every line seen
    /// as the error.
    pub fn line_matching(
        &self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String, Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return Ok(line),
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        Err(seen)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Starts `banger ARGS` with its stdout streamed line by line.
    pub fn banger_streaming(&self, args: &[&str]) -> Streaming {
        use std::io::BufRead;
        let mut child = banger_command(&self.socket, &self.work_dir, args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn banger");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Streaming { child, lines }
    }
}
