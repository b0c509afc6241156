//! A local ext4 root filesystem (`spec.rootfs`) with banger's guest bits
//! (`spec.guest: inject`), built into the shared store.
//!
//! The user's file is never changed. Its tree is copied out with `debugfs -R "rdump …"`
//! (no mounting) into a staging directory only root can enter, the guest bits are added
//! ([`crate::host::guest_bits`]) and `mkfs.ext4 -d` builds the store entry
//! `rootfs/local-<sha256 of the file>-g<bits id>/rootfs.ext4`, published by rename.
//! A second Image of the same file and bits reuses it.
//!
//! What `rdump` carries over: directories, regular files and symlinks, with their modes
//! and owners (hard links become separate copies; device nodes and FIFOs, which root
//! filesystems keep in a devtmpfs anyway, are skipped). debugfs splits its request at
//! whitespace: top-level names and a store path with whitespace are refused.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::blob::sha256_hex;
use super::ext4;
use super::store::{EntryInfo, ImageStore};
use crate::host::guest_bits::GuestBits;
use crate::host::which::find_executable;

/// Why the build failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalBuildError {
    /// The image or the bits cannot be used.
    #[error("spec.rootfs {path}: {message}")]
    Unsupported {
        /// The user's file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A tool or a file operation failed.
    #[error("spec.rootfs {path}: {step}: {message}")]
    Failed {
        /// The user's file.
        path: PathBuf,
        /// What was being done.
        step: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// Builds (or finds) the store entry of `rootfs` (whose content is `digest`,
/// `sha256:…`) with `bits`. Blocking (runs debugfs and mkfs).
pub fn build_with_bits(
    store: &ImageStore,
    rootfs: &Path,
    digest: &str,
    bits: &GuestBits,
) -> Result<(PathBuf, EntryInfo, bool), LocalBuildError> {
    let failed = |step: &'static str| {
        move |e: String| LocalBuildError::Failed {
            path: rootfs.to_path_buf(),
            step,
            message: e,
        }
    };
    let unsupported = |message: String| LocalBuildError::Unsupported {
        path: rootfs.to_path_buf(),
        message,
    };
    let hex = sha256_hex(digest).map_err(|e| failed("digest")(e.to_string()))?;
    let bits_id = bits.identity().map_err(|e| unsupported(e.to_string()))?;
    let key = format!("local-{hex}-g{bits_id}");
    store
        .ensure()
        .map_err(|e| failed("create the store")(e.to_string()))?;
    let _lock = store
        .lock(&key)
        .map_err(|e| failed("lock")(e.to_string()))?;
    if let Some(info) = store.info(&key) {
        return Ok((store.rootfs(&key), info, true));
    }
    let staging = store.staging(&key);
    remove_if_present(&staging).map_err(|e| failed("clean")(e.to_string()))?;
    let built = (|| {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .map_err(|e| failed("create")(e.to_string()))?;
        let tree = staging.join("root");
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&tree)
            .map_err(|e| failed("create")(e.to_string()))?;
        copy_out(rootfs, &tree).map_err(failed("copy the tree out (debugfs rdump)"))?;
        let guest = bits.inject(&tree).map_err(|e| match e {
            crate::host::guest_bits::GuestBitsError::Unsupported(m) => unsupported(m),
            other => failed("add the guest bits")(other.to_string()),
        })?;
        let image = staging.join(super::ROOTFS_FILE);
        let rootfs_bytes =
            ext4::build_image(&tree, &image).map_err(|e| failed("build ext4")(e.to_string()))?;
        let info = EntryInfo {
            reference: rootfs.display().to_string(),
            manifest_digest: digest.to_string(),
            guest: Some(guest),
            rootfs_bytes,
        };
        ImageStore::write_metadata(&staging, b"{}", &info)
            .map_err(|e| failed("write metadata")(e.to_string()))?;
        remove_if_present(&tree).map_err(|e| failed("clean")(e.to_string()))?;
        fs::rename(&staging, store.entry(&key)).map_err(|e| failed("publish")(e.to_string()))?;
        Ok(info)
    })();
    match built {
        Ok(info) => Ok((store.rootfs(&key), info, false)),
        Err(e) => {
            let _ = remove_if_present(&staging);
            Err(e)
        }
    }
}

/// The names in the root directory of an ext4 image (`.`, `..` and `lost+found` left
/// out), from `debugfs -R "ls -p /"`.
fn root_names(debugfs: &Path, rootfs: &Path) -> Result<Vec<String>, String> {
    let out = Command::new(debugfs)
        .args(["-R", "ls -p /"])
        .arg(rootfs)
        .output()
        .map_err(|e| format!("run debugfs: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "debugfs ls: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse_ls(&String::from_utf8_lossy(&out.stdout))
}

/// Pure: names of `ls -p` lines (`/INODE/MODE/UID/GID/NAME/SIZE/`).
fn parse_ls(text: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for line in text.lines().filter(|l| l.starts_with('/')) {
        let fields: Vec<&str> = line.split('/').collect();
        let Some(name) = fields.get(5) else { continue };
        if matches!(*name, "." | ".." | "lost+found" | "") {
            continue;
        }
        if name
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\'')
        {
            return Err(format!(
                "top-level name {name:?} has whitespace or quotes; debugfs cannot be given it safely"
            ));
        }
        names.push((*name).to_string());
    }
    Ok(names)
}

/// Copies the whole tree of `rootfs` into `tree` with `debugfs rdump`.
fn copy_out(rootfs: &Path, tree: &Path) -> Result<(), String> {
    let debugfs = find_executable(Path::new("debugfs"))
        .ok_or_else(|| "debugfs not found in PATH (install e2fsprogs)".to_string())?;
    let target = tree.display().to_string();
    if target
        .chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\'')
    {
        return Err(format!("{target}: whitespace or quotes in the store path"));
    }
    let names = root_names(&debugfs, rootfs)?;
    if names.is_empty() {
        return Err("the file system's root is empty".into());
    }
    let request = format!(
        "rdump {} {target}",
        names
            .iter()
            .map(|n| format!("/{n}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = Command::new(&debugfs)
        .arg("-R")
        .arg(&request)
        .arg(rootfs)
        .output()
        .map_err(|e| format!("run debugfs: {e}"))?;
    // debugfs reports per-file problems on stderr but exits 0: any line that is not its
    // banner is a failure.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
        .collect();
    if !out.status.success() || !problems.is_empty() {
        return Err(format!("{}: {}", out.status, problems.join("; ")));
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn root_listings_are_parsed_and_odd_names_refused() {
        let text = "/2/040755/0/0/.//\n/2/040755/0/0/..//\n/11/040700/0/0/lost+found//\n/12/040755/0/0/bin//\n/13/0100644/0/0/hello/5/\n";
        assert_eq!(parse_ls(text).unwrap(), ["bin", "hello"]);
        let err = parse_ls("/14/0100644/0/0/two words/1/\n").unwrap_err();
        assert!(err.contains("whitespace"), "{err}");
    }
}
