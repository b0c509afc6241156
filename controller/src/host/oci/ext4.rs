//! Building an ext4 image from a directory tree with `mkfs.ext4 -d` (no mounting).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::host::which::find_executable;

/// The smallest image built (bytes).
pub const MIN_IMAGE_BYTES: u64 = 64 << 20;
const BLOCK: u64 = 4096;
/// Fixed headroom on top of the content: journal, metadata, room to boot.
const HEADROOM_BYTES: u64 = 32 << 20;

/// What a tree needs on ext4: data blocks and inodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeUsage {
    /// Bytes of blocks (file content rounded up to blocks, one block per directory and
    /// per symlink too long to be stored in its inode).
    pub block_bytes: u64,
    /// Number of inodes (every entry, hard links once).
    pub inodes: u64,
}

/// Why the image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    /// Walking the tree or preparing the file failed.
    #[error("{step} {path}: {source}")]
    Io {
        /// What was being done.
        step: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `mkfs.ext4` is missing or failed.
    #[error("mkfs.ext4 {path}: {message}")]
    Mkfs {
        /// The image being built.
        path: PathBuf,
        /// What went wrong (the tool's output).
        message: String,
    },
}

/// Measures a tree without following symlinks.
pub fn tree_usage(root: &Path) -> Result<TreeUsage, Ext4Error> {
    use std::os::unix::fs::MetadataExt;
    let mut usage = TreeUsage::default();
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        usage.inodes += 1;
        usage.block_bytes += BLOCK;
        let entries = fs::read_dir(&dir).map_err(|source| Ext4Error::Io {
            step: "read directory",
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| Ext4Error::Io {
                step: "read directory",
                path: dir.clone(),
                source,
            })?;
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(|source| Ext4Error::Io {
                step: "inspect",
                path: path.clone(),
                source,
            })?;
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            if meta.nlink() > 1 && !seen.insert(meta.ino()) {
                continue;
            }
            usage.inodes += 1;
            if meta.is_file() || (meta.file_type().is_symlink() && meta.len() >= 60) {
                usage.block_bytes += meta.len().div_ceil(BLOCK) * BLOCK;
            }
        }
    }
    Ok(usage)
}

/// Image size for a tree: content plus a quarter, plus inode tables and fixed headroom,
/// rounded up to MiB, at least [`MIN_IMAGE_BYTES`].
pub fn image_size(usage: &TreeUsage) -> u64 {
    let bytes = usage
        .block_bytes
        .saturating_add(usage.block_bytes / 4)
        .saturating_add(usage.inodes.saturating_mul(2 * 256))
        .saturating_add(HEADROOM_BYTES);
    bytes
        .div_ceil(1 << 20)
        .saturating_mul(1 << 20)
        .max(MIN_IMAGE_BYTES)
}

/// Inodes to ask for: the tree's plus a quarter and some spare, at least 16384.
pub fn inode_count(usage: &TreeUsage) -> u64 {
    usage
        .inodes
        .saturating_add(usage.inodes / 4)
        .saturating_add(4096)
        .max(16384)
}

/// Builds `image` (a new file) from `root` with `mkfs.ext4 -d`; returns its size.
pub fn build_image(root: &Path, image: &Path) -> Result<u64, Ext4Error> {
    let usage = tree_usage(root)?;
    let size = image_size(&usage);
    let mkfs = find_executable(Path::new("mkfs.ext4")).ok_or_else(|| Ext4Error::Mkfs {
        path: image.to_path_buf(),
        message: "mkfs.ext4 not found in PATH (install e2fsprogs)".into(),
    })?;
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(image)
        .map_err(|source| Ext4Error::Io {
            step: "create",
            path: image.to_path_buf(),
            source,
        })?;
    file.set_len(size).map_err(|source| Ext4Error::Io {
        step: "size",
        path: image.to_path_buf(),
        source,
    })?;
    drop(file);
    let output = Command::new(&mkfs)
        .arg("-q")
        .arg("-F")
        .args(["-b", "4096"])
        .args(["-N", &inode_count(&usage).to_string()])
        .args(["-E", "root_owner=0:0"])
        .arg("-d")
        .arg(root)
        .arg(image)
        .arg(format!("{}k", size / 1024))
        .output()
        .map_err(|source| Ext4Error::Io {
            step: "run mkfs.ext4 for",
            path: image.to_path_buf(),
            source,
        })?;
    if !output.status.success() {
        let mut message = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if message.is_empty() {
            message = String::from_utf8_lossy(&output.stdout).trim().to_string();
        }
        return Err(Ext4Error::Mkfs {
            path: image.to_path_buf(),
            message: format!("{}: {message}", output.status),
        });
    }
    Ok(size)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes_have_headroom_and_a_floor() {
        let tiny = TreeUsage {
            block_bytes: 4096,
            inodes: 1,
        };
        assert_eq!(image_size(&tiny), MIN_IMAGE_BYTES);
        let big = TreeUsage {
            block_bytes: 1 << 30,
            inodes: 10_000,
        };
        let size = image_size(&big);
        assert!(size >= (1 << 30) + (1 << 28) + HEADROOM_BYTES);
        assert_eq!(size % (1 << 20), 0);
        assert_eq!(inode_count(&tiny), 16384);
        assert_eq!(
            inode_count(&TreeUsage {
                block_bytes: 0,
                inodes: 100_000
            }),
            129_096
        );
    }

    #[test]
    fn tree_usage_counts_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("d")).unwrap();
        fs::write(root.join("d/f"), vec![1u8; 5000]).unwrap();
        fs::hard_link(root.join("d/f"), root.join("g")).unwrap();
        std::os::unix::fs::symlink("d/f", root.join("s")).unwrap();
        let usage = tree_usage(root).unwrap();
        assert_eq!(usage.inodes, 4); // root, d, f (= g), s
        assert_eq!(usage.block_bytes, 2 * BLOCK + 2 * BLOCK);
    }
}
