//! # banger-tests: the end-to-end harness
//!
//! End-to-end tests boot real QEMU guests through a real `banger daemon`. Each test
//! creates its own network namespace ([`NetNs`]) and runs the daemon inside it, so the
//! bridges, taps and nftables rules it makes never touch the host's namespace; the
//! namespace, and every process left in it, is removed when the guard drops.
//!
//! The guest comes from the guest kit (`scripts/guest-kit.sh`, see `docs/guest-kit.md`);
//! [`Kit::require`] finds it and fails loudly when it is missing.

// Test support: panicking with a clear message is how a harness reports setup failures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `banger` binary under test: `$BANGER_BIN`, else the one built next to the test
/// executable (`cargo build` must have run first; the test command does that).
pub fn banger_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BANGER_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/banger
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join("banger");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p banger` before the end-to-end tests",
        bin.display()
    );
    bin
}

/// The guest kit's outputs.
#[derive(Debug, Clone)]
pub struct Kit {
    /// Folder holding the kit.
    pub dir: PathBuf,
    /// bzImage for QEMU.
    pub kernel: PathBuf,
    /// ELF vmlinux for Firecracker.
    pub vmlinux: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// The ext4 root filesystem image.
    pub rootfs: PathBuf,
    /// Private key that the guest's root accepts.
    pub ssh_key: PathBuf,
}

impl Kit {
    /// Finds the kit (`$BANGER_KIT_DIR`, default `<repo>/.cache/guest-kit`); panics with
    /// the command that builds it when it is missing.
    pub fn require() -> Kit {
        let dir = std::env::var_os("BANGER_KIT_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join(".cache/guest-kit"));
        let kit = Kit {
            kernel: dir.join("vmlinuz"),
            vmlinux: dir.join("vmlinux"),
            initrd: dir.join("initrd.img"),
            rootfs: dir.join("rootfs.ext4"),
            ssh_key: dir.join("id_ed25519"),
            dir,
        };
        for p in [&kit.kernel, &kit.initrd, &kit.rootfs, &kit.ssh_key] {
            assert!(
                p.exists(),
                "guest kit file {} is missing: build the kit with `scripts/guest-kit.sh`",
                p.display()
            );
        }
        kit
    }
}

static NETNS_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A network namespace created for one test, removed (with every process in it) on drop.
#[derive(Debug)]
pub struct NetNs {
    /// Its name under /run/netns.
    pub name: String,
}

impl NetNs {
    /// Creates `banger-e2e-<pid>-<n>-<tag>` with its loopback up.
    pub fn new(tag: &str) -> NetNs {
        let n = NETNS_COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("bge2e-{}-{}-{}", std::process::id(), n, tag);
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = NetNs { name };
        run_ok(ns.command("ip").args(["link", "set", "lo", "up"]));
        ns
    }

    /// A command that runs inside the namespace (`ip netns exec NAME PROGRAM`).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// A command that joins only the namespace's network (`nsenter --net=… PROGRAM`),
    /// keeping the host's mounts: `ip netns exec` makes a mount namespace with a fresh
    /// `/sys`, which hides the cgroup hierarchies under `/sys/fs/cgroup` that the daemon
    /// confines its VMMs in.
    pub fn net_only_command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(program);
        c
    }

    /// Pids of the processes inside the namespace.
    pub fn pids(&self) -> Vec<i32> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .expect("ip netns pids");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        for pid in self.pids() {
            // SAFETY: kill(2) with a pid read from the kernel for our own namespace; no
            // memory is touched.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// Runs a command, panicking with its output when it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Polls `check` every `every` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Runs one command line in a guest over SSH, from inside `ns`, as root with the kit's
/// key. ssh hands the guest's shell one command line, so `remote` is that line, whole.
pub fn guest_ssh(ns: &NetNs, kit: &Kit, ip: &str, remote: &str) -> Output {
    ns.command("ssh")
        .arg("-i")
        .arg(&kit.ssh_key)
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("root@{ip}"))
        .arg(remote)
        .output()
        .expect("run ssh")
}

/// The condition of `type_` in an object printed by `banger get -o json`.
pub fn condition<'a>(obj: &'a serde_json::Value, type_: &str) -> Option<&'a serde_json::Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// A `banger daemon` running inside a test's namespace, on its own temp directories.
#[derive(Debug)]
pub struct Daemon {
    /// The daemon process.
    pub child: Option<Child>,
    /// Its API socket.
    pub socket: PathBuf,
    /// Its state directory.
    pub state_dir: PathBuf,
    /// Its specs directory.
    pub specs_dir: PathBuf,
    /// Its log file (stderr).
    pub log: PathBuf,
    /// Extra daemon flags it was started with.
    pub extra_args: Vec<String>,
}

impl Daemon {
    /// Starts `banger daemon` in `ns` with its dirs under `root` and waits (bounded) for
    /// its socket to answer.
    pub fn start(ns: &NetNs, root: &Path, extra_args: &[&str]) -> Daemon {
        let d = Daemon {
            child: None,
            socket: root.join("banger.sock"),
            state_dir: root.join("state"),
            specs_dir: root.join("specs"),
            log: root.join("daemon.log"),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        fs::create_dir_all(&d.specs_dir).expect("specs dir");
        d.spawn(ns)
    }

    /// (Re)spawns the daemon process with the same directories and flags.
    pub fn spawn(mut self, ns: &NetNs) -> Daemon {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("daemon log");
        let child = ns
            .net_only_command(banger_bin())
            .arg("daemon")
            .arg("--specs-dir")
            .arg(&self.specs_dir)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--socket")
            .arg(&self.socket)
            // A group that exists on every host: the tests must not need `banger`.
            .args(["--socket-group", "root"])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn banger daemon");
        self.child = Some(child);
        let ok = wait_for(Duration::from_secs(30), Duration::from_millis(100), || {
            let out = self.cli(&["get", "vms"]);
            out.status.success().then_some(())
        });
        assert!(
            ok.is_some(),
            "daemon did not answer within 30s; log:\n{}",
            self.log_text()
        );
        self
    }

    /// Runs `banger --socket SOCKET ARGS…` (outside the namespace: the socket is a file).
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(banger_bin())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run banger")
    }

    /// [`Self::cli`] with `stdin` written to the command's standard input (none: it
    /// reads from /dev/null).
    pub fn cli_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        use std::io::Write;
        let mut child = Command::new(banger_bin())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run banger");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin pipe");
            pipe.write_all(input).expect("write banger's stdin");
        }
        child.wait_with_output().expect("wait banger")
    }

    /// Runs the CLI and panics (with the daemon's log) unless it exits 0; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "banger {args:?} failed ({}):\nstdout: {}\nstderr: {}\ndaemon log tail:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail(60)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `banger get KIND NAME -o json` parsed.
    pub fn get_json(&self, kind: &str, name: &str) -> Option<serde_json::Value> {
        let out = self.cli(&["get", kind, name, "-o", "json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Sends SIGKILL to the daemon (a crash) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit; returns whether it exited 0.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let Ok(pid) = i32::try_from(c.id()) else {
            return false;
        };
        // `nsenter` (without a pid namespace) execs the daemon, so the pid is the daemon's.
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let status = wait_for(Duration::from_secs(30), Duration::from_millis(100), || {
            c.try_wait().ok().flatten()
        });
        match status {
            Some(s) => s.success(),
            None => {
                let _ = c.kill();
                let _ = c.wait();
                false
            }
        }
    }

    /// The whole daemon log.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the daemon log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Daemon {
    /// Stops every VMM left in this daemon's cgroups and removes the cgroups (bounded):
    /// a test that ends early leaves no cgroup behind on the host.
    fn remove_cgroups(&self) {
        use banger_controller::host::cgroup::{daemon_parent, list_vm_cgroups, CgroupLayout};
        let Ok(layout) = CgroupLayout::detect() else {
            return;
        };
        let parent = daemon_parent(&self.state_dir);
        for cgroup in list_vm_cgroups(&layout, &parent).unwrap_or_default() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while cgroup.remove().is_err() && Instant::now() < deadline {
                for pid in cgroup.pids().unwrap_or_default() {
                    // SAFETY: kill(2) on a VMM in this test daemon's own cgroup.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        self.remove_cgroups();
    }
}
