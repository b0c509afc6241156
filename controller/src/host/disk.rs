//! Per-VM writable root disks, derived from an Image's rootfs without ever modifying it.
//!
//! [`ensure_root_disk`] makes `<vm dir>/rootfs.ext4`:
//! 1. every path is checked with [`safe_path::check_below`] (no symlink below the state
//!    directory may redirect the write);
//! 2. the image is cloned into a temporary file in the VM directory: a reflink
//!    (`FICLONE`) where the filesystem supports it, else a sparse copy (only the data
//!    extents found with `SEEK_DATA`/`SEEK_HOLE` are read, and all-zero blocks inside
//!    them are skipped, so the copy allocates about what the image allocates);
//! 3. the copy is grown to the requested size (`set_len`, `e2fsck -fp`, `resize2fs`,
//!    each run as an argv vector) — disks are never shrunk; with
//!    [`RootDiskRequest::prepared`] and a prepared base of the image and size
//!    ([`crate::host::prepared_disk`]), steps 2, 3 and the finishing touch of 4 were
//!    done once on the base, and the new disk is its spare renamed into place or a
//!    sparse copy of it;
//! 4. the caller's finishing touch runs on the temporary file
//!    ([`RootDiskRequest::before_publish`]: banger puts its SSH key in), a sidecar
//!    `rootfs.source.json` records which image the disk came from, the size its
//!    filesystem was grown to and the disk's own random id ([`DiskSource::disk_id`]);
//!    then the temporary file is renamed into place (atomic),
//!    so `rootfs.ext4` only ever appears complete — a crash at any point leaves either
//!    no disk or a whole one, never a half-made published disk.
//!
//! An existing disk is kept (stopping a VM keeps its disk): it is grown if the request
//! is larger, and a request for another image or a smaller size is an error, never a
//! silent rebuild. Either way a temporary file left by an interrupted attempt is
//! removed. [`remove_root_disk`] deletes the disk, its sidecar and leftovers.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::unistd::{lseek, Whence};
use serde::{Deserialize, Serialize};

use crate::host::prepared_disk::{PreparedDisks, PreparedKey};
use crate::host::safe_path::{self, UnsafePath};
use crate::host::which::find_executable;

/// File name of a VM's root disk inside its VM directory.
pub const ROOT_DISK_FILE: &str = "rootfs.ext4";
/// File name of the sidecar recording the disk's source image.
pub const SIDECAR_FILE: &str = "rootfs.source.json";
const TMP_DISK_FILE: &str = ".rootfs.ext4.tmp";
const TMP_SIDECAR_FILE: &str = ".rootfs.source.json.tmp";
const COPY_CHUNK: usize = 1 << 20;
const ZERO_BLOCK: usize = 4096;

/// Why a disk operation failed. Every variant names the VM and the path.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// A path below the state directory is unsafe (symlink, escape).
    #[error("VM {vm}: unsafe path: {source}")]
    UnsafePath {
        /// The VM's name.
        vm: String,
        /// What is wrong.
        #[source]
        source: UnsafePath,
    },
    /// A file operation failed.
    #[error("VM {vm}: {step} {path}: {source}")]
    Io {
        /// The VM's name.
        vm: String,
        /// What banger was doing.
        step: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The requested size is smaller than the disk (or the image).
    #[error("VM {vm}: disk {path} is {current} bytes; refusing to shrink it to {requested} bytes")]
    WouldShrink {
        /// The VM's name.
        vm: String,
        /// The disk (or image) concerned.
        path: PathBuf,
        /// Its size now.
        current: u64,
        /// The requested size.
        requested: u64,
    },
    /// The existing disk came from another image (or its sidecar is missing).
    #[error("VM {vm}: disk {path} was made from image {recorded:?}, not {requested:?}; delete the VM's disk to rebuild it")]
    OtherImage {
        /// The VM's name.
        vm: String,
        /// The disk.
        path: PathBuf,
        /// The identity recorded in the sidecar (`unknown` without one).
        recorded: String,
        /// The identity asked for.
        requested: String,
    },
    /// The finishing touch ([`RootDiskRequest::before_publish`]) failed.
    #[error("VM {vm}: prepare {path}: {message}")]
    BeforePublish {
        /// The VM's name.
        vm: String,
        /// The temporary disk.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// An e2fsprogs tool failed.
    #[error("VM {vm}: {tool} {path} failed ({status}): {output}")]
    Tool {
        /// The VM's name.
        vm: String,
        /// `e2fsck` or `resize2fs`.
        tool: String,
        /// The disk.
        path: PathBuf,
        /// Exit status.
        status: String,
        /// The tool's output (trimmed).
        output: String,
    },
}

/// The image a disk is derived from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSource {
    /// A stable identity of the image (its uid or content digest), recorded with the disk.
    pub identity: String,
    /// The image's rootfs file (ext4). Read only.
    pub rootfs: PathBuf,
}

/// What to make: the root disk of one VM.
#[derive(Clone)]
pub struct RootDiskRequest<'a> {
    /// The VM's name (for errors).
    pub vm_name: &'a str,
    /// banger's state directory; `vm_dir` must be below it.
    pub state_dir: &'a Path,
    /// The VM's directory (created if missing).
    pub vm_dir: &'a Path,
    /// The image to derive the disk from.
    pub image: &'a ImageSource,
    /// The disk's size in bytes (`spec.disk`).
    pub size_bytes: u64,
    /// Runs on a NEW disk's temporary file before it is published (not on a kept
    /// disk); an error leaves no disk. A disk taken from a prepared base
    /// ([`RootDiskRequest::prepared`]) has had it already (it ran once on the base).
    pub before_publish: Option<FinishDisk<'a>>,
    /// Take a new disk from the prepared base of this image and size (grown, checked
    /// and finished once; [`crate::host::prepared_disk`]) when there is one, instead of
    /// making it from the image.
    pub prepared: Option<Prepared<'a>>,
}

/// Where a new disk's prepared base lives and what its finishing touch is
/// ([`RootDiskRequest::prepared`]).
#[derive(Clone, Copy)]
pub struct Prepared<'a> {
    /// The store of prepared bases and spares.
    pub disks: &'a PreparedDisks,
    /// A stable name of what [`RootDiskRequest::before_publish`] writes (banger's
    /// public key line): a base made with another finishing touch is another base.
    pub finish_id: &'a str,
    /// The Image's name: its bases go with it ([`PreparedDisks::remove_image`]).
    pub image_name: &'a str,
}

/// A finishing touch for a new disk's temporary file ([`RootDiskRequest::before_publish`]).
pub type FinishDisk<'a> = &'a (dyn Fn(&Path) -> Result<(), String> + Sync);

impl std::fmt::Debug for RootDiskRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootDiskRequest")
            .field("vm_name", &self.vm_name)
            .field("vm_dir", &self.vm_dir)
            .field("image", &self.image)
            .field("size_bytes", &self.size_bytes)
            .field("before_publish", &self.before_publish.is_some())
            .field(
                "prepared",
                &self.prepared.map(|p| p.disks.dir().to_path_buf()),
            )
            .finish()
    }
}

/// How the disk's contents were produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CopyMethod {
    /// A reflink clone (shared extents, copy-on-write).
    Reflink,
    /// A sparse copy (data extents only, zero blocks skipped).
    Sparse,
    /// The disk already existed and was kept.
    Existing,
    /// A copy of a prepared base (grown, checked and finished once per image, size and
    /// finishing touch): a spare made ahead and renamed into place, or a sparse copy.
    Prepared,
}

/// The sidecar recorded next to a root disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSource {
    /// The source image's identity ([`ImageSource::identity`]).
    pub image_identity: String,
    /// The source image's rootfs path when the disk was made.
    pub image_path: PathBuf,
    /// The source image's size in bytes when the disk was made.
    pub image_size: u64,
    /// The size the disk's filesystem was last grown to (equals the file size when the
    /// last grow finished).
    pub filesystem_bytes: u64,
    /// How the disk was first produced.
    pub method: CopyMethod,
    /// This disk's identity: a random id given when the disk is made, never changed
    /// while the disk lives (kept disks keep it; a rebuilt disk gets a new one). What
    /// a Workspace copy is counted against: a VMM restart, a stop/start or a daemon
    /// restart keeps the disk, so the guest's files are not copied again. `None` for a
    /// disk made before disks had ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_id: Option<String>,
}

/// A VM's root disk as ensured or probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootDisk {
    /// The disk file.
    pub path: PathBuf,
    /// Its apparent size in bytes.
    pub size_bytes: u64,
    /// Bytes actually allocated on the host filesystem.
    pub allocated_bytes: u64,
    /// The recorded source, if the sidecar exists and parses.
    pub source: Option<DiskSource>,
    /// What this call did ([`CopyMethod::Existing`] for probes and kept disks).
    pub method: CopyMethod,
}

/// The root disk path of the VM whose directory is `vm_dir`.
pub fn root_disk_path(vm_dir: &Path) -> PathBuf {
    vm_dir.join(ROOT_DISK_FILE)
}

/// The sidecar path of the VM whose directory is `vm_dir`.
pub fn sidecar_path(vm_dir: &Path) -> PathBuf {
    vm_dir.join(SIDECAR_FILE)
}

/// Error context of one disk operation: the VM (or prepared base) it is for.
pub(crate) struct Ctx<'a> {
    /// The VM's name, or the base's name.
    pub(crate) vm: &'a str,
}

impl Ctx<'_> {
    pub(crate) fn io(
        &self,
        step: &'static str,
        path: &Path,
    ) -> impl FnOnce(io::Error) -> DiskError + '_ {
        let path = path.to_path_buf();
        move |source| DiskError::Io {
            vm: self.vm.to_string(),
            step,
            path,
            source,
        }
    }

    pub(crate) fn check(&self, state_dir: &Path, path: &Path) -> Result<(), DiskError> {
        safe_path::check_below(state_dir, path).map_err(|source| DiskError::UnsafePath {
            vm: self.vm.to_string(),
            source,
        })
    }
}

/// Makes the VM's root disk exist, derived from the image and at least
/// `size_bytes` large; see the module docs for the steps and guarantees.
pub fn ensure_root_disk(req: &RootDiskRequest<'_>) -> Result<RootDisk, DiskError> {
    let ctx = Ctx { vm: req.vm_name };
    let disk = root_disk_path(req.vm_dir);
    let sidecar = sidecar_path(req.vm_dir);
    let tmp_disk = req.vm_dir.join(TMP_DISK_FILE);
    for path in [req.vm_dir, &disk, &sidecar, &tmp_disk] {
        ctx.check(req.state_dir, path)?;
    }
    create_private_dirs(req.vm_dir).map_err(ctx.io("create directory", req.vm_dir))?;
    for path in [req.vm_dir, &disk, &sidecar, &tmp_disk] {
        ctx.check(req.state_dir, path)?;
    }

    if disk.exists() {
        // A temporary file next to a published disk is a leftover of an interrupted
        // attempt (one step per VM runs at a time): never part of the disk.
        remove_if_exists(&tmp_disk).map_err(ctx.io("remove stale temporary disk", &tmp_disk))?;
        return keep_existing(&ctx, req, &disk, &sidecar);
    }

    let image_meta =
        std::fs::metadata(&req.image.rootfs).map_err(ctx.io("inspect image", &req.image.rootfs))?;
    let image_size = image_meta.len();
    if req.size_bytes < image_size {
        return Err(DiskError::WouldShrink {
            vm: req.vm_name.to_string(),
            path: req.image.rootfs.clone(),
            current: image_size,
            requested: req.size_bytes,
        });
    }

    // A leftover from an interrupted attempt: remove it (never followed: a symlink is
    // removed as a link).
    remove_if_exists(&tmp_disk).map_err(ctx.io("remove stale temporary disk", &tmp_disk))?;
    let built = (|| {
        let prepared = match req.prepared {
            Some(prepared) => {
                let key = PreparedKey {
                    image_name: prepared.image_name,
                    image: req.image,
                    size_bytes: req.size_bytes,
                    finish_id: prepared.finish_id,
                };
                prepared.disks.take(&ctx, &key, &tmp_disk)?
            }
            None => false,
        };
        let method = if prepared {
            CopyMethod::Prepared
        } else {
            let method = clone_image(&ctx, &req.image.rootfs, &tmp_disk)?;
            grow_filesystem(&ctx, &tmp_disk, image_size, req.size_bytes)?;
            if let Some(finish) = req.before_publish {
                finish(&tmp_disk).map_err(|message| DiskError::BeforePublish {
                    vm: req.vm_name.to_string(),
                    path: tmp_disk.clone(),
                    message,
                })?;
            }
            method
        };
        write_sidecar(
            &ctx,
            req,
            &DiskSource {
                image_identity: req.image.identity.clone(),
                image_path: req.image.rootfs.clone(),
                image_size,
                filesystem_bytes: req.size_bytes,
                method,
                disk_id: Some(crate::ids::new_uid()),
            },
        )?;
        std::fs::rename(&tmp_disk, &disk).map_err(ctx.io("rename temporary disk to", &disk))?;
        Ok(method)
    })();
    let method = match built {
        Ok(method) => method,
        Err(err) => {
            // Best effort: the error being returned matters more than this cleanup's.
            let _ = remove_if_exists(&tmp_disk);
            return Err(err);
        }
    };
    sync_dir(req.vm_dir).map_err(ctx.io("sync directory", req.vm_dir))?;
    let mut probed = probe_root_disk(req.vm_dir)
        .map_err(ctx.io("inspect disk", &disk))?
        .ok_or_else(|| DiskError::Io {
            vm: req.vm_name.to_string(),
            step: "find disk after creating",
            path: disk.clone(),
            source: io::Error::from(io::ErrorKind::NotFound),
        })?;
    probed.method = method;
    Ok(probed)
}

fn keep_existing(
    ctx: &Ctx<'_>,
    req: &RootDiskRequest<'_>,
    disk: &Path,
    sidecar: &Path,
) -> Result<RootDisk, DiskError> {
    let recorded = read_sidecar(sidecar).map_err(ctx.io("read sidecar", sidecar))?;
    let mut source = match recorded {
        Some(source) if source.image_identity == req.image.identity => source,
        other => {
            return Err(DiskError::OtherImage {
                vm: req.vm_name.to_string(),
                path: disk.to_path_buf(),
                recorded: other.map_or_else(|| "unknown".to_string(), |s| s.image_identity),
                requested: req.image.identity.clone(),
            })
        }
    };
    let current = std::fs::metadata(disk)
        .map_err(ctx.io("inspect disk", disk))?
        .len();
    if req.size_bytes < current {
        return Err(DiskError::WouldShrink {
            vm: req.vm_name.to_string(),
            path: disk.to_path_buf(),
            current,
            requested: req.size_bytes,
        });
    }
    // Grow when asked for more, or finish a grow that was interrupted after set_len.
    if req.size_bytes > current || source.filesystem_bytes != current {
        grow_filesystem(ctx, disk, current, req.size_bytes)?;
        source.filesystem_bytes = req.size_bytes;
        write_sidecar(ctx, req, &source)?;
    }
    let mut probed = probe_root_disk(req.vm_dir)
        .map_err(ctx.io("inspect disk", disk))?
        .ok_or_else(|| DiskError::Io {
            vm: req.vm_name.to_string(),
            step: "find disk",
            path: disk.to_path_buf(),
            source: io::Error::from(io::ErrorKind::NotFound),
        })?;
    probed.method = CopyMethod::Existing;
    Ok(probed)
}

/// The VM's root disk, if it exists: size, allocation and recorded source.
pub fn probe_root_disk(vm_dir: &Path) -> io::Result<Option<RootDisk>> {
    use std::os::unix::fs::MetadataExt;
    let disk = root_disk_path(vm_dir);
    let meta = match std::fs::symlink_metadata(&disk) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a regular file", disk.display()),
        ));
    }
    Ok(Some(RootDisk {
        path: disk,
        size_bytes: meta.len(),
        allocated_bytes: meta.blocks() * 512,
        source: read_sidecar(&sidecar_path(vm_dir)).unwrap_or(None),
        method: CopyMethod::Existing,
    }))
}

/// Deletes the VM's root disk, its sidecar and any temporary leftovers (idempotent).
/// The VM directory itself is kept (it holds logs and sockets).
pub fn remove_root_disk(vm_name: &str, state_dir: &Path, vm_dir: &Path) -> Result<(), DiskError> {
    let ctx = Ctx { vm: vm_name };
    for name in [
        ROOT_DISK_FILE,
        SIDECAR_FILE,
        TMP_DISK_FILE,
        TMP_SIDECAR_FILE,
    ] {
        let path = vm_dir.join(name);
        // Only the parents must be symlink-free: a symlink at the last component is
        // removed as a link, never followed.
        ctx.check(state_dir, vm_dir)?;
        remove_if_exists(&path).map_err(ctx.io("remove", &path))?;
    }
    Ok(())
}

pub(crate) fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

pub(crate) fn create_private_dirs(vm_dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(vm_dir)
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn read_sidecar(path: &Path) -> io::Result<Option<DiskSource>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

fn write_sidecar(
    ctx: &Ctx<'_>,
    req: &RootDiskRequest<'_>,
    source: &DiskSource,
) -> Result<(), DiskError> {
    let tmp = req.vm_dir.join(TMP_SIDECAR_FILE);
    let final_path = sidecar_path(req.vm_dir);
    ctx.check(req.state_dir, &tmp)?;
    remove_if_exists(&tmp).map_err(ctx.io("remove stale sidecar", &tmp))?;
    let text = serde_json::to_vec_pretty(source)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        .map_err(ctx.io("encode sidecar", &tmp))?;
    let file = create_new_nofollow(&tmp).map_err(ctx.io("create", &tmp))?;
    file.write_all_at(&text, 0).map_err(ctx.io("write", &tmp))?;
    file.sync_all().map_err(ctx.io("sync", &tmp))?;
    std::fs::rename(&tmp, &final_path).map_err(ctx.io("rename sidecar to", &final_path))
}

pub(crate) fn create_new_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Clones `image` into the new file `dst`: reflink if possible, else a sparse copy.
pub(crate) fn clone_image(
    ctx: &Ctx<'_>,
    image: &Path,
    dst: &Path,
) -> Result<CopyMethod, DiskError> {
    let src = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(image)
        .map_err(ctx.io("open image", image))?;
    let out = create_new_nofollow(dst).map_err(ctx.io("create", dst))?;
    let method = if try_reflink(&src, &out) {
        CopyMethod::Reflink
    } else {
        sparse_copy(&src, &out).map_err(ctx.io("copy image into", dst))?;
        CopyMethod::Sparse
    };
    out.sync_all().map_err(ctx.io("sync", dst))?;
    Ok(method)
}

fn try_reflink(src: &File, dst: &File) -> bool {
    // SAFETY: both descriptors are open for the whole call (borrowed from live `File`s);
    // FICLONE takes the source descriptor as its integer argument and passes no memory.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
    rc == 0
}

/// Copies `src` into the empty file `dst`, reading only data extents and skipping
/// all-zero blocks, then sets `dst`'s length to `src`'s.
pub fn sparse_copy(src: &File, dst: &File) -> io::Result<()> {
    let len = src.metadata()?.len();
    let len_off = i64::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut offset: i64 = 0;
    // Each iteration moves `offset` strictly forward (to the end of a data extent), so
    // the loop ends after at most one pass over the file.
    while offset < len_off {
        let data = match lseek(src, offset, Whence::SeekData) {
            Ok(pos) => pos,
            Err(nix::errno::Errno::ENXIO) => break, // only a hole is left
            Err(errno) => return Err(io::Error::from(errno)),
        };
        let hole = lseek(src, data, Whence::SeekHole)
            .map_err(io::Error::from)?
            .min(len_off);
        copy_range(src, dst, data, hole, &mut buf)?;
        if hole <= offset {
            break;
        }
        offset = hole;
    }
    dst.set_len(len)
}

fn copy_range(src: &File, dst: &File, start: i64, end: i64, buf: &mut [u8]) -> io::Result<()> {
    let to_u64 =
        |v: i64| u64::try_from(v).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let mut pos = to_u64(start)?;
    let end = to_u64(end)?;
    while pos < end {
        let want = usize::try_from(end - pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let chunk = &mut buf[..want];
        src.read_exact_at(chunk, pos)?;
        for (i, block) in chunk.chunks(ZERO_BLOCK).enumerate() {
            if block.iter().any(|&b| b != 0) {
                let block_pos = pos + (i * ZERO_BLOCK) as u64;
                dst.write_all_at(block, block_pos)?;
            }
        }
        pos += want as u64;
    }
    Ok(())
}

/// Grows the disk file from `current` to `target` bytes and its ext4 filesystem with it.
pub(crate) fn grow_filesystem(
    ctx: &Ctx<'_>,
    disk: &Path,
    current: u64,
    target: u64,
) -> Result<(), DiskError> {
    if target < current {
        return Err(DiskError::WouldShrink {
            vm: ctx.vm.to_string(),
            path: disk.to_path_buf(),
            current,
            requested: target,
        });
    }
    if target > current {
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(disk)
            .map_err(ctx.io("open", disk))?;
        file.set_len(target).map_err(ctx.io("extend", disk))?;
        file.sync_all().map_err(ctx.io("sync", disk))?;
    }
    // e2fsck -p exits 0 (clean) or 1 (errors fixed); resize2fs insists on a fresh check.
    run_tool(ctx, "e2fsck", &["-f", "-p"], disk, &[0, 1])?;
    run_tool(ctx, "resize2fs", &[], disk, &[0])
}

fn run_tool(
    ctx: &Ctx<'_>,
    tool: &str,
    args: &[&str],
    disk: &Path,
    ok: &[i32],
) -> Result<(), DiskError> {
    let bin = find_executable(Path::new(tool)).unwrap_or_else(|| PathBuf::from(tool));
    let output = Command::new(bin)
        .args(args)
        .arg(disk)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(ctx.io("run e2fsprogs tool on", disk))?;
    match output.status.code() {
        Some(code) if ok.contains(&code) => Ok(()),
        _ => {
            let mut text = String::from_utf8_lossy(&output.stderr).trim().to_string();
            if text.is_empty() {
                text = String::from_utf8_lossy(&output.stdout).trim().to_string();
            }
            Err(DiskError::Tool {
                vm: ctx.vm.to_string(),
                tool: tool.to_string(),
                path: disk.to_path_buf(),
                status: output.status.to_string(),
                output: text,
            })
        }
    }
}
