//! Images: an Image's host files checked, or its root filesystem pulled from an OCI
//! registry into the shared store ([`crate::host::oci`]) with banger's guest bits
//! ([`crate::host::guest_bits`]); the cheap presence check; the update check; the
//! store's pruning.
//!
//! An Image without `spec.kernel` boots the daemon's default kernel: `vmlinux` and
//! `initrd.img` of the guest directory (`--guest-dir`, default `<state>/guest`, where
//! `scripts/up.sh` installs the guest kit's). An image with the guest bits boots with
//! `init=/.banger/init` before its own kernel arguments.
//!
//! File checks run on the blocking pool.

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use banger_specs::{GuestMode, ImageSpec};

use crate::host::guest_bits::{self, GuestBits};
use crate::host::oci::auth::RegistryCredentials;
use crate::host::oci::store::{ImageStore, StoreItem};
use crate::host::oci::{self, OciError, OciLimits, ProgressFn, RegistryAccess};
use crate::runtime::{ImageContext, ImageFailure, ImageResolution, ResolvedImage, RuntimeError};

/// File names of the default kernel and its initrd in the guest directory.
pub const DEFAULT_KERNEL: &str = "vmlinux";
/// See [`DEFAULT_KERNEL`].
pub const DEFAULT_INITRD: &str = "initrd.img";
/// The guest bits' directory inside the guest directory.
pub const GUEST_BITS_DIR: &str = "guest-bits";
/// The file naming the default kernel's release (`6.1.0-NN-cloud-amd64`).
pub const KERNEL_RELEASE: &str = "kernel.release";

/// How this host resolves Images (from `banger daemon` flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    /// The default kernel, its initrd and the guest bits (`--guest-dir`).
    pub guest_dir: PathBuf,
    /// Registry credentials (`--registry-auth`).
    pub credentials: RegistryCredentials,
    /// Limits of every pull (`--oci-*`).
    pub limits: OciLimits,
}

impl ImageConfig {
    /// Defaults for a state directory: `<state>/guest`, no credentials, default limits.
    pub fn for_state_dir(state_dir: &Path) -> Self {
        ImageConfig {
            guest_dir: state_dir.join("guest"),
            credentials: RegistryCredentials::none(),
            limits: OciLimits::default(),
        }
    }

    /// The guest bits.
    pub fn guest_bits(&self) -> GuestBits {
        GuestBits::at(self.guest_dir.join(GUEST_BITS_DIR))
    }
}

fn image_error(image: &ImageContext, cause: ImageFailure, message: String) -> RuntimeError {
    RuntimeError::Image {
        image: image.name.clone(),
        cause,
        message,
    }
}

fn oci_error(image: &ImageContext, e: OciError) -> RuntimeError {
    let cause = match &e {
        OciError::Unauthorized { .. } => ImageFailure::Unauthorized,
        OciError::Unsupported { .. } => ImageFailure::Unsupported,
        _ => ImageFailure::Unavailable,
    };
    image_error(image, cause, e.to_string())
}

/// The kernel (and initrd) an Image boots: its own, else the default one.
fn kernel_of(spec: &ImageSpec, config: &ImageConfig) -> (PathBuf, Option<PathBuf>, bool) {
    match &spec.kernel {
        Some(k) => (k.clone(), spec.initrd.clone(), false),
        None => (
            config.guest_dir.join(DEFAULT_KERNEL),
            Some(config.guest_dir.join(DEFAULT_INITRD)),
            true,
        ),
    }
}

/// Kernel arguments of an image: `init=/.banger/init` first when it has the bits.
fn kernel_args_of(spec: &ImageSpec) -> Option<String> {
    match (spec.guest, &spec.kernel_args) {
        (GuestMode::Inject, Some(a)) => Some(format!("{} {a}", guest_bits::INIT_KERNEL_ARG)),
        (GuestMode::Inject, None) => Some(guest_bits::INIT_KERNEL_ARG.to_string()),
        (GuestMode::None, a) => a.clone(),
    }
}

/// [`crate::runtime::VmRuntime::resolve_image`] on this host.
pub(super) async fn resolve_image(
    image: &ImageContext,
    store: &ImageStore,
    config: &ImageConfig,
) -> Result<ImageResolution, RuntimeError> {
    let spec = image.spec.clone();
    let (kernel, initrd, default_kernel) = kernel_of(&spec, config);
    let (k, i) = (kernel.clone(), initrd.clone());
    let checked = on_blocking_pool(image, move |name, spec| {
        let field = if default_kernel {
            "kernel (the default kernel: scripts/up.sh installs it; or set spec.kernel)"
        } else {
            "kernel"
        };
        require_file(name, field, &k)?;
        if let Some(initrd) = &i {
            require_file(name, "initrd", initrd)?;
        }
        spec.rootfs
            .as_deref()
            .map(|rootfs| check_rootfs(name, rootfs))
            .transpose()
    })
    .await?;
    let boot = |rootfs: PathBuf, rootfs_digest: String| ResolvedImage {
        kernel: kernel.clone(),
        initrd: initrd.clone(),
        rootfs,
        kernel_args: kernel_args_of(&spec),
        readiness: spec.readiness.clone(),
        rootfs_digest,
    };
    if let (Some(rootfs), Some(local)) = (&spec.rootfs, checked) {
        if spec.guest == GuestMode::Inject {
            // A copy of the file with the guest bits, in the store (the file is kept).
            let (store, bits, file, digest) = (
                store.clone(),
                config.guest_bits(),
                rootfs.clone(),
                local.sha256.clone(),
            );
            let built = tokio::task::spawn_blocking(move || {
                oci::local::build_with_bits(&store, &file, &digest, &bits)
            })
            .await
            .map_err(|e| image_error(image, ImageFailure::Unavailable, e.to_string()))?;
            let (built, info, reused) = built.map_err(|e| {
                let cause = match e {
                    oci::local::LocalBuildError::Unsupported { .. } => ImageFailure::Unsupported,
                    oci::local::LocalBuildError::Failed { .. } => ImageFailure::Unavailable,
                };
                image_error(image, cause, e.to_string())
            })?;
            return Ok(ImageResolution {
                // The built file (named by the source's digest and the bits) and the
                // source's cheap identity: a rewritten source is noticed by
                // `image_present` and resolved again.
                boot: boot(
                    built.clone(),
                    format!("{}{BUILT_FROM}{}", built.display(), local.identity),
                ),
                digest: local.sha256,
                rootfs_bytes: info.rootfs_bytes,
                guest: info.guest,
                default_kernel,
                reused,
            });
        }
        return Ok(ImageResolution {
            boot: boot(rootfs.clone(), local.identity),
            digest: local.sha256,
            rootfs_bytes: local.bytes,
            guest: None,
            default_kernel,
            reused: false,
        });
    }
    let Some(source) = &spec.oci else {
        return Err(image_error(
            image,
            ImageFailure::Unavailable,
            "spec: neither rootfs nor oci is set".into(),
        ));
    };
    let bits = config.guest_bits();
    let reporter = image.progress.clone();
    let progress = move |p: oci::PullProgress| reporter.report(p);
    let progress: ProgressFn<'_> = &progress;
    let pulled = oci::pull_rootfs(&oci::OciPull {
        reference: &source.reference,
        access: RegistryAccess {
            insecure: source.insecure,
            ca_file: source.ca_file.as_deref(),
            credentials: &config.credentials,
        },
        store,
        limits: &config.limits,
        pin: image.pin.as_deref(),
        guest: (spec.guest == GuestMode::Inject).then_some(&bits),
        progress: Some(progress),
    })
    .await
    .map_err(|e| oci_error(image, e))?;
    if !pulled.reused {
        tracing::info!(image = %image.name, reference = %source.reference,
            digest = %pulled.manifest_digest, "pulled OCI root filesystem");
    }
    Ok(ImageResolution {
        boot: boot(pulled.rootfs.clone(), pulled.manifest_digest.clone()),
        digest: pulled.manifest_digest,
        rootfs_bytes: pulled.info.rootfs_bytes,
        guest: pulled.info.guest,
        default_kernel,
        reused: pulled.reused,
    })
}

/// [`crate::runtime::VmRuntime::latest_image_digest`] on this host.
pub(super) async fn latest_digest(
    image: &ImageContext,
    store: &ImageStore,
    config: &ImageConfig,
) -> Result<String, RuntimeError> {
    let Some(source) = &image.spec.oci else {
        return Err(image_error(
            image,
            ImageFailure::Unavailable,
            "not an OCI image: nothing to check".into(),
        ));
    };
    oci::latest_digest(&oci::OciPull {
        reference: &source.reference,
        access: RegistryAccess {
            insecure: source.insecure,
            ca_file: source.ca_file.as_deref(),
            credentials: &config.credentials,
        },
        store,
        limits: &config.limits,
        pin: None,
        guest: None,
        progress: None,
    })
    .await
    .map_err(|e| oci_error(image, e))
}

/// [`crate::runtime::VmRuntime::prune_images`] on this host.
pub(super) async fn prune(
    store: &ImageStore,
    keep: &BTreeSet<PathBuf>,
    dry_run: bool,
) -> Result<Vec<StoreItem>, RuntimeError> {
    let (store, keep) = (store.clone(), keep.clone());
    let object = format!("image-store/{}", store.root().display());
    super::garbage::prune_on_blocking_pool(object, move || {
        store.prune(&keep, crate::gc::STORE_GRACE, dry_run)
    })
    .await
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
            cause: ImageFailure::Unavailable,
            message: format!("checking its files: {e}"),
        })?
}

/// A checked local root filesystem.
struct LocalRootfs {
    /// [`rootfs_digest`]: path, size and mtime (cheap to re-check).
    identity: String,
    /// `sha256:…` of its content.
    sha256: String,
    /// Its size.
    bytes: u64,
}

/// Checks that `rootfs` is a regular file holding ext4; returns its identity and
/// digest. Blocking (hashes the file).
fn check_rootfs(image: &str, rootfs: &Path) -> Result<LocalRootfs, RuntimeError> {
    let fail = |message: String| RuntimeError::Image {
        image: image.to_string(),
        cause: ImageFailure::Unavailable,
        message,
    };
    require_file(image, "rootfs", rootfs)?;
    if !is_ext4(rootfs) {
        return Err(fail(format!(
            "spec.rootfs: {} is not an ext4 image",
            rootfs.display()
        )));
    }
    let identity = rootfs_digest(rootfs)
        .map_err(|e| fail(format!("spec.rootfs: {}: {e}", rootfs.display())))?;
    let (sha256, bytes) =
        sha256_file(rootfs).map_err(|e| fail(format!("spec.rootfs: {}: {e}", rootfs.display())))?;
    Ok(LocalRootfs {
        identity,
        sha256,
        bytes,
    })
}

/// `sha256:…` and size of a file's content. Blocking.
fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        h.update(&buf[..n]);
    }
    Ok((format!("sha256:{}", hex::encode(h.finalize())), total))
}

/// [`crate::runtime::VmRuntime::image_present`] on this host: the files are still
/// there and the rootfs is the one resolved.
pub(super) async fn image_present(image: &ResolvedImage) -> bool {
    let image = image.clone();
    tokio::task::spawn_blocking(move || {
        image.kernel.is_file()
            && image.initrd.as_ref().is_none_or(|i| i.is_file())
            && match image.rootfs_digest.split_once(BUILT_FROM) {
                // A local rootfs rebuilt with the guest bits: the build and its source.
                Some((_, source)) => {
                    image.rootfs.is_file()
                        && source_path(source)
                            .and_then(|p| rootfs_digest(Path::new(p)).ok())
                            .is_some_and(|d| d == source)
                }
                None => {
                    image.rootfs_digest.starts_with("sha256:") && image.rootfs.is_file()
                        || rootfs_digest(&image.rootfs).is_ok_and(|d| d == image.rootfs_digest)
                }
            }
    })
    .await
    .unwrap_or(false)
}

/// [`crate::runtime::VmRuntime::remove_image`] on this host: the image's own directory
/// (content of earlier versions; idempotent). What it used in the shared store stays
/// until `banger gc` finds no Image using it.
pub(super) async fn remove_image(image: &ImageContext) -> Result<(), RuntimeError> {
    match tokio::fs::remove_dir_all(&image.image_dir).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RuntimeError::Image {
            image: image.name.clone(),
            cause: ImageFailure::Unavailable,
            message: format!("remove {}: {e}", image.image_dir.display()),
        }),
    }
}

/// Separates a built root filesystem from its source's identity in a rootfs digest.
const BUILT_FROM: &str = " <- ";

/// The path inside a [`rootfs_digest`] (`PATH:SIZE:MTIME`).
fn source_path(identity: &str) -> Option<&str> {
    let mut parts = identity.rsplitn(3, ':');
    parts.next()?;
    parts.next()?;
    parts.next()
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
            cause: ImageFailure::Unavailable,
            message: format!("spec.{field}: {} is not a regular file", path.display()),
        }),
        Err(e) => Err(RuntimeError::Image {
            image: image.to_string(),
            cause: ImageFailure::Unavailable,
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
    fn the_source_of_a_built_rootfs_is_found_in_its_identity() {
        assert_eq!(
            source_path("/a/b:c/root.ext4:1024:17.5"),
            Some("/a/b:c/root.ext4")
        );
        assert_eq!(source_path("nocolon"), None);
    }

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
