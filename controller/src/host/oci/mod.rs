//! Root filesystems pulled from OCI registries: an Image's `spec.oci`.
//!
//! [`pull_rootfs`] resolves a reference to an ext4 file in the shared, content-addressed
//! [`store::ImageStore`], never mounting anything:
//! 1. when the Image already resolved this reference (`pin`, the manifest digest it
//!    uses) and the store holds that build, it is reused without contacting the
//!    registry: a tag that moved never changes an Image behind the user's back (see
//!    [`latest_digest`] for the update check);
//! 2. else the manifest is fetched (`oci-client`; credentials from
//!    `--registry-auth` for this registry ([`auth`]); TLS checked against the system's
//!    roots plus `spec.oci.caFile`; `insecure` tries HTTPS without certificate checks,
//!    then plain HTTP; a pinned pull fetches `repo@<pin>`); an image index is narrowed to
//!    its `linux/amd64` manifest. Every manifest is size-capped and its sha256 checked
//!    against the digest that named it. The image manifest's digest is the rootfs's
//!    identity ([`PulledRootfs::manifest_digest`]);
//! 3. under the store's build lock of the entry (concurrent pulls of one image, by any
//!    number of Images, coalesce: the second waits, then finds the entry), each layer
//!    blob not in the store yet is downloaded into it, capped per blob and in total
//!    ([`OciLimits`]), its sha256 verified, and applied to a staging tree ([`flatten`]:
//!    whiteouts honoured, unsafe entries rejected, ownership restored, nothing written
//!    through a symlink); progress (bytes of each layer) goes to [`OciPull::progress`];
//! 4. banger's guest bits are added when asked ([`crate::host::guest_bits`]), then
//!    `mkfs.ext4 -d` builds `rootfs.ext4` from the tree ([`ext4`]) and the staging
//!    directory is renamed into the store (atomic publish).

pub mod auth;
pub mod beneath;
pub mod blob;
pub mod ext4;
pub mod flatten;
pub mod local;
pub mod store;

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::{Deserialize, Serialize};

use auth::RegistryCredentials;
use blob::{sha256_digest, sha256_hex, BlobError, BlobWriter};
use store::{EntryInfo, ImageStore};

use crate::host::guest_bits::{GuestBits, GuestReport};

pub use store::ROOTFS_FILE;

/// Limits of one pull. The defaults fit development images; `banger daemon` sets them
/// with `--oci-max-blob`, `--oci-max-total`, `--oci-max-unpacked`, `--oci-max-layers` and
/// `--oci-pull-timeout`.
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

/// Bytes of one layer received so far, reported while a pull runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullProgress {
    /// Which layer (1-based).
    pub layer: usize,
    /// How many layers the image has.
    pub layers: usize,
    /// The layer's digest.
    pub digest: String,
    /// Bytes received (or found in the store).
    pub bytes: u64,
    /// The layer's size.
    pub total: u64,
    /// The layer is downloaded and verified (or was in the store already).
    pub done: bool,
}

/// Where pull progress is reported (called from the pulling task; must not block).
pub type ProgressFn<'a> = &'a (dyn Fn(PullProgress) + Send + Sync);

/// How to reach a registry: TLS and credentials.
#[derive(Debug, Clone, Copy)]
pub struct RegistryAccess<'a> {
    /// Allow plain HTTP and unverified TLS to this reference's registry.
    pub insecure: bool,
    /// A PEM file of extra CA certificates (`spec.oci.caFile`).
    pub ca_file: Option<&'a Path>,
    /// Credentials per registry (`--registry-auth`).
    pub credentials: &'a RegistryCredentials,
}

/// One pull request: which reference, into which store.
#[derive(Clone, Copy)]
pub struct OciPull<'a> {
    /// The image reference (`registry/repo:tag` or `…@sha256:…`).
    pub reference: &'a str,
    /// TLS and credentials.
    pub access: RegistryAccess<'a>,
    /// The shared store.
    pub store: &'a ImageStore,
    /// Size and time limits.
    pub limits: &'a OciLimits,
    /// The manifest digest the Image already uses for this reference: reused from the
    /// store, or fetched by digest, instead of whatever the tag names now.
    pub pin: Option<&'a str>,
    /// banger's guest bits, to add to the image.
    pub guest: Option<&'a GuestBits>,
    /// Where layer progress goes.
    pub progress: Option<ProgressFn<'a>>,
}

impl std::fmt::Debug for OciPull<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciPull")
            .field("reference", &self.reference)
            .field("access", &self.access)
            .field("store", &self.store)
            .field("pin", &self.pin)
            .field("guest", &self.guest)
            .finish()
    }
}

/// A pulled root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledRootfs {
    /// `<store>/rootfs/<key>/rootfs.ext4`.
    pub rootfs: PathBuf,
    /// `sha256:…` of the linux/amd64 image manifest.
    pub manifest_digest: String,
    /// Whether an already built rootfs was reused (nothing downloaded).
    pub reused: bool,
    /// What the store recorded about the build.
    pub info: EntryInfo,
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
    /// The registry refused the credentials (or wants some).
    #[error("spec.oci {reference}: registry {registry} refused access: {message}")]
    Unauthorized {
        /// The reference.
        reference: String,
        /// The registry (`host[:port]`).
        registry: String,
        /// Whose credentials were tried, and what the registry said.
        message: String,
    },
    /// banger's guest bits cannot serve this image, or are missing.
    #[error("spec.oci {reference}: {message}")]
    Unsupported {
        /// The reference.
        reference: String,
        /// Why.
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
    auth: RegistryAuth,
    text: String,
}

/// Whether an oci-client error means the registry refused the request's credentials.
fn is_unauthorized(e: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::OciDistributionError as E;
    match e {
        E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => true,
        E::ServerError { code, .. } => *code == 401 || *code == 403,
        other => {
            let text = other.to_string().to_ascii_lowercase();
            text.contains("unauthorized") || text.contains("denied")
        }
    }
}

impl Registry {
    fn client(
        access: &RegistryAccess<'_>,
        ca: &[Certificate],
        registry: &str,
        plain_http: bool,
    ) -> Result<Client, String> {
        let protocol = if plain_http {
            ClientProtocol::HttpsExcept(vec![registry.to_string()])
        } else {
            ClientProtocol::Https
        };
        Client::try_from(ClientConfig {
            protocol,
            accept_invalid_certificates: access.insecure,
            extra_root_certificates: ca.to_vec(),
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            ..ClientConfig::default()
        })
        .map_err(|e| e.to_string())
    }

    fn content(&self, message: String) -> OciError {
        OciError::Content {
            reference: self.text.clone(),
            message,
        }
    }

    fn registry_error(
        &self,
        step: String,
        e: &oci_client::errors::OciDistributionError,
    ) -> OciError {
        if is_unauthorized(e) {
            let registry = self.reference.resolve_registry().to_string();
            let whose = match &self.auth {
                RegistryAuth::Basic(user, _) => {
                    format!("the credentials of user {user:?} from --registry-auth were refused")
                }
                _ => format!("it needs credentials, and --registry-auth has none for {registry}"),
            };
            return OciError::Unauthorized {
                reference: self.text.clone(),
                registry,
                message: format!("{step}: {whose} ({e})"),
            };
        }
        OciError::Registry {
            reference: self.text.clone(),
            step,
            message: e.to_string(),
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
            .pull_manifest_raw(reference, &self.auth, &accepted)
            .await
            .map_err(|e| {
                self.registry_error(format!("fetch manifest {}", reference.whole()), &e)
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

    /// Downloads one blob into `path`, capped and verified, reporting its bytes.
    async fn blob(
        &self,
        layer: &Descriptor,
        path: &Path,
        cap: u64,
        report: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<PathBuf, OciError> {
        let blob_err = |e: BlobError| self.content(e.to_string());
        let mut writer =
            BlobWriter::create(path, &layer.digest, layer.size, cap).map_err(blob_err)?;
        let descriptor = OciDescriptor {
            media_type: layer.media_type.clone(),
            digest: layer.digest.clone(),
            size: i64::try_from(layer.size).unwrap_or(i64::MAX),
            ..OciDescriptor::default()
        };
        let step = format!("fetch blob {}", layer.digest);
        let mut stream = self
            .client
            .pull_blob_stream(&self.reference, &descriptor)
            .await
            .map_err(|e| self.registry_error(step.clone(), &e))?;
        let mut received: u64 = 0;
        let mut last_report = std::time::Instant::now();
        while let Some(chunk) = stream.stream.next().await {
            let chunk = chunk.map_err(|e| OciError::Registry {
                reference: self.text.clone(),
                step: step.clone(),
                message: e.to_string(),
            })?;
            writer.write_chunk(&chunk).map_err(blob_err)?;
            received += chunk.len() as u64;
            if last_report.elapsed() >= Duration::from_millis(500) {
                report(received);
                last_report = std::time::Instant::now();
            }
        }
        writer.finish().map_err(blob_err)
    }
}

/// Reads `spec.oci.caFile` (PEM). A file without a certificate is an error: a silent
/// fallback to the system roots would only show up as a TLS failure later.
fn read_ca(reference: &str, path: &Path) -> Result<Vec<Certificate>, OciError> {
    let data = fs::read(path).map_err(io_error(reference, "read spec.oci.caFile", path))?;
    if !data
        .windows(27)
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(OciError::Content {
            reference: reference.to_string(),
            message: format!(
                "spec.oci.caFile {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                path.display()
            ),
        });
    }
    Ok(vec![Certificate {
        encoding: CertificateEncoding::Pem,
        data,
    }])
}

/// Opens a connection that answers a first manifest request for `reference`. With
/// `insecure`, HTTPS without certificate checks is tried first, then plain HTTP.
async fn connect(
    req: &OciPull<'_>,
    reference: Reference,
) -> Result<(Registry, Vec<u8>, String), OciError> {
    let registry = reference.resolve_registry().to_string();
    let ca = match req.access.ca_file {
        Some(path) => {
            let (text, path) = (req.reference.to_string(), path.to_path_buf());
            tokio::task::spawn_blocking(move || read_ca(&text, &path))
                .await
                .map_err(|e| OciError::Content {
                    reference: req.reference.to_string(),
                    message: format!("read spec.oci.caFile: {e}"),
                })??
        }
        None => Vec::new(),
    };
    let auth = match req.access.credentials.for_registry(&registry) {
        Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
        None => RegistryAuth::Anonymous,
    };
    // Like docker, a registry on the loopback interface may speak plain HTTP (HTTPS is
    // tried first, with its certificate checked unless `insecure`).
    let attempts: &[bool] = if req.access.insecure || is_loopback(&registry) {
        &[false, true]
    } else {
        &[false]
    };
    let mut errors = Vec::new();
    for &plain_http in attempts {
        let client = Registry::client(&req.access, &ca, &registry, plain_http).map_err(|m| {
            OciError::Content {
                reference: req.reference.to_string(),
                message: format!("TLS set-up (spec.oci.caFile): {m}"),
            }
        })?;
        let r = Registry {
            client,
            reference: reference.clone(),
            auth: auth.clone(),
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

/// Whether a registry (`host[:port]`) is on the loopback interface: `localhost`,
/// `127.0.0.0/8` or `[::1]`.
pub fn is_loopback(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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

/// Runs blocking store work off the async workers.
async fn blocking<T: Send + 'static>(
    reference: &str,
    step: &'static str,
    path: &Path,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, OciError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(e.to_string()))
        .and_then(|r| r)
        .map_err(io_error(reference, step, path))
}

/// The identity of the guest bits, when they are asked for.
async fn bits_identity(req: &OciPull<'_>) -> Result<Option<String>, OciError> {
    let Some(bits) = req.guest.cloned() else {
        return Ok(None);
    };
    tokio::task::spawn_blocking(move || bits.identity())
        .await
        .map_err(|e| io::Error::other(e.to_string()))
        .map_err(io_error(req.reference, "inspect guest bits", Path::new("")))?
        .map(Some)
        .map_err(|e| OciError::Unsupported {
            reference: req.reference.to_string(),
            message: e.to_string(),
        })
}

/// The store's published entry of `key`, if any (blocking check off the workers).
async fn published(req: &OciPull<'_>, key: &str) -> Option<PulledRootfs> {
    let (store, k) = (req.store.clone(), key.to_string());
    let info = tokio::task::spawn_blocking(move || store.info(&k))
        .await
        .ok()
        .flatten()?;
    Some(PulledRootfs {
        rootfs: req.store.rootfs(key),
        manifest_digest: info.manifest_digest.clone(),
        reused: true,
        info,
    })
}

async fn pull_locked(req: &OciPull<'_>) -> Result<PulledRootfs, OciError> {
    let text = req.reference.to_string();
    let mut reference: Reference = req.reference.parse().map_err(|e| OciError::Reference {
        reference: text.clone(),
        message: format!("{e}"),
    })?;
    let store = req.store.clone();
    blocking(&text, "create", req.store.root(), move || store.ensure()).await?;
    let bits = bits_identity(req).await?;
    if let Some(pin) = req.pin {
        let key = ImageStore::key(pin, bits.as_deref()).map_err(|m| OciError::Content {
            reference: text.clone(),
            message: m,
        })?;
        if let Some(found) = published(req, &key).await {
            return Ok(found);
        }
        reference = reference.clone_with_digest(pin.to_string());
    }

    let (registry, bytes, digest) = connect(req, reference).await?;
    let (registry, bytes, digest) = narrow_to_platform(registry, bytes, digest, req.limits).await?;
    let key = ImageStore::key(&digest, bits.as_deref()).map_err(|m| registry.content(m))?;
    let store = req.store.clone();
    let lock_key = key.clone();
    let _lock = blocking(&text, "lock", req.store.root(), move || {
        store.lock(&lock_key)
    })
    .await?;
    if let Some(found) = published(req, &key).await {
        return Ok(found);
    }
    let view: ManifestView = serde_json::from_slice(&bytes)
        .map_err(|e| registry.content(format!("image manifest {digest}: {e}")))?;
    let layers = view.layers.unwrap_or_default();
    check_layers(&layers, req.limits).map_err(|m| registry.content(m))?;

    // Staging (under the lock, so one fixed name per key; a leftover is discarded).
    let staging = req.store.staging(&key);
    let s = staging.clone();
    blocking(&text, "clean", &staging, move || remove_if_present(&s)).await?;
    let built = build_staging(&registry, req, &layers, &bytes, &digest, &staging).await;
    let info = match built {
        Ok(info) => info,
        Err(e) => {
            let s = staging.clone();
            let _ = tokio::task::spawn_blocking(move || remove_if_present(&s)).await;
            return Err(e);
        }
    };
    let published_dir = req.store.entry(&key);
    let (s, p) = (staging.clone(), published_dir.clone());
    blocking(&text, "publish", &published_dir, move || fs::rename(&s, &p)).await?;
    Ok(PulledRootfs {
        rootfs: req.store.rootfs(&key),
        manifest_digest: digest,
        reused: false,
        info,
    })
}

/// The manifest digest `req.reference` names now (linux/amd64, after an index), without
/// pulling anything: the update check of a tag.
pub async fn latest_digest(req: &OciPull<'_>) -> Result<String, OciError> {
    let text = req.reference.to_string();
    let reference: Reference = req.reference.parse().map_err(|e| OciError::Reference {
        reference: text.clone(),
        message: format!("{e}"),
    })?;
    let check = async {
        let (registry, bytes, digest) = connect(req, reference).await?;
        let (_, _, digest) = narrow_to_platform(registry, bytes, digest, req.limits).await?;
        Ok(digest)
    };
    match tokio::time::timeout(Duration::from_secs(120), check).await {
        Ok(result) => result,
        Err(_) => Err(OciError::Timeout {
            reference: text,
            timeout: Duration::from_secs(120),
        }),
    }
}

/// Whether a reference names its image by digest (`…@sha256:…`): such an Image never
/// changes, so it is never checked for updates.
pub fn is_pinned_by_digest(reference: &str) -> bool {
    reference
        .parse::<Reference>()
        .ok()
        .is_some_and(|r| r.digest().is_some())
}

/// Downloads (or finds in the store), verifies and flattens every layer into
/// `staging/root`, adds the guest bits, then builds `staging/rootfs.ext4` and writes the
/// entry's metadata; the tree is removed.
async fn build_staging(
    registry: &Registry,
    req: &OciPull<'_>,
    layers: &[Descriptor],
    bytes: &[u8],
    digest: &str,
    staging: &Path,
) -> Result<EntryInfo, OciError> {
    let text = req.reference.to_string();
    let tree = staging.join("root");
    let st = staging.to_path_buf();
    let t = tree.clone();
    blocking(&text, "create", staging, move || {
        use std::os::unix::fs::DirBuilderExt;
        // 0700: nothing unpacked below (set-uid files, device nodes) is reachable by
        // other users while the build runs.
        fs::DirBuilder::new().mode(0o700).create(&st)?;
        fs::DirBuilder::new().mode(0o755).create(&t)
    })
    .await?;
    let mut budget = req.limits.max_unpacked_bytes;
    let count = layers.len();
    for (i, layer) in layers.iter().enumerate() {
        let layer_hex = sha256_hex(&layer.digest)
            .map_err(|e| registry.content(e.to_string()))?
            .to_string();
        let blob = req.store.blob(&layer_hex);
        let progress = |bytes: u64, done: bool| {
            if let Some(p) = req.progress {
                p(PullProgress {
                    layer: i + 1,
                    layers: count,
                    digest: layer.digest.clone(),
                    bytes,
                    total: layer.size,
                    done,
                });
            }
        };
        let b = blob.clone();
        let present = tokio::task::spawn_blocking(move || fs::metadata(&b).map(|m| m.len()))
            .await
            .ok()
            .and_then(Result::ok);
        if present != Some(layer.size) {
            progress(0, false);
            let tmp = req
                .store
                .tmp_dir()
                .join(format!("{layer_hex}.{}", std::process::id()));
            let report = |n: u64| progress(n, false);
            let downloaded = registry
                .blob(layer, &tmp, req.limits.max_blob_bytes, &report)
                .await;
            if let Err(e) = downloaded {
                let t = tmp.clone();
                let _ = tokio::task::spawn_blocking(move || fs::remove_file(&t)).await;
                return Err(e);
            }
            let (t, b) = (tmp.clone(), blob.clone());
            blocking(&text, "store blob", &blob, move || fs::rename(&t, &b)).await?;
        }
        progress(layer.size, true);
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
    }
    let guest: Option<GuestReport> = match req.guest {
        Some(bits) => {
            let (bits, t) = (bits.clone(), tree.clone());
            Some(
                tokio::task::spawn_blocking(move || bits.inject(&t))
                    .await
                    .map_err(|e| registry.content(format!("add guest bits: {e}")))?
                    .map_err(|e| OciError::Unsupported {
                        reference: text.clone(),
                        message: e.to_string(),
                    })?,
            )
        }
        None => None,
    };
    let image = staging.join(ROOTFS_FILE);
    let (tree_c, image_c) = (tree.clone(), image.clone());
    let rootfs_bytes = tokio::task::spawn_blocking(move || ext4::build_image(&tree_c, &image_c))
        .await
        .map_err(|e| registry.content(format!("build ext4: {e}")))?
        .map_err(|e| registry.content(format!("build ext4: {e}")))?;
    let info = EntryInfo {
        reference: text.clone(),
        manifest_digest: digest.to_string(),
        guest,
        rootfs_bytes,
    };
    let (st, t, b, i, img) = (
        staging.to_path_buf(),
        tree.clone(),
        bytes.to_vec(),
        info.clone(),
        image.clone(),
    );
    blocking(&text, "finish", staging, move || {
        ImageStore::write_metadata(&st, &b, &i)?;
        remove_if_present(&t)?;
        fs::File::open(&img)?.sync_all()
    })
    .await?;
    Ok(info)
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
    fn loopback_registries_are_recognised() {
        for r in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.9.9.9",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in [
            "registry.example:5000",
            "10.0.0.1:5000",
            "localhost.example",
            "[::2]:1",
        ] {
            assert!(!is_loopback(r), "{r}");
        }
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
