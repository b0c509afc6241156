//! The daemon's HTTP/1.1 + JSON API on a Unix socket (axum). Documented in
//! `docs/api.md`.
//!
//! Handlers only parse, call the sources or read the store, and answer: reads take
//! short store transactions (off the async workers) and never wait for a reconcile in
//! flight. They see the engine only through [`ApiState`]: its [`Control`] (store,
//! queue, events), the planner's [`Facts`] (for `describe`), the
//! [`GarbageCollector`], and the runtime with the workspace locks (for exports).
//!
//! Around the handlers, in the order a request meets them: the listener
//! ([`super::listener`]: who may connect, how many, header timeout), authorisation
//! ([`super::authz`]), the body reader ([`super::body`]: size, time, how many at once),
//! then the handler. Every error is an [`ErrorBody`] ([`super::error_body`] turns the
//! framework's plain-text ones into it): 400, 403, 404, 405, 408, 409, 413, 415, 422,
//! 500 (the connect stream, [`super::connect`], adds 426 and 502).

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use banger_specs::Kind;
use serde::Deserialize;

use super::authz::Client;
use super::error_body::ApiJson;
use super::listing::ListingError;
use super::types::{
    ApplyRequest, DeleteRequest, DescribeView, ErrorBody, EventView, ObjectView, RefreshRequest,
    SshIdentityView,
};
use super::views::{event_view, object_view, plan_view, step_view};
use crate::config::DaemonConfig;
use crate::control::Control;
use crate::engine::resync::ResyncPasses;
use crate::engine::{Engine, Facts, WorkspaceLocks};
use crate::gc::{GarbageCollector, GcOptions, GcReport};
use crate::host::guest_keys::{SshIdentity, GUEST_USER};
use crate::runtime::VmRuntime;
use crate::sources::{apply, SourceError};
use crate::status::Reason;
use crate::store::{EventFilter, StoreError, StoredObject};

/// Longest a long poll may wait.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Most console bytes returned by one logs request.
const MAX_LOG_CHUNK: u64 = 1024 * 1024;
/// Largest request body accepted (413 above it): the spec files of one request may
/// hold [`banger_specs::load::MAX_REQUEST_BYTES`], and JSON escaping makes them longer.
pub const MAX_BODY_BYTES: usize = 2 * banger_specs::load::MAX_REQUEST_BYTES;

/// An API error: status code and body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &str, error: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error: error.into(),
                code: code.into(),
                problems: Vec::new(),
            },
        }
    }
    pub(super) fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", what)
    }
    pub(super) fn bad_request(what: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", what)
    }
    pub(super) fn conflict(what: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", what)
    }
    pub(super) fn forbidden(what: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", what)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
}

impl From<SourceError> for ApiError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::Invalid { message, problems } => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                body: ErrorBody {
                    error: message,
                    code: "invalid".into(),
                    problems,
                },
            },
            SourceError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            SourceError::Forbidden(m) => Self::forbidden(m),
            SourceError::Store(e) => e.into(),
        }
    }
}

/// What the handlers may use of the daemon.
pub struct ApiState<R: VmRuntime> {
    /// Store, queue and event recorder.
    pub ctl: Control,
    /// The planner's facts, for `describe`, `diff` and dry runs.
    pub facts: Facts<R>,
    /// Garbage collection (`POST /v1/gc`).
    pub gc: GarbageCollector<R>,
    /// Where VM directories (console logs) are.
    pub config: Arc<DaemonConfig>,
    /// `host` or `simulated`, for `/v1/healthz`.
    pub runtime_name: &'static str,
    /// Resync passes and reconciles, for `/v1/healthz`.
    pub resyncs: Arc<ResyncPasses>,
    /// The runtime, for Workspace exports (they read the guest; they change nothing).
    pub runtime: Arc<R>,
    /// The engine's per-VM workspace locks: an export never interleaves with a copy.
    pub workspace_locks: Arc<WorkspaceLocks>,
}

impl<R: VmRuntime> ApiState<R> {
    /// The API's view of an engine.
    pub fn of(engine: &Engine<R>) -> Self {
        ApiState {
            ctl: engine.ctl.clone(),
            facts: engine.facts.clone(),
            gc: engine.garbage_collector(),
            config: engine.config.clone(),
            runtime_name: engine.runtime.name(),
            resyncs: engine.resyncs.clone(),
            runtime: engine.runtime.clone(),
            workspace_locks: engine.workspace_locks.clone(),
        }
    }
}

type Shared<R> = Arc<ApiState<R>>;

/// The API's routes, with authorisation, the body reader and the JSON error net
/// around them. Requests must come through [`super::listener::serve`], which gives
/// each one its [`Client`]; without one every route answers 403.
pub fn router<R: VmRuntime>(state: Shared<R>) -> Router {
    let bodies = super::body::BodyLimits::new(&state.config.api, MAX_BODY_BYTES);
    Router::new()
        .route("/v1/healthz", get(healthz::<R>))
        .route("/v1/apply", post(apply_handler::<R>))
        .route("/v1/delete", post(delete_handler::<R>))
        .route("/v1/objects", get(list::<R>))
        .route("/v1/objects/{kind}/{name}", get(get_one::<R>))
        .route("/v1/objects/{kind}/{name}/describe", get(describe::<R>))
        .route("/v1/objects/{kind}/{name}/retry", post(retry::<R>))
        .route("/v1/events", get(events::<R>))
        .route("/v1/vms/{name}/logs", get(logs::<R>))
        .route("/v1/vms/{name}/connect", get(super::connect::connect::<R>))
        .route(
            "/v1/workspaces/{name}/sync",
            post(super::workspace::sync::<R>),
        )
        .route(
            "/v1/workspaces/{name}/export",
            get(super::workspace::export::<R>),
        )
        .route("/v1/ssh-identity", get(ssh_identity::<R>))
        .route("/v1/gc", post(gc_handler::<R>))
        .route("/v1/images/{name}/refresh", post(refresh_image::<R>))
        // Route layers run innermost last: authorisation first, then the body.
        .route_layer(axum::middleware::from_fn_with_state(
            bodies,
            super::body::read_body,
        ))
        .route_layer(axum::middleware::from_fn(super::authz::authorize))
        .fallback(no_such_route)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(
            super::error_body::json_errors,
        ))
        .with_state(state)
}

async fn no_such_route(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such route: {method} {}", uri.path()))
}

/// Binds the API socket: parent created, mode 0600 (the daemon's user only; the daemon
/// then gives it to the socket group, [`grant_to_group`]). What is at the path already
/// decides:
/// nothing, fine; a socket nobody listens on (left by a daemon that died), removed;
/// a socket a daemon answers on, [`std::io::ErrorKind::AddrInUse`]; anything else (a
/// regular file, a directory, a symlink), [`std::io::ErrorKind::AlreadyExists`] naming
/// it: `bind` never unlinks what is not a socket.
pub async fn bind(socket: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::io::{Error, ErrorKind};
    use std::os::unix::fs::FileTypeExt;

    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::symlink_metadata(socket) {
        Ok(meta) if meta.file_type().is_socket() => {
            if tokio::net::UnixStream::connect(socket).await.is_ok() {
                return Err(Error::new(
                    ErrorKind::AddrInUse,
                    format!("{}: another daemon is listening", socket.display()),
                ));
            }
            std::fs::remove_file(socket)?;
        }
        Ok(meta) => {
            let what = if meta.is_dir() {
                "a directory"
            } else if meta.file_type().is_symlink() {
                "a symbolic link"
            } else if meta.is_file() {
                "a regular file"
            } else {
                "not a socket"
            };
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is {what}, not a socket; remove it or choose another --socket",
                    socket.display()
                ),
            ));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Gives the socket to group `gid`: owner root, mode 0660, so the group's members can
/// connect (and nobody else). Root only (`chown`).
pub fn grant_to_group(socket: &Path, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(socket, Some(0), Some(gid))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
}

fn parse_kind(s: &str) -> Result<Kind, ApiError> {
    Kind::parse_cli(s).ok_or_else(|| {
        ApiError::bad_request(format!("unknown kind {s:?}: use images, vms or workspaces"))
    })
}

async fn healthz<R: VmRuntime>(State(st): State<Shared<R>>) -> Json<serde_json::Value> {
    let counts = st.resyncs.counts();
    Json(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "runtime": st.runtime_name,
        "resyncs": {
            "started": counts.started,
            "completed": counts.completed,
            "lastCompleted": counts.last_completed,
        },
        "reconciles": counts.reconciles,
        "storeTrips": st.ctl.store.trips(),
    }))
}

async fn ssh_identity<R: VmRuntime>(State(st): State<Shared<R>>) -> Json<SshIdentityView> {
    let id = SshIdentity::paths(&st.config.state_dir);
    Json(SshIdentityView {
        private_key: id.private_key,
        known_hosts: id.known_hosts,
        user: GUEST_USER.to_string(),
    })
}

async fn apply_handler<R: VmRuntime>(
    State(st): State<Shared<R>>,
    Extension(client): Extension<Client>,
    ApiJson(req): ApiJson<ApplyRequest>,
) -> Result<Response, ApiError> {
    let resp = apply::apply(&st.ctl, &st.facts, &req, client.reads_as()).await?;
    Ok(Json(resp).into_response())
}

async fn delete_handler<R: VmRuntime>(
    State(st): State<Shared<R>>,
    ApiJson(req): ApiJson<DeleteRequest>,
) -> Result<Response, ApiError> {
    let resp = apply::delete(&st.ctl, &req).await?;
    Ok(Json(resp).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    kind: Option<String>,
}

/// `GET /v1/objects[?kind=…]`: `{"items": [ObjectView, …]}`, written from the stored
/// text ([`super::listing`]) off the async workers.
async fn list<R: VmRuntime>(
    State(st): State<Shared<R>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let kind = q.kind.as_deref().map(parse_kind).transpose()?;
    let listed = st
        .ctl
        .store
        .run("list objects", move |db| {
            Ok(super::listing::write_list(db, kind))
        })
        .await?;
    let body = match listed {
        Ok(body) => body,
        Err(ListingError::Store(e)) => return Err(e.into()),
        Err(e @ ListingError::Corrupt { .. }) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("list objects: {e}"),
            ))
        }
    };
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

async fn find<R: VmRuntime>(
    st: &ApiState<R>,
    kind: &str,
    name: &str,
) -> Result<StoredObject, ApiError> {
    let kind = parse_kind(kind)?;
    st.ctl.store.get_object(kind, name).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "{}/{name} not found",
            kind.as_str().to_ascii_lowercase()
        ))
    })
}

async fn view_of<R: VmRuntime>(st: &ApiState<R>, o: &StoredObject) -> Result<ObjectView, ApiError> {
    let (status, _) = st
        .ctl
        .store
        .get_status(o.resource.kind(), o.resource.name())
        .await?;
    Ok(object_view(o, &status))
}

/// The response header carrying the change counter a `GET` of one object was read at
/// ([`crate::control::Control::changes`]); pass it back as `after` to long-poll.
pub const CHANGE_HEADER: &str = "x-banger-change";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetQuery {
    /// The change counter of the caller's last read (the [`CHANGE_HEADER`] it got).
    after: Option<u64>,
    /// With `after`: how long to wait (at most [`MAX_WAIT`]) for the object to change.
    #[serde(default)]
    wait_seconds: u64,
}

/// One object, or `None` when it does not exist: the view compared by a long-poll.
async fn read_one<R: VmRuntime>(
    st: &ApiState<R>,
    kind: Kind,
    name: &str,
) -> Result<Option<ObjectView>, ApiError> {
    match st.ctl.store.get_object(kind, name).await? {
        Some(o) => Ok(Some(view_of(st, &o).await?)),
        None => Ok(None),
    }
}

/// `GET /v1/objects/{kind}/{name}[?after=N&waitSeconds=S]`: the object, with the change
/// counter it was read at in [`CHANGE_HEADER`]. With `after` and `waitSeconds`, a
/// long-poll: answers at once unless `after` is the current counter (anything else: the
/// caller may not have seen the object as it is), else when a change alters this
/// object (its view, or its existence), else when the wait ends.
async fn get_one<R: VmRuntime>(
    State(st): State<Shared<R>>,
    UrlPath((kind_text, name)): UrlPath<(String, String)>,
    Query(q): Query<GetQuery>,
) -> Result<Response, ApiError> {
    let kind = parse_kind(&kind_text)?;
    let mut rx = st.ctl.changes.subscribe();
    let mut change = *rx.borrow_and_update();
    let mut view = read_one(&st, kind, &name).await?;
    // A counter other than the current one (older, or of an earlier daemon) means the
    // caller may not have seen the object as it is now: answer at once.
    if q.after == Some(change) && q.wait_seconds > 0 {
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(q.wait_seconds).min(MAX_WAIT);
        let first = serde_json::to_value(&view).ok();
        while matches!(
            tokio::time::timeout_at(deadline, rx.changed()).await,
            Ok(Ok(()))
        ) {
            change = *rx.borrow_and_update();
            view = read_one(&st, kind, &name).await?;
            if serde_json::to_value(&view).ok() != first {
                break;
            }
        }
    }
    let mut response = match view {
        Some(view) => Json(view).into_response(),
        None => ApiError::not_found(format!(
            "{}/{name} not found",
            kind.as_str().to_ascii_lowercase()
        ))
        .into_response(),
    };
    response
        .headers_mut()
        .insert(CHANGE_HEADER, HeaderValue::from(change));
    Ok(response)
}

async fn describe<R: VmRuntime>(
    State(st): State<Shared<R>>,
    UrlPath((kind, name)): UrlPath<(String, String)>,
) -> Result<Json<DescribeView>, ApiError> {
    let o = find(&st, &kind, &name).await?;
    let plan = st.facts.preview(Some(&o), &o.resource, false).await?;
    let store = &st.ctl.store;
    Ok(Json(DescribeView {
        object: view_of(&st, &o).await?,
        steps: store
            .journal_for(&o.uid, 20)
            .await?
            .iter()
            .map(step_view)
            .collect(),
        events: store
            .recent_events(o.resource.kind(), o.resource.name(), 20)
            .await?
            .iter()
            .map(event_view)
            .collect(),
        plan: plan_view(&plan),
    }))
}

async fn retry<R: VmRuntime>(
    State(st): State<Shared<R>>,
    UrlPath((kind, name)): UrlPath<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let o = find(&st, &kind, &name).await?;
    st.ctl.queue.retry_now(o.resource.key());
    st.ctl
        .events
        .normal(
            o.resource.kind(),
            o.resource.name(),
            Reason::RetryRequested,
            "banger retry: backoff reset",
        )
        .await;
    Ok(Json(serde_json::json!({ "queued": true })))
}

/// Longest `POST /v1/images/{name}/refresh` waits for the check (and the pull it
/// applies) before answering that it is still running.
const REFRESH_WAIT: Duration = Duration::from_secs(600);

async fn refresh_image<R: VmRuntime>(
    State(st): State<Shared<R>>,
    UrlPath(name): UrlPath<String>,
    Json(req): Json<RefreshRequest>,
) -> Result<Json<crate::refresh::RefreshOutcome>, ApiError> {
    let o = find(&st, "images", &name).await?;
    if o.deleting.is_some() {
        return Err(ApiError::conflict(format!("image/{name} is being deleted")));
    }
    let answer = st.ctl.image_refresh.request(&name, req.apply);
    st.ctl.queue.retry_now(o.resource.key());
    match tokio::time::timeout(REFRESH_WAIT, answer).await {
        Ok(Ok(outcome)) => Ok(Json(outcome)),
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("image/{name}: the refresh was dropped (daemon shutting down)"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "image/{name}: still refreshing after {}s; follow it with `banger describe image {name}`",
                REFRESH_WAIT.as_secs()
            ),
        )),
    }
}

/// The query of `POST /v1/gc` (authorisation decodes it the same way).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GcQuery {
    #[serde(default)]
    pub(super) dry_run: bool,
    #[serde(default)]
    pub(super) include_orphans: bool,
}

async fn gc_handler<R: VmRuntime>(
    State(st): State<Shared<R>>,
    Query(q): Query<GcQuery>,
) -> Result<Json<GcReport>, ApiError> {
    let options = GcOptions {
        dry_run: q.dry_run,
        include_orphans: q.include_orphans,
    };
    Ok(Json(st.gc.collect_garbage(options).await?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventsQuery {
    kind: Option<String>,
    name: Option<String>,
    #[serde(default)]
    after: i64,
    #[serde(default)]
    wait_seconds: u64,
}

async fn events<R: VmRuntime>(
    State(st): State<Shared<R>>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Vec<EventView>>, ApiError> {
    let kind = q.kind.as_deref().map(parse_kind).transpose()?;
    if q.name.is_some() && kind.is_none() {
        return Err(ApiError::bad_request("name needs kind"));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait_seconds).min(MAX_WAIT);
    let mut rx = st.ctl.events.subscribe();
    let filter = EventFilter {
        kind,
        name: q.name.clone(),
    };
    loop {
        rx.borrow_and_update();
        let list = st
            .ctl
            .store
            .list_events(filter.clone(), q.after, 1000)
            .await?;
        if !list.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(list.iter().map(event_view).collect()));
        }
        if tokio::time::timeout_at(deadline, rx.changed())
            .await
            .is_err()
        {
            return Ok(Json(Vec::new()));
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogsQuery {
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    wait_seconds: u64,
}

fn read_from(path: &PathBuf, offset: u64) -> std::io::Result<(Vec<u8>, u64)> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    // A truncated or replaced log starts over.
    let start = if offset > len { 0 } else { offset };
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(MAX_LOG_CHUNK).read_to_end(&mut buf)?;
    let next = start + u64::try_from(buf.len()).unwrap_or(0);
    Ok((buf, next))
}

async fn logs<R: VmRuntime>(
    State(st): State<Shared<R>>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let o = find(&st, "vms", &name).await?;
    let path = st.config.vm_dir(&o.uid).join("console.log");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait_seconds).min(MAX_WAIT);
    loop {
        let read_path = path.clone();
        let offset = q.offset;
        let read = tokio::task::spawn_blocking(move || read_from(&read_path, offset))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        let (bytes, next) = read.map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("vm {name}: read {}: {e}", path.display()),
            )
        })?;
        if !bytes.is_empty() || tokio::time::Instant::now() >= deadline {
            let mut headers = HeaderMap::new();
            headers.insert("x-banger-offset", HeaderValue::from(next));
            headers.insert(
                "content-type",
                HeaderValue::from_static("application/octet-stream"),
            );
            return Ok((StatusCode::OK, headers, bytes).into_response());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
