//! Root filesystems pulled from OCI registries: an Image's `spec.oci`.
//!
//! [`pull_rootfs`] resolves a reference to an ext4 file, never mounting anything:
//! 1. the manifest is fetched (`oci-client`, anonymous; `insecure` tries HTTPS without
//!    certificate checks, then plain HTTP); an image index is narrowed to its
//!    `linux/amd64` manifest. Every manifest is size-capped and its sha256 checked
//!    against the digest that named it. The image manifest's digest is the rootfs's
//!    identity ([`PulledRootfs::manifest_digest`]).
//! 2. if `<image dir>/oci/<digest hex>/rootfs.ext4` exists, it is reused (no download);
//! 3. else each layer blob is downloaded to a file, capped per blob and in total
//!    ([`OciLimits`]), its sha256 verified, and only then applied to a staging tree
//!    ([`flatten`]: whiteouts honoured, unsafe entries rejected, ownership restored);
//! 4. `mkfs.ext4 -d` builds `rootfs.ext4` from the tree ([`ext4`]); the staging
//!    directory is renamed to `<digest hex>` (atomic publish) and older digests of the
//!    same Image are removed.
//!
//! Concurrent pulls for one Image coalesce on an exclusive `flock` of
//! `<image dir>/oci/.lock`: the second waits, then finds the published digest.
//! `<image dir>/oci/current.json` records the last reference and digest, so an Image
//! whose registry is unreachable keeps resolving to the rootfs it last pulled.

pub mod blob;
pub mod ext4;
pub mod flatten;

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::{Deserialize, Serialize};

use blob::{sha256_digest, sha256_hex, BlobError, BlobWriter};

/// File name of the built image inside a digest directory.
pub const ROOTFS_FILE: &str = "rootfs.ext4";
const OCI_DIR: &str = "oci";
const LOCK_FILE: &str = ".lock";
const CURRENT_FILE: &str = "current.json";
const STAGING_PREFIX: &str = ".staging-";

/// Limits of one pull. The defaults fit development images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciLimits {
    /// Largest manifest or index accepted (bytes).
    pub max_manifest_bytes: u64,
    /// Largest single (compressed) layer blob (bytes).
    pub max_blob_bytes: u64,
    /// Largest sum of an image's layer blobs (bytes).
    pub max_total_bytes: u64,
    /// Largest sum of file content unpacked from all layers (bytes).
    pub max_unpacked_bytes: u64,
    /// Most layers an image may have.
    pub max_layers: usize,
    /// Deadline for the whole pull (manifest, blobs, flatten, mkfs).
    pub timeout: Duration,
}

impl Default for OciLimits {
    fn default() -> Self {
        OciLimits {
            max_manifest_bytes: 4 << 20,
            max_blob_bytes: 2 << 30,
            max_total_bytes: 4 << 30,
            max_unpacked_bytes: 16 << 30,
            max_layers: 128,
            timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// One pull request: which reference, into which Image's cache directory.
#[derive(Debug, Clone)]
pub struct OciPull<'a> {
    /// The image reference (`registry/repo:tag` or `…@sha256:…`).
    pub reference: &'a str,
    /// Allow plain HTTP and unverified TLS to this reference's registry.
    pub insecure: bool,
    /// The Image's cache directory (`<state>/images/<uid>`).
    pub image_dir: &'a Path,
    /// Size and time limits.
    pub limits: &'a OciLimits,
}

/// A pulled root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledRootfs {
    /// `<image dir>/oci/<digest hex>/rootfs.ext4`.
    pub rootfs: PathBuf,
    /// `sha256:…` of the linux/amd64 image manifest.
    pub manifest_digest: String,
    /// Whether an already built rootfs was reused (nothing downloaded).
    pub reused: bool,
}

/// Why a pull failed. Messages start with `spec.oci` and the reference.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The reference does not parse.
    #[error("spec.oci.ref {reference:?}: {message}")]
    Reference {
        /// The reference.
        reference: String,
        /// Why.
        message: String,
    },
    /// The registry refused or could not be reached.
    #[error("spec.oci {reference}: {step}: {message}")]
    Registry {
        /// The reference.
        reference: String,
        /// What was being fetched.
        step: String,
        /// The error.
        message: String,
    },
    /// The image's content is unusable (limits, digests, media types, layers).
    #[error("spec.oci {reference}: {message}")]
    Content {
        /// The reference.
        reference: String,
        /// What is wrong.
        message: String,
    },
    /// A local file operation failed.
    #[error("spec.oci {reference}: {step} {path}: {source}")]
    Io {
        /// The reference.
        reference: String,
        /// What was being done.
        step: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The pull took longer than [`OciLimits::timeout`].
    #[error("spec.oci {reference}: pull did not finish within {timeout:?}")]
    Timeout {
        /// The reference.
        reference: String,
        /// The deadline.
        timeout: Duration,
    },
}

/// What `current.json` records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct CurrentRecord {
    reference: String,
    digest: String,
}

/// The minimal view of a manifest or index banger reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestView {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<IndexEntry>>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// A descriptor of a layer or manifest.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type.
    #[serde(default)]
    pub media_type: String,
    /// `sha256:…`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct IndexEntry {
    #[serde(flatten)]
    descriptor: Descriptor,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

/// Whether `rootfs` is a published pull of `digest` (cheap: a path check and a stat).
pub fn is_published(rootfs: &Path, digest: &str) -> bool {
    let Ok(hex) = sha256_hex(digest) else {
        return false;
    };
    rootfs.file_name().is_some_and(|n| n == ROOTFS_FILE)
        && rootfs
            .parent()
            .and_then(|p| p.file_name())
            .is_some_and(|n| n == hex)
        && rootfs.is_file()
}

/// Where the rootfs of `digest` is published for an Image.
pub fn published_rootfs(image_dir: &Path, digest_hex: &str) -> PathBuf {
    image_dir.join(OCI_DIR).join(digest_hex).join(ROOTFS_FILE)
}

/// Pulls (or reuses) the root filesystem of `req.reference`; see the module docs.
pub async fn pull_rootfs(req: &OciPull<'_>) -> Result<PulledRootfs, OciError> {
    match tokio::time::timeout(req.limits.timeout, pull_locked(req)).await {
        Ok(result) => result,
        Err(_) => Err(OciError::Timeout {
            reference: req.reference.to_string(),
            timeout: req.limits.timeout,
        }),
    }
}

/// Which platform an index entry must have.
fn is_linux_amd64(entry: &IndexEntry) -> bool {
    entry
        .platform
        .as_ref()
        .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
}

/// Layer media types banger can unpack (tar, optionally gzip).
fn layer_type_supported(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    )
}

/// Checks the layer list against the limits before anything is downloaded.
pub fn check_layers(layers: &[Descriptor], limits: &OciLimits) -> Result<(), String> {
    if layers.is_empty() {
        return Err("the image manifest lists no layers".into());
    }
    if layers.len() > limits.max_layers {
        return Err(format!(
            "the image has {} layers (limit {})",
            layers.len(),
            limits.max_layers
        ));
    }
    let mut total: u64 = 0;
    for (i, l) in layers.iter().enumerate() {
        sha256_hex(&l.digest).map_err(|e| format!("layer {}: {e}", i + 1))?;
        if !layer_type_supported(&l.media_type) {
            return Err(format!(
                "layer {} ({}): media type {:?} is not supported (tar and tar+gzip are)",
                i + 1,
                l.digest,
                l.media_type
            ));
        }
        if l.size > limits.max_blob_bytes {
            return Err(format!(
                "layer {} ({}) is {} bytes; the per-blob limit is {}",
                i + 1,
                l.digest,
                l.size,
                limits.max_blob_bytes
            ));
        }
        total = total.saturating_add(l.size);
    }
    if total > limits.max_total_bytes {
        return Err(format!(
            "the layers add up to {total} bytes; the total limit is {}",
            limits.max_total_bytes
        ));
    }
    Ok(())
}

/// A connected registry client for one reference.
struct Registry {
    client: Client,
    reference: Reference,
    text: String,
}

impl Registry {
    fn client(insecure: bool, registry: &str, plain_http: bool) -> Client {
        let protocol = if plain_http {
            ClientProtocol::HttpsExcept(vec![registry.to_string()])
        } else {
            ClientProtocol::Https
        };
        Client::new(ClientConfig {
            protocol,
            accept_invalid_certificates: insecure,
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            ..ClientConfig::default()
        })
    }

    fn content(&self, message: String) -> OciError {
        OciError::Content {
            reference: self.text.clone(),
            message,
        }
    }

    /// Fetches a manifest's raw bytes, capped, and checks its digest when one is known.
    async fn manifest(
        &self,
        reference: &Reference,
        expected: Option<&Descriptor>,
        limits: &OciLimits,
    ) -> Result<(Vec<u8>, String), OciError> {
        let accepted = [
            OCI_IMAGE_MEDIA_TYPE,
            IMAGE_MANIFEST_MEDIA_TYPE,
            OCI_IMAGE_INDEX_MEDIA_TYPE,
            IMAGE_MANIFEST_LIST_MEDIA_TYPE,
        ];
        let (bytes, _) = self
            .client
            .pull_manifest_raw(reference, &RegistryAuth::Anonymous, &accepted)
            .await
            .map_err(|e| OciError::Registry {
                reference: self.text.clone(),
                step: format!("fetch manifest {}", reference.whole()),
                message: e.to_string(),
            })?;
        if bytes.len() as u64 > limits.max_manifest_bytes {
            return Err(self.content(format!(
                "manifest is {} bytes (limit {})",
                bytes.len(),
                limits.max_manifest_bytes
            )));
        }
        let digest = sha256_digest(&bytes);
        let wanted = expected
            .map(|d| d.digest.clone())
            .or_else(|| reference.digest().map(str::to_string));
        if let Some(wanted) = wanted {
            if wanted != digest {
                return Err(self.content(format!(
                    "manifest {wanted} hashes to {digest}; refusing to use it"
                )));
            }
        }
        Ok((bytes.to_vec(), digest))
    }

    /// Downloads one blob into `path`, capped and verified.
    async fn blob(&self, layer: &Descriptor, path: &Path, cap: u64) -> Result<PathBuf, OciError> {
        let blob_err = |e: BlobError| self.content(e.to_string());
        let mut writer =
            BlobWriter::create(path, &layer.digest, layer.size, cap).map_err(blob_err)?;
        let descriptor = OciDescriptor {
            media_type: layer.media_type.clone(),
            digest: layer.digest.clone(),
            size: i64::try_from(layer.size).unwrap_or(i64::MAX),
            ..OciDescriptor::default()
        };
        let registry_err = |e: String| OciError::Registry {
            reference: self.text.clone(),
            step: format!("fetch blob {}", layer.digest),
            message: e,
        };
        let mut stream = self
            .client
            .pull_blob_stream(&self.reference, &descriptor)
            .await
            .map_err(|e| registry_err(e.to_string()))?;
        while let Some(chunk) = stream.stream.next().await {
            let chunk = chunk.map_err(|e| registry_err(e.to_string()))?;
            writer.write_chunk(&chunk).map_err(blob_err)?;
        }
        writer.finish().map_err(blob_err)
    }
}

/// Opens a connection that answers a first manifest request. With `insecure`, HTTPS
/// without certificate checks is tried first, then plain HTTP.
async fn connect(
    req: &OciPull<'_>,
    reference: Reference,
) -> Result<(Registry, Vec<u8>, String), OciError> {
    let registry = reference.resolve_registry().to_string();
    let attempts: &[bool] = if req.insecure {
        &[false, true]
    } else {
        &[false]
    };
    let mut errors = Vec::new();
    for &plain_http in attempts {
        let r = Registry {
            client: Registry::client(req.insecure, &registry, plain_http),
            reference: reference.clone(),
            text: req.reference.to_string(),
        };
        match r.manifest(&reference, None, req.limits).await {
            Ok((bytes, digest)) => return Ok((r, bytes, digest)),
            Err(OciError::Registry { message, .. }) => {
                let scheme = if plain_http { "http" } else { "https" };
                errors.push(format!("{scheme}: {message}"));
            }
            Err(other) => return Err(other),
        }
    }
    Err(OciError::Registry {
        reference: req.reference.to_string(),
        step: "fetch manifest".into(),
        message: errors.join("; "),
    })
}

/// Takes the Image's pull lock (blocking, off the async threads).
async fn lock(req: &OciPull<'_>, oci_dir: &Path) -> Result<nix::fcntl::Flock<fs::File>, OciError> {
    let path = oci_dir.join(LOCK_FILE);
    let text = req.reference.to_string();
    tokio::task::spawn_blocking(move || {
        let io_err = |source| OciError::Io {
            reference: text.clone(),
            step: "lock",
            path: path.clone(),
            source,
        };
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_err)?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| io_err(io::Error::from(errno)))
    })
    .await
    .map_err(|e| OciError::Io {
        reference: req.reference.to_string(),
        step: "lock",
        path: oci_dir.join(LOCK_FILE),
        source: io::Error::other(e.to_string()),
    })?
}

/// Maps an I/O error of `step` on `path`, while pulling `reference`, to [`OciError::Io`].
fn io_error(
    reference: &str,
    step: &'static str,
    path: &Path,
) -> impl FnOnce(io::Error) -> OciError {
    let reference = reference.to_string();
    let path = path.to_path_buf();
    move |source| OciError::Io {
        reference,
        step,
        path,
        source,
    }
}

async fn pull_locked(req: &OciPull<'_>) -> Result<PulledRootfs, OciError> {
    let text = req.reference.to_string();
    let io_err = |step: &'static str, path: &Path| io_error(&text, step, path);
    let reference: Reference = req.reference.parse().map_err(|e| OciError::Reference {
        reference: text.clone(),
        message: format!("{e}"),
    })?;
    let oci_dir = req.image_dir.join(OCI_DIR);
    if let Some(base) = req.image_dir.parent() {
        crate::host::safe_path::check_below(base, &oci_dir).map_err(|e| OciError::Io {
            reference: text.clone(),
            step: "check",
            path: oci_dir.clone(),
            source: io::Error::other(e.to_string()),
        })?;
    }
    fs::create_dir_all(&oci_dir).map_err(io_err("create", &oci_dir))?;
    let _lock = lock(req, &oci_dir).await?;

    let (registry, bytes, digest) = match connect(req, reference).await {
        Ok(found) => found,
        Err(e) => return reuse_after_failure(req, &oci_dir, e),
    };
    let (registry, bytes, digest) = narrow_to_platform(registry, bytes, digest, req.limits).await?;
    let hex = sha256_hex(&digest)
        .map_err(|e| registry.content(e.to_string()))?
        .to_string();
    let rootfs = published_rootfs(req.image_dir, &hex);
    if rootfs.is_file() {
        record_current(&oci_dir, &text, &digest).map_err(io_err("record", &oci_dir))?;
        return Ok(PulledRootfs {
            rootfs,
            manifest_digest: digest,
            reused: true,
        });
    }
    let view: ManifestView = serde_json::from_slice(&bytes)
        .map_err(|e| registry.content(format!("image manifest {digest}: {e}")))?;
    let layers = view.layers.unwrap_or_default();
    check_layers(&layers, req.limits).map_err(|m| registry.content(m))?;

    // Staging (under the lock, so one fixed name per digest; a leftover is discarded).
    let staging = oci_dir.join(format!("{STAGING_PREFIX}{hex}"));
    remove_if_present(&staging).map_err(io_err("clean", &staging))?;
    if let Err(e) = build_staging(&registry, req, &layers, &bytes, &staging).await {
        let _ = remove_if_present(&staging);
        return Err(e);
    }
    let published = oci_dir.join(&hex);
    fs::rename(&staging, &published).map_err(io_err("publish", &published))?;
    record_current(&oci_dir, &text, &digest).map_err(io_err("record", &oci_dir))?;
    prune_other_digests(&oci_dir, &hex);
    Ok(PulledRootfs {
        rootfs,
        manifest_digest: digest,
        reused: false,
    })
}

/// Downloads, verifies and flattens every layer into `staging/root`, then builds
/// `staging/rootfs.ext4` and keeps the manifest beside it; the tree and blobs are removed.
async fn build_staging(
    registry: &Registry,
    req: &OciPull<'_>,
    layers: &[Descriptor],
    bytes: &[u8],
    staging: &Path,
) -> Result<(), OciError> {
    let text = req.reference.to_string();
    let io_err = |step: &'static str, path: &Path| io_error(&text, step, path);
    let tree = staging.join("root");
    let blobs = staging.join("blobs");
    fs::create_dir_all(&tree).map_err(io_err("create", &tree))?;
    fs::create_dir_all(&blobs).map_err(io_err("create", &blobs))?;
    let mut budget = req.limits.max_unpacked_bytes;
    let count = layers.len();
    for (i, layer) in layers.iter().enumerate() {
        let layer_hex = sha256_hex(&layer.digest)
            .map_err(|e| registry.content(e.to_string()))?
            .to_string();
        let blob = registry
            .blob(layer, &blobs.join(&layer_hex), req.limits.max_blob_bytes)
            .await?;
        let label = format!("layer {}/{count} {}", i + 1, layer.digest);
        let tree_c = tree.clone();
        let blob_c = blob.clone();
        let budget_in = budget;
        let applied = tokio::task::spawn_blocking(move || {
            let mut budget = budget_in;
            let open = move || open_layer(&blob_c);
            flatten::apply_layer(&tree_c, &label, &open, &mut budget).map(|_| budget)
        })
        .await
        .map_err(|e| registry.content(format!("layer {}: {e}", i + 1)))?;
        budget = applied.map_err(|e| registry.content(e.to_string()))?;
        fs::remove_file(&blob).map_err(io_err("remove", &blob))?;
    }
    let image = staging.join(ROOTFS_FILE);
    let (tree_c, image_c) = (tree.clone(), image.clone());
    tokio::task::spawn_blocking(move || ext4::build_image(&tree_c, &image_c))
        .await
        .map_err(|e| registry.content(format!("build ext4: {e}")))?
        .map_err(|e| registry.content(format!("build ext4: {e}")))?;
    fs::write(staging.join("manifest.json"), bytes)
        .map_err(io_err("write", &staging.join("manifest.json")))?;
    remove_if_present(&tree).map_err(io_err("clean", &tree))?;
    remove_if_present(&blobs).map_err(io_err("clean", &blobs))?;
    fs::File::open(&image)
        .and_then(|f| f.sync_all())
        .map_err(io_err("sync", &image))?;
    Ok(())
}

/// Narrows an index to its linux/amd64 manifest (fetched by digest and verified).
async fn narrow_to_platform(
    registry: Registry,
    bytes: Vec<u8>,
    digest: String,
    limits: &OciLimits,
) -> Result<(Registry, Vec<u8>, String), OciError> {
    let view: ManifestView = serde_json::from_slice(&bytes)
        .map_err(|e| registry.content(format!("manifest {digest}: {e}")))?;
    let Some(entries) = view.manifests else {
        return Ok((registry, bytes, digest));
    };
    let entry = entries.iter().find(|e| is_linux_amd64(e)).ok_or_else(|| {
        let found: Vec<String> = entries
            .iter()
            .filter_map(|e| e.platform.as_ref())
            .map(|p| format!("{}/{}", p.os, p.architecture))
            .collect();
        registry.content(format!(
            "index {digest} ({}) has no linux/amd64 manifest (found: {})",
            view.media_type.as_deref().unwrap_or("index"),
            found.join(", ")
        ))
    })?;
    if entry.descriptor.size > limits.max_manifest_bytes {
        return Err(registry.content(format!(
            "manifest {} is {} bytes (limit {})",
            entry.descriptor.digest, entry.descriptor.size, limits.max_manifest_bytes
        )));
    }
    let by_digest = registry
        .reference
        .clone_with_digest(entry.descriptor.digest.clone());
    let (bytes, digest) = registry
        .manifest(&by_digest, Some(&entry.descriptor), limits)
        .await?;
    let view: ManifestView = serde_json::from_slice(&bytes)
        .map_err(|e| registry.content(format!("manifest {digest}: {e}")))?;
    if view.manifests.is_some() {
        return Err(registry.content(format!(
            "{digest}: an index inside an index is not supported"
        )));
    }
    Ok((registry, bytes, digest))
}

/// The registry failed: reuse the rootfs last pulled for this same reference, if any.
fn reuse_after_failure(
    req: &OciPull<'_>,
    oci_dir: &Path,
    error: OciError,
) -> Result<PulledRootfs, OciError> {
    let record = fs::read(oci_dir.join(CURRENT_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<CurrentRecord>(&b).ok());
    if let Some(record) = record {
        if record.reference == req.reference {
            if let Ok(hex) = sha256_hex(&record.digest) {
                let rootfs = published_rootfs(req.image_dir, hex);
                if rootfs.is_file() {
                    tracing::warn!(reference = req.reference, digest = %record.digest, %error,
                        "registry unreachable; using the rootfs pulled last");
                    return Ok(PulledRootfs {
                        rootfs,
                        manifest_digest: record.digest,
                        reused: true,
                    });
                }
            }
        }
    }
    Err(error)
}

fn record_current(oci_dir: &Path, reference: &str, digest: &str) -> io::Result<()> {
    let record = CurrentRecord {
        reference: reference.to_string(),
        digest: digest.to_string(),
    };
    let tmp = oci_dir.join(format!(".{CURRENT_FILE}.tmp"));
    fs::write(
        &tmp,
        serde_json::to_vec_pretty(&record).map_err(io::Error::other)?,
    )?;
    fs::rename(&tmp, oci_dir.join(CURRENT_FILE))
}

/// Removes published digests other than `keep` (VM disks are copies, so nothing still
/// reads them) and leftover staging directories. Best effort.
fn prune_other_digests(oci_dir: &Path, keep: &str) {
    let Ok(entries) = fs::read_dir(oci_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_digest = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
        if (is_digest && name != keep) || name.starts_with(STAGING_PREFIX) {
            if let Err(e) = remove_if_present(&entry.path()) {
                tracing::warn!(path = %entry.path().display(), error = %e, "cannot prune an old OCI rootfs");
            }
        }
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Opens a verified layer blob as a tar stream, gunzipping when it is gzip (by magic).
fn open_layer(blob: &Path) -> io::Result<Box<dyn Read>> {
    let mut file = fs::File::open(blob)?;
    let mut magic = [0u8; 4];
    let n = file.read(&mut magic)?;
    let file = fs::File::open(blob)?;
    match &magic[..n] {
        [0x1f, 0x8b, ..] => Ok(Box::new(flate2::read::MultiGzDecoder::new(
            io::BufReader::new(file),
        ))),
        [0x28, 0xb5, 0x2f, 0xfd] => {
            Err(io::Error::other("zstd-compressed layers are not supported"))
        }
        _ => Ok(Box::new(io::BufReader::new(file))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn layer(size: u64, media: &str) -> Descriptor {
        Descriptor {
            media_type: media.into(),
            digest: sha256_digest(&size.to_le_bytes()),
            size,
        }
    }

    #[test]
    fn layer_lists_are_checked_against_the_limits() {
        let gz = "application/vnd.oci.image.layer.v1.tar+gzip";
        let limits = OciLimits {
            max_blob_bytes: 100,
            max_total_bytes: 150,
            max_layers: 3,
            ..OciLimits::default()
        };
        assert!(check_layers(&[layer(100, gz), layer(50, gz)], &limits).is_ok());
        let e = check_layers(&[layer(101, gz)], &limits).unwrap_err();
        assert!(e.contains("per-blob limit is 100"), "{e}");
        let e = check_layers(&[layer(100, gz), layer(51, gz)], &limits).unwrap_err();
        assert!(e.contains("total limit is 150"), "{e}");
        let e = check_layers(&vec![layer(1, gz); 4], &limits).unwrap_err();
        assert!(e.contains("4 layers"), "{e}");
        let e = check_layers(
            &[layer(1, "application/vnd.oci.image.layer.v1.tar+zstd")],
            &limits,
        )
        .unwrap_err();
        assert!(e.contains("not supported"), "{e}");
        assert!(check_layers(&[], &limits).is_err());
    }

    #[test]
    fn published_paths_name_their_digest() {
        let dir = tempfile::tempdir().unwrap();
        let digest = sha256_digest(b"m");
        let hex = sha256_hex(&digest).unwrap();
        let rootfs = published_rootfs(dir.path(), hex);
        assert!(!is_published(&rootfs, &digest));
        fs::create_dir_all(rootfs.parent().unwrap()).unwrap();
        fs::write(&rootfs, b"x").unwrap();
        assert!(is_published(&rootfs, &digest));
        assert!(!is_published(&rootfs, &sha256_digest(b"other")));
        assert!(!is_published(&rootfs, "/some/path:1:2"));
    }

    #[test]
    fn gzip_layers_are_detected_by_magic() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        fs::write(&plain, b"plain tar bytes").unwrap();
        let gz = dir.path().join("gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"gzipped tar bytes").unwrap();
        fs::write(&gz, enc.finish().unwrap()).unwrap();
        let mut s = String::new();
        open_layer(&plain).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "plain tar bytes");
        s.clear();
        open_layer(&gz).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "gzipped tar bytes");
    }
}
