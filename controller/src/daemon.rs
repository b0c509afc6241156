//! `banger daemon`: the composition root.
//!
//! [`run`] first checks what it was given, before it changes anything: the socket's
//! group exists (as root), only its owner and root may write the specs directory
//! ([`crate::sources::dir_trust`]); then it makes the state directory the daemon's alone
//! ([`crate::host::state_dir`]) and locks it. Then it opens the store, recovers the
//! journal, garbage-collects host objects of no known VM ([`crate::gc`]), starts the
//! heap trimmer ([`crate::heap`]: memory freed in a burst goes back once it is over),
//! the workers, the specs directory watcher, the resync ticker, the exit listener and
//! the API (its socket given to the group: [`crate::api::authz`]), and runs until
//! `shutdown` resolves. Then it stops taking work (API and queue closed), lets the
//! steps in flight finish (each is journaled) within `shutdown_grace`, and returns,
//! leaving every VM running.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::api::authz::{AccessPolicy, SocketGroup};
use crate::api::server::{self, ApiState};
use crate::config::DaemonConfig;
use crate::engine::{Engine, ReconcileError};
use crate::runtime::{ExitNotice, ReadyNotice, VmRuntime};
use crate::sources::dir::DirSource;
use crate::status::Reason;
use crate::store::StoreError;

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The socket's group does not exist.
    #[error("socket group {name:?} does not exist: create it (groupadd --system {name}; scripts/up.sh does), or name another with --socket-group")]
    SocketGroup {
        /// The group's name.
        name: String,
    },
    /// The socket's group could not be looked up.
    #[error("socket group {name:?}: {source}")]
    SocketGroupLookup {
        /// The group's name.
        name: String,
        /// The error.
        #[source]
        source: nix::errno::Errno,
    },
    /// Someone other than its owner and root could write the specs directory.
    #[error("{}", crate::sources::dir_trust::refusal(dir, source))]
    SpecsDir {
        /// The specs directory.
        dir: std::path::PathBuf,
        /// What is wrong, naming the path.
        #[source]
        source: crate::host::path_trust::UntrustedPath,
    },
    /// The state directory is not the daemon's alone, or could not be made so.
    #[error(transparent)]
    StateDirAccess(#[from] crate::host::state_dir::StateDirError),
    /// The state directory could not be made.
    #[error("state dir {path}: {source}")]
    StateDir {
        /// The directory.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Another daemon uses the state directory.
    #[error(transparent)]
    StateLock(#[from] crate::host::state_lock::StateLockError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Journal recovery failed.
    #[error("journal recovery: {0}")]
    Recovery(#[from] ReconcileError),
    /// The API socket could not be bound.
    #[error("socket {path}: {source}")]
    Socket {
        /// The socket path.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Runs the daemon until `shutdown` resolves (the caller maps SIGTERM/SIGINT to it).
pub async fn run<R: VmRuntime>(
    config: DaemonConfig,
    runtime: R,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    // Start-up work that blocks (groups, the state directory, opening the database)
    // runs on the blocking pool.
    let daemon_uid = nix::unistd::geteuid().as_raw();
    let state_dir = config.state_dir.clone();
    let engine_config = config.clone();
    let (engine, group, _state_lock) = tokio::task::spawn_blocking(move || {
        let group = socket_group(&engine_config, daemon_uid)?;
        if let Some(dir) = &engine_config.specs_dir {
            crate::sources::dir_trust::check_specs_dir(dir, daemon_uid).map_err(|source| {
                DaemonError::SpecsDir {
                    dir: dir.clone(),
                    source,
                }
            })?;
        }
        let tightened = crate::host::state_dir::prepare_state_dir(
            &state_dir,
            daemon_uid,
            &engine_config.socket,
        )?;
        for t in tightened {
            tracing::warn!(path = %t.path.display(), "state dir: mode {:04o} gave its group or others access; now {:04o}", t.from, t.to);
        }
        // One daemon per state directory, for as long as this one runs.
        let lock = crate::host::state_lock::lock_state_dir(&state_dir)?;
        Ok::<_, DaemonError>((Engine::new(engine_config, runtime)?, group, lock))
    })
    .await
    .map_err(|e| DaemonError::StateDir {
        path: config.state_dir.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    })??;
    let engine = Arc::new(engine);
    let socket_error = |source| DaemonError::Socket {
        path: config.socket.display().to_string(),
        source,
    };
    let listener = server::bind(&config.socket).await.map_err(socket_error)?;
    if let Some(group) = &group {
        server::grant_to_group(&config.socket, group.gid).map_err(socket_error)?;
    }
    let policy = AccessPolicy {
        daemon_uid,
        group: group.clone(),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let recovered = engine.recover_journal().await?;
    if recovered > 0 {
        tracing::info!(
            recovered,
            "handled unfinished journal rows of the previous daemon"
        );
    }
    // Host objects of VMs the store does not know (a wiped store, a crash between a
    // delete's last step and its row going) are removed before any work is taken.
    // Orphaned VMs (their lease row stays) are known: they keep running.
    let gc = engine
        .garbage_collector()
        .collect_garbage(crate::gc::GcOptions::default())
        .await?;
    if !gc.items.is_empty() {
        tracing::info!(
            found = gc.items.len(),
            failed = gc.failed.len(),
            "garbage-collected host objects of no known VM"
        );
    }

    // Bursts (an apply of many VMs, a large list) leave freed heap resident; the
    // trimmer gives it back once the burst is over. Memory only: the daemon runs
    // without it.
    let trimmer = match crate::heap::HeapTrimmer::start(crate::heap::TrimConfig::default()) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(error = %e, "heap trimmer not started; freed memory stays with malloc");
            None
        }
    };

    // VMM exits enqueue their VM at once.
    let (exit_tx, mut exit_rx) = mpsc::unbounded_channel::<ExitNotice>();
    engine.runtime.set_exit_notifier(exit_tx);
    let exits = {
        let engine = engine.clone();
        tokio::spawn(async move {
            while let Some(notice) = exit_rx.recv().await {
                match engine.ctl.store.object_by_uid(&notice.uid).await {
                    Ok(Some(vm)) => {
                        tracing::info!(vm = %vm.resource.name(), "VMM exited");
                        engine
                            .ctl
                            .events
                            .warning(
                                vm.resource.kind(),
                                vm.resource.name(),
                                Reason::ProcessExited,
                                "the VMM process exited",
                            )
                            .await;
                        engine.ctl.queue.add(vm.resource.key());
                    }
                    Ok(None) => tracing::debug!(uid = %notice.uid, "exit of an unknown VM"),
                    Err(e) => tracing::warn!(error = %e, "mapping an exit to its VM"),
                }
            }
        })
    };

    // Guests the runtime saw become ready enqueue their VM at once.
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<ReadyNotice>();
    engine.runtime.set_ready_notifier(ready_tx);
    let readies = {
        let engine = engine.clone();
        tokio::spawn(async move {
            while let Some(notice) = ready_rx.recv().await {
                match engine.ctl.store.object_by_uid(&notice.uid).await {
                    Ok(Some(vm)) => engine.ctl.queue.add(vm.resource.key()),
                    Ok(None) => tracing::debug!(uid = %notice.uid, "readiness of an unknown VM"),
                    Err(e) => tracing::warn!(error = %e, "mapping a readiness to its VM"),
                }
            }
        })
    };

    let workers: Vec<_> = (0..config.max_concurrent.max(1))
        .map(|_| {
            let engine = engine.clone();
            tokio::spawn(async move { engine.run_worker().await })
        })
        .collect();

    let dir_source = Arc::new(DirSource::new());
    let watcher = config.specs_dir.clone().map(|dir| {
        let (ctl, src, rx) = (engine.ctl.clone(), dir_source.clone(), stop_rx.clone());
        let debounce = config.debounce;
        tokio::spawn(async move {
            if let Err(e) = tokio::fs::create_dir_all(&dir).await {
                tracing::error!(dir = %dir.display(), error = %e, "cannot create the specs directory");
                return;
            }
            if let Err(e) = src.watch(&ctl, dir.clone(), debounce, stopped(rx)).await {
                tracing::error!(dir = %dir.display(), error = %e, "specs directory watcher failed; resyncs still rescan it");
            }
        })
    });

    let resync = {
        let (engine, src, rx) = (engine.clone(), dir_source.clone(), stop_rx.clone());
        let dir = config.specs_dir.clone();
        tokio::spawn(async move {
            let stop = stopped(rx);
            tokio::pin!(stop);
            let mut tick = tokio::time::interval(engine.config.resync);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tick.tick() => {}
                }
                if let Some(dir) = &dir {
                    src.rescan(&engine.ctl, dir).await;
                }
                match engine.enqueue_all().await {
                    Ok(n) => tracing::debug!(objects = n, "resync"),
                    Err(e) => tracing::warn!(error = %e, "resync"),
                }
            }
        })
    };

    let api = {
        let state = Arc::new(ApiState::of(&engine));
        let rx = stop_rx.clone();
        let limits = config.api;
        tokio::spawn(async move {
            let app = server::router(state);
            crate::api::listener::serve(listener, app, policy, limits, stopped(rx)).await;
        })
    };
    let socket_access = match &group {
        Some(g) => format!("0660 root:{}", g.name),
        None => "0600 (the daemon's user only)".to_string(),
    };
    tracing::info!(socket = %config.socket.display(), socket_access, state_dir = %config.state_dir.display(), runtime = engine.runtime.name(), "banger daemon ready");

    shutdown.await;
    tracing::info!("shutting down: no new work; finishing steps in flight");
    let _ = stop_tx.send(true);
    engine.begin_shutdown();
    let finish = futures::future::join_all(workers);
    if tokio::time::timeout(config.shutdown_grace, finish)
        .await
        .is_err()
    {
        tracing::warn!("steps still in flight after the grace period; their journal rows stay open for the next start");
    }
    exits.abort();
    readies.abort();
    resync.abort();
    if let Some(w) = watcher {
        w.abort();
    }
    // Long polls may hold the graceful shutdown; give the API a moment, then drop it.
    if tokio::time::timeout(std::time::Duration::from_secs(2), api)
        .await
        .is_err()
    {
        tracing::debug!("API connections dropped at shutdown");
    }
    let _ = tokio::fs::remove_file(&config.socket).await;
    if let Some(t) = trimmer {
        // The thread ends at once; nothing waits for it here.
        let _detached = t.stop();
    }
    tracing::info!("banger daemon stopped; VMs left running");
    Ok(())
}

/// The socket's group, looked up by name: for a daemon run as root with
/// [`DaemonConfig::socket_group`] set. A daemon run as another user serves only its
/// user (and root), so its group setting is ignored, with a log line.
fn socket_group(
    config: &DaemonConfig,
    daemon_uid: u32,
) -> Result<Option<SocketGroup>, DaemonError> {
    let Some(name) = &config.socket_group else {
        return Ok(None);
    };
    if daemon_uid != 0 {
        tracing::info!(group = %name, "not running as root: the socket is this user's only; the socket group is not used");
        return Ok(None);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Ok(Some(SocketGroup {
            name: name.clone(),
            gid: group.gid.as_raw(),
        })),
        Ok(None) => Err(DaemonError::SocketGroup { name: name.clone() }),
        Err(source) => Err(DaemonError::SocketGroupLookup {
            name: name.clone(),
            source,
        }),
    }
}
