//! The content-addressed image store shared by every Image: `<state>/images/store/`.
//!
//! ```text
//! store/                      mode 0700 (nothing below is reachable by other users)
//!   blobs/sha256/<hex>        verified layer blobs, kept for the next build that shares them
//!   rootfs/<key>/rootfs.ext4  built root filesystems; <key> is the manifest digest's hex,
//!                             plus `-g<bits id>` when banger's guest bits were added
//!   rootfs/<key>/manifest.json  the image manifest it was built from (its layer list)
//!   rootfs/<key>/info.json    what was built: reference, digest, guest report, size
//!   .locks/<key>.lock         one build per key at a time (flock); the second waits
//!   .staging-<key>/           a build in progress (removed on failure or at the next try)
//!   .tmp/                     blobs being downloaded
//! ```
//!
//! Entries are published by `rename` (a whole directory or a whole blob), so a reader
//! never sees a half-built entry. Nothing here knows which Images use what: the engine
//! tells [`ImageStore::prune`] which root filesystems to keep (`banger gc`), and the
//! blobs their manifests list are kept with them.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::blob::sha256_hex;
use crate::host::guest_bits::GuestReport;

/// File name of a built root filesystem inside its entry.
pub const ROOTFS_FILE: &str = "rootfs.ext4";
const MANIFEST_FILE: &str = "manifest.json";
const INFO_FILE: &str = "info.json";

/// What a store entry records about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryInfo {
    /// The reference it was first built for.
    pub reference: String,
    /// `sha256:…` of the image manifest.
    pub manifest_digest: String,
    /// What banger's guest bits found and added, when they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<GuestReport>,
    /// Size of `rootfs.ext4` in bytes.
    pub rootfs_bytes: u64,
}

/// One item [`ImageStore::prune`] removed (or would remove).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreItem {
    /// `rootfs` or `blob`.
    pub kind: String,
    /// Its path.
    pub path: PathBuf,
    /// Bytes it takes (apparent size).
    pub bytes: u64,
}

/// The store at a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageStore {
    root: PathBuf,
}

fn io_at(step: &'static str, path: &Path) -> impl FnOnce(io::Error) -> io::Error {
    let path = path.to_path_buf();
    move |e| io::Error::new(e.kind(), format!("{step} {}: {e}", path.display()))
}

impl ImageStore {
    /// The store at `root` (`<state>/images/store`); nothing is created yet.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        ImageStore { root: root.into() }
    }

    /// Its directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the layout (directories mode 0700). Blocking.
    pub fn ensure(&self) -> io::Result<()> {
        for dir in [
            self.root.clone(),
            self.root.join("blobs/sha256"),
            self.root.join("rootfs"),
            self.root.join(".locks"),
            self.root.join(".tmp"),
        ] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(io_at("create", &dir))?;
        }
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))
            .map_err(io_at("chmod", &self.root))
    }

    /// A verified blob's path.
    pub fn blob(&self, hex: &str) -> PathBuf {
        self.root.join("blobs/sha256").join(hex)
    }

    /// Where blobs are downloaded before they are verified and renamed into place.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join(".tmp")
    }

    /// An entry's directory.
    pub fn entry(&self, key: &str) -> PathBuf {
        self.root.join("rootfs").join(key)
    }

    /// An entry's root filesystem.
    pub fn rootfs(&self, key: &str) -> PathBuf {
        self.entry(key).join(ROOTFS_FILE)
    }

    /// The staging directory of a build of `key`.
    pub fn staging(&self, key: &str) -> PathBuf {
        self.root.join(format!(".staging-{key}"))
    }

    /// An entry's recorded info, when it is published and readable. Blocking.
    pub fn info(&self, key: &str) -> Option<EntryInfo> {
        if !self.rootfs(key).is_file() {
            return None;
        }
        let bytes = fs::read(self.entry(key).join(INFO_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Writes `manifest.json` and `info.json` into a staging directory.
    pub fn write_metadata(staging: &Path, manifest: &[u8], info: &EntryInfo) -> io::Result<()> {
        let m = staging.join(MANIFEST_FILE);
        fs::write(&m, manifest).map_err(io_at("write", &m))?;
        let i = staging.join(INFO_FILE);
        fs::write(
            &i,
            serde_json::to_vec_pretty(info).map_err(io::Error::other)?,
        )
        .map_err(io_at("write", &i))
    }

    /// Takes the build lock of `key` (waits for another build of it). Blocking.
    pub fn lock(&self, key: &str) -> io::Result<nix::fcntl::Flock<fs::File>> {
        let path = self.root.join(".locks").join(format!("{key}.lock"));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_at("open", &path))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| io_at("lock", &path)(io::Error::from(errno)))
    }

    /// The store key of a root filesystem: the manifest digest's hex, plus `-g<bits>`
    /// when the guest bits of that identity were added.
    pub fn key(manifest_digest: &str, bits: Option<&str>) -> Result<String, String> {
        let hex = sha256_hex(manifest_digest).map_err(|e| e.to_string())?;
        Ok(match bits {
            Some(b) => format!("{hex}-g{b}"),
            None => hex.to_string(),
        })
    }

    /// Whether `path` is a published root filesystem of this store. Cheap.
    pub fn holds(&self, path: &Path) -> bool {
        path.starts_with(self.root.join("rootfs"))
            && path.file_name().is_some_and(|n| n == ROOTFS_FILE)
            && path.is_file()
    }

    /// Removes every root filesystem not in `keep` (paths as resolved) and not published
    /// within `grace`, the blobs no kept entry's manifest lists, stale staging directories and downloads. Returns
    /// what was (with `dry_run`: would be) removed. Blocking; callers hold no build lock
    /// (a build in progress is a staging directory whose lock is held: it is skipped).
    pub fn prune(
        &self,
        keep: &BTreeSet<PathBuf>,
        grace: std::time::Duration,
        dry_run: bool,
    ) -> io::Result<Vec<StoreItem>> {
        let mut removed = Vec::new();
        let mut kept_blobs = BTreeSet::new();
        let rootfs_dir = self.root.join("rootfs");
        for entry in read_dir_or_empty(&rootfs_dir)? {
            let dir = entry.path();
            let rootfs = dir.join(ROOTFS_FILE);
            let recent = crate::host::garbage::changed_within(&dir, grace);
            if keep.contains(&rootfs) || recent {
                if let Ok(bytes) = fs::read(dir.join(MANIFEST_FILE)) {
                    kept_blobs.extend(layer_hexes(&bytes));
                }
                continue;
            }
            removed.push(StoreItem {
                kind: "rootfs".into(),
                bytes: tree_bytes(&dir),
                path: rootfs,
            });
            if !dry_run {
                fs::remove_dir_all(&dir).map_err(io_at("remove", &dir))?;
            }
        }
        for entry in read_dir_or_empty(&self.root.join("blobs/sha256"))? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if kept_blobs.contains(&name) {
                continue;
            }
            let path = entry.path();
            removed.push(StoreItem {
                kind: "blob".into(),
                bytes: fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0),
                path: path.clone(),
            });
            if !dry_run {
                fs::remove_file(&path).map_err(io_at("remove", &path))?;
            }
        }
        // Leftovers of interrupted builds, unless a build holds their lock right now.
        for entry in read_dir_or_empty(&self.root)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(key) = name.strip_prefix(".staging-") else {
                continue;
            };
            let lock = self.root.join(".locks").join(format!("{key}.lock"));
            let busy = fs::File::open(&lock).ok().is_some_and(|f| {
                nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).is_err()
            });
            if !busy && !dry_run {
                fs::remove_dir_all(entry.path()).map_err(io_at("remove", &entry.path()))?;
            }
        }
        removed.sort();
        Ok(removed)
    }
}

/// The hex digests of the layers a manifest lists.
fn layer_hexes(manifest: &[u8]) -> Vec<String> {
    #[derive(Deserialize)]
    struct Layers {
        #[serde(default)]
        layers: Vec<super::Descriptor>,
    }
    serde_json::from_slice::<Layers>(manifest)
        .map(|m| {
            m.layers
                .iter()
                .filter_map(|l| sha256_hex(&l.digest).ok().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn read_dir_or_empty(dir: &Path) -> io::Result<Vec<fs::DirEntry>> {
    crate::host::garbage::read_dir_or_empty(dir).map_err(io_at("read", dir))
}

/// Apparent size of the regular files in a directory (not recursive beyond one level).
fn tree_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| fs::symlink_metadata(e.path()).ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::host::oci::blob::sha256_digest;

    #[test]
    fn prune_keeps_what_images_use_and_the_blobs_they_list() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::at(dir.path().join("store"));
        store.ensure().unwrap();
        let used_blob = sha256_digest(b"used");
        let old_blob = sha256_digest(b"old");
        for b in [&used_blob, &old_blob] {
            fs::write(store.blob(sha256_hex(b).unwrap()), b"x").unwrap();
        }
        let entry = |digest: &str, layer: &str| {
            let key = ImageStore::key(digest, Some("abc")).unwrap();
            let staging = store.staging(&key);
            fs::create_dir_all(&staging).unwrap();
            fs::write(staging.join(ROOTFS_FILE), vec![0u8; 100]).unwrap();
            let manifest =
                serde_json::json!({"layers": [{"mediaType": "x", "digest": layer, "size": 1}]});
            let info = EntryInfo {
                reference: "r".into(),
                manifest_digest: digest.into(),
                guest: None,
                rootfs_bytes: 100,
            };
            ImageStore::write_metadata(&staging, &serde_json::to_vec(&manifest).unwrap(), &info)
                .unwrap();
            fs::rename(&staging, store.entry(&key)).unwrap();
            store.rootfs(&key)
        };
        let used = entry(&sha256_digest(b"m1"), &used_blob);
        let unused = entry(&sha256_digest(b"m2"), &old_blob);
        assert!(store.holds(&used) && store.holds(&unused));
        assert_eq!(
            store
                .info(&ImageStore::key(&sha256_digest(b"m1"), Some("abc")).unwrap())
                .unwrap()
                .rootfs_bytes,
            100
        );
        let keep = BTreeSet::from([used.clone()]);
        let grace = std::time::Duration::ZERO;
        assert!(
            store
                .prune(&keep, std::time::Duration::from_secs(60), true)
                .unwrap()
                .iter()
                .all(|i| i.kind == "blob"),
            "recent entries are kept"
        );
        let would = store.prune(&keep, grace, true).unwrap();
        assert_eq!(would.len(), 2, "{would:?}");
        assert!(unused.exists(), "dry run removes nothing");
        let gone = store.prune(&keep, grace, false).unwrap();
        assert_eq!(gone, would);
        assert!(used.exists() && !unused.exists());
        assert!(store.blob(sha256_hex(&used_blob).unwrap()).exists());
        assert!(!store.blob(sha256_hex(&old_blob).unwrap()).exists());
        assert!(store.prune(&keep, grace, false).unwrap().is_empty());
    }
}
