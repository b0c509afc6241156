//! The VM's root disk: `prepare-disk`, `grow-disk` and `remove-disk`, and how a disk
//! records the image it was made from.
//!
//! Disk work (copying, `e2fsck`, `resize2fs`, `debugfs` for the SSH key) is long and
//! blocking: it runs on the blocking pool.

use super::LinuxRuntime;
use crate::host::disk::{self, ImageSource, Prepared, RootDiskRequest};
use crate::host::guest_keys;
use crate::host::names::ObjectUid;
use crate::host::prepared_disk::{PreparedDisks, PreparedKey};
use crate::runtime::{RuntimeError, VmContext, VmHandles, VmStep};

impl LinuxRuntime {
    /// `prepare-disk` and `grow-disk`: [`disk::ensure_root_disk`] makes or grows
    /// `<vm_dir>/rootfs.ext4`; a new disk gets banger's public key and an id of its own
    /// (reported in the handles), and the VM's pinned guest host key is forgotten (a
    /// new disk's guest makes a new one). A new disk is taken from the prepared base
    /// of the image and size when there is one ([`PreparedDisks`]); after it, the next
    /// spare (and the base, the first time) is made in the background.
    pub(super) async fn prepare_disk(
        &self,
        step: VmStep,
        vm: &VmContext,
        mut handles: VmHandles,
    ) -> Result<VmHandles, RuntimeError> {
        let err = |m: String| Self::step_error(vm, step, m);
        let image = vm
            .image
            .as_ref()
            .ok_or_else(|| err("its Image is not resolved".into()))?;
        let image_name = vm.spec.image.clone();
        let base_image_name = image_name.clone();
        let source = ImageSource {
            identity: disk_identity(&image_name, &image.rootfs_digest),
            rootfs: image.rootfs.clone(),
        };
        let spare_source = source.clone();
        let state_dir = self.config.state_dir.clone();
        let vm_dir = vm.vm_dir.clone();
        let vm_name = vm.name.clone();
        let size = vm.spec.disk.0;
        let uid = ObjectUid::parse(&vm.uid).map_err(|e| err(e.to_string()))?;
        let root = tokio::task::spawn_blocking(move || {
            // A new disk gets banger's own identity (ssh, workspaces) before it is
            // published, so a published disk always has it.
            let key = guest_keys::ensure_identity(&state_dir)
                .and_then(|id| id.public_key_line())
                .map_err(|e| format!("banger's ssh identity: {e}"))?;
            let inject = |disk: &std::path::Path| {
                guest_keys::inject_authorized_key(disk, &key, &vm_dir)
                    .map_err(|e| format!("inject banger's ssh key: {e}"))
            };
            let prepared = PreparedDisks::for_state_dir(&state_dir);
            let root = disk::ensure_root_disk(&RootDiskRequest {
                vm_name: &vm_name,
                state_dir: &state_dir,
                vm_dir: &vm_dir,
                image: &source,
                size_bytes: size,
                before_publish: Some(&inject),
                prepared: Some(Prepared {
                    disks: &prepared,
                    finish_id: &key,
                    image_name: &base_image_name,
                }),
            })
            .map_err(|e| e.to_string())?;
            if root.method != disk::CopyMethod::Existing {
                guest_keys::forget_host_key(&state_dir, &uid)
                    .map_err(|e| format!("forget the old disk's host key: {e}"))?;
            }
            Ok::<_, String>((root, key))
        })
        .await
        .map_err(|e| err(e.to_string()))?
        .map_err(err)?;
        let (root, key) = root;
        if root.method != disk::CopyMethod::Existing {
            // The next VM of this image and size takes a spare made now, off this
            // VM's path (the daemon's blocking pool; the first new disk of a key also
            // builds its base here). An error only costs the next VM the slow way.
            let (state_dir, image_name, vm_name) = (
                self.config.state_dir.clone(),
                vm.spec.image.clone(),
                vm.name.clone(),
            );
            tokio::task::spawn_blocking(move || {
                let disks = PreparedDisks::for_state_dir(&state_dir);
                let inject = |disk: &std::path::Path| {
                    guest_keys::inject_authorized_key(disk, &key, disks.dir())
                        .map_err(|e| format!("inject banger's ssh key: {e}"))
                };
                let prepared = PreparedKey {
                    image_name: &image_name,
                    image: &spare_source,
                    size_bytes: size,
                    finish_id: &key,
                };
                if let Err(e) = disks.refill_spare(&prepared, Some(&inject)) {
                    tracing::warn!(vm = %vm_name, error = %e, "prepare the next spare disk");
                }
            });
        }
        handles.root_disk = Some(root.path);
        handles.disk_image = Some(image_name);
        handles.disk_digest = Some(image.rootfs_digest.clone());
        handles.disk_size = Some(root.size_bytes);
        handles.disk_id = root.source.and_then(|s| s.disk_id);
        Ok(handles)
    }

    /// `remove-disk`: deletes the disk, its sidecar and leftovers, and forgets the
    /// guest host key pinned for the VM (idempotent).
    pub(super) async fn remove_disk(
        &self,
        vm: &VmContext,
        mut handles: VmHandles,
    ) -> Result<VmHandles, RuntimeError> {
        let err = |m: String| Self::step_error(vm, VmStep::RemoveDisk, m);
        let (vm_name, state_dir, vm_dir) = (
            vm.name.clone(),
            self.config.state_dir.clone(),
            vm.vm_dir.clone(),
        );
        let uid = ObjectUid::parse(&vm.uid).map_err(|e| err(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            disk::remove_root_disk(&vm_name, &state_dir, &vm_dir).map_err(|e| e.to_string())?;
            guest_keys::forget_host_key(&state_dir, &uid)
                .map(|_| ())
                .map_err(|e| format!("forget the disk's host key: {e}"))
        })
        .await
        .map_err(|e| err(e.to_string()))?
        .map_err(err)?;
        handles.root_disk = None;
        handles.disk_image = None;
        handles.disk_digest = None;
        handles.disk_size = None;
        handles.disk_id = None;
        Ok(handles)
    }
}

/// The prepared bases and spares of the Image `image_name` go with it
/// ([`PreparedDisks::remove_image`]).
pub(super) async fn remove_prepared_disks(
    state_dir: &std::path::Path,
    image_name: &str,
) -> Result<(), RuntimeError> {
    let (disks, name) = (
        PreparedDisks::for_state_dir(state_dir),
        image_name.to_string(),
    );
    tokio::task::spawn_blocking(move || disks.remove_image(&name).map(|_| ()))
        .await
        .map_err(std::io::Error::other)
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map_err(|message| RuntimeError::Step {
            object: format!("image/{image_name}"),
            step: "remove-image".into(),
            message: format!("remove its prepared disks: {message}"),
        })
}

/// [`crate::runtime::VmRuntime::prune_prepared_disks`] on this host
/// ([`PreparedDisks::prune`], with the image store's grace, [`crate::gc::STORE_GRACE`]).
pub(super) async fn prune_prepared_disks(
    state_dir: &std::path::Path,
    images: &std::collections::BTreeSet<String>,
    dry_run: bool,
) -> Result<Vec<crate::host::oci::store::StoreItem>, RuntimeError> {
    let disks = PreparedDisks::for_state_dir(state_dir);
    let object = format!("prepared-disks/{}", disks.dir().display());
    let images = images.clone();
    super::garbage::prune_on_blocking_pool(object, move || {
        disks.prune(&images, crate::gc::STORE_GRACE, dry_run)
    })
    .await
}

/// The disk sidecar's image identity: `<image name>|<rootfs digest>`.
pub(super) fn disk_identity(image_name: &str, digest: &str) -> String {
    format!("{image_name}|{digest}")
}

/// The image name and rootfs digest of a disk sidecar's identity ([`disk_identity`]).
pub(super) fn split_disk_identity(identity: &str) -> (String, String) {
    match identity.split_once('|') {
        Some((name, digest)) => (name.to_string(), digest.to_string()),
        None => (String::new(), identity.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_identity_round_trips() {
        let id = disk_identity("base", "/x/rootfs.ext4:67108864:1.2");
        assert_eq!(
            split_disk_identity(&id),
            (
                "base".to_string(),
                "/x/rootfs.ext4:67108864:1.2".to_string()
            )
        );
    }
}
