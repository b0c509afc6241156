//! `sync_workspace`: a Workspace's checkout copied into its running guest as a tar
//! stream over SSH with banger's own identity ([`crate::host::workspace_copy`]). Listing
//! files, `git` and building the archive run on the blocking pool.

use std::path::Path;

use crate::host::guest_keys;
use crate::host::names::ObjectUid;
use crate::host::workspace_copy;
use crate::runtime::{RuntimeError, SyncRecord, WorkspaceContext};

/// [`crate::runtime::VmRuntime::sync_workspace`] on this host, with banger's identity
/// kept below `state_dir`.
pub(super) async fn sync_workspace(
    state_dir: &Path,
    ws: &WorkspaceContext,
) -> Result<SyncRecord, RuntimeError> {
    let fail = |step: &str, message: String| RuntimeError::Sync {
        workspace: ws.name.clone(),
        vm: ws.vm.name.clone(),
        step: step.to_string(),
        message,
    };
    let ip = ws
        .vm
        .lease
        .as_ref()
        .map(|l| l.ip)
        .ok_or_else(|| fail("address", "the VM has no IP lease".into()))?;
    let state_dir = state_dir.to_path_buf();
    let identity = tokio::task::spawn_blocking(move || guest_keys::ensure_identity(&state_dir))
        .await
        .map_err(|e| fail("ssh identity", e.to_string()))?
        .map_err(|e| fail("ssh identity", e.to_string()))?;
    let source = ws.spec.source.clone();
    let include = ws.spec.include;
    let guest_path = ws.spec.path.clone();
    let (stream, commit) = tokio::task::spawn_blocking(move || {
        let files = workspace_copy::list_files(&source, include)?;
        let stream = workspace_copy::build_stream(&source, &files, &guest_path)?;
        Ok::<_, workspace_copy::CopyError>((stream, workspace_copy::head_commit(&source)))
    })
    .await
    .map_err(|e| fail("build archive", e.to_string()))?
    .map_err(|e| fail(e.step, e.message))?;
    let uid = ObjectUid::parse(&ws.vm.uid).map_err(|e| fail("vm uid", e.to_string()))?;
    workspace_copy::copy_into_guest(
        &identity,
        &guest_keys::host_key_alias(&uid),
        ip,
        stream.data,
    )
    .await
    .map_err(|e| fail(e.step, e.message))?;
    Ok(SyncRecord {
        files: stream.files,
        bytes: stream.bytes,
        commit,
    })
}
