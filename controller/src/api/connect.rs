//! `GET /v1/vms/{name}/connect?port=N`: a byte stream to a TCP port of a VM's guest,
//! proxied by the daemon, as an HTTP/1.1 upgrade on the API socket.
//!
//! The daemon is the only process that can reach a guest (it may run in its own
//! network namespace), so every way into a VM (`banger connect`, `ssh`, `exec`, `cp`,
//! `port-forward`) is this stream. The client asks with `Connection: Upgrade` and
//! `Upgrade: banger-connect` ([`UPGRADE_PROTOCOL`]).
//!
//! Guarantees:
//! - every refusal comes before the upgrade, as an ordinary JSON error: 400 (bad port),
//!   404 (no such VM), 409 (being deleted, not running, no address), 426 (no upgrade
//!   asked for), 502 (the guest did not accept the connection within
//!   [`CONNECT_TIMEOUT`]); so `101 Switching Protocols` means the guest port is open;
//! - after the upgrade, bytes are copied both ways until both directions are closed; an
//!   end of stream on one side is passed on as a shutdown of the other side's writing
//!   half (half-close), so `ssh` and request/response protocols finish cleanly;
//! - the daemon dials only the address of the named VM (its `status.ip`);
//! - the stream counts as one of the daemon's connections until it ends
//!   ([`super::listener::ConnectionSlot`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use banger_specs::Kind;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;

use super::server::{ApiError, ApiState};
use crate::runtime::VmRuntime;
use crate::status::Phase;

/// The `Upgrade:` token of the connect endpoint.
pub const UPGRADE_PROTOCOL: &str = "banger-connect";
/// Longest the daemon waits for the guest to accept the TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
pub(super) struct ConnectQuery {
    port: Option<String>,
}

/// The guest port of a query: 1..=65535.
fn parse_port(vm: &str, port: Option<&str>) -> Result<u16, ApiError> {
    let port = port.ok_or_else(|| {
        ApiError::bad_request(format!("vm {vm}: connect needs ?port=N (1-65535)"))
    })?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(ApiError::bad_request(format!(
            "vm {vm}: port {port:?} is not a number from 1 to 65535"
        ))),
    }
}

/// Whether the request asks for an upgrade to [`UPGRADE_PROTOCOL`].
fn asks_for_upgrade(headers: &HeaderMap) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, UPGRADE_PROTOCOL)
}

/// The address of a running VM, or the refusal that says why there is none.
async fn guest_address<R: VmRuntime>(st: &ApiState<R>, vm: &str) -> Result<Ipv4Addr, ApiError> {
    let object = st
        .ctl
        .store
        .get_object(Kind::Vm, vm)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("vm/{vm} not found")))?;
    if object.deleting.is_some() {
        return Err(ApiError::conflict(format!("vm/{vm} is being deleted")));
    }
    let (status, _) = st.ctl.store.get_status(Kind::Vm, vm).await?;
    if status.phase != Phase::Running {
        return Err(ApiError::conflict(format!(
            "vm/{vm} is not running (phase {})",
            status.phase
        )));
    }
    status
        .ip
        .ok_or_else(|| ApiError::conflict(format!("vm/{vm} has no address yet")))
}

/// Opens the TCP connection to the guest, bounded by [`CONNECT_TIMEOUT`].
async fn dial(vm: &str, addr: SocketAddr) -> Result<TcpStream, ApiError> {
    let unreachable = |why: String| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "unreachable",
            format!("vm/{vm}: connect to {addr}: {why}"),
        )
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable(format!(
            "no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// The handler: refuse, or dial the guest and answer 101, then copy both ways.
pub(super) async fn connect<R: VmRuntime>(
    State(st): State<Arc<ApiState<R>>>,
    UrlPath(vm): UrlPath<String>,
    Query(query): Query<ConnectQuery>,
    mut request: Request,
) -> Result<Response, ApiError> {
    let port = parse_port(&vm, query.port.as_deref())?;
    let ip = guest_address(&st, &vm).await?;
    if !asks_for_upgrade(request.headers()) {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade-required",
            format!(
                "vm/{vm}: connect is a stream: send `Connection: Upgrade` and `Upgrade: {UPGRADE_PROTOCOL}`"
            ),
        ));
    }
    let addr = SocketAddr::from((ip, port));
    let mut guest = dial(&vm, addr).await?;
    let on_upgrade = hyper::upgrade::on(&mut request);
    // The stream keeps the connection's slot among the daemon's connections.
    let slot = request
        .extensions()
        .get::<Arc<super::listener::ConnectionSlot>>()
        .cloned();
    let name = vm.clone();
    tokio::spawn(async move {
        let _slot = slot;
        let vm = name;
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::warn!(vm = %vm, %addr, error = %e, "connect: upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(upgraded);
        match tokio::io::copy_bidirectional(&mut client, &mut guest).await {
            Ok((to_guest, from_guest)) => {
                tracing::debug!(vm = %vm, %addr, to_guest, from_guest, "connect: closed");
            }
            Err(e) => tracing::debug!(vm = %vm, %addr, error = %e, "connect: broken"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, UPGRADE_PROTOCOL)
        .body(Body::empty())
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("vm/{vm}: building the upgrade answer: {e}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::server;
    use crate::runtime::simulated::SimulatedRuntime;
    use crate::tests::{bounded, test_config, vm_yaml, Harness, IMAGE};
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Sends `GET /v1/vms/{vm}/connect?{query}` (with the upgrade headers when
    /// `upgrade`); returns the status and, on 101, the stream, else the error body.
    async fn request(
        socket: &std::path::Path,
        vm: &str,
        query: &str,
        upgrade: bool,
    ) -> (
        StatusCode,
        Option<TokioIo<hyper::upgrade::Upgraded>>,
        serde_json::Value,
    ) {
        let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn.with_upgrades());
        let mut builder = axum::http::Request::builder()
            .uri(format!("/v1/vms/{vm}/connect?{query}"))
            .header("host", "banger");
        if upgrade {
            builder = builder
                .header("connection", "upgrade")
                .header("upgrade", UPGRADE_PROTOCOL);
        }
        let req = builder.body(Empty::<Bytes>::new()).unwrap();
        let mut resp = bounded("connect request", sender.send_request(req))
            .await
            .unwrap();
        let status = resp.status();
        if status == StatusCode::SWITCHING_PROTOCOLS {
            let upgraded = hyper::upgrade::on(&mut resp).await.unwrap();
            return (
                status,
                Some(TokioIo::new(upgraded)),
                serde_json::Value::Null,
            );
        }
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, None, serde_json::from_slice(&body).unwrap())
    }

    /// The simulated engine and the API on a socket; VM addresses come from
    /// 127.0.0.0/24, so a listener on the VM's address plays the guest port.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streams_to_the_guest_port_and_refuses_before_upgrading() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        config.bridge_network = Ipv4Addr::new(127, 0, 0, 0);
        let socket = config.socket.clone();
        let h = Harness::start(config, SimulatedRuntime::new());
        let state = Arc::new(ApiState::of(&h.engine));
        let listener = server::bind(&socket).await.unwrap();
        let limits = state.config.api;
        tokio::spawn(crate::api::listener::serve(
            listener,
            server::router(state),
            crate::api::authz::AccessPolicy {
                daemon_uid: nix::unistd::geteuid().as_raw(),
                group: None,
            },
            limits,
            std::future::pending(),
        ));

        let (st, _, body) = request(&socket, "a", "port=22", true).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["error"], "vm/a not found");

        h.apply(
            &[(
                "/s/a.yaml",
                &format!("{IMAGE}---\n{}", vm_yaml("a", "base", "512Mi", "")),
            )],
            |_| {},
        )
        .await
        .unwrap();
        h.until_phase(Kind::Vm, "a", Phase::Running).await;
        let ip = h.status(Kind::Vm, "a").ip.unwrap();
        assert!(ip.is_loopback(), "{ip}");
        let guest = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let port = guest.local_addr().unwrap().port();

        for (query, upgrade, status, code) in [
            ("", true, StatusCode::BAD_REQUEST, "bad-request"),
            ("port=0", true, StatusCode::BAD_REQUEST, "bad-request"),
            ("port=x", true, StatusCode::BAD_REQUEST, "bad-request"),
            (
                &format!("port={port}") as &str,
                false,
                StatusCode::UPGRADE_REQUIRED,
                "upgrade-required",
            ),
        ] {
            let (st, stream, body) = request(&socket, "a", query, upgrade).await;
            assert_eq!(
                (st, body["code"].as_str()),
                (status, Some(code)),
                "{query}: {body}"
            );
            assert!(stream.is_none());
        }
        // A port nobody listens on: 502 before any upgrade.
        let closed = {
            let l = std::net::TcpListener::bind((ip, 0)).unwrap();
            l.local_addr().unwrap().port()
        };
        let (st, _, body) = request(&socket, "a", &format!("port={closed}"), true).await;
        assert_eq!(st, StatusCode::BAD_GATEWAY, "{body}");
        assert_eq!(body["code"], "unreachable");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with(&format!("vm/a: connect to {ip}:{closed}: ")),
            "{body}"
        );

        // The stream: the client's end of stream reaches the guest (half-close), and
        // the guest's answer still comes back after it.
        let serve = tokio::spawn(async move {
            let (mut conn, _) = guest.accept().await.unwrap();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).await.unwrap();
            conn.write_all(b"pong:").await.unwrap();
            conn.write_all(&got).await.unwrap();
            conn.shutdown().await.unwrap();
        });
        let (st, stream, body) = request(&socket, "a", &format!("port={port}"), true).await;
        assert_eq!(st, StatusCode::SWITCHING_PROTOCOLS, "{body}");
        let mut stream = stream.unwrap();
        stream.write_all(b"ping\0\xff").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut answer = Vec::new();
        bounded("read the answer", stream.read_to_end(&mut answer))
            .await
            .unwrap();
        assert_eq!(answer, b"pong:ping\0\xff");
        bounded("guest side done", serve).await.unwrap();

        // A stopped VM is refused with 409.
        h.apply(
            &[(
                "/s/a.yaml",
                &format!(
                    "{IMAGE}---\n{}",
                    vm_yaml("a", "base", "512Mi", "  state: Stopped\n")
                ),
            )],
            |_| {},
        )
        .await
        .unwrap();
        h.until_phase(Kind::Vm, "a", Phase::Stopped).await;
        let (st, _, body) = request(&socket, "a", &format!("port={port}"), true).await;
        assert_eq!(st, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"], "vm/a is not running (phase Stopped)");
    }

    #[test]
    fn ports_are_1_to_65535() {
        assert_eq!(parse_port("dev", Some("22")).unwrap(), 22);
        assert_eq!(parse_port("dev", Some("65535")).unwrap(), 65535);
        for bad in [
            None,
            Some("0"),
            Some("65536"),
            Some("-1"),
            Some("ssh"),
            Some(""),
        ] {
            assert!(parse_port("dev", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn upgrade_needs_both_headers() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (k, v) in pairs {
                map.append(*k, v.parse().unwrap());
            }
            map
        };
        assert!(asks_for_upgrade(&headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "banger-connect")
        ])));
        assert!(asks_for_upgrade(&headers(&[
            ("connection", "keep-alive, upgrade"),
            ("upgrade", "Banger-Connect")
        ])));
        assert!(!asks_for_upgrade(&headers(&[(
            "upgrade",
            "banger-connect"
        )])));
        assert!(!asks_for_upgrade(&headers(&[
            ("connection", "upgrade"),
            ("upgrade", "websocket")
        ])));
    }
}
