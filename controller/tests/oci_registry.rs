//! `spec.oci` against a real registry: `docker-registry` on 127.0.0.1, images built here
//! as OCI layouts and pushed with `skopeo`, pulled through the Linux runtime, and the
//! resulting ext4 inspected with `debugfs` (nothing is mounted).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kit_support;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use banger_controller::host::oci::auth::RegistryCredentials;
use banger_controller::host::oci::store::ImageStore;
use banger_controller::host::oci::{self, OciLimits, OciPull, RegistryAccess};
use banger_controller::runtime::linux::LinuxRuntime;
use banger_controller::runtime::{ImageContext, VmRuntime};
use banger_specs::{GuestMode, ImageSpec, OciSource, Readiness};
use kit_support::host_runtime;
use sha2::{Digest, Sha256};

/// A `docker-registry` serving a temp dir on 127.0.0.1; killed on drop.
struct Registry {
    child: Child,
    port: u16,
    storage: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let storage = dir.path().join("data");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                storage.display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (scripts/deps.sh installs it)");
        let registry = Registry {
            child,
            port,
            storage,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "registry did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    fn reference(&self, repo_tag: &str) -> String {
        format!("127.0.0.1:{}/{repo_tag}", self.port)
    }

    /// Pushes an OCI layout (tag `tag`) with skopeo; `all` copies a whole index.
    fn push(&self, layout: &Path, tag: &str, dest: &str, all: bool) {
        let mut cmd = Command::new("skopeo");
        cmd.arg("copy")
            .arg("--quiet")
            .arg("--preserve-digests")
            .arg("--dest-tls-verify=false");
        if all {
            cmd.arg("--all");
        }
        let out = cmd
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}", self.reference(dest)))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The registry's stored copy of a blob.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// An OCI image layout being written.
struct Layout {
    dir: PathBuf,
    index: Vec<serde_json::Value>,
}

impl Layout {
    fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout {
            dir: dir.to_path_buf(),
            index: Vec::new(),
        }
    }

    fn blob(&self, bytes: &[u8]) -> String {
        let digest = digest_of(bytes);
        let hex = digest.strip_prefix("sha256:").unwrap();
        std::fs::write(self.dir.join("blobs/sha256").join(hex), bytes).unwrap();
        digest
    }

    /// Writes config + manifest for `layers` (bytes, gzipped?); returns the manifest's
    /// descriptor JSON and its digest.
    fn image(&self, layers: &[(Vec<u8>, bool)], arch: &str) -> (serde_json::Value, String) {
        let mut diff_ids = Vec::new();
        let mut descriptors = Vec::new();
        for (tar, gzip) in layers {
            diff_ids.push(digest_of(tar));
            let (bytes, media) = if *gzip {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(tar).unwrap();
                (
                    enc.finish().unwrap(),
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                )
            } else {
                (tar.clone(), "application/vnd.oci.image.layer.v1.tar")
            };
            descriptors.push(serde_json::json!({
                "mediaType": media, "digest": self.blob(&bytes), "size": bytes.len()
            }));
        }
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": arch, "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids}
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": self.blob(&config), "size": config.len()},
            "layers": descriptors
        }))
        .unwrap();
        let digest = self.blob(&manifest);
        let desc = serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": manifest.len(),
            "platform": {"architecture": arch, "os": "linux"}
        });
        (desc, digest)
    }

    fn tag(&mut self, mut desc: serde_json::Value, tag: &str) {
        desc["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
        self.index.push(desc);
        let index = serde_json::json!({"schemaVersion": 2, "manifests": self.index});
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }

    /// An image index of `manifests`, tagged `tag`.
    fn index(&mut self, manifests: Vec<serde_json::Value>, tag: &str) {
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests
        }))
        .unwrap();
        let desc = serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": self.blob(&index), "size": index.len()
        });
        self.tag(desc, tag);
    }
}

/// A tar layer from (path, kind) entries.
enum T<'a> {
    Dir(&'a str, u32, u64),
    File(&'a str, &'a [u8], u32, u64),
    Sym(&'a str, &'a str),
    Hard(&'a str, &'a str),
}

fn tar(entries: &[T<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        match e {
            T::Dir(p, mode, uid) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*uid);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            T::File(p, data, mode, uid) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*uid);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
            T::Sym(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
            T::Hard(p, target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn base_layers() -> Vec<(Vec<u8>, bool)> {
    let lower = tar(&[
        T::Dir("etc", 0o755, 0),
        T::File("etc/motd", b"hello from oci\n", 0o644, 0),
        T::File("etc/gone", b"deleted by a whiteout\n", 0o644, 0),
        T::Dir("cache", 0o755, 0),
        T::File("cache/old", b"hidden by an opaque dir\n", 0o644, 0),
        T::Dir("home", 0o755, 0),
        T::Dir("home/user", 0o700, 1000),
        T::File("home/user/note", b"mine\n", 0o600, 1000),
        T::Dir("bin", 0o755, 0),
        T::File("bin/busybox", b"#!fake\n", 0o755, 0),
        T::Sym("bin/sh", "/bin/busybox"),
        T::Hard("bin/ash", "bin/busybox"),
        T::Dir("usr/bin", 0o755, 0),
        T::File("usr/bin/su", b"suid\n", 0o4755, 0),
    ]);
    let upper = tar(&[
        T::File("etc/.wh.gone", b"", 0o644, 0),
        T::File("cache/.wh..wh..opq", b"", 0o644, 0),
        T::File("cache/new", b"written in layer 2\n", 0o644, 0),
    ]);
    vec![(lower, true), (upper, false)]
}

/// `debugfs -R CMD image` output (stdout and stderr together).
fn debugfs(image: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(image)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A file's content read from an ext4 image with `debugfs -R 'cat PATH'`.
fn cat(image: &Path, path: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(image)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn image_context(state: &Path, name: &str, reference: &str, kit: &Path) -> ImageContext {
    ImageContext {
        uid: format!("uid-{name}"),
        name: name.to_string(),
        spec: ImageSpec {
            kernel: Some(kit.join("vmlinuz")),
            initrd: None,
            rootfs: None,
            oci: Some(OciSource {
                reference: reference.to_string(),
                insecure: true,
                ca_file: None,
            }),
            kernel_args: None,
            readiness: Readiness::default(),
            // These test layers are not a usable root (no shell): no guest bits.
            guest: GuestMode::None,
        },
        image_dir: state.join("images").join(format!("uid-{name}")),
        pin: None,
        progress: Default::default(),
    }
}

/// An anonymous pull of `reference` (plain HTTP allowed) into `store`.
fn pull<'a>(reference: &'a str, store: &'a ImageStore, limits: &'a OciLimits) -> OciPull<'a> {
    static NO_CREDENTIALS: std::sync::OnceLock<RegistryCredentials> = std::sync::OnceLock::new();
    OciPull {
        reference,
        access: RegistryAccess {
            insecure: true,
            ca_file: None,
            credentials: NO_CREDENTIALS.get_or_init(RegistryCredentials::none),
        },
        store,
        limits,
        pin: None,
        guest: None,
        progress: None,
    }
}

fn runtime(state: &Path) -> LinuxRuntime {
    host_runtime(state, Duration::from_secs(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (chown to the layers' owners), docker-registry and skopeo"]
async fn an_oci_image_is_pulled_flattened_and_reused() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&work.path().join("layout"));
    let (desc, manifest_digest) = layout.image(&base_layers(), "amd64");
    layout.tag(desc.clone(), "1");
    registry.push(&layout.dir, "1", "test/img:1", false);

    // The kernel stays a host file; any regular file will do for resolution.
    let kit = work.path().join("kit");
    std::fs::create_dir_all(&kit).unwrap();
    std::fs::write(kit.join("vmlinuz"), b"kernel").unwrap();
    let state = work.path().join("state");
    std::fs::create_dir_all(state.join("images")).unwrap();
    let host = runtime(&state);
    let ctx = image_context(&state, "img", &registry.reference("test/img:1"), &kit);

    let started = Instant::now();
    let resolution = host.resolve_image(&ctx).await.unwrap();
    eprintln!("pull + flatten + mkfs: {:?}", started.elapsed());
    assert!(!resolution.reused);
    assert_eq!(resolution.digest, manifest_digest);
    let resolved = resolution.boot.clone();
    assert_eq!(resolved.rootfs_digest, manifest_digest);
    assert_eq!(resolved.kernel, kit.join("vmlinuz"));
    let store_root = state.join("images/store");
    assert!(
        resolved.rootfs.starts_with(store_root.join("rootfs")),
        "{:?}",
        resolved.rootfs
    );
    assert_eq!(
        resolution.rootfs_bytes,
        std::fs::metadata(&resolved.rootfs).unwrap().len()
    );
    assert!(host.image_present(&resolved).await);
    let rootfs = &resolved.rootfs;

    assert_eq!(cat(rootfs, "/etc/motd"), "hello from oci\n");
    assert!(debugfs(rootfs, "stat /etc/gone").contains("File not found"));
    assert!(debugfs(rootfs, "stat /cache/old").contains("File not found"));
    assert_eq!(cat(rootfs, "/cache/new"), "written in layer 2\n");
    let note = debugfs(rootfs, "stat /home/user/note");
    assert!(note.contains("User:  1000   Group:  1000"), "{note}");
    assert!(note.contains("Mode:  0600"), "{note}");
    let home = debugfs(rootfs, "stat /home/user");
    assert!(
        home.contains("User:  1000") && home.contains("Mode:  0700"),
        "{home}"
    );
    let su = debugfs(rootfs, "stat /usr/bin/su");
    assert!(
        su.contains("Mode:  04755") && su.contains("User:     0"),
        "{su}"
    );
    let sh = debugfs(rootfs, "stat /bin/sh");
    assert!(
        sh.contains("Type: symlink") && sh.contains("Fast link dest: \"/bin/busybox\""),
        "{sh}"
    );
    let ash = debugfs(rootfs, "stat /bin/ash");
    assert!(ash.contains("Links: 2"), "hard link kept: {ash}");
    // The store is private to root, and keeps the verified layer blobs.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(
        std::fs::metadata(&store_root).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let blobs = std::fs::read_dir(store_root.join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 2, "both layers kept in the store");

    // A second Image of the same reference shares the store: nothing is downloaded or
    // built again (same file, same inode).
    let inode = std::fs::metadata(rootfs).unwrap().ino();
    let other = image_context(&state, "other", &registry.reference("test/img:1"), &kit);
    let started = Instant::now();
    let again = host.resolve_image(&other).await.unwrap();
    eprintln!(
        "second Image of the same reference: {:?}",
        started.elapsed()
    );
    assert!(again.reused);
    assert_eq!(again.boot, resolved);
    assert_eq!(std::fs::metadata(&again.boot.rootfs).unwrap().ino(), inode);

    // A multi-platform index resolves to its linux/amd64 manifest (the same entry).
    let (arm, arm_digest) = layout.image(&base_layers()[..1], "arm64");
    layout.index(vec![arm, desc], "multi");
    registry.push(&layout.dir, "multi", "test/img:multi", true);
    let multi = image_context(&state, "multi", &registry.reference("test/img:multi"), &kit);
    let resolved_multi = host.resolve_image(&multi).await.unwrap();
    assert_eq!(resolved_multi.digest, manifest_digest);
    assert_ne!(resolved_multi.digest, arm_digest);
    assert!(resolved_multi.reused);

    // A new push of the tag: an Image pinned to its digest keeps it (from the store,
    // nothing fetched); the update check sees the new digest; unpinned, it moves.
    let mut layers = base_layers();
    layers.push((tar(&[T::File("etc/motd", b"v2\n", 0o644, 0)]), true));
    let (desc2, digest2) = layout.image(&layers, "amd64");
    layout.tag(desc2, "2");
    registry.push(&layout.dir, "2", "test/img:1", false);
    let pinned = ImageContext {
        pin: Some(manifest_digest.clone()),
        ..ctx.clone()
    };
    let kept = host.resolve_image(&pinned).await.unwrap();
    assert_eq!(kept.digest, manifest_digest);
    assert!(kept.reused);
    assert_eq!(host.latest_image_digest(&ctx).await.unwrap(), digest2);
    let v2 = host.resolve_image(&ctx).await.unwrap();
    assert_eq!(v2.digest, digest2);
    assert!(!v2.reused);
    assert_eq!(cat(&v2.boot.rootfs, "/etc/motd"), "v2\n");
    let blobs = std::fs::read_dir(store_root.join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 3, "only the new layer was downloaded");
    assert!(resolved.rootfs.exists(), "the old digest stays until gc");

    // Registry gone: an Image pinned to what it pulled keeps resolving.
    drop(registry);
    let offline = host
        .resolve_image(&ImageContext {
            pin: Some(digest2.clone()),
            ..ctx.clone()
        })
        .await
        .unwrap();
    assert_eq!(offline.digest, digest2);

    // gc keeps what Images use and the blobs their manifests list.
    let keep = std::collections::BTreeSet::from([v2.boot.rootfs.clone()]);
    let store = ImageStore::at(&store_root);
    let removed = store.prune(&keep, Duration::ZERO, false).unwrap();
    assert!(
        removed.iter().any(|i| i.path == resolved.rootfs),
        "{removed:?}"
    );
    assert!(!resolved.rootfs.exists() && v2.boot.rootfs.exists());
    assert!(!host.image_present(&resolved).await);
    let blobs = std::fs::read_dir(store_root.join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 3, "v2 lists all three layers");

    host.remove_image(&ctx).await.unwrap();
    assert!(!ctx.image_dir.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (chown to the layers' owners), docker-registry and skopeo"]
async fn bad_blobs_and_oversized_images_are_rejected() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&work.path().join("layout"));
    let layers = vec![(tar(&[T::File("data", &noise(64 * 1024), 0o644, 0)]), false)];
    let (desc, _) = layout.image(&layers, "amd64");
    let layer_digest = desc_layer_digest(&layout, &desc);
    layout.tag(desc, "1");
    registry.push(&layout.dir, "1", "test/bad:1", false);
    let reference = registry.reference("test/bad:1");

    // Over the per-blob cap: refused before any download.
    let store = ImageStore::at(work.path().join("store"));
    let small = OciLimits {
        max_blob_bytes: 1024,
        ..OciLimits::default()
    };
    let err = oci::pull_rootfs(&pull(&reference, &store, &small))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("per-blob limit is 1024"), "{err}");

    // The registry serves bytes that do not match the digest: rejected, nothing published.
    let stored = registry.blob_file(&layer_digest);
    let mut bytes = std::fs::read(&stored).unwrap();
    let last = bytes.len() - 2000;
    bytes[last] ^= 0xff;
    std::fs::write(&stored, &bytes).unwrap();
    let limits = OciLimits::default();
    let err = oci::pull_rootfs(&pull(&reference, &store, &limits))
        .await
        .unwrap_err()
        .to_string();
    eprintln!("corrupt blob: {err}");
    assert!(
        err.contains(&layer_digest) && err.to_lowercase().contains("digest"),
        "{err}"
    );
    let published = std::fs::read_dir(store.root().join("rootfs"))
        .unwrap()
        .count();
    assert_eq!(published, 0, "nothing published");
    let blobs = std::fs::read_dir(store.root().join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0, "a blob that fails its digest is never stored");

    // A layer writing through a symlink that escapes the root: rejected, naming the
    // layer and the entry; nothing is written outside and nothing is published.
    let outside = tempfile::tempdir().unwrap();
    let evil = vec![(
        tar(&[
            T::Sym("escape", outside.path().to_str().unwrap()),
            T::File("escape/pwned", b"x", 0o644, 0),
        ]),
        true,
    )];
    let (desc, _) = layout.image(&evil, "amd64");
    layout.tag(desc, "evil");
    registry.push(&layout.dir, "evil", "test/evil:1", false);
    let evil_ref = registry.reference("test/evil:1");
    let err = oci::pull_rootfs(&pull(&evil_ref, &store, &limits))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layer 1/1 sha256:")
            && err.contains("escape/pwned")
            && err.contains("symlink"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    let left: Vec<_> = std::fs::read_dir(store.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".staging"))
        .collect();
    assert!(left.is_empty(), "staging removed: {left:?}");
    assert_eq!(
        std::fs::read_dir(store.root().join("rootfs"))
            .unwrap()
            .count(),
        0
    );

    // Unknown repository: a clear registry error naming the reference.
    let missing = registry.reference("test/missing:1");
    let err = oci::pull_rootfs(&pull(&missing, &store, &limits))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("test/missing:1") && err.contains("manifest"),
        "{err}"
    );
}

/// Incompressible bytes (xorshift), so sizes survive any compression.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn desc_layer_digest(layout: &Layout, desc: &serde_json::Value) -> String {
    let hex = desc["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap()
        .to_string();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.dir.join("blobs/sha256").join(hex)).unwrap())
            .unwrap();
    manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (chown to the layers' owners), docker-registry and skopeo"]
async fn concurrent_pulls_of_one_image_coalesce() {
    // Three pulls of one reference (as three Images would) into one store.
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&work.path().join("layout"));
    let (desc, digest) = layout.image(&base_layers(), "amd64");
    layout.tag(desc, "1");
    registry.push(&layout.dir, "1", "test/img:1", false);
    let reference = registry.reference("test/img:1");
    let store = ImageStore::at(work.path().join("store"));
    let limits = OciLimits::default();
    let pulls: Vec<_> = (0..3)
        .map(|_| {
            let reference = reference.clone();
            let store = store.clone();
            let limits = limits.clone();
            tokio::spawn(async move { oci::pull_rootfs(&pull(&reference, &store, &limits)).await })
        })
        .collect();
    let mut results = Vec::new();
    for p in pulls {
        results.push(p.await.unwrap().unwrap());
    }
    assert!(results.iter().all(|r| r.manifest_digest == digest));
    assert!(results.iter().all(|r| r.rootfs == results[0].rootfs));
    assert_eq!(
        results.iter().filter(|r| !r.reused).count(),
        1,
        "exactly one pull downloaded; the others waited and reused it"
    );
}
