//! Serving the API on its Unix socket: who may connect, how many at once, how long a
//! client may take to send its request.
//!
//! [`serve`] is the accept loop (hyper's HTTP/1 connection, axum's router as the
//! service). For each connection:
//! 1. the kernel's record of the peer ([`crate::host::peer`]) gives its [`Role`]
//!    ([`AccessPolicy::role_of`]); a peer with none is closed at once, before any
//!    HTTP, and logged;
//! 2. it takes a slot ([`ConnectionSlots`]): at most [`ApiLimits::max_connections`] at
//!    once, of which the last [`ApiLimits::root_reserve`] only for admins, so members
//!    cannot lock root out. Without a free slot the connection is closed at once. A
//!    connect stream keeps its slot until the stream ends (the handler holds it);
//! 3. the request head must arrive within [`ApiLimits::header_timeout`], for the first
//!    request and for every later one on a kept-alive connection, so a client that
//!    sends half a head, or nothing, is dropped; bodies have their own bound
//!    ([`super::body`]). Handlers may take longer (long polls wait up to 60 s), and
//!    connect streams last as long as both ends want;
//! 4. the request carries the [`Client`] (peer and role) and the connection's slot as
//!    extensions, for [`super::authz::authorize`] and the handlers.
//!
//! Shutdown: the loop stops accepting, asks every connection to finish its request in
//! flight and close, and returns when they have; the caller bounds how long it waits.
//! Dropping the future drops every connection.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::authz::{AccessPolicy, Client, Role};
use crate::config::ApiLimits;
use crate::host::peer::peer_credentials;

/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop does not
/// spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The connection counter shared by the accept loop and the slots it hands out.
#[derive(Debug)]
pub struct ConnectionSlots {
    active: AtomicUsize,
    max: usize,
    root_reserve: usize,
}

/// One connection's place among [`ConnectionSlots`]; freed when the last clone drops
/// (the connection's end, or its connect stream's).
#[derive(Debug)]
pub struct ConnectionSlot {
    slots: Arc<ConnectionSlots>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.slots.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnectionSlots {
    /// Slots for `limits`.
    pub fn new(limits: &ApiLimits) -> Arc<ConnectionSlots> {
        Arc::new(ConnectionSlots {
            active: AtomicUsize::new(0),
            max: limits.max_connections.max(1),
            root_reserve: limits
                .root_reserve
                .min(limits.max_connections.saturating_sub(1)),
        })
    }

    /// A slot for a client of `role`, or `None` when its share is used up: members may
    /// use all but the reserve, admins all.
    pub fn try_take(self: &Arc<Self>, role: Role) -> Option<Arc<ConnectionSlot>> {
        let limit = match role {
            Role::Admin => self.max,
            Role::Member => self.max - self.root_reserve,
        };
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        Some(Arc::new(ConnectionSlot {
            slots: self.clone(),
        }))
    }

    /// Connections open now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, as the module docs say.
pub async fn serve(
    listener: UnixListener,
    app: Router,
    policy: AccessPolicy,
    limits: ApiLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = ConnectionSlots::new(&limits);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "API socket: accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let Some((client, slot)) = admit(&stream, &policy, &slots) else {
                    continue;
                };
                let (app, stop) = (app.clone(), stop_rx.clone());
                connections.spawn(serve_connection(stream, client, slot, app, limits.header_timeout, stop));
            }
        }
    }
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
}

/// The peer's client and slot, or `None` (the stream is then dropped: closed).
fn admit(
    stream: &UnixStream,
    policy: &AccessPolicy,
    slots: &Arc<ConnectionSlots>,
) -> Option<(Client, Arc<ConnectionSlot>)> {
    let peer = match peer_credentials(stream) {
        Ok(peer) => peer,
        Err(e) => {
            tracing::warn!(error = %e, "API socket: no peer credentials; connection closed");
            return None;
        }
    };
    let Some(role) = policy.role_of(&peer.credentials) else {
        tracing::warn!(pid = ?peer.pid, "API socket: refused at connect: {}", policy.refusal(&peer.credentials));
        return None;
    };
    let Some(slot) = slots.try_take(role) else {
        tracing::warn!(uid = peer.credentials.uid, pid = ?peer.pid, active = slots.active(),
            "API socket: too many connections; connection closed");
        return None;
    };
    Some((Client { peer, role }, slot))
}

/// One HTTP/1 connection, with upgrades (connect streams), until it ends or `stop`.
async fn serve_connection(
    stream: UnixStream,
    client: Client,
    slot: Arc<ConnectionSlot>,
    app: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(client.clone());
        request.extensions_mut().insert(slot.clone());
        app.clone().oneshot(request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "API connection ended with an error");
            }
        }
        _ = async { drop(stop.wait_for(|stopping| *stopping).await) } => {
            connection.as_mut().graceful_shutdown();
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "API connection ended with an error at shutdown");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_leave_the_reserve_to_admins_and_slots_come_back() {
        let limits = ApiLimits {
            max_connections: 3,
            root_reserve: 1,
            ..ApiLimits::default()
        };
        let slots = ConnectionSlots::new(&limits);
        let a = slots.try_take(Role::Member).unwrap();
        let b = slots.try_take(Role::Member).unwrap();
        assert!(
            slots.try_take(Role::Member).is_none(),
            "the reserve is root's"
        );
        let c = slots.try_take(Role::Admin).unwrap();
        assert!(slots.try_take(Role::Admin).is_none(), "full");
        assert_eq!(slots.active(), 3);
        // A slot held by a stream as well as by its connection frees on the last drop.
        let stream_holds = a.clone();
        drop(a);
        assert_eq!(slots.active(), 3);
        drop(stream_holds);
        assert_eq!(slots.active(), 2);
        // Members count every connection, root's too, against their share.
        assert!(slots.try_take(Role::Member).is_none());
        drop(c);
        let d = slots.try_take(Role::Member).unwrap();
        drop((b, d));
        assert_eq!(slots.active(), 0);
    }
}
