//! Reading tar streams that come back from a guest.
//!
//! A guest is not trusted: what it sends is parsed as data, names are checked, and
//! nothing it sends is ever written outside the directory banger chose for it.
//!
//! - [`digest_archive`]: what the guest holds at the paths it sent, as
//!   [`EntryDigest`]s (streamed: contents are hashed, never kept).

use std::collections::BTreeMap;
use std::io::Read;

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
}
