//! Reading tar streams that come back from a guest.
//!
//! A guest is not trusted: what it sends is parsed as data, names are checked, and
//! nothing it sends is ever written outside the directory banger chose for it.
//!
//! - [`digest_archive`]: what the guest holds at the paths it sent, as
//!   [`EntryDigest`]s (streamed: contents are hashed, never kept).
//! - [`extract_tree`]: the guest's whole tree, written below a private host directory
//!   for a host-side diff: only regular files (mode 0755 or 0644, nothing else kept:
//!   no setuid, no owner), directories and symlinks (created as links, never followed:
//!   an entry whose parent is a symlink the archive made is skipped, as git would not
//!   look beyond it); devices, FIFOs and hard links are skipped; the guest's `.git` is
//!   skipped; the total size is capped ([`MAX_TREE_BYTES`]).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use super::manifest::{ContentHasher, EntryDigest};
use super::CopyError;

/// The relative name of a tar entry: `./` and trailing `/` dropped; `None` for the
/// archive's root (`.`) or a name that is absolute, has `..`, or is not UTF-8.
pub fn entry_name(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => continue,
            ".." => return None,
            p => parts.push(p),
        }
    }
    if text.starts_with('/') || parts.is_empty() {
        return None;
    }
    Some(parts.join("/"))
}

/// The digests of every entry of a (possibly concatenated) tar stream, by name.
pub fn digest_archive(input: impl Read) -> Result<BTreeMap<String, EntryDigest>, CopyError> {
    let fail = |e: std::io::Error| CopyError::new("read guest files", e.to_string());
    let mut archive = tar::Archive::new(input);
    archive.set_ignore_zeros(true);
    let mut out = BTreeMap::new();
    for entry in archive.entries().map_err(fail)? {
        let mut entry = entry.map_err(fail)?;
        let Some(name) = entry_name(&entry.path_bytes()) else {
            continue;
        };
        let header = entry.header();
        let digest = match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let executable = header.mode().map_err(fail)? & 0o111 != 0;
                let mut hasher = ContentHasher::default();
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = entry.read(&mut buf).map_err(fail)?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                }
                EntryDigest::file(executable, &hasher.finish())
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().unwrap_or_default();
                EntryDigest::symlink(&target)
            }
            tar::EntryType::Directory => EntryDigest::directory(),
            _ => EntryDigest::other(),
        };
        out.insert(name, digest);
    }
    Ok(out)
}

/// Most content bytes [`extract_tree`] writes: a guest tree larger than this is
/// refused (a patch of it is made in the guest, where git is installed).
pub const MAX_TREE_BYTES: u64 = 4 << 30;

/// What [`extract_tree`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extracted {
    /// Entries written (files, directories, symlinks).
    pub entries: u64,
    /// Content bytes written.
    pub bytes: u64,
    /// Entries skipped (the guest's `.git`, special files, names beyond a symlink).
    pub skipped: u64,
}

/// Whether every directory between `dest` and `name`'s parent is a real directory
/// (made if missing); `false` when one is a symlink or a file.
fn real_parents(dest: &Path, name: &str) -> std::io::Result<bool> {
    let mut dir = dest.to_path_buf();
    let parts: Vec<&str> = name.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&dir)?,
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Removes whatever is at `path` (a file or a link; a directory only when `dirs`).
fn clear(path: &Path, dirs: bool) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            if dirs {
                std::fs::remove_dir_all(path)?;
            }
            Ok(())
        }
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes the entries of a tar stream from a guest below `dest` (an empty private
/// directory); see the module docs.
pub fn extract_tree(input: impl Read, dest: &Path) -> Result<Extracted, CopyError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let fail = |e: std::io::Error| CopyError::new("read guest tree", e.to_string());
    let mut archive = tar::Archive::new(input);
    archive.set_ignore_zeros(true);
    let mut done = Extracted::default();
    for entry in archive.entries().map_err(fail)? {
        let mut entry = entry.map_err(fail)?;
        let name = match entry_name(&entry.path_bytes()) {
            Some(n) if n != ".git" && !n.starts_with(".git/") => n,
            _ => {
                done.skipped += 1;
                continue;
            }
        };
        let kind = entry.header().entry_type();
        let path = dest.join(&name);
        let named = |e: std::io::Error| CopyError::new("read guest tree", format!("{name}: {e}"));
        if !real_parents(dest, &name).map_err(named)? {
            done.skipped += 1;
            continue;
        }
        match kind {
            tar::EntryType::Directory => match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => {}
                _ => {
                    clear(&path, false).map_err(named)?;
                    std::fs::create_dir(&path).map_err(named)?;
                }
            },
            tar::EntryType::Symlink => {
                let target = entry.link_name().map_err(fail)?.unwrap_or_default();
                clear(&path, true).map_err(named)?;
                std::os::unix::fs::symlink(&*target, &path).map_err(named)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.header().size().map_err(fail)?;
                if done.bytes.saturating_add(size) > MAX_TREE_BYTES {
                    return Err(CopyError::new(
                        "read guest tree",
                        format!(
                            "the guest's tree is larger than {} GiB; install git in the guest so the patch is made there",
                            MAX_TREE_BYTES >> 30
                        ),
                    ));
                }
                let executable = entry.header().mode().map_err(fail)? & 0o111 != 0;
                let mode = if executable { 0o755 } else { 0o644 };
                clear(&path, true).map_err(named)?;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&path)
                    .map_err(named)?;
                let written =
                    std::io::copy(&mut (&mut entry).take(size), &mut file).map_err(named)?;
                file.set_permissions(std::fs::Permissions::from_mode(mode))
                    .map_err(named)?;
                done.bytes += written;
            }
            _ => {
                done.skipped += 1;
                continue;
            }
        }
        done.entries += 1;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn names_are_made_relative_or_dropped() {
        assert_eq!(entry_name(b"./a/b").as_deref(), Some("a/b"));
        assert_eq!(entry_name(b"sub/").as_deref(), Some("sub"));
        assert_eq!(entry_name(b"."), None);
        assert_eq!(entry_name(b"/etc/passwd"), None);
        assert_eq!(entry_name(b"a/../../x"), None);
        assert_eq!(entry_name(b"\xff"), None);
    }

    #[test]
    fn concatenated_archives_are_digested() {
        let mut one = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o755);
        one.append_data(&mut h, "./run.sh", &b"#!"[..]).unwrap();
        let mut two = tar::Builder::new(Vec::new());
        let mut l = tar::Header::new_gnu();
        l.set_entry_type(tar::EntryType::Symlink);
        l.set_size(0);
        two.append_link(&mut l, "link", "run.sh").unwrap();
        let mut d = tar::Header::new_gnu();
        d.set_entry_type(tar::EntryType::Directory);
        d.set_size(0);
        two.append_data(&mut d, "sub/", std::io::empty()).unwrap();
        let mut data = one.into_inner().unwrap();
        data.extend(two.into_inner().unwrap());
        let digests = digest_archive(&data[..]).unwrap();
        assert_eq!(
            digests["run.sh"],
            EntryDigest::file(true, &Sha256::digest(b"#!"))
        );
        assert_eq!(digests["link"], EntryDigest::symlink(b"run.sh"));
        assert_eq!(digests["sub"], EntryDigest::directory());
        assert!(digest_archive(&b""[..]).unwrap().is_empty());
        assert!(digest_archive(&[7u8; 600][..]).is_err(), "garbage");
    }

    fn hostile_archive(outside: &Path) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let file = |b: &mut tar::Builder<Vec<u8>>, name: &str, mode: u32, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, data).unwrap();
        };
        let link = |b: &mut tar::Builder<Vec<u8>>, name: &str, target: &str| {
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            h.set_entry_type(tar::EntryType::Symlink);
            b.append_link(&mut h, name, target).unwrap();
        };
        file(&mut b, "./a.txt", 0o644, b"a");
        file(&mut b, "bin/run", 0o4755, b"#!");
        file(&mut b, ".git/config", 0o644, b"[core]");
        link(&mut b, "out", outside.to_str().unwrap());
        // Written through the symlink `out` if it were followed: must be skipped.
        file(&mut b, "out/pwned", 0o644, b"x");
        link(&mut b, "rel", "a.txt");
        let mut fifo = tar::Header::new_gnu();
        fifo.set_size(0);
        fifo.set_entry_type(tar::EntryType::Fifo);
        b.append_data(&mut fifo, "pipe", std::io::empty()).unwrap();
        // The same name twice: the last one wins.
        file(&mut b, "a.txt", 0o644, b"second");
        b.into_inner().unwrap()
    }

    #[test]
    fn a_guest_tree_is_extracted_without_following_or_escaping() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let mut data = hostile_archive(outside.path());
        // An absolute name and a `..` name, appended raw (the tar crate refuses to
        // build them): skipped.
        let mut raw = tar::Builder::new(Vec::new());
        for name in ["/etc/evil", "../evil"] {
            let mut h = tar::Header::new_old();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_size(1);
            h.set_mode(0o644);
            h.set_cksum();
            raw.append(&h, &b"x"[..]).unwrap();
        }
        data.extend(raw.into_inner().unwrap());
        let done = extract_tree(&data[..], dir.path()).unwrap();
        let d = dir.path();
        assert_eq!(std::fs::read(d.join("a.txt")).unwrap(), b"second");
        let mode = std::fs::metadata(d.join("bin/run"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755, "no setuid");
        assert!(!d.join(".git").exists());
        assert_eq!(std::fs::read_link(d.join("out")).unwrap(), outside.path());
        assert!(
            !outside.path().join("pwned").exists(),
            "written through a symlink"
        );
        assert_eq!(
            std::fs::read_link(d.join("rel")).unwrap(),
            Path::new("a.txt")
        );
        assert!(!d.join("pipe").exists());
        assert!(!dir.path().parent().unwrap().join("evil").exists());
        assert_eq!(done.skipped, 5, "{done:?}");
        assert_eq!(done.entries, 5, "{done:?}");
    }
}
