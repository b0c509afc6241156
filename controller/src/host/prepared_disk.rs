//! Prepared root disks: the slow part of a new VM's disk done once per (image, size,
//! finishing touch) instead of once per VM.
//!
//! A new disk used to be a copy of the image's rootfs, checked with `e2fsck -f`, grown
//! with `resize2fs` and given banger's SSH key with `debugfs` — the same work, with the
//! same result, for every VM of the same Image and size. Here that work makes a
//! **base** once, `<state_dir>/disk-bases/<key>.base.ext4`, and every new disk of that
//! key is a copy of it:
//!
//! - a **spare** (`<key>.spare.ext4`), a copy of the base made ahead, is renamed into
//!   the VM's directory: no copy on the VM's critical path at all;
//! - without a spare (two VMs at once), the base is sparse-copied
//!   ([`crate::host::disk::sparse_copy`]);
//! - without a base (the first VM of the key) the disk is made from the image as
//!   before, so the first VM waits no longer than it did;
//! - after every new disk, [`PreparedDisks::refill_spare`] builds the base if it is
//!   missing and makes the next spare (the runtime runs it in the background).
//!
//! `<key>` is a digest of the image's identity, the size and the finishing touch's id
//! (banger's public key line): a changed image, size or key is another base, never a
//! stale one. `<key>.json` records which Image a key belongs to, so
//! [`PreparedDisks::remove_image`] drops an Image's bases and spares when the Image
//! goes, and a base of a newer rootfs of the same Image drops the older ones.
//!
//! Crash safety: a base and a spare are written to a temporary file with a fixed name
//! (`.<key>.base.tmp`, `.<key>.spare.tmp`), synced and renamed into place, so they only
//! ever appear whole; a leftover temporary file is removed by the next build of that
//! key, or by garbage collection ([`PreparedDisks::prune`], which also removes the
//! keys of Images deleted while the daemon was down). Builds and removals within the
//! daemon hold one lock (the temporary names are fixed; one daemon per state
//! directory, `daemon.lock`); taking a spare is a rename and needs none (two VMs
//! racing for one spare: one gets it, the other copies the base). A disk taken from
//! here gets its own random disk id and sidecar when it is published
//! ([`crate::host::disk::ensure_root_disk`]); bases and spares have none.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::host::disk::{
    clone_image, create_new_nofollow, create_private_dirs, grow_filesystem, remove_if_exists,
    sparse_copy, sync_dir, Ctx, DiskError, FinishDisk, ImageSource,
};
use crate::host::garbage::{changed_within, read_dir_or_empty};
use crate::host::oci::store::StoreItem;

/// The directory below the state directory holding prepared bases and spares.
pub const PREPARED_DIR: &str = "disk-bases";
const BASE_SUFFIX: &str = ".base.ext4";
const SPARE_SUFFIX: &str = ".spare.ext4";
const META_SUFFIX: &str = ".json";
/// [`StoreItem::kind`] of a file [`PreparedDisks::prune`] collects.
pub const PRUNED_KIND: &str = "prepared-disk";
/// The step of a [`DiskError::Io`] opening the source of a copy.
const OPEN_BASE: &str = "open prepared base";

/// Serialises the builds of bases and spares and their removal within the daemon (the
/// temporary file names are fixed per key).
static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// The store of prepared bases and spares of one state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedDisks {
    state_dir: PathBuf,
    dir: PathBuf,
}

/// What a prepared base is made of: one base per distinct key.
#[derive(Debug, Clone, Copy)]
pub struct PreparedKey<'a> {
    /// The Image's name (what [`PreparedDisks::remove_image`] matches).
    pub image_name: &'a str,
    /// The image the base is derived from.
    pub image: &'a ImageSource,
    /// The disk's size in bytes.
    pub size_bytes: u64,
    /// A stable name of the finishing touch (banger's public key line).
    pub finish_id: &'a str,
}

impl PreparedKey<'_> {
    /// The key's file-name stem: 32 hex digits of SHA-256 over identity, size and
    /// finishing touch.
    pub fn name(&self) -> String {
        let mut hash = Sha256::new();
        for part in [
            self.image.identity.as_bytes(),
            &self.size_bytes.to_le_bytes(),
            self.finish_id.as_bytes(),
        ] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
        hex::encode(&hash.finalize()[..16])
    }
}

/// What `<key>.json` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PreparedMeta {
    image_name: String,
    image_identity: String,
    size_bytes: u64,
}

/// One key found in the store ([`PreparedDisks::entries`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedEntry {
    /// The key's file-name stem ([`PreparedKey::name`]).
    pub name: String,
    /// The Image it belongs to.
    pub image_name: String,
    /// The image identity the base was made from.
    pub image_identity: String,
    /// The disk size.
    pub size_bytes: u64,
    /// Whether the base exists.
    pub base: bool,
    /// Whether a spare exists.
    pub spare: bool,
}

impl PreparedDisks {
    /// The store of `state_dir` (nothing is made until a base is built).
    pub fn for_state_dir(state_dir: &Path) -> Self {
        PreparedDisks {
            state_dir: state_dir.to_path_buf(),
            dir: state_dir.join(PREPARED_DIR),
        }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The base of `key`.
    pub fn base_path(&self, key: &PreparedKey<'_>) -> PathBuf {
        self.dir.join(format!("{}{BASE_SUFFIX}", key.name()))
    }

    /// The spare of `key`.
    pub fn spare_path(&self, key: &PreparedKey<'_>) -> PathBuf {
        self.dir.join(format!("{}{SPARE_SUFFIX}", key.name()))
    }

    /// Puts a new disk of `key` at `dst` (a path that does not exist yet, in the same
    /// file system): the spare renamed, else a sparse copy of the base. Returns `false`
    /// (and makes nothing) when there is neither: the caller makes the disk from the
    /// image itself, and [`Self::refill_spare`] prepares the base for the next VM.
    pub(crate) fn take(
        &self,
        ctx: &Ctx<'_>,
        key: &PreparedKey<'_>,
        dst: &Path,
    ) -> Result<bool, DiskError> {
        let (base, spare) = (self.base_path(key), self.spare_path(key));
        for path in [&self.dir, &base, &spare] {
            ctx.check(&self.state_dir, path)?;
        }
        match std::fs::rename(&spare, dst) {
            Ok(()) => return Ok(true),
            // No spare (or another file system): copy the base.
            Err(err)
                if err.kind() == io::ErrorKind::NotFound
                    || err.kind() == io::ErrorKind::CrossesDevices => {}
            Err(err) => return Err(ctx.io("rename spare disk to", dst)(err)),
        }
        match copy_disk(ctx, &base, dst) {
            Ok(()) => Ok(true),
            Err(DiskError::Io { step, source, .. })
                if step == OPEN_BASE && source.kind() == io::ErrorKind::NotFound =>
            {
                // No base yet: nothing was created at `dst`.
                Ok(false)
            }
            Err(err) => {
                let _ = remove_if_exists(dst);
                Err(err)
            }
        }
    }

    /// Builds the base of `key` unless it exists (the caller holds the build lock).
    fn build_base(
        &self,
        ctx: &Ctx<'_>,
        key: &PreparedKey<'_>,
        finish: Option<FinishDisk<'_>>,
    ) -> Result<(), DiskError> {
        let name = key.name();
        let base = self.base_path(key);
        let tmp = self.dir.join(format!(".{name}.base.tmp"));
        let meta = self.dir.join(format!("{name}{META_SUFFIX}"));
        let meta_tmp = self.dir.join(format!(".{name}.json.tmp"));
        for path in [&self.dir, &base, &tmp, &meta, &meta_tmp] {
            ctx.check(&self.state_dir, path)?;
        }
        create_private_dirs(&self.dir).map_err(ctx.io("create directory", &self.dir))?;
        for path in [&self.dir, &base, &tmp, &meta, &meta_tmp] {
            ctx.check(&self.state_dir, path)?;
        }
        if base.exists() {
            return Ok(());
        }
        // The bases of the Image's older rootfs are of no use any more.
        for entry in self.entries_unlocked().map_err(ctx.io("list", &self.dir))? {
            if entry.image_name == key.image_name && entry.image_identity != key.image.identity {
                self.remove_entry(&entry.name)
                    .map_err(ctx.io("remove stale base in", &self.dir))?;
            }
        }
        remove_if_exists(&tmp).map_err(ctx.io("remove stale temporary base", &tmp))?;
        let record = PreparedMeta {
            image_name: key.image_name.to_string(),
            image_identity: key.image.identity.clone(),
            size_bytes: key.size_bytes,
        };
        write_file_atomic(
            &meta_tmp,
            &meta,
            &serde_json::to_vec_pretty(&record).map_err(|e| {
                ctx.io("encode", &meta)(io::Error::new(io::ErrorKind::InvalidData, e))
            })?,
        )
        .map_err(ctx.io("write", &meta))?;
        let built = (|| {
            let image_size = std::fs::metadata(&key.image.rootfs)
                .map_err(ctx.io("inspect image", &key.image.rootfs))?
                .len();
            clone_image(ctx, &key.image.rootfs, &tmp)?;
            grow_filesystem(ctx, &tmp, image_size, key.size_bytes)?;
            if let Some(finish) = finish {
                finish(&tmp).map_err(|message| DiskError::BeforePublish {
                    vm: ctx.vm.to_string(),
                    path: tmp.clone(),
                    message,
                })?;
            }
            std::fs::rename(&tmp, &base).map_err(ctx.io("rename temporary base to", &base))
        })();
        if let Err(err) = built {
            // Best effort: the error being returned matters more than this cleanup's.
            let _ = remove_if_exists(&tmp);
            return Err(err);
        }
        sync_dir(&self.dir).map_err(ctx.io("sync directory", &self.dir))
    }

    /// Makes the spare of `key` when there is none: from its base, the base being
    /// built first when missing (`finish` runs on it before it is published). Returns
    /// whether a spare was made. Meant to run off the VM's critical path, after a new
    /// disk of `key` was made.
    pub fn refill_spare(
        &self,
        key: &PreparedKey<'_>,
        finish: Option<FinishDisk<'_>>,
    ) -> Result<bool, DiskError> {
        let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let name = key.name();
        let ctx = Ctx { vm: &name };
        let (base, spare) = (self.base_path(key), self.spare_path(key));
        let tmp = self.dir.join(format!(".{name}.spare.tmp"));
        for path in [&self.dir, &base, &spare, &tmp] {
            ctx.check(&self.state_dir, path)?;
        }
        if spare.exists() {
            return Ok(false);
        }
        if !base.exists() {
            self.build_base(&ctx, key, finish)?;
        }
        remove_if_exists(&tmp).map_err(ctx.io("remove stale temporary spare", &tmp))?;
        let made = copy_disk(&ctx, &base, &tmp)
            .and_then(|()| std::fs::rename(&tmp, &spare).map_err(ctx.io("rename to", &spare)));
        if let Err(err) = made {
            let _ = remove_if_exists(&tmp);
            return Err(err);
        }
        sync_dir(&self.dir).map_err(ctx.io("sync directory", &self.dir))?;
        Ok(true)
    }

    /// Every key in the store with a readable record.
    pub fn entries(&self) -> io::Result<Vec<PreparedEntry>> {
        let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        self.entries_unlocked()
    }

    fn entries_unlocked(&self) -> io::Result<Vec<PreparedEntry>> {
        let mut found = Vec::new();
        for item in read_dir_or_empty(&self.dir)? {
            let file = item.file_name();
            let Some(name) = file.to_str().and_then(|f| f.strip_suffix(META_SUFFIX)) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let bytes = std::fs::read(self.dir.join(&file))?;
            let Ok(meta) = serde_json::from_slice::<PreparedMeta>(&bytes) else {
                continue;
            };
            found.push(PreparedEntry {
                name: name.to_string(),
                image_name: meta.image_name,
                image_identity: meta.image_identity,
                size_bytes: meta.size_bytes,
                base: self.dir.join(format!("{name}{BASE_SUFFIX}")).exists(),
                spare: self.dir.join(format!("{name}{SPARE_SUFFIX}")).exists(),
            });
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// Removes the bases and spares of the Image `image_name` (idempotent): the Image
    /// is gone. Returns the keys removed.
    pub fn remove_image(&self, image_name: &str) -> Result<Vec<String>, DiskError> {
        let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let ctx = Ctx { vm: image_name };
        ctx.check(&self.state_dir, &self.dir)?;
        let mut removed = Vec::new();
        for entry in self.entries_unlocked().map_err(ctx.io("list", &self.dir))? {
            if entry.image_name == image_name {
                self.remove_entry(&entry.name)
                    .map_err(ctx.io("remove base in", &self.dir))?;
                removed.push(entry.name);
            }
        }
        Ok(removed)
    }

    /// Garbage collection: the keys whose Image is none of `images` (an Image deleted
    /// while the daemon was down, whose own removal never ran) and leftover temporary
    /// files (a build cut off by a crash; none is in progress while the build lock is
    /// held). A key or temporary file changed within `grace` is kept: its Image may be
    /// newer than the caller's list. Returns what was (with `dry_run`: would be)
    /// removed, a key's files one item each. Blocking.
    pub fn prune(
        &self,
        images: &BTreeSet<String>,
        grace: Duration,
        dry_run: bool,
    ) -> io::Result<Vec<StoreItem>> {
        let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        crate::host::safe_path::check_below(&self.state_dir, &self.dir)
            .map_err(io::Error::other)?;
        let recent = |path: &Path| changed_within(path, grace);
        let mut found = Vec::new();
        for entry in self.entries_unlocked()? {
            let meta = self.dir.join(format!("{}{META_SUFFIX}", entry.name));
            if images.contains(&entry.image_name) || recent(&meta) {
                continue;
            }
            for file in entry_files(&entry.name) {
                let path = self.dir.join(file);
                if let Ok(m) = std::fs::symlink_metadata(&path) {
                    found.push((path, m.len()));
                }
            }
        }
        for item in read_dir_or_empty(&self.dir)? {
            let path = item.path();
            let temporary = path
                .file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with('.') && f.ends_with(".tmp"));
            if !temporary || recent(&path) || found.iter().any(|(p, _)| *p == path) {
                continue;
            }
            if let Ok(m) = std::fs::symlink_metadata(&path) {
                found.push((path, m.len()));
            }
        }
        let mut removed = Vec::new();
        for (path, bytes) in found {
            if !dry_run {
                remove_if_exists(&path)?;
            }
            removed.push(StoreItem {
                kind: PRUNED_KIND.into(),
                path,
                bytes,
            });
        }
        Ok(removed)
    }

    /// Removes every file of key `name`, its record last (so a crash in between leaves
    /// it findable).
    fn remove_entry(&self, name: &str) -> io::Result<()> {
        for file in entry_files(name) {
            remove_if_exists(&self.dir.join(file))?;
        }
        Ok(())
    }
}

/// Every file key `name` may have, its record last.
fn entry_files(name: &str) -> [String; 6] {
    [
        format!("{name}{SPARE_SUFFIX}"),
        format!("{name}{BASE_SUFFIX}"),
        format!(".{name}.spare.tmp"),
        format!(".{name}.base.tmp"),
        format!(".{name}.json.tmp"),
        format!("{name}{META_SUFFIX}"),
    ]
}

/// Sparse-copies the disk `src` into the new file `dst` and syncs it.
fn copy_disk(ctx: &Ctx<'_>, src: &Path, dst: &Path) -> Result<(), DiskError> {
    let from = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(src)
        .map_err(ctx.io(OPEN_BASE, src))?;
    let to = create_new_nofollow(dst).map_err(ctx.io("create", dst))?;
    sparse_copy(&from, &to).map_err(ctx.io("copy prepared base into", dst))?;
    to.sync_all().map_err(ctx.io("sync", dst))
}

/// Writes `bytes` to `tmp`, syncs it and renames it to `path`.
fn write_file_atomic(tmp: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    remove_if_exists(tmp)?;
    let file = create_new_nofollow(tmp)?;
    file.write_all_at(bytes, 0)?;
    file.sync_all()?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A key's files as a build leaves them: record, base, spare.
    fn write_key(dir: &Path, name: &str, image: &str) {
        let meta = PreparedMeta {
            image_name: image.into(),
            image_identity: format!("{image}|sha256:00"),
            size_bytes: 4,
        };
        std::fs::write(
            dir.join(format!("{name}{META_SUFFIX}")),
            serde_json::to_vec(&meta).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.join(format!("{name}{BASE_SUFFIX}")), b"base").unwrap();
        std::fs::write(dir.join(format!("{name}{SPARE_SUFFIX}")), b"spare").unwrap();
    }

    fn names(items: &[StoreItem]) -> Vec<String> {
        items
            .iter()
            .map(|i| i.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn prune_removes_the_keys_of_unknown_images_and_leftover_temporaries() {
        let state = tempfile::tempdir().unwrap();
        let disks = PreparedDisks::for_state_dir(state.path());
        // No directory yet: nothing to do.
        let known: BTreeSet<String> = ["kept".to_string()].into_iter().collect();
        assert!(disks
            .prune(&known, Duration::ZERO, false)
            .unwrap()
            .is_empty());

        std::fs::create_dir(disks.dir()).unwrap();
        write_key(disks.dir(), "aaaa", "kept");
        write_key(disks.dir(), "bbbb", "gone");
        std::fs::write(disks.dir().join(".cccc.base.tmp"), b"half").unwrap();

        let listed = disks.prune(&known, Duration::ZERO, true).unwrap();
        assert_eq!(
            names(&listed),
            [
                "bbbb.spare.ext4",
                "bbbb.base.ext4",
                "bbbb.json",
                ".cccc.base.tmp"
            ]
        );
        assert!(listed.iter().all(|i| i.kind == PRUNED_KIND));
        assert_eq!(listed[0].bytes, 5);
        assert!(
            disks.dir().join("bbbb.base.ext4").exists(),
            "a dry run removes nothing"
        );

        // Within the grace period everything stays (the Image may be newer than the list).
        assert!(disks
            .prune(&known, Duration::from_secs(600), false)
            .unwrap()
            .is_empty());

        let removed = disks.prune(&known, Duration::ZERO, false).unwrap();
        assert_eq!(names(&removed), names(&listed));
        let mut left: Vec<String> = std::fs::read_dir(disks.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["aaaa.base.ext4", "aaaa.json", "aaaa.spare.ext4"]);
        assert_eq!(
            disks.entries().unwrap().len(),
            1,
            "the kept Image's key is whole"
        );
        assert!(disks
            .prune(&known, Duration::ZERO, false)
            .unwrap()
            .is_empty());

        // A symlinked disk-bases is refused, and what it points to is left alone.
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join(".x.base.tmp"), b"not ours").unwrap();
        let state2 = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), state2.path().join(PREPARED_DIR)).unwrap();
        let linked = PreparedDisks::for_state_dir(state2.path());
        assert!(linked.prune(&known, Duration::ZERO, false).is_err());
        assert!(elsewhere.path().join(".x.base.tmp").exists());
    }
}
