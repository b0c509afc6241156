//! The Workspace endpoints: `POST /v1/workspaces/{name}/sync` (a copy request for the
//! engine) and `GET /v1/workspaces/{name}/export` (the guest's work as a patch).
//!
//! A sync request never copies in the handler: it is recorded (numbered, in a table of
//! its own that the reconcile never rewrites) and the Workspace is queued; the planner
//! sees the request unserved and plans a `sync-workspace` step (so `describe` shows the
//! pending copy), and the engine's worker runs it under the VM's workspace lock. The
//! Workspace's `status.lastSyncRequest` reaches the request's number once the engine
//! acted on it: copied (`Synced=True`) or refused (`Synced=False, reason:
//! GuestChanged`).
//!
//! An export reads the guest through the daemon (the only process that reaches it)
//! under the VM's workspace lock, so it never sees a copy half done; the patch is
//! written to an unnamed file below the state directory and streamed from there.

use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::Json;
use banger_specs::Kind;
use serde::Deserialize;

use super::server::{ApiError, ApiState};
use super::types::SyncRequestView;
use crate::clock::now_rfc3339;
use crate::control::Control;
use crate::runtime::VmRuntime;
use crate::status::Reason;

/// Records a sync request for the Workspace `name` and queues it (see the module docs).
pub async fn request_sync(
    ctl: &Control,
    name: &str,
    force: bool,
) -> Result<SyncRequestView, ApiError> {
    let object = ctl
        .store
        .get_object(Kind::Workspace, name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("workspace/{name} not found")))?;
    if object.deleting.is_some() {
        return Err(ApiError::conflict(format!(
            "workspace/{name} is being deleted"
        )));
    }
    let request = ctl
        .store
        .request_sync(&object.uid, force, now_rfc3339())
        .await?;
    let flag = if force { " --force" } else { "" };
    ctl.events
        .normal(
            Kind::Workspace,
            name,
            Reason::SyncRequested,
            format!("banger workspace sync{flag} (request {})", request.serial),
        )
        .await;
    ctl.queue.retry_now(object.resource.key());
    Ok(SyncRequestView {
        request: request.serial,
        force,
    })
}

#[derive(Deserialize)]
pub(super) struct SyncQuery {
    #[serde(default)]
    force: bool,
}

/// `POST /v1/workspaces/{name}/sync[?force=true]`.
pub(super) async fn sync<R: VmRuntime>(
    State(st): State<Arc<ApiState<R>>>,
    UrlPath(name): UrlPath<String>,
    Query(query): Query<SyncQuery>,
) -> Result<Json<SyncRequestView>, ApiError> {
    Ok(Json(request_sync(&st.ctl, &name, query.force).await?))
}

/// The patch's base commit (absent when the checkout had none).
pub const BASE_COMMIT_HEADER: &str = "x-banger-base-commit";
/// How the patch was made: `guest-git` or `host-diff`.
pub const EXPORT_METHOD_HEADER: &str = "x-banger-export-method";

/// A private file for the patch below `<state_dir>/tmp` (0700), unnamed: it goes
/// when the response is sent.
fn patch_file(state_dir: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = state_dir.join("tmp");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    tempfile::tempfile_in(dir)
}

/// The file's bytes as a response body, read in chunks (never whole in memory).
fn file_body(file: tokio::fs::File) -> axum::body::Body {
    let chunks = futures::stream::unfold(Some(file), |file| async move {
        use tokio::io::AsyncReadExt;
        let mut file = file?;
        let mut buf = vec![0u8; 1 << 16];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(axum::body::Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    axum::body::Body::from_stream(chunks)
}

/// `GET /v1/workspaces/{name}/export`: a binary patch of the guest's copy since the
/// base commit (see [`crate::runtime::VmRuntime::export_workspace`]), streamed.
pub(super) async fn export<R: VmRuntime>(
    State(st): State<Arc<ApiState<R>>>,
    UrlPath(name): UrlPath<String>,
) -> Result<axum::response::Response, ApiError> {
    use axum::http::{header, HeaderValue, StatusCode};
    use axum::response::IntoResponse;

    let object = st
        .ctl
        .store
        .get_object(Kind::Workspace, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("workspace/{name} not found")))?;
    let banger_specs::Resource::Workspace(ws) = &object.resource else {
        return Err(ApiError::not_found(format!("workspace/{name} not found")));
    };
    if object.deleting.is_some() {
        return Err(ApiError::conflict(format!(
            "workspace/{name} is being deleted"
        )));
    }
    let vm = &ws.spec.vm;
    let (inputs, stored) = st.facts.workspace(&object, vm).await?;
    let Some(synced) = stored.internal.synced else {
        return Err(ApiError::conflict(format!(
            "workspace/{name} has not been copied into vm {vm} yet: nothing to export"
        )));
    };
    let Some(vm_ctx) = inputs.vm else {
        return Err(ApiError::conflict(format!(
            "workspace/{name}: vm {vm} is not running with its guest ready; start it to export"
        )));
    };
    if !inputs.facts.onto_same_guest() {
        return Err(ApiError::conflict(format!(
            "workspace/{name}: vm {vm} runs a root disk the workspace was not copied to yet"
        )));
    }
    let ctx = crate::runtime::WorkspaceContext {
        name: name.clone(),
        uid: object.uid.clone(),
        spec: ws.spec.clone(),
        vm: vm_ctx,
        previous: None,
    };
    let internal = |e: std::io::Error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("workspace/{name}: patch file: {e}"),
        )
    };
    let state_dir = st.config.state_dir.clone();
    let file = tokio::task::spawn_blocking(move || patch_file(&state_dir))
        .await
        .map_err(|e| internal(std::io::Error::other(e.to_string())))?
        .map_err(internal)?;
    let base = synced.record.commit.clone();
    let record = {
        let lock = st.workspace_locks.of(&ctx.vm.uid);
        let _held = lock.lock().await;
        let out = file.try_clone().map_err(internal)?;
        st.runtime
            .export_workspace(&ctx, base.clone(), out)
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "guest-failed", e.to_string()))?
    };
    let mut file = tokio::fs::File::from_std(file);
    {
        use tokio::io::AsyncSeekExt;
        file.seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(internal)?;
    }
    let mut response = (StatusCode::OK, file_body(file)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(record.bytes));
    headers.insert(
        EXPORT_METHOD_HEADER,
        HeaderValue::from_static(record.method.as_str()),
    );
    if let Some(base) = base.and_then(|b| HeaderValue::from_str(&b).ok()) {
        headers.insert(BASE_COMMIT_HEADER, base);
    }
    Ok(response)
}
