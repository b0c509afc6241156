//! The tar streams of `banger cp`, and where their contents land.
//!
//! `cp` follows `cp -r` rules on both sides: when DST is an existing directory the copy
//! lands inside it under SRC's name, otherwise it becomes DST; a directory copied onto
//! an existing directory is merged into it (files replaced). Contents, permission bits,
//! modification times and symbolic links (as links) are kept; owners are not (files
//! belong to whoever unpacks them: root in the guest, you on this machine), nor are
//! set-user-ID/set-group-ID bits of files coming out of a guest.
//!
//! - To a guest: [`write_archive`] streams SRC (a file as one entry named
//!   [`FILE_ENTRY`], a directory as `./` and its tree) into ssh, and the fixed guest
//!   script [`upload_script`] (busybox or GNU `sh` and `tar`) places it.
//! - From a guest: [`download_script`] archives SRC with its name as the root entry, and
//!   [`unpack_into_place`] unpacks that here (the `tar` crate refuses entries that
//!   would land outside its directory) into a fresh directory next to the target, then
//!   moves the result into place.
//!
//! Every path in a guest script is quoted with [`sh_quote`].

use std::fs;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use crate::quoting::sh_quote;

/// The archive entry name of a single file sent to a guest.
pub const FILE_ENTRY: &str = "file";

/// Why a copy failed on this machine.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// A file operation failed.
    #[error("{step} {}: {source}", path.display())]
    Io {
        /// What was being done.
        step: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The copy cannot be done as asked.
    #[error("{}: {what}", path.display())]
    Refused {
        /// The path concerned.
        path: PathBuf,
        /// Why.
        what: String,
    },
}

fn io_err(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TransferError {
    let path = path.to_path_buf();
    move |source| TransferError::Io { step, path, source }
}

/// What a local source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A regular file.
    File,
    /// A directory, copied with its tree.
    Directory,
}

/// What was archived.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArchiveStats {
    /// Entries written.
    pub entries: u64,
    /// Content bytes written.
    pub bytes: u64,
    /// Sockets, FIFOs and devices left out.
    pub skipped: u64,
}

/// The kind of a local source (symbolic links on the command line are followed, as
/// `cp -rH` does) and the name it is copied under.
pub fn local_source(src: &Path) -> Result<(SourceKind, String), TransferError> {
    let meta = fs::metadata(src).map_err(io_err("cannot read", src))?;
    let kind = if meta.is_dir() {
        SourceKind::Directory
    } else if meta.is_file() {
        SourceKind::File
    } else {
        return Err(TransferError::Refused {
            path: src.to_path_buf(),
            what: "not a regular file or a directory".to_string(),
        });
    };
    let absolute = std::path::absolute(src).map_err(io_err("cannot resolve", src))?;
    let name = normal_name(&absolute).ok_or_else(|| TransferError::Refused {
        path: src.to_path_buf(),
        what: "has no name to copy it under (name the directory itself, not `/`)".to_string(),
    })?;
    Ok((kind, name))
}

/// The last normal component of a path, `.` and `..` resolved lexically.
fn normal_name(path: &Path) -> Option<String> {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.last().map(|p| p.to_string_lossy().into_owned())
}

fn header_for(meta: &fs::Metadata) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    header.set_uid(0);
    header.set_gid(0);
    let _ = header.set_username("root");
    let _ = header.set_groupname("root");
    header
}

/// Writes the archive of `src` (see the module docs) to `out`.
pub fn write_archive(
    src: &Path,
    kind: SourceKind,
    out: impl Write,
) -> Result<ArchiveStats, TransferError> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let mut stats = ArchiveStats::default();
    match kind {
        SourceKind::File => {
            let meta = fs::metadata(src).map_err(io_err("cannot read", src))?;
            append(&mut builder, src, Path::new(FILE_ENTRY), &meta, &mut stats)?;
        }
        SourceKind::Directory => {
            let meta = fs::metadata(src).map_err(io_err("cannot read", src))?;
            append(&mut builder, src, Path::new("."), &meta, &mut stats)?;
            append_tree(&mut builder, src, Path::new("."), &mut stats)?;
        }
    }
    builder
        .into_inner()
        .and_then(|mut out| out.flush())
        .map_err(io_err("writing the archive of", src))?;
    Ok(stats)
}

/// Appends the entries below directory `dir` (named `name` in the archive), sorted.
fn append_tree<W: Write>(
    builder: &mut tar::Builder<W>,
    dir: &Path,
    name: &Path,
    stats: &mut ArchiveStats,
) -> Result<(), TransferError> {
    let mut children: Vec<fs::DirEntry> = fs::read_dir(dir)
        .map_err(io_err("cannot list", dir))?
        .collect::<Result<_, _>>()
        .map_err(io_err("cannot list", dir))?;
    children.sort_by_key(fs::DirEntry::file_name);
    for child in children {
        let path = child.path();
        let entry_name = name.join(child.file_name());
        let meta = fs::symlink_metadata(&path).map_err(io_err("cannot read", &path))?;
        append(builder, &path, &entry_name, &meta, stats)?;
        if meta.is_dir() {
            append_tree(builder, &path, &entry_name, stats)?;
        }
    }
    Ok(())
}

/// Appends one entry: a directory, a file with its content, or a symbolic link.
fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &Path,
    name: &Path,
    meta: &fs::Metadata,
    stats: &mut ArchiveStats,
) -> Result<(), TransferError> {
    let mut header = header_for(meta);
    let failed = io_err("archiving", path);
    let kind = meta.file_type();
    if kind.is_dir() {
        header.set_size(0);
        builder
            .append_data(&mut header, name, std::io::empty())
            .map_err(failed)?;
    } else if kind.is_symlink() {
        let target = fs::read_link(path).map_err(io_err("cannot read link", path))?;
        header.set_size(0);
        builder
            .append_link(&mut header, name, &target)
            .map_err(failed)?;
    } else if kind.is_file() {
        let file = fs::File::open(path).map_err(io_err("cannot open", path))?;
        // The size in the header is the size now; a file that grows or shrinks while
        // it is read would corrupt the stream, so exactly that many bytes are sent.
        let len = meta.len();
        let mut content = file.take(len);
        builder
            .append_data(&mut header, name, &mut content)
            .map_err(failed)?;
        stats.bytes += len;
    } else {
        stats.skipped += 1;
        return Ok(());
    }
    stats.entries += 1;
    Ok(())
}

/// The guest script that reads an archive from stdin and places it at `dst` with `cp -r`
/// rules, `name` being the source's name.
pub fn upload_script(kind: SourceKind, dst: &str, name: &str) -> String {
    let target = format!(
        "d={}; n={}; if [ -d \"$d\" ]; then t=\"$d/$n\"; else t=\"$d\"; fi",
        sh_quote(dst),
        sh_quote(name)
    );
    match kind {
        SourceKind::Directory => {
            format!("{target}; mkdir -p -- \"$t\" && exec tar -x -f - -C \"$t\"")
        }
        SourceKind::File => format!(
            "{target}; p=$(dirname -- \"$t\"); \
             [ -d \"$p\" ] || {{ echo \"$p: no such directory\" >&2; exit 1; }}; \
             tmp=$(mktemp -d \"$p/.banger-cp.XXXXXX\") || exit 1; \
             tar -x -f - -C \"$tmp\" && mv -f -- \"$tmp/{FILE_ENTRY}\" \"$t\"; \
             s=$?; rm -rf -- \"$tmp\"; exit $s"
        ),
    }
}

/// The guest script that writes an archive of `src` to stdout, its root entry named
/// like `src`'s last component.
pub fn download_script(src: &str) -> String {
    format!(
        "p={}; cd -- \"$(dirname -- \"$p\")\" && exec tar -c -f - -- \"$(basename -- \"$p\")\"",
        sh_quote(src)
    )
}

/// Unpacks an archive whose entries share one root entry to `dst` with `cp -r` rules;
/// returns where the copy landed.
pub fn unpack_into_place(archive: impl Read, dst: &Path) -> Result<PathBuf, TransferError> {
    let into_dir = fs::metadata(dst).map(|m| m.is_dir()).unwrap_or(false);
    let parent = if into_dir {
        dst.to_path_buf()
    } else {
        match dst.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    };
    let staging = tempfile::Builder::new()
        .prefix(".banger-cp.")
        .tempdir_in(&parent)
        .map_err(io_err("cannot make a directory in", &parent))?;
    let mut tar = tar::Archive::new(archive);
    tar.set_preserve_permissions(false);
    tar.set_preserve_mtime(true);
    tar.set_overwrite(true);
    tar.unpack(staging.path())
        .map_err(io_err("unpacking into", staging.path()))?;
    let roots: Vec<fs::DirEntry> = fs::read_dir(staging.path())
        .map_err(io_err("cannot list", staging.path()))?
        .collect::<Result<_, _>>()
        .map_err(io_err("cannot list", staging.path()))?;
    let [root] = roots.as_slice() else {
        return Err(TransferError::Refused {
            path: dst.to_path_buf(),
            what: format!(
                "the guest sent {} top-level entries, expected one",
                roots.len()
            ),
        });
    };
    let target = if into_dir {
        dst.join(root.file_name())
    } else {
        dst.to_path_buf()
    };
    place(&root.path(), &target)?;
    Ok(target)
}

/// Moves `from` to `to`: renamed when `to` does not exist, merged into `to` when both are
/// directories, replacing `to` when both are not.
fn place(from: &Path, to: &Path) -> Result<(), TransferError> {
    let from_dir = fs::symlink_metadata(from)
        .map_err(io_err("cannot read", from))?
        .is_dir();
    match fs::symlink_metadata(to) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::rename(from, to).map_err(io_err("cannot create", to))
        }
        Err(e) => Err(io_err("cannot read", to)(e)),
        Ok(meta) if meta.is_dir() && from_dir => {
            let children: Vec<fs::DirEntry> = fs::read_dir(from)
                .map_err(io_err("cannot list", from))?
                .collect::<Result<_, _>>()
                .map_err(io_err("cannot list", from))?;
            for child in children {
                place(&child.path(), &to.join(child.file_name()))?;
            }
            Ok(())
        }
        Ok(meta) if meta.is_dir() => Err(TransferError::Refused {
            path: to.to_path_buf(),
            what: "is a directory; it would be replaced by a file".to_string(),
        }),
        Ok(_) if from_dir => Err(TransferError::Refused {
            path: to.to_path_buf(),
            what: "is not a directory; it would be replaced by a directory".to_string(),
        }),
        Ok(_) => fs::rename(from, to).map_err(io_err("cannot replace", to)),
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A tree with a nested directory, an executable, a name with a space and quote,
    /// a symbolic link and an empty directory.
    fn tree(root: &Path) {
        fs::create_dir_all(root.join("sub/empty")).unwrap();
        fs::write(root.join("sub/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
        chmod(&root.join("sub/run.sh"), 0o750);
        fs::write(root.join("it's a file"), [0u8, 1, 2, 255]).unwrap();
        chmod(&root.join("it's a file"), 0o600);
        std::os::unix::fs::symlink("sub/run.sh", root.join("link")).unwrap();
        chmod(&root.join("sub"), 0o711);
    }

    fn assert_same_tree(a: &Path, b: &Path) {
        for rel in ["sub", "sub/empty", "sub/run.sh", "it's a file"] {
            assert_eq!(mode(&a.join(rel)), mode(&b.join(rel)), "mode of {rel}");
        }
        assert_eq!(
            fs::read(a.join("it's a file")).unwrap(),
            fs::read(b.join("it's a file")).unwrap()
        );
        assert_eq!(
            fs::read(a.join("sub/run.sh")).unwrap(),
            fs::read(b.join("sub/run.sh")).unwrap()
        );
        assert_eq!(
            fs::read_link(b.join("link")).unwrap(),
            PathBuf::from("sub/run.sh")
        );
    }

    /// Runs a guest script with the system's busybox `sh` (the guest kit's shell), in
    /// `cwd`, feeding `stdin`; returns (status, stdout, stderr).
    fn busybox(script: &str, cwd: &Path, stdin: &[u8]) -> (i32, Vec<u8>, String) {
        let mut child = Command::new("busybox")
            .args(["sh", "-c", script])
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("busybox (Debian busybox-static) is needed");
        let mut pipe = child.stdin.take().unwrap();
        let input = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        (
            out.status.code().unwrap_or(-1),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn archive_of(src: &Path) -> (SourceKind, String, Vec<u8>) {
        let (kind, name) = local_source(src).unwrap();
        let mut data = Vec::new();
        write_archive(src, kind, &mut data).unwrap();
        (kind, name, data)
    }

    #[test]
    fn names_of_sources() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("proj")).unwrap();
        let (kind, name) = local_source(&dir.path().join("proj/.")).unwrap();
        assert_eq!((kind, name.as_str()), (SourceKind::Directory, "proj"));
        let (_, name) = local_source(&dir.path().join("proj/../proj")).unwrap();
        assert_eq!(name, "proj");
        assert!(local_source(Path::new("/")).is_err());
        assert!(local_source(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn a_directory_goes_to_a_new_path_or_inside_an_existing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src dir");
        tree(&src);
        let (kind, name, data) = archive_of(&src);
        let guest = dir.path().join("guest");
        fs::create_dir(&guest).unwrap();

        // New path: the copy becomes it (parents made).
        let (code, _, err) = busybox(&upload_script(kind, "new/copy", &name), &guest, &data);
        assert_eq!(code, 0, "{err}");
        assert_same_tree(&src, &guest.join("new/copy"));
        assert_eq!(mode(&guest.join("new/copy")), mode(&src));

        // Existing directory: the copy lands inside it, under the source's name.
        fs::create_dir(guest.join("into")).unwrap();
        let (code, _, err) = busybox(&upload_script(kind, "into", &name), &guest, &data);
        assert_eq!(code, 0, "{err}");
        assert_same_tree(&src, &guest.join("into/src dir"));
    }

    #[test]
    fn a_file_replaces_a_file_or_lands_in_a_directory_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("run me.sh");
        fs::write(&src, "#!/bin/sh\nexit 7\n").unwrap();
        chmod(&src, 0o751);
        let (kind, name, data) = archive_of(&src);
        assert_eq!(kind, SourceKind::File);
        let guest = dir.path().join("guest");
        fs::create_dir(&guest).unwrap();
        fs::write(guest.join("old"), "old content that is longer").unwrap();

        let (code, _, err) = busybox(&upload_script(kind, "old", &name), &guest, &data);
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            fs::read_to_string(guest.join("old")).unwrap(),
            "#!/bin/sh\nexit 7\n"
        );
        assert_eq!(mode(&guest.join("old")), 0o751);

        let (code, _, err) = busybox(&upload_script(kind, ".", &name), &guest, &data);
        assert_eq!(code, 0, "{err}");
        assert_eq!(mode(&guest.join("run me.sh")), 0o751);
        let leftovers: Vec<_> = fs::read_dir(&guest)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".banger-cp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        let (code, _, err) = busybox(&upload_script(kind, "no/such/dir/x", &name), &guest, &data);
        assert_ne!(code, 0);
        assert_eq!(err.trim(), "no/such/dir: no such directory");
    }

    #[test]
    fn hostile_guest_paths_stay_one_word() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("f");
        fs::write(&src, "x").unwrap();
        let (kind, _, data) = archive_of(&src);
        let guest = dir.path().join("guest");
        fs::create_dir(&guest).unwrap();
        let hostile = "a b'$(touch pwned)`touch pwned2`;x";
        let (code, _, err) = busybox(&upload_script(kind, hostile, "f"), &guest, &data);
        assert_eq!(code, 0, "{err}");
        assert_eq!(fs::read_to_string(guest.join(hostile)).unwrap(), "x");
        assert!(!guest.join("pwned").exists() && !guest.join("pwned2").exists());
    }

    #[test]
    fn downloads_follow_cp_rules_and_drop_set_id_bits() {
        let dir = tempfile::tempdir().unwrap();
        let guest = dir.path().join("guest");
        tree(&guest.join("proj"));
        fs::write(guest.join("tool"), "bin").unwrap();
        chmod(&guest.join("tool"), 0o4755);
        let fetch = |src: &str| {
            let (code, out, err) = busybox(&download_script(src), &guest, b"");
            assert_eq!(code, 0, "{err}");
            out
        };
        let host = dir.path().join("host");
        fs::create_dir(&host).unwrap();

        // A directory to a new name, then into an existing directory.
        let landed = unpack_into_place(fetch("proj").as_slice(), &host.join("copy")).unwrap();
        assert_eq!(landed, host.join("copy"));
        assert_same_tree(&guest.join("proj"), &host.join("copy"));
        let landed = unpack_into_place(fetch("proj/").as_slice(), &host).unwrap();
        assert_eq!(landed, host.join("proj"));
        assert_same_tree(&guest.join("proj"), &host.join("proj"));
        // Again onto itself: merged, files replaced.
        fs::write(host.join("proj/extra"), "kept").unwrap();
        unpack_into_place(fetch("proj").as_slice(), &host).unwrap();
        assert_eq!(fs::read_to_string(host.join("proj/extra")).unwrap(), "kept");
        assert_same_tree(&guest.join("proj"), &host.join("proj"));

        // A file: its mode kept, set-user-ID dropped.
        let landed = unpack_into_place(fetch("tool").as_slice(), &host.join("t")).unwrap();
        assert_eq!(fs::read_to_string(&landed).unwrap(), "bin");
        assert_eq!(mode(&landed), 0o755);
        // A file onto a directory of the same name is refused.
        fs::create_dir(host.join("d")).unwrap();
        fs::create_dir(host.join("d/tool")).unwrap();
        let err = unpack_into_place(fetch("tool").as_slice(), &host.join("d")).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");

        let leftovers: Vec<_> = fs::read_dir(&host)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".banger-cp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn archives_that_escape_are_not_unpacked_outside() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = Vec::new();
        {
            let mut b = tar::Builder::new(&mut data);
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            // The tar crate refuses to write `..` names: put the raw name in the header.
            h.as_old_mut().name[..9].copy_from_slice(b"../escape");
            h.set_cksum();
            b.append(&h, &b"x"[..]).unwrap();
            b.finish().unwrap();
        }
        let host = dir.path().join("host");
        fs::create_dir(&host).unwrap();
        let result = unpack_into_place(data.as_slice(), &host.join("x"));
        assert!(result.is_err(), "{result:?}");
        assert!(!dir.path().join("escape").exists());
        assert!(!host.join("escape").exists());
    }
}
