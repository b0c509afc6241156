//! The Workspace endpoints: `POST /v1/workspaces/{name}/sync` (a copy request for the
//! engine) and, below, `GET /v1/workspaces/{name}/export`.
//!
//! A sync request never copies in the handler: it is recorded (numbered, in a table of
//! its own that the reconcile never rewrites) and the Workspace is queued; the planner
//! sees the request unserved and plans a `sync-workspace` step (so `describe` shows the
//! pending copy), and the engine's worker runs it under the VM's workspace lock. The
//! Workspace's `status.lastSyncRequest` reaches the request's number once the engine
//! acted on it: copied (`Synced=True`) or refused (`Synced=False, reason:
//! GuestChanged`).

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
