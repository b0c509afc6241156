//! A VM's handles as the engine keeps them: `<vm_dir>/handles.json` and a mirror in the
//! store (so teardown works when the file is missing or corrupt). Loading prefers the
//! file; both are written after every step. File I/O runs on the blocking pool.

use std::path::PathBuf;

use crate::runtime::VmHandles;
use crate::store::{Store, StoreError};

use super::ReconcileError;

/// The handles file of a VM directory.
fn handles_file(vm_dir: &std::path::Path) -> PathBuf {
    vm_dir.join("handles.json")
}

/// Loads a VM's handles: `handles.json` if readable, else the store's mirror.
pub(super) async fn load(
    store: &Store,
    uid: &str,
    vm_dir: PathBuf,
) -> Result<VmHandles, StoreError> {
    let uid = uid.to_owned();
    store
        .run("read handles", move |db| {
            let path = handles_file(&vm_dir);
            if let Ok(text) = std::fs::read_to_string(&path) {
                if let Ok(h) = serde_json::from_str(&text) {
                    return Ok(h);
                }
                tracing::warn!(path = %path.display(), "handles.json unreadable; using the store's copy");
            }
            Ok(db.get_handles(&uid)?.unwrap_or_default())
        })
        .await
}

/// Saves a VM's handles: the store's mirror, then `handles.json` (written to a
/// temporary file and renamed) when the VM directory exists.
pub(super) async fn save(
    store: &Store,
    name: &str,
    uid: &str,
    vm_dir: PathBuf,
    handles: &VmHandles,
) -> Result<(), ReconcileError> {
    store.put_handles(uid, handles.clone()).await?;
    let text = serde_json::to_vec_pretty(handles).unwrap_or_default();
    let path = handles_file(&vm_dir);
    let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        if !vm_dir.is_dir() {
            return Ok(());
        }
        let tmp = vm_dir.join(".handles.json.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, handles_file(&vm_dir))
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))
    .and_then(|r| r);
    written.map_err(|e| ReconcileError::Handles {
        vm: name.to_string(),
        path: path.display().to_string(),
        message: e.to_string(),
    })
}
