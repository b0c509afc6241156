//! Flattening OCI layers (tar streams) into one directory tree, in layer order.
//!
//! Each layer is read twice:
//! 1. **validate**: every entry's path (and hard-link target) is checked without touching
//!    the filesystem ([`entry_path`]): no absolute paths, no `..`, nothing ext4 cannot
//!    store (a name over 255 bytes, a path or symlink target over 4095 bytes), only
//!    supported entry types. A layer with one bad entry writes nothing at all.
//! 2. **whiteouts** of the layer are applied to what the layers below left
//!    (`.wh.NAME` deletes `NAME`, `.wh..wh..opq` empties its directory), then the
//!    layer's other entries are written: regular files, directories, symlinks, hard
//!    links, FIFOs and device nodes, with their mode, uid/gid and mtime.
//!
//! No write ever goes through a symlink, anywhere in the path: every parent directory is
//! opened from the tree's root descriptor with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)` ([`super::beneath`]) and the entry is made with the `*at` call
//! on that descriptor (files `O_EXCL|O_NOFOLLOW`, after whatever was at the name is
//! removed without following it). An entry whose parent is a symlink (or not a
//! directory) is rejected. The tree lives in a directory only root can enter (the
//! store's staging directory, mode 0700), so the set-uid files and device nodes a layer
//! carries are never reachable by other users of the host while a pull runs.
//! Errors name the layer and the entry.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use std::os::fd::OwnedFd;

use nix::fcntl::AtFlags;
use nix::sys::stat::{Mode, SFlag};
use tar::EntryType;

use super::beneath::{self, Beneath, Found};

/// The longest file name ext4 stores (bytes).
pub const MAX_NAME_BYTES: usize = 255;
/// The longest path or symlink target accepted (bytes; ext4 symlinks hold at most one
/// 4 KiB block, and Linux paths are limited to 4096 bytes with the NUL).
pub const MAX_PATH_BYTES: usize = 4095;
/// Whiteout prefix of a file name (`.wh.NAME` deletes `NAME` of the layers below).
const WHITEOUT_PREFIX: &str = ".wh.";
/// Opaque-directory marker: the directory hides everything the layers below put in it.
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Why a layer could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum FlattenError {
    /// One entry is unsafe, unsupported or cannot be written.
    #[error("{layer}: entry {entry:?}: {reason}")]
    Entry {
        /// Which layer (`layer 2/3 sha256:…`).
        layer: String,
        /// The entry's path as written in the tar.
        entry: String,
        /// What is wrong.
        reason: String,
    },
    /// The layer could not be read (corrupt tar or compression, I/O error).
    #[error("{layer}: {step}: {source}")]
    Read {
        /// Which layer.
        layer: String,
        /// What was being done.
        step: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The unpacked content exceeds the configured limit.
    #[error("{layer}: unpacked content exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Which layer.
        layer: String,
        /// The limit in bytes.
        limit: u64,
    },
}

/// What one entry of a layer means for the merged tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryMeaning {
    /// An ordinary entry written at this path (empty path: the root itself).
    Plain(PathBuf),
    /// `.wh.NAME`: delete this path of the layers below.
    Whiteout(PathBuf),
    /// `.wh..wh..opq`: delete everything the layers below put in this directory.
    Opaque(PathBuf),
    /// Other `.wh..wh.*` bookkeeping of AUFS: ignored.
    Ignored,
}

/// Validates a tar entry name and turns it into a relative path of normal components.
/// `./` prefixes and a trailing `/` are accepted; the empty result names the root.
pub fn entry_path(raw: &[u8]) -> Result<PathBuf, String> {
    if raw.contains(&0) {
        return Err("the name contains a NUL byte".into());
    }
    if raw.len() > MAX_PATH_BYTES {
        return Err(format!(
            "the path is {} bytes long (ext4 paths are at most {MAX_PATH_BYTES})",
            raw.len()
        ));
    }
    if raw.first() == Some(&b'/') {
        return Err("absolute path (entries must stay inside the image root)".into());
    }
    let mut out = PathBuf::new();
    for component in Path::new(OsStr::from_bytes(raw)).components() {
        match component {
            Component::CurDir => {}
            Component::Normal(part) => {
                if part.len() > MAX_NAME_BYTES {
                    return Err(format!(
                        "name component is {} bytes long (ext4 names are at most {MAX_NAME_BYTES})",
                        part.len()
                    ));
                }
                out.push(part);
            }
            Component::ParentDir => {
                return Err("`..` component (entries must stay inside the image root)".into())
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err("absolute path (entries must stay inside the image root)".into())
            }
        }
    }
    Ok(out)
}

/// Classifies a validated path: whiteout, opaque marker or plain entry.
pub fn classify(path: &Path) -> Result<EntryMeaning, String> {
    let Some(name) = path.file_name() else {
        return Ok(EntryMeaning::Plain(path.to_path_buf()));
    };
    let name = name.as_bytes();
    if !name.starts_with(WHITEOUT_PREFIX.as_bytes()) {
        return Ok(EntryMeaning::Plain(path.to_path_buf()));
    }
    let parent = path.parent().unwrap_or(Path::new("")).to_path_buf();
    if name == OPAQUE_MARKER.as_bytes() {
        return Ok(EntryMeaning::Opaque(parent));
    }
    let target = &name[WHITEOUT_PREFIX.len()..];
    if target.starts_with(WHITEOUT_PREFIX.as_bytes()) {
        return Ok(EntryMeaning::Ignored);
    }
    if target.is_empty() || target == b"." || target == b".." {
        return Err("whiteout without a valid target name".into());
    }
    Ok(EntryMeaning::Whiteout(
        parent.join(OsString::from_vec(target.to_vec())),
    ))
}

/// Counts of what one layer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// Entries written.
    pub written: u64,
    /// Paths deleted by whiteouts (opaque markers count once).
    pub whited_out: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
}

/// One tar entry after validation (pass 1), enough to apply it in pass 2.
struct Checked {
    meaning: EntryMeaning,
    link: Option<PathBuf>,
}

/// Applies one layer to the tree at `root`. `open` returns a fresh reader of the
/// (decompressed) tar stream; it is called twice. `budget` is the number of content
/// bytes still allowed across all layers and is decreased by what is written.
pub fn apply_layer(
    root: &Path,
    layer: &str,
    open: &dyn Fn() -> io::Result<Box<dyn Read>>,
    budget: &mut u64,
) -> Result<LayerStats, FlattenError> {
    let read_err = |step: &'static str| {
        move |source: io::Error| FlattenError::Read {
            layer: layer.to_string(),
            step,
            source,
        }
    };
    // Pass 1: validate every entry before anything of this layer is written.
    let mut checked = Vec::new();
    let mut archive = tar::Archive::new(open().map_err(read_err("open"))?);
    for entry in archive.entries().map_err(read_err("read tar"))? {
        let entry = entry.map_err(read_err("read tar entry"))?;
        checked.push(check_entry(layer, &entry)?);
    }
    let tree = Beneath::open(root).map_err(read_err("open the tree"))?;
    // Whiteouts apply to the layers below only: do them before this layer's content.
    let mut stats = LayerStats::default();
    for c in &checked {
        let (target, opaque) = match &c.meaning {
            EntryMeaning::Whiteout(p) => (p, false),
            EntryMeaning::Opaque(p) => (p, true),
            _ => continue,
        };
        let fail = |reason: String| FlattenError::Entry {
            layer: layer.to_string(),
            entry: target.display().to_string(),
            reason,
        };
        if opaque {
            // A missing directory has nothing to hide.
            let dir = match tree.dir(target, false) {
                Ok(dir) => dir,
                Err(beneath::PathError::Missing(_)) => continue,
                Err(e) => return Err(fail(format!("opaque directory: {e}"))),
            };
            beneath::empty(&dir).map_err(|e| fail(format!("opaque directory: remove: {e}")))?;
            stats.whited_out += 1;
        } else {
            let parent = match tree.parent(target, false) {
                Ok(Some(p)) => p,
                Ok(None) => return Err(fail("whiteout of the image root".into())),
                Err(beneath::PathError::Missing(_)) => continue,
                Err(e) => return Err(fail(format!("its parent: {e}"))),
            };
            let (dir, name) = parent;
            if beneath::found(&dir, name).map_err(|e| fail(format!("whiteout: {e}")))?
                != Found::Nothing
            {
                beneath::remove(&dir, name).map_err(|e| fail(format!("whiteout: remove: {e}")))?;
                stats.whited_out += 1;
            }
        }
    }
    // Pass 2: write this layer's entries.
    let mut archive = tar::Archive::new(open().map_err(read_err("reopen"))?);
    let entries = archive.entries().map_err(read_err("read tar"))?;
    for (entry, c) in entries.zip(checked.iter()) {
        let mut entry = entry.map_err(read_err("read tar entry"))?;
        let EntryMeaning::Plain(rel) = &c.meaning else {
            continue;
        };
        let fail = |reason: String| FlattenError::Entry {
            layer: layer.to_string(),
            entry: rel.display().to_string(),
            reason,
        };
        let size = entry.header().size().unwrap_or(0);
        if entry.header().entry_type().is_file() {
            if size > *budget {
                return Err(FlattenError::TooLarge {
                    layer: layer.to_string(),
                    limit: *budget,
                });
            }
            *budget -= size;
            stats.bytes += size;
        }
        write_entry(&tree, rel, c.link.as_deref(), &mut entry).map_err(fail)?;
        stats.written += 1;
    }
    Ok(stats)
}

/// Pass-1 check of one entry: path, type, link target. Touches no file.
fn check_entry<R: Read>(layer: &str, entry: &tar::Entry<'_, R>) -> Result<Checked, FlattenError> {
    let raw = entry.path_bytes();
    let fail = |reason: String| FlattenError::Entry {
        layer: layer.to_string(),
        entry: String::from_utf8_lossy(&raw).into_owned(),
        reason,
    };
    let kind = entry.header().entry_type();
    if kind == EntryType::XGlobalHeader {
        return Ok(Checked {
            meaning: EntryMeaning::Ignored,
            link: None,
        });
    }
    let rel = entry_path(&raw).map_err(&fail)?;
    let meaning = classify(&rel).map_err(&fail)?;
    let mut link = None;
    if let EntryMeaning::Plain(rel) = &meaning {
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::Directory => {}
            EntryType::Fifo | EntryType::Char | EntryType::Block => {}
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| fail("symlink without a target".into()))?;
                if target.is_empty() || target.len() > MAX_PATH_BYTES || target.contains(&0) {
                    return Err(fail(format!(
                        "symlink target must be 1..={MAX_PATH_BYTES} bytes without NUL"
                    )));
                }
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| fail("hard link without a target".into()))?;
                let target =
                    entry_path(&target).map_err(|r| fail(format!("hard-link target: {r}")))?;
                if target.as_os_str().is_empty() || &target == rel {
                    return Err(fail("hard link to the root or to itself".into()));
                }
                link = Some(target);
            }
            other => {
                return Err(fail(format!(
                    "unsupported tar entry type {:?}",
                    other.as_byte() as char
                )))
            }
        }
        if rel.as_os_str().is_empty() && kind != EntryType::Directory {
            return Err(fail("only a directory may name the image root".into()));
        }
    }
    Ok(Checked { meaning, link })
}

/// Ownership and mode of an entry (PAX `uid`/`gid` records win over the header).
fn owner<R: Read>(entry: &mut tar::Entry<'_, R>) -> (u32, u32, u32, i64) {
    let h = entry.header();
    let mut uid = h.uid().unwrap_or(0);
    let mut gid = h.gid().unwrap_or(0);
    let mode = h.mode().unwrap_or(0o644) & 0o7777;
    let mtime = h.mtime().unwrap_or(0);
    if let Ok(Some(pax)) = entry.pax_extensions() {
        for ext in pax.flatten() {
            let value = ext.value().ok().and_then(|v| v.parse::<u64>().ok());
            match (ext.key().ok(), value) {
                (Some("uid"), Some(v)) => uid = v,
                (Some("gid"), Some(v)) => gid = v,
                _ => {}
            }
        }
    }
    let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    (
        clamp(uid),
        clamp(gid),
        mode,
        i64::try_from(mtime).unwrap_or(0),
    )
}

/// Writes one validated entry at `rel` of the tree, through descriptors only (see the
/// module docs).
fn write_entry<R: Read>(
    tree: &Beneath,
    rel: &Path,
    link: Option<&Path>,
    entry: &mut tar::Entry<'_, R>,
) -> Result<(), String> {
    let (uid, gid, mode, mtime) = owner(entry);
    let kind = entry.header().entry_type();
    let Some((dir, name)) = tree.parent(rel, true).map_err(|e| e.to_string())? else {
        // The root itself: only its metadata.
        let root = tree.dir(Path::new(""), false).map_err(|e| e.to_string())?;
        let path = beneath::fd_path(&root);
        std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(|e| format!("chown: {e}"))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o1777))
            .map_err(|e| format!("chmod: {e}"))?;
        return Ok(());
    };
    let existing = beneath::found(&dir, name).map_err(|e| format!("inspect: {e}"))?;
    let keep_dir = kind == EntryType::Directory && existing == Found::Directory;
    if existing != Found::Nothing && !keep_dir {
        beneath::remove(&dir, name).map_err(|e| format!("replace existing entry: {e}"))?;
    }
    match kind {
        EntryType::Directory => {
            if !keep_dir {
                nix::sys::stat::mkdirat(&dir, name, Mode::from_bits_truncate(0o700))
                    .map_err(|e| format!("create directory: {e}"))?;
            }
        }
        EntryType::Regular | EntryType::Continuous => {
            let how = nix::fcntl::OpenHow::new()
                .flags(
                    nix::fcntl::OFlag::O_WRONLY
                        | nix::fcntl::OFlag::O_CREAT
                        | nix::fcntl::OFlag::O_EXCL
                        | nix::fcntl::OFlag::O_NOFOLLOW
                        | nix::fcntl::OFlag::O_CLOEXEC,
                )
                .mode(Mode::from_bits_truncate(0o600))
                .resolve(
                    nix::fcntl::ResolveFlag::RESOLVE_BENEATH
                        | nix::fcntl::ResolveFlag::RESOLVE_NO_SYMLINKS,
                );
            let fd: OwnedFd =
                nix::fcntl::openat2(&dir, name, how).map_err(|e| format!("create file: {e}"))?;
            let mut file = fs::File::from(fd);
            io::copy(entry, &mut file).map_err(|e| format!("write file: {e}"))?;
            // chown before chmod: chown clears set-uid/set-gid bits.
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
                .map_err(|e| format!("chown: {e}"))?;
            file.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(|e| format!("chmod: {e}"))?;
            set_mtime(&dir, name, mtime);
            return Ok(());
        }
        EntryType::Symlink => {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| "symlink without a target".to_string())?;
            nix::unistd::symlinkat(OsStr::from_bytes(&target), &dir, name)
                .map_err(|e| format!("create symlink: {e}"))?;
            nix::unistd::fchownat(
                &dir,
                name,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| format!("chown symlink: {e}"))?;
            set_mtime(&dir, name, mtime);
            return Ok(());
        }
        EntryType::Link => {
            let target = link.ok_or_else(|| "hard link without a target".to_string())?;
            let Some((source_dir, source_name)) = tree
                .parent(target, false)
                .map_err(|e| format!("hard-link target {}: {e}", target.display()))?
            else {
                return Err("hard link to the image root".into());
            };
            match beneath::found(&source_dir, source_name) {
                Ok(Found::Directory) => return Err("hard link to a directory".into()),
                Ok(Found::Other) => {}
                Ok(Found::Nothing) => {
                    return Err(format!("hard-link target {}: not found", target.display()))
                }
                Err(e) => return Err(format!("hard-link target {}: {e}", target.display())),
            }
            // linkat without AT_SYMLINK_FOLLOW: a symlink target is linked itself.
            nix::unistd::linkat(&source_dir, source_name, &dir, name, AtFlags::empty())
                .map_err(|e| format!("create hard link: {e}"))?;
            return Ok(());
        }
        EntryType::Fifo | EntryType::Char | EntryType::Block => {
            let h = entry.header();
            let major = h.device_major().ok().flatten().unwrap_or(0);
            let minor = h.device_minor().ok().flatten().unwrap_or(0);
            let sflag = match kind {
                EntryType::Fifo => SFlag::S_IFIFO,
                EntryType::Char => SFlag::S_IFCHR,
                _ => SFlag::S_IFBLK,
            };
            nix::sys::stat::mknodat(
                &dir,
                name,
                sflag,
                Mode::from_bits_truncate(0o600),
                nix::sys::stat::makedev(u64::from(major), u64::from(minor)),
            )
            .map_err(|e| format!("create special file: {e}"))?;
        }
        other => return Err(format!("unsupported tar entry type {other:?}")),
    }
    // Directories and special files: the name was just made (or checked to be a
    // directory) in `dir`, and is not a symlink.
    nix::unistd::fchownat(
        &dir,
        name,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| format!("chown: {e}"))?;
    nix::sys::stat::fchmodat(
        &dir,
        name,
        Mode::from_bits_truncate(mode),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(|e| format!("chmod: {e}"))?;
    set_mtime(&dir, name, mtime);
    Ok(())
}

/// Sets an entry's access and modification times without following a symlink (best
/// effort: a wrong timestamp never fails a pull).
fn set_mtime(dir: &OwnedFd, name: &OsStr, mtime: i64) {
    let t = nix::sys::time::TimeSpec::new(mtime, 0);
    let _ = nix::sys::stat::utimensat(
        dir,
        name,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// One entry of an in-memory test layer.
    enum E<'a> {
        Dir(&'a str, u32),
        File(&'a str, &'a [u8], u32, u32),
        Sym(&'a str, &'a str),
        Hard(&'a str, &'a str),
    }

    /// Builds a tar in memory; names are written raw (so `..` and `/x` can be tested).
    fn layer(entries: &[E<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            let (name, data): (&str, &[u8]) = match e {
                E::Dir(n, mode) => {
                    h.set_entry_type(EntryType::Directory);
                    h.set_mode(*mode);
                    (n, b"")
                }
                E::File(n, d, mode, uid) => {
                    h.set_entry_type(EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_uid(u64::from(*uid));
                    h.set_gid(u64::from(*uid));
                    (n, d)
                }
                E::Sym(n, t) => {
                    h.set_entry_type(EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_link_name(t).unwrap();
                    (n, b"")
                }
                E::Hard(n, t) => {
                    h.set_entry_type(EntryType::Link);
                    h.set_mode(0o644);
                    h.as_old_mut().linkname[..t.len()].copy_from_slice(t.as_bytes());
                    (n, b"")
                }
            };
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn apply(root: &Path, name: &str, bytes: Vec<u8>) -> Result<LayerStats, FlattenError> {
        let mut budget = u64::MAX;
        apply_layer(
            root,
            name,
            &move || Ok(Box::new(io::Cursor::new(bytes.clone())) as Box<dyn Read>),
            &mut budget,
        )
    }

    #[test]
    fn entry_paths_are_normalised_or_rejected() {
        assert_eq!(
            entry_path(b"./etc/passwd").unwrap(),
            Path::new("etc/passwd")
        );
        assert_eq!(entry_path(b"usr/bin/").unwrap(), Path::new("usr/bin"));
        assert_eq!(entry_path(b"./").unwrap(), Path::new(""));
        assert!(entry_path(b"/etc/x").unwrap_err().contains("absolute"));
        assert!(entry_path(b"../../etc/x").unwrap_err().contains(".."));
        assert!(entry_path(b"a/../../x").unwrap_err().contains(".."));
        let long = vec![b'a'; 256];
        assert!(entry_path(&long).unwrap_err().contains("255"));
        assert!(entry_path(&vec![b'a'; 255]).is_ok());
        let deep: Vec<u8> = b"a/".repeat(2100);
        assert!(entry_path(&deep).unwrap_err().contains("4095"));
    }

    #[test]
    fn whiteouts_are_classified() {
        assert_eq!(
            classify(Path::new("etc/.wh.motd")).unwrap(),
            EntryMeaning::Whiteout(PathBuf::from("etc/motd"))
        );
        assert_eq!(
            classify(Path::new("var/cache/.wh..wh..opq")).unwrap(),
            EntryMeaning::Opaque(PathBuf::from("var/cache"))
        );
        assert_eq!(
            classify(Path::new(".wh.top")).unwrap(),
            EntryMeaning::Whiteout(PathBuf::from("top"))
        );
        assert_eq!(
            classify(Path::new("x/.wh..wh.plnk")).unwrap(),
            EntryMeaning::Ignored
        );
        assert!(classify(Path::new("x/.wh.")).is_err());
        assert_eq!(
            classify(Path::new("etc/wh.x")).unwrap(),
            EntryMeaning::Plain(PathBuf::from("etc/wh.x"))
        );
    }

    #[test]
    #[ignore = "needs root (chown to the layers' owners)"]
    fn layers_merge_with_whiteouts_and_opaque_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        apply(
            root,
            "layer 1/2",
            layer(&[
                E::Dir("etc/", 0o755),
                E::File("etc/keep", b"keep", 0o644, 0),
                E::File("etc/gone", b"gone", 0o644, 0),
                E::Dir("cache/", 0o755),
                E::File("cache/old", b"old", 0o644, 0),
                E::Dir("cache/sub/", 0o755),
                E::File("cache/sub/deep", b"d", 0o644, 0),
                E::File("home/user/data", b"mine", 0o640, 1000),
                E::Sym("etc/link", "/etc/keep"),
                E::Hard("etc/hard", "etc/keep"),
            ]),
        )
        .unwrap();
        let stats = apply(
            root,
            "layer 2/2",
            layer(&[
                // Same-layer content written after the opaque marker must survive it.
                E::File("cache/new", b"new", 0o600, 0),
                E::File("cache/.wh..wh..opq", b"", 0o644, 0),
                E::File("etc/.wh.gone", b"", 0o644, 0),
                E::File("etc/.wh.never-existed", b"", 0o644, 0),
                E::File("etc/keep", b"replaced", 0o4755, 0),
            ]),
        )
        .unwrap();
        assert_eq!(stats.whited_out, 2);
        assert!(!root.join("etc/gone").exists());
        assert!(!root.join("cache/old").exists());
        assert!(!root.join("cache/sub").exists());
        assert_eq!(fs::read(root.join("cache/new")).unwrap(), b"new");
        assert_eq!(fs::read(root.join("etc/keep")).unwrap(), b"replaced");
        let keep = fs::metadata(root.join("etc/keep")).unwrap();
        assert_eq!(keep.mode() & 0o7777, 0o4755, "set-uid survives the chown");
        // The hard link of layer 1 still holds the old content (a replaced file is new).
        assert_eq!(fs::read(root.join("etc/hard")).unwrap(), b"keep");
        assert_eq!(
            fs::read_link(root.join("etc/link")).unwrap(),
            Path::new("/etc/keep")
        );
        let data = fs::metadata(root.join("home/user/data")).unwrap();
        assert_eq!(
            (data.uid(), data.gid(), data.mode() & 0o777),
            (1000, 1000, 0o640)
        );
        assert!(!root.join("etc/.wh.gone").exists());
    }

    #[test]
    #[ignore = "needs root (chown to the layers' owners)"]
    fn malicious_layers_are_rejected_with_nothing_written_outside() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        let escape = format!("{}", outside.path().display());

        // `..`: rejected in validation, and nothing of the layer is written.
        let err = apply(
            &root,
            "layer 1/1 sha256:bad",
            layer(&[
                E::File("ok-before", b"x", 0o644, 0),
                E::File("../../etc/x", b"x", 0o644, 0),
            ]),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("layer 1/1 sha256:bad") && msg.contains("../../etc/x"),
            "{msg}"
        );
        assert!(
            !root.join("ok-before").exists(),
            "validation precedes writes"
        );

        // Absolute path.
        let abs = format!("{escape}/abs");
        let err = apply(&root, "layer abs", layer(&[E::File(&abs, b"x", 0o644, 0)])).unwrap_err();
        assert!(err.to_string().contains("absolute"), "{err}");

        // A symlink escaping the root, then a file through it.
        let err = apply(
            &root,
            "layer sym",
            layer(&[
                E::Sym("evil", &escape),
                E::File("evil/pwned", b"x", 0o644, 0),
            ]),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("evil/pwned") && msg.contains("symlink"),
            "{msg}"
        );

        // A hard link to something outside the root.
        let err = apply(
            &root,
            "layer hard",
            layer(&[E::Hard("h", "../../etc/passwd")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("hard-link target"), "{err}");

        // A whiteout through the symlink must not delete outside the root.
        fs::write(outside.path().join("precious"), b"p").unwrap();
        let err = apply(
            &root,
            "layer wh",
            layer(&[E::File("evil/.wh.precious", b"", 0o644, 0)]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");

        let left: Vec<_> = fs::read_dir(outside.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![OsString::from("precious")]);
        assert!(!Path::new("/etc/x").exists());
    }

    #[test]
    fn unpacked_size_budget_is_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = layer(&[E::File("big", &[7u8; 4096], 0o644, 0)]);
        let mut budget = 1000;
        let err = apply_layer(
            dir.path(),
            "layer 1/1",
            &move || Ok(Box::new(io::Cursor::new(bytes.clone())) as Box<dyn Read>),
            &mut budget,
        )
        .unwrap_err();
        assert!(
            matches!(err, FlattenError::TooLarge { limit: 1000, .. }),
            "{err}"
        );
    }
}
