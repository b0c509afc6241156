//! The boot watch: while a VMM runs and its guest is not ready yet, the Image's
//! readiness check (a TCP connect to the guest's port, or the console marker since the
//! launch) every [`BOOT_PROBE_INTERVAL`], and a [`ReadyNotice`] the moment it passes.
//!
//! Without it, a booting VM's `Ready` waits for the engine's next look
//! ([`crate::engine::vm_status::GUEST_POLL`]). The watch is only a hint: the reconcile it
//! triggers observes readiness itself. One watch per VMM process; it ends when the
//! guest is ready, when the VMM exits, or after [`BOOT_WATCH_LIMIT`] (the engine's
//! re-checks go on after that).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::vmm::console_offset;
use super::LinuxRuntime;
use crate::host::process::ProcessIdentity;
use crate::host::readiness::{self, ConsoleWatch};
use crate::runtime::{ReadyNotice, ReadyNotifier, VmContext};

/// How often a booting guest is checked.
pub(super) const BOOT_PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// How long one TCP check of a booting guest may take.
const BOOT_CONNECT_TIMEOUT: Duration = Duration::from_millis(200);
/// How long one VMM's boot is watched at most.
pub(super) const BOOT_WATCH_LIMIT: Duration = Duration::from_secs(300);

/// The check a boot watch repeats.
enum BootCheck {
    /// A TCP connect to the guest.
    Tcp(SocketAddr),
    /// The Image's console marker, read incrementally from the launch's offset.
    Console(ConsoleWatch),
}

impl BootCheck {
    /// The Image's readiness check for this VM, if it has one the watch can run.
    fn of(vm: &VmContext) -> Option<BootCheck> {
        let image = vm.image.as_ref()?;
        if let Some(marker) = &image.readiness.console_marker {
            return Some(BootCheck::Console(ConsoleWatch::new(
                &vm.console_log(),
                marker,
                console_offset(&vm.handles),
            )));
        }
        let port = image.readiness.tcp_port?;
        let lease = vm.lease.as_ref()?;
        Some(BootCheck::Tcp(SocketAddr::from((lease.ip, port))))
    }

    async fn passes(&mut self) -> bool {
        match self {
            BootCheck::Tcp(addr) => readiness::tcp_ready(*addr, BOOT_CONNECT_TIMEOUT)
                .await
                .is_ok(),
            BootCheck::Console(watch) => watch.poll_async().await.unwrap_or(false),
        }
    }
}

impl LinuxRuntime {
    /// Starts the boot watch of `vm`'s recorded VMM unless one runs already.
    pub(super) fn watch_boot(&self, vm: &VmContext) {
        let Some(vmm) = &vm.handles.process else {
            return;
        };
        let identity = ProcessIdentity {
            pid: vmm.pid,
            start_time: vmm.start_time,
        };
        let Some(check) = BootCheck::of(vm) else {
            return;
        };
        if !lock(&self.booting).insert(identity) {
            return;
        }
        let watch = BootWatch {
            uid: vm.uid.clone(),
            identity,
            booting: Arc::clone(&self.booting),
            exit_watched: Arc::clone(&self.watched),
            notifier: Arc::clone(&self.ready_notifier),
        };
        tokio::spawn(watch.run(check));
    }
}

/// One VMM's boot watch.
struct BootWatch {
    uid: String,
    identity: ProcessIdentity,
    booting: Arc<Mutex<std::collections::HashSet<ProcessIdentity>>>,
    /// The VMMs with an exit watch: one that left the set has exited.
    exit_watched: Arc<Mutex<std::collections::HashSet<ProcessIdentity>>>,
    notifier: Arc<Mutex<Option<ReadyNotifier>>>,
}

impl BootWatch {
    async fn run(self, mut check: BootCheck) {
        let deadline = tokio::time::Instant::now() + BOOT_WATCH_LIMIT;
        let mut ready = false;
        while tokio::time::Instant::now() < deadline && self.vmm_runs() {
            if check.passes().await {
                ready = true;
                break;
            }
            tokio::time::sleep(BOOT_PROBE_INTERVAL).await;
        }
        lock(&self.booting).remove(&self.identity);
        if ready {
            tracing::debug!(uid = %self.uid, "guest ready (boot watch)");
            if let Some(n) = lock(&self.notifier).as_ref() {
                let _ = n.send(ReadyNotice {
                    uid: self.uid.clone(),
                });
            }
        }
    }

    /// Whether the VMM still runs, as its exit watch knows.
    fn vmm_runs(&self) -> bool {
        lock(&self.exit_watched).contains(&self.identity)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use tokio::sync::mpsc;

    fn watch(
        exit_watched: &[ProcessIdentity],
    ) -> (BootWatch, mpsc::UnboundedReceiver<ReadyNotice>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let identity = ProcessIdentity {
            pid: 4242,
            start_time: 7,
        };
        let watch = BootWatch {
            uid: "0123abcd".into(),
            identity,
            booting: Arc::new(Mutex::new(HashSet::from([identity]))),
            exit_watched: Arc::new(Mutex::new(exit_watched.iter().copied().collect())),
            notifier: Arc::new(Mutex::new(Some(tx))),
        };
        (watch, rx)
    }

    #[tokio::test]
    async fn a_port_that_starts_listening_is_reported_once() {
        // A port nobody listens on yet: the watch keeps checking.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let identity = ProcessIdentity {
            pid: 4242,
            start_time: 7,
        };
        let (watch, mut rx) = watch(&[identity]);
        let booting = Arc::clone(&watch.booting);
        let task = tokio::spawn(watch.run(BootCheck::Tcp(addr)));
        tokio::task::yield_now().await;
        assert!(rx.try_recv().is_err(), "reported before the port listens");
        let _listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let notice = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("reported within the test's bound")
            .expect("a notice");
        assert_eq!(notice.uid, "0123abcd");
        task.await.unwrap();
        assert!(
            lock(&booting).is_empty(),
            "the watch ended and forgot the VMM"
        );
        assert!(rx.try_recv().is_err(), "reported once");
    }

    #[tokio::test]
    async fn an_exited_vmm_ends_the_watch_without_a_notice() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // No exit watch holds the VMM: it exited.
        let (watch, mut rx) = watch(&[]);
        let booting = Arc::clone(&watch.booting);
        watch.run(BootCheck::Tcp(addr)).await;
        assert!(rx.try_recv().is_err(), "an exited VMM's guest is not ready");
        assert!(lock(&booting).is_empty());
    }

    #[tokio::test]
    async fn a_console_marker_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        std::fs::write(&log, "old boot: READY\n").unwrap();
        let identity = ProcessIdentity {
            pid: 4242,
            start_time: 7,
        };
        let (watch, mut rx) = watch(&[identity]);
        let offset = std::fs::metadata(&log).unwrap().len();
        let check = BootCheck::Console(ConsoleWatch::new(&log, "READY", offset));
        let task = tokio::spawn(watch.run(check));
        tokio::task::yield_now().await;
        assert!(
            rx.try_recv().is_err(),
            "a marker of an earlier boot counted"
        );
        std::fs::write(&log, "old boot: READY\nbooting\nREADY\n").unwrap();
        let notice = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("reported within the test's bound")
            .expect("a notice");
        assert_eq!(notice.uid, "0123abcd");
        task.await.unwrap();
    }
}
