//! Images: an Image's host files checked, or its root filesystem pulled from an OCI
//! registry ([`crate::host::oci`]); the cheap presence check; the cache's removal.
//!
//! File checks run on the blocking pool.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use banger_specs::ImageSpec;

use crate::host::oci;
use crate::runtime::{ImageContext, ResolvedImage, RuntimeError};

/// [`crate::runtime::VmRuntime::resolve_image`] on this host.
pub(super) async fn resolve_image(image: &ImageContext) -> Result<ResolvedImage, RuntimeError> {
    let spec = &image.spec;
    let image_error = |message: String| RuntimeError::Image {
        image: image.name.clone(),
        message,
    };
    let checked = on_blocking_pool(image, |name, spec| {
        require_file(name, "kernel", &spec.kernel)?;
        if let Some(initrd) = &spec.initrd {
            require_file(name, "initrd", initrd)?;
        }
        spec.rootfs
            .as_deref()
            .map(|rootfs| check_rootfs(name, rootfs))
            .transpose()
    })
    .await?;
    let (Some(rootfs), Some(rootfs_digest)) = (&spec.rootfs, checked) else {
        // The rootfs comes from a registry; kernel and initrd stay host files.
        let Some(source) = &spec.oci else {
            return Err(image_error("spec: neither rootfs nor oci is set".into()));
        };
        let limits = oci::OciLimits::default();
        let pulled = oci::pull_rootfs(&oci::OciPull {
            reference: &source.reference,
            insecure: source.insecure,
            image_dir: &image.image_dir,
            limits: &limits,
        })
        .await
        .map_err(|e| image_error(e.to_string()))?;
        if !pulled.reused {
            tracing::info!(image = %image.name, reference = %source.reference,
                digest = %pulled.manifest_digest, "pulled OCI root filesystem");
        }
        return Ok(ResolvedImage {
            kernel: spec.kernel.clone(),
            initrd: spec.initrd.clone(),
            rootfs: pulled.rootfs,
            kernel_args: spec.kernel_args.clone(),
            readiness: spec.readiness.clone(),
            rootfs_digest: pulled.manifest_digest,
        });
    };
    Ok(ResolvedImage {
        kernel: spec.kernel.clone(),
        initrd: spec.initrd.clone(),
        rootfs: rootfs.clone(),
        kernel_args: spec.kernel_args.clone(),
        readiness: spec.readiness.clone(),
        rootfs_digest,
    })
}

/// Runs `check(image name, spec)` on the blocking pool (file checks `stat` and read).
async fn on_blocking_pool<T: Send + 'static>(
    image: &ImageContext,
    check: impl FnOnce(&str, &ImageSpec) -> Result<T, RuntimeError> + Send + 'static,
) -> Result<T, RuntimeError> {
    let (name, spec) = (image.name.clone(), image.spec.clone());
    tokio::task::spawn_blocking(move || check(&name, &spec))
        .await
        .map_err(|e| RuntimeError::Image {
            image: image.name.clone(),
            message: format!("checking its files: {e}"),
        })?
}

/// Checks that `rootfs` is a regular file holding ext4; returns its [`rootfs_digest`].
/// Blocking.
fn check_rootfs(image: &str, rootfs: &Path) -> Result<String, RuntimeError> {
    require_file(image, "rootfs", rootfs)?;
    if !is_ext4(rootfs) {
        return Err(RuntimeError::Image {
            image: image.to_string(),
            message: format!("spec.rootfs: {} is not an ext4 image", rootfs.display()),
        });
    }
    rootfs_digest(rootfs).map_err(|e| RuntimeError::Image {
        image: image.to_string(),
        message: format!("spec.rootfs: {}: {e}", rootfs.display()),
    })
}

/// [`crate::runtime::VmRuntime::image_present`] on this host: the files are still
/// there and the rootfs is the one resolved.
pub(super) async fn image_present(image: &ResolvedImage) -> bool {
    let image = image.clone();
    tokio::task::spawn_blocking(move || {
        image.kernel.is_file()
            && image.initrd.as_ref().is_none_or(|i| i.is_file())
            && (oci::is_published(&image.rootfs, &image.rootfs_digest)
                || rootfs_digest(&image.rootfs).is_ok_and(|d| d == image.rootfs_digest))
    })
    .await
    .unwrap_or(false)
}

/// [`crate::runtime::VmRuntime::remove_image`] on this host: the image's cache
/// directory (idempotent).
pub(super) async fn remove_image(image: &ImageContext) -> Result<(), RuntimeError> {
    match tokio::fs::remove_dir_all(&image.image_dir).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RuntimeError::Image {
            image: image.name.clone(),
            message: format!("remove {}: {e}", image.image_dir.display()),
        }),
    }
}

/// Identity of an image's root filesystem: path, size and modification time (cheap, and
/// changes whenever the file is replaced or rewritten). Blocking.
fn rootfs_digest(path: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(format!(
        "{}:{}:{}.{}",
        path.display(),
        m.len(),
        m.mtime(),
        m.mtime_nsec()
    ))
}

/// Checks that `path` names an existing regular file. Blocking.
fn require_file(image: &str, field: &str, path: &Path) -> Result<(), RuntimeError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(RuntimeError::Image {
            image: image.to_string(),
            message: format!("spec.{field}: {} is not a regular file", path.display()),
        }),
        Err(e) => Err(RuntimeError::Image {
            image: image.to_string(),
            message: format!("spec.{field}: {}: {e}", path.display()),
        }),
    }
}

/// Whether `path` holds an ext2/3/4 filesystem (superblock magic 0xEF53 at 1080).
/// Blocking.
fn is_ext4(path: &Path) -> bool {
    let mut magic = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(1080))?;
            f.read_exact(&mut magic)
        })
        .is_ok()
        && magic == [0x53, 0xEF]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext4_detection_reads_the_superblock_magic() {
        let dir = tempfile::tempdir().unwrap();
        let not = dir.path().join("zero");
        std::fs::write(&not, vec![0u8; 4096]).unwrap();
        assert!(!is_ext4(&not));
        let mut bytes = vec![0u8; 4096];
        bytes[1080] = 0x53;
        bytes[1081] = 0xEF;
        let yes = dir.path().join("ext");
        std::fs::write(&yes, bytes).unwrap();
        assert!(is_ext4(&yes));
    }
}
