//! `sync_workspace`: a Workspace's checkout copied into its running guest as a tar
//! stream over SSH with banger's own identity ([`crate::host::workspace`]), after the
//! guest is checked for changes to what the last copy wrote (when asked); and
//! `export_workspace`, the guest's work back out as a patch. Listing files, `git` and
//! the streams run on the blocking pool.

use std::path::{Path, PathBuf};

use crate::host::guest_keys;
use crate::host::names::ObjectUid;
use crate::host::workspace::export::{self, ExportJob};
use crate::host::workspace::remote::GuestShell;
use crate::host::workspace::{self, CopyJob};
use crate::runtime::{ExportRecord, RuntimeError, SyncOutcome, SyncRecord, WorkspaceContext};

/// The directory below the state directory for a copy's temporary files (mode 0700).
fn scratch_dir(state_dir: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = state_dir.join("tmp");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    Ok(dir)
}

/// The guest of a Workspace's VM, reached with banger's identity (made once, below
/// `state_dir`), and the directory for temporary files.
async fn guest_of(
    state_dir: &Path,
    ws: &WorkspaceContext,
) -> Result<(GuestShell, PathBuf), RuntimeError> {
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
    let uid = ObjectUid::parse(&ws.vm.uid).map_err(|e| fail("vm uid", e.to_string()))?;
    let state_dir = state_dir.to_path_buf();
    let (identity, scratch) = tokio::task::spawn_blocking(move || {
        let identity = guest_keys::ensure_identity(&state_dir).map_err(|e| e.to_string())?;
        let scratch = scratch_dir(&state_dir)
            .map_err(|e| format!("{}: {e}", state_dir.join("tmp").display()))?;
        Ok::<_, String>((identity, scratch))
    })
    .await
    .map_err(|e| fail("ssh identity", e.to_string()))?
    .map_err(|e| fail("ssh identity", e))?;
    let shell = GuestShell {
        identity,
        alias: guest_keys::host_key_alias(&uid),
        ip,
    };
    Ok((shell, scratch))
}

/// [`crate::runtime::VmRuntime::sync_workspace`] on this host, with banger's identity
/// kept below `state_dir`: the guard check (when asked), then the copy.
pub(super) async fn sync_workspace(
    state_dir: &Path,
    ws: &WorkspaceContext,
) -> Result<SyncOutcome, RuntimeError> {
    let fail = |e: workspace::CopyError| RuntimeError::Sync {
        workspace: ws.name.clone(),
        vm: ws.vm.name.clone(),
        step: e.step.to_string(),
        message: e.message,
    };
    let (shell, scratch) = guest_of(state_dir, ws).await?;
    if let Some(previous) = ws.previous.as_ref().filter(|p| p.guard) {
        let changes = workspace::guest_changes(&shell, &ws.spec.path, &previous.manifest)
            .await
            .map_err(fail)?;
        if !changes.is_empty() {
            return Ok(SyncOutcome::GuestChanged(changes));
        }
    }
    let job = CopyJob {
        source: ws.spec.source.clone(),
        include: ws.spec.include,
        guest_path: ws.spec.path.clone(),
        previous: ws.previous.as_ref().map(|p| p.manifest.clone()),
        scratch,
    };
    let outcome = workspace::copy_into_guest(&shell, job)
        .await
        .map_err(fail)?;
    Ok(SyncOutcome::Copied {
        record: SyncRecord {
            files: outcome.summary.files,
            bytes: outcome.summary.bytes,
            commit: outcome.base_commit,
        },
        manifest: outcome.summary.manifest,
    })
}

/// [`crate::runtime::VmRuntime::export_workspace`] on this host.
pub(super) async fn export_workspace(
    state_dir: &Path,
    ws: &WorkspaceContext,
    base: Option<String>,
    out: std::fs::File,
) -> Result<ExportRecord, RuntimeError> {
    let (shell, scratch) = guest_of(state_dir, ws).await?;
    let job = ExportJob {
        source: ws.spec.source.clone(),
        guest_path: ws.spec.path.clone(),
        base,
        scratch,
    };
    let (method, bytes) =
        export::export(&shell, job, out)
            .await
            .map_err(|e| RuntimeError::Sync {
                workspace: ws.name.clone(),
                vm: ws.vm.name.clone(),
                step: e.step.to_string(),
                message: e.message,
            })?;
    Ok(ExportRecord { method, bytes })
}
