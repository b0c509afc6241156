//! Each VM's console log as the Linux runtime keeps it: the readiness watch of a
//! console-marker Image, kept between probes (so a marker printed after any amount of
//! output is found), and the rotation sweep that keeps every log within
//! [`CONSOLE_CAP`] ([`crate::host::console`]) even while nobody reads it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::host::console::{rotate_if_larger, CONSOLE_CAP};
use crate::host::readiness::ConsoleWatch;

/// How often every known console log is checked against the cap.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// One VM's console.
struct Console {
    log: PathBuf,
    /// The readiness watch of the current launch: (launch offset, marker, watch).
    watch: Option<(u64, String, ConsoleWatch)>,
}

/// The consoles of the VMs this runtime has seen, by uid. Cheap to clone.
#[derive(Clone, Default)]
pub(super) struct Consoles {
    map: Arc<Mutex<HashMap<String, Console>>>,
}

impl Consoles {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Console>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the rotation sweep (every [`SWEEP_EVERY`], on the blocking pool); it ends
    /// when the runtime is dropped. Without a tokio runtime (never in the daemon),
    /// nothing is started and logs are only rotated by [`Self::sweep`].
    pub(super) fn start_sweep(&self) {
        let weak: Weak<Mutex<HashMap<String, Console>>> = Arc::downgrade(&self.map);
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        handle.spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                let Some(map) = weak.upgrade() else { return };
                let consoles = Consoles { map };
                consoles.sweep().await;
            }
        });
    }

    /// Rotates every known log that passed the cap.
    pub(super) async fn sweep(&self) {
        let logs: Vec<PathBuf> = self.map().values().map(|c| c.log.clone()).collect();
        let rotated = tokio::task::spawn_blocking(move || {
            logs.into_iter()
                .filter(|log| match rotate_if_larger(log, CONSOLE_CAP) {
                    Ok(rotated) => rotated,
                    Err(e) => {
                        tracing::warn!(log = %log.display(), error = %e, "cannot rotate a console log");
                        false
                    }
                })
                .count()
        })
        .await
        .unwrap_or(0);
        if rotated > 0 {
            tracing::debug!(rotated, "console logs rotated");
        }
    }

    /// Remembers a VM's console log (for the sweep).
    pub(super) fn know(&self, uid: &str, log: PathBuf) {
        self.map()
            .entry(uid.to_string())
            .or_insert(Console { log, watch: None });
    }

    /// Forgets a VM (its directory is gone).
    pub(super) fn forget(&self, uid: &str) {
        self.map().remove(uid);
    }

    /// Polls the VM's readiness watch for `marker` since `launch_offset`, keeping the
    /// watch for the next probe (a new launch or marker starts a new one).
    pub(super) async fn marker_seen(
        &self,
        uid: &str,
        log: PathBuf,
        marker: &str,
        launch_offset: u64,
    ) -> bool {
        let kept = {
            let mut map = self.map();
            let console = map.entry(uid.to_string()).or_insert(Console {
                log: log.clone(),
                watch: None,
            });
            match console.watch.take() {
                Some((offset, m, watch)) if offset == launch_offset && m == marker => watch,
                _ => ConsoleWatch::new(&log, marker, launch_offset),
            }
        };
        let mut watch = kept;
        let seen = watch.poll_async().await.unwrap_or(false);
        if let Some(console) = self.map().get_mut(uid) {
            console.watch = Some((launch_offset, marker.to_string(), watch));
        }
        seen
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn the_watch_is_kept_between_probes_and_the_sweep_caps_logs() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        let consoles = Consoles::default();
        let mut vmm = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        // More output than one poll reads, then the marker.
        let noise = vec![b'x'; 5 * 1024 * 1024];
        vmm.write_all(&noise).unwrap();
        vmm.write_all(b"MARK").unwrap();
        let mut seen = false;
        for _ in 0..4 {
            seen = consoles.marker_seen("u", log.clone(), "MARK", 0).await;
            if seen {
                break;
            }
        }
        assert!(seen, "a kept watch reads on where it stopped");
        // The sweep rotates what passed the cap.
        consoles.sweep().await;
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
        assert!(crate::host::console::rotated_path(&log).exists());
        consoles.forget("u");
        vmm.write_all(&noise).unwrap();
        consoles.sweep().await;
        assert!(
            std::fs::metadata(&log).unwrap().len() > CONSOLE_CAP,
            "a forgotten VM's log is not touched"
        );
    }
}
