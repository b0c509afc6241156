//! The copy stream: what banger writes into the guest's fixed extract command
//! ([`super::remote::EXTRACT`]), built while it is sent (never held in memory whole).
//!
//! ```text
//! GUEST_PATH\n
//! N\n                      how many names follow, to be removed first
//! NAME\n … (N lines)       paths an earlier copy wrote that the checkout no longer has
//! TAR ARCHIVE              the checkout's files, then the guest repository's `.git`
//! ```
//!
//! The archive holds regular files (mode 0755 when any execute bit is set on the host,
//! else 0644: what git keeps; modification times kept), symlinks (as links) and the
//! guest repository's directories, all owned by root. Files are read through [`CheckoutReader`] (never
//! through a symlink); a file that vanished since the listing is skipped; a file that
//! changes size while it is read is sent at the size it had when opened (cut, or padded
//! with zeros), and the manifest records exactly what was sent.

use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use super::checkout::{CheckoutEntry, CheckoutReader};
use super::guest_repo::GuestRepo;
use super::manifest::{ContentHasher, CopyManifest, EntryDigest};
use super::CopyError;

/// What a copy stream held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamSummary {
    /// Files and symlinks of the checkout sent (the guest repository not counted).
    pub files: u64,
    /// Bytes of file content of the checkout sent.
    pub bytes: u64,
    /// What was written where (the checkout's files and the guest repository's `HEAD`
    /// and branch ref).
    pub manifest: CopyManifest,
}

/// What to send.
#[derive(Debug, Clone, Copy)]
pub struct CopyPlan<'a> {
    /// The checkout.
    pub source: &'a Path,
    /// Its files ([`super::checkout::list_files`]).
    pub files: &'a [String],
    /// The guest repository to send as `.git`.
    pub repo: Option<&'a GuestRepo>,
    /// The Workspace's guest path (absolute, one line).
    pub guest_path: &'a str,
    /// Paths to remove in the guest before extracting.
    pub removals: &'a [String],
}

/// A reader that yields exactly `size` bytes: the file's, then zeros if it shrank;
/// and hashes what it yields.
struct ExactSize<R> {
    inner: R,
    left: u64,
    hasher: ContentHasher,
}

impl<R: Read> Read for ExactSize<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.inner.read(&mut buf[..want])?;
        let n = if n == 0 {
            // The file shrank: pad with zeros up to the size in the header.
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.hasher.update(&buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    // Names longer than the header's field are written with GNU long-name entries.
    let _ = h.set_username("root");
    let _ = h.set_groupname("root");
    h
}

/// Checks the guest path: absolute, one line.
pub fn check_guest_path(guest_path: &str) -> Result<(), CopyError> {
    if !guest_path.starts_with('/') || guest_path.chars().any(char::is_control) {
        return Err(CopyError::new(
            "build archive",
            format!("guest path {guest_path:?} must be absolute, one line"),
        ));
    }
    Ok(())
}

/// Writes the whole stream (see the module docs) into `out` and returns what it held.
pub fn write_copy_stream<W: Write>(
    out: W,
    plan: &CopyPlan<'_>,
) -> Result<StreamSummary, CopyError> {
    check_guest_path(plan.guest_path)?;
    let send = |e: io::Error| CopyError::new("send archive", e.to_string());
    let mut out = BufWriter::with_capacity(1 << 16, out);
    writeln!(out, "{}", plan.guest_path).map_err(send)?;
    writeln!(out, "{}", plan.removals.len()).map_err(send)?;
    for name in plan.removals {
        writeln!(out, "{name}").map_err(send)?;
    }
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let mut summary = StreamSummary::default();
    let mut reader = CheckoutReader::open(plan.source)?;
    for name in plan.files {
        let Some(entry) = reader.entry(name)? else {
            continue;
        };
        let digest = append_entry(&mut builder, name, entry, &mut summary.bytes)
            .map_err(|e| CopyError::new("send archive", format!("{name}: {e}")))?;
        summary.manifest.insert(name.clone(), digest);
        summary.files += 1;
    }
    if let Some(repo) = plan.repo {
        append_repo(&mut builder, repo, &mut summary.manifest)?;
    }
    let mut out = builder.into_inner().map_err(send)?;
    out.flush().map_err(send)?;
    Ok(summary)
}

/// Appends one checkout entry; returns its digest.
fn append_entry<W: Write>(
    builder: &mut tar::Builder<W>,
    name: &str,
    entry: CheckoutEntry,
    bytes: &mut u64,
) -> io::Result<EntryDigest> {
    match entry {
        CheckoutEntry::Symlink(target, mtime) => {
            use std::os::unix::ffi::OsStrExt;
            let mut h = header(tar::EntryType::Symlink, 0o777, 0, mtime);
            builder.append_link(&mut h, name, &target)?;
            Ok(EntryDigest::symlink(target.as_os_str().as_bytes()))
        }
        CheckoutEntry::File {
            file,
            size,
            executable,
            mtime,
        } => {
            let mode = if executable { 0o755 } else { 0o644 };
            let mut h = header(tar::EntryType::Regular, mode, size, mtime);
            let mut data = ExactSize {
                inner: file.take(size),
                left: size,
                hasher: ContentHasher::default(),
            };
            builder.append_data(&mut h, name, &mut data)?;
            *bytes += size;
            Ok(EntryDigest::file(executable, &data.hasher.finish()))
        }
    }
}

/// Appends the guest repository as `.git/…`: its directories and regular files (it is
/// banger's own temporary repository: no symlinks, nothing else).
fn append_repo<W: Write>(
    builder: &mut tar::Builder<W>,
    repo: &GuestRepo,
    manifest: &mut CopyManifest,
) -> Result<(), CopyError> {
    let fail = |path: &Path, e: io::Error| {
        CopyError::new("send archive", format!("{}: {e}", path.display()))
    };
    let mut pending = vec![(repo.git_dir.clone(), ".git".to_string())];
    let head_paths = repo.head_paths();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    while let Some((dir, name)) = pending.pop() {
        let mut h = header(tar::EntryType::Directory, 0o755, 0, now);
        builder
            .append_data(&mut h, format!("{name}/"), io::empty())
            .map_err(|e| fail(&dir, e))?;
        let mut children: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| fail(&dir, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| fail(&dir, e))?;
        children.sort_by_key(std::fs::DirEntry::file_name);
        // Depth first, in name order: directories are pushed in reverse.
        let mut subdirs = Vec::new();
        for child in children {
            let path = child.path();
            let child_name = format!("{name}/{}", child.file_name().to_string_lossy());
            let meta = std::fs::symlink_metadata(&path).map_err(|e| fail(&path, e))?;
            if meta.is_dir() {
                subdirs.push((path, child_name));
            } else if meta.is_file() {
                let file = std::fs::File::open(&path).map_err(|e| fail(&path, e))?;
                let size = meta.len();
                let mut h = header(tar::EntryType::Regular, 0o644, size, now);
                let mut data = ExactSize {
                    inner: file.take(size),
                    left: size,
                    hasher: ContentHasher::default(),
                };
                builder
                    .append_data(&mut h, &child_name, &mut data)
                    .map_err(|e| fail(&path, e))?;
                if head_paths.contains(&child_name) {
                    manifest.insert(child_name, EntryDigest::file(false, &data.hasher.finish()));
                }
            }
        }
        pending.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::git;
    use super::super::guest_repo::build_guest_repo;
    use super::*;
    use sha2::Digest;

    fn repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        git::run(p, &["init", "-q"]).unwrap();
        std::fs::write(p.join("tracked.txt"), "tracked\n").unwrap();
        std::fs::create_dir(p.join("sub")).unwrap();
        std::fs::write(p.join("sub/deep.txt"), "deep").unwrap();
        std::fs::write(p.join("a b.bin"), [0u8, 159, 146, 150, 255]).unwrap();
        std::os::unix::fs::symlink("tracked.txt", p.join("link")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(p.join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(p.join("run.sh"), std::fs::Permissions::from_mode(0o700)).unwrap();
        git::run(p, &["add", "."]).unwrap();
        git::run(p, &["commit", "-qm", "x"]).unwrap();
        dir
    }

    fn split_header(data: &[u8]) -> (Vec<String>, &[u8]) {
        let mut lines = Vec::new();
        let mut rest = data;
        let first = |r: &[u8]| r.iter().position(|b| *b == b'\n').unwrap();
        let take = |r: &mut &[u8], lines: &mut Vec<String>| {
            let nl = first(r);
            lines.push(String::from_utf8(r[..nl].to_vec()).unwrap());
            *r = &r[nl + 1..];
        };
        take(&mut rest, &mut lines);
        take(&mut rest, &mut lines);
        let n: usize = lines[1].parse().unwrap();
        for _ in 0..n {
            take(&mut rest, &mut lines);
        }
        (lines, rest)
    }

    #[test]
    fn the_stream_is_path_removals_then_files_and_the_guest_repository() {
        let r = repo();
        let p = r.path();
        let scratch = tempfile::tempdir().unwrap();
        let guest_repo = build_guest_repo(p, scratch.path()).unwrap();
        let mut files =
            super::super::checkout::list_files(p, banger_specs::IncludeMode::Tracked).unwrap();
        files.push("gone.txt".into());
        let mut data = Vec::new();
        let summary = write_copy_stream(
            &mut data,
            &CopyPlan {
                source: p,
                files: &files,
                repo: Some(&guest_repo),
                guest_path: "/root/repo",
                removals: &["old.txt".to_string(), "a dir/x".to_string()],
            },
        )
        .unwrap();
        assert_eq!(summary.files, 5, "gone.txt skipped");
        assert_eq!(summary.bytes, 8 + 4 + 5 + 10);
        let (lines, archive) = split_header(&data);
        assert_eq!(lines, ["/root/repo", "2", "old.txt", "a dir/x"]);
        let out = tempfile::tempdir().unwrap();
        tar::Archive::new(archive).unpack(out.path()).unwrap();
        let o = out.path();
        assert_eq!(
            std::fs::read_to_string(o.join("sub/deep.txt")).unwrap(),
            "deep"
        );
        assert_eq!(
            std::fs::read(o.join("a b.bin")).unwrap(),
            [0u8, 159, 146, 150, 255]
        );
        assert_eq!(
            std::fs::read_link(o.join("link")).unwrap(),
            std::path::PathBuf::from("tracked.txt")
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = |n: &str| std::fs::metadata(o.join(n)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("run.sh"), 0o755);
        assert_eq!(mode("tracked.txt"), 0o644);
        // The guest repository arrives with the files: git sees a clean tree.
        let status = git::run(o, &["status", "--porcelain"]).unwrap();
        assert_eq!(String::from_utf8_lossy(&status), "");
        assert_eq!(git::head_commit(o), git::head_commit(p));
        // The manifest names every file and the repository's HEAD and branch.
        let keys: Vec<&str> = summary
            .manifest
            .entries
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                ".git/HEAD",
                ".git/refs/heads/main",
                "a b.bin",
                "link",
                "run.sh",
                "sub/deep.txt",
                "tracked.txt"
            ]
        );
        assert_eq!(
            summary.manifest.entries["sub/deep.txt"],
            EntryDigest::file(false, &sha2::Sha256::digest(b"deep"))
        );
        assert_eq!(summary.manifest.entries["run.sh"].kind(), "executable file");
    }

    #[test]
    fn a_file_that_shrinks_while_sent_is_padded_and_recorded_as_sent() {
        let mut data = ExactSize {
            inner: (&b"abc"[..]).take(5),
            left: 5,
            hasher: ContentHasher::default(),
        };
        let mut out = Vec::new();
        data.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc\0\0");
        assert_eq!(
            data.hasher.finish(),
            sha2::Sha256::digest(b"abc\0\0").to_vec()
        );
    }

    #[test]
    fn bad_guest_paths_are_refused() {
        let r = repo();
        for bad in ["relative", "/root/a\nb"] {
            let plan = CopyPlan {
                source: r.path(),
                files: &[],
                repo: None,
                guest_path: bad,
                removals: &[],
            };
            assert!(write_copy_stream(Vec::new(), &plan).is_err(), "{bad:?}");
        }
    }
}
