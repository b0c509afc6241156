//! banger's guest bits: what turns a root filesystem a developer already has (a Debian
//! or Ubuntu image with no init and no SSH server) into a guest banger can boot, reach
//! and stop.
//!
//! The bits are a directory tree built by the guest kit (`scripts/guest-kit.sh`,
//! `<kit>/guest-bits/`, installed by `scripts/up.sh` into the daemon's guest directory):
//! a static busybox with its applet links, banger's init script, the ACPI power-button
//! action, and dropbear with the shared libraries and the dynamic loader it needs; its
//! ELF interpreter and RPATH name `/.banger/lib`, so it never touches the image's own
//! libc. Nothing in the bits links against the image: they run on glibc, musl and
//! libc-less x86_64 images alike.
//!
//! [`GuestBits::inject`] copies the tree to [`GUEST_DIR`] (`/.banger`) of an unpacked
//! image tree and writes `/.banger/image.env`, what banger's init needs to know about
//! the image:
//! - `BANGER_IMAGE_INIT`: the image's own init (`/sbin/init`, e.g. systemd), exec'd by
//!   banger's init after its set-up (mounts, network from the lease, hostname, the SSH
//!   server when needed); empty when the image has none, and banger's init stays PID 1
//!   (reaps zombies, powers off cleanly on SIGTERM/SIGPWR/SIGUSR1/SIGUSR2 and the ACPI
//!   power button);
//! - `BANGER_START_SSH`: 1 unless the image has an init *and* an SSH server of its own
//!   (which that init starts);
//! - `BANGER_LIBC`: `glibc`, `musl` or `none`, for people.
//!
//! An image banger cannot serve is refused with [`GuestBitsError::Unsupported`]: one
//! whose `/etc/passwd` has no `root` entry or whose root shell is missing (banger's
//! `exec` and `ssh` run commands through it).
//!
//! Injection happens once per (image digest, bits identity) when the image's root
//! filesystem is built into the store, never per VM: every VM of the image shares it.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// Where the bits live inside the guest (one directory banger owns).
pub const GUEST_DIR: &str = ".banger";
/// The init the kernel is told to run (`init=`) for an image with the bits.
pub const GUEST_INIT: &str = "/.banger/init";
/// The kernel argument that makes banger's init PID 1.
pub const INIT_KERNEL_ARG: &str = "init=/.banger/init";
/// Files the bits must have to be usable.
const REQUIRED: [&str; 4] = [
    "init",
    "bin/busybox",
    "sbin/dropbear",
    "lib/ld-linux-x86-64.so.2",
];
/// Most symlinks followed while resolving one path inside an image.
const MAX_SYMLINKS: usize = 40;

/// Why the bits could not be used or injected.
#[derive(Debug, thiserror::Error)]
pub enum GuestBitsError {
    /// The bits directory is missing or incomplete.
    #[error("guest bits {dir}: {message} (scripts/guest-kit.sh builds them; scripts/up.sh installs them)")]
    Missing {
        /// The bits directory.
        dir: PathBuf,
        /// What is missing.
        message: String,
    },
    /// The image cannot be served by banger's guest bits.
    #[error("unsupported image: {0}")]
    Unsupported(String),
    /// A file operation failed.
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
}

fn io_err(step: &'static str, path: &Path) -> impl FnOnce(io::Error) -> GuestBitsError {
    let path = path.to_path_buf();
    move |source| GuestBitsError::Io { step, path, source }
}

/// What injection found in the image and added to it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestReport {
    /// The image's own init, kept and exec'd after banger's set-up (`None`: banger's
    /// init stays PID 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_init: Option<String>,
    /// banger's SSH server (dropbear) is started (`false`: the image's init starts its
    /// own).
    pub banger_ssh: bool,
    /// The image's C library family: `glibc`, `musl` or `none`.
    pub libc: String,
}

impl GuestReport {
    /// One line for people: `init: banger, ssh: banger (dropbear), libc: glibc`.
    pub fn summary(&self) -> String {
        format!(
            "init: {}, ssh: {}, libc: {}",
            self.image_init
                .as_deref()
                .map_or("banger".to_string(), |i| format!(
                    "image's {i} (after banger's set-up)"
                )),
            if self.banger_ssh {
                "banger (dropbear)"
            } else {
                "image's own"
            },
            self.libc
        )
    }
}

/// The guest bits tree on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestBits {
    dir: PathBuf,
}

impl GuestBits {
    /// The bits at `dir` (nothing is checked yet).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        GuestBits { dir: dir.into() }
    }

    /// The bits directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Checks the required files and returns a short identity of the whole tree (the
    /// first 16 hex digits of a sha256 over every path, type, mode and content, in
    /// order): images built with other bits are other store entries. Blocking.
    pub fn identity(&self) -> Result<String, GuestBitsError> {
        for f in REQUIRED {
            let p = self.dir.join(f);
            if !p.is_file() {
                return Err(GuestBitsError::Missing {
                    dir: self.dir.clone(),
                    message: format!("{f} is missing"),
                });
            }
        }
        let mut h = Sha256::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let dir = self.dir.join(&rel);
            let mut names: Vec<_> = fs::read_dir(&dir)
                .map_err(io_err("read", &dir))?
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .collect();
            names.sort();
            for name in names.into_iter().rev() {
                let rel = rel.join(&name);
                let path = self.dir.join(&rel);
                let m = fs::symlink_metadata(&path).map_err(io_err("inspect", &path))?;
                h.update(rel.as_os_str().as_encoded_bytes());
                h.update(m.mode().to_le_bytes());
                if m.file_type().is_symlink() {
                    let t = fs::read_link(&path).map_err(io_err("read link", &path))?;
                    h.update(t.as_os_str().as_encoded_bytes());
                } else if m.is_dir() {
                    stack.push(rel);
                } else if m.is_file() {
                    let mut f = fs::File::open(&path).map_err(io_err("open", &path))?;
                    let mut buf = vec![0u8; 1 << 16];
                    loop {
                        let n = f.read(&mut buf).map_err(io_err("read", &path))?;
                        if n == 0 {
                            break;
                        }
                        h.update(&buf[..n]);
                    }
                }
            }
        }
        Ok(hex::encode(&h.finalize()[..8]))
    }

    /// Examines the unpacked image at `tree`, then copies the bits into
    /// `tree/.banger` (replacing whatever the image had there) with `image.env`, and
    /// makes the mount points banger's init needs. Blocking. See the module docs.
    pub fn inject(&self, tree: &Path) -> Result<GuestReport, GuestBitsError> {
        self.identity()?;
        let report = examine(tree)?;
        let target = tree.join(GUEST_DIR);
        match fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => {
                fs::remove_dir_all(&target).map_err(io_err("remove", &target))?
            }
            Ok(_) => fs::remove_file(&target).map_err(io_err("remove", &target))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("inspect", &target)(e)),
        }
        copy_tree(&self.dir, &target)?;
        let env = format!(
            "# Written by banger when it built this image: what banger's init knows of it.\nBANGER_IMAGE_INIT={}\nBANGER_START_SSH={}\nBANGER_LIBC={}\n",
            report.image_init.as_deref().unwrap_or(""),
            u8::from(report.banger_ssh),
            report.libc
        );
        let env_path = target.join("image.env");
        fs::write(&env_path, env).map_err(io_err("write", &env_path))?;
        for (dir, mode) in [
            ("proc", 0o555),
            ("sys", 0o555),
            ("dev", 0o755),
            ("run", 0o755),
            ("tmp", 0o1777),
            ("root", 0o700),
        ] {
            let p = tree.join(dir);
            match fs::symlink_metadata(&p) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&p).map_err(io_err("create", &p))?;
                    fs::set_permissions(&p, fs::Permissions::from_mode(mode))
                        .map_err(io_err("chmod", &p))?;
                }
                Err(e) => return Err(io_err("inspect", &p)(e)),
            }
        }
        Ok(report)
    }
}

/// What banger's init needs to know about an image (see the module docs).
pub fn examine(tree: &Path) -> Result<GuestReport, GuestBitsError> {
    let passwd = tree.join("etc/passwd");
    let shell = match resolve_in(tree, Path::new("etc/passwd")) {
        Some(p) => root_shell(&fs::read_to_string(&p).map_err(io_err("read", &passwd))?),
        None => None,
    };
    let Some(shell) = shell else {
        return Err(GuestBitsError::Unsupported(
            "/etc/passwd has no `root` entry: banger logs in as root (exec, ssh, workspaces)"
                .into(),
        ));
    };
    if !resolve_in(tree, Path::new(&shell)).is_some_and(|p| is_executable(&p)) {
        return Err(GuestBitsError::Unsupported(format!(
            "root's login shell {shell} (from /etc/passwd) is not an executable in the image: banger runs commands through it"
        )));
    }
    let image_init = ["sbin/init", "usr/sbin/init"]
        .iter()
        .find(|p| resolve_in(tree, Path::new(p)).is_some_and(|f| is_executable(&f)))
        .map(|p| format!("/{p}"));
    let has_sshd = ["usr/sbin/sshd", "usr/sbin/dropbear", "sbin/sshd"]
        .iter()
        .any(|p| resolve_in(tree, Path::new(p)).is_some_and(|f| is_executable(&f)));
    let libc = if [
        "lib64/ld-linux-x86-64.so.2",
        "lib/x86_64-linux-gnu/libc.so.6",
        "usr/lib/x86_64-linux-gnu/libc.so.6",
        "lib/libc.so.6",
        "usr/lib/libc.so.6",
    ]
    .iter()
    .any(|p| resolve_in(tree, Path::new(p)).is_some())
    {
        "glibc"
    } else if resolve_in(tree, Path::new("lib/ld-musl-x86_64.so.1")).is_some() {
        "musl"
    } else {
        "none"
    };
    Ok(GuestReport {
        banger_ssh: image_init.is_none() || !has_sshd,
        image_init,
        libc: libc.into(),
    })
}

/// root's shell from an `/etc/passwd` text (`/bin/sh` when the field is empty).
fn root_shell(passwd: &str) -> Option<String> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 7 && fields[0] == "root").then(|| {
            let shell = fields[6].trim();
            if shell.is_empty() {
                "/bin/sh".to_string()
            } else {
                shell.to_string()
            }
        })
    })
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
}

/// Resolves `rel` inside the image tree as the guest would: symlinks (absolute ones
/// re-rooted at `tree`, `..` never above it) followed up to [`MAX_SYMLINKS`] times.
/// Returns the host path of an existing final component, never leaving `tree`.
pub fn resolve_in(tree: &Path, rel: &Path) -> Option<PathBuf> {
    let mut pending: Vec<std::ffi::OsString> = rel
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut current: Vec<std::ffi::OsString> = Vec::new();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            current.pop();
            continue;
        }
        let mut candidate = tree.to_path_buf();
        candidate.extend(current.iter());
        candidate.push(&part);
        let meta = fs::symlink_metadata(&candidate).ok()?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > MAX_SYMLINKS {
                return None;
            }
            let target = fs::read_link(&candidate).ok()?;
            if target.is_absolute() {
                current.clear();
            }
            for c in target.components().rev() {
                match c {
                    Component::Normal(n) => pending.push(n.to_os_string()),
                    Component::ParentDir => pending.push("..".into()),
                    _ => {}
                }
            }
        } else {
            current.push(part);
        }
    }
    let mut out = tree.to_path_buf();
    out.extend(current.iter());
    fs::symlink_metadata(&out).ok().map(|_| out)
}

/// Copies a trusted tree (the bits) to `to` (which must not exist): directories,
/// regular files with their modes, symlinks as symlinks; everything owned by root.
fn copy_tree(from: &Path, to: &Path) -> Result<(), GuestBitsError> {
    fs::create_dir(to).map_err(io_err("create", to))?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o755)).map_err(io_err("chmod", to))?;
    for entry in fs::read_dir(from).map_err(io_err("read", from))? {
        let entry = entry.map_err(io_err("read", from))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let m = fs::symlink_metadata(&src).map_err(io_err("inspect", &src))?;
        if m.file_type().is_symlink() {
            let t = fs::read_link(&src).map_err(io_err("read link", &src))?;
            std::os::unix::fs::symlink(&t, &dst).map_err(io_err("symlink", &dst))?;
        } else if m.is_dir() {
            copy_tree(&src, &dst)?;
        } else if m.is_file() {
            fs::copy(&src, &dst).map_err(io_err("copy", &dst))?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(m.mode() & 0o755))
                .map_err(io_err("chmod", &dst))?;
        }
        let _ = std::os::unix::fs::lchown(&dst, Some(0), Some(0));
    }
    let _ = std::os::unix::fs::lchown(to, Some(0), Some(0));
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn exe(path: &Path) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, b"#!/bin/true\n").unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A usr-merged Debian-like tree: `/bin -> usr/bin`, `/sbin -> usr/sbin`.
    fn debian_like(root: &Path) {
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::create_dir_all(root.join("usr/sbin")).unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        symlink("usr/bin", root.join("bin")).unwrap();
        symlink("usr/sbin", root.join("sbin")).unwrap();
        exe(&root.join("usr/bin/bash"));
        fs::create_dir_all(root.join("usr/lib/x86_64-linux-gnu")).unwrap();
        fs::write(root.join("usr/lib/x86_64-linux-gnu/libc.so.6"), b"").unwrap();
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/:/usr/sbin/nologin\n",
        )
        .unwrap();
    }

    #[test]
    fn paths_resolve_inside_the_image_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        debian_like(root);
        assert_eq!(
            resolve_in(root, Path::new("bin/bash")),
            Some(root.join("usr/bin/bash"))
        );
        // An absolute symlink is re-rooted; `..` never climbs above the image root.
        symlink("/usr/bin/bash", root.join("usr/bin/sh")).unwrap();
        assert_eq!(
            resolve_in(root, Path::new("/bin/sh")),
            Some(root.join("usr/bin/bash"))
        );
        symlink("../../../../etc/shadow", root.join("usr/bin/escape")).unwrap();
        assert_eq!(resolve_in(root, Path::new("bin/escape")), None);
        symlink("loop", root.join("loop")).unwrap();
        assert_eq!(resolve_in(root, Path::new("loop")), None);
    }

    #[test]
    fn images_are_examined_for_init_ssh_and_libc() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        debian_like(root);
        let r = examine(root).unwrap();
        assert_eq!(
            r,
            GuestReport {
                image_init: None,
                banger_ssh: true,
                libc: "glibc".into()
            }
        );
        // systemd-style init: kept; without sshd banger still brings its own.
        exe(&root.join("usr/lib/systemd/systemd"));
        symlink("/usr/lib/systemd/systemd", root.join("usr/sbin/init")).unwrap();
        let r = examine(root).unwrap();
        assert_eq!(r.image_init.as_deref(), Some("/sbin/init"));
        assert!(r.banger_ssh);
        exe(&root.join("usr/sbin/sshd"));
        assert!(
            !examine(root).unwrap().banger_ssh,
            "the image's init starts its sshd"
        );
    }

    #[test]
    fn images_without_a_root_shell_are_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let err = examine(root).unwrap_err().to_string();
        assert!(err.contains("no `root` entry"), "{err}");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/zsh\n").unwrap();
        let err = examine(root).unwrap_err().to_string();
        assert!(
            err.contains("/bin/zsh") && err.starts_with("unsupported image"),
            "{err}"
        );
        exe(&root.join("bin/zsh"));
        fs::create_dir_all(root.join("lib")).unwrap();
        fs::write(root.join("lib/ld-musl-x86_64.so.1"), b"").unwrap();
        assert_eq!(examine(root).unwrap().libc, "musl");
    }

    #[test]
    fn bits_are_copied_under_their_own_directory() {
        let dir = tempfile::tempdir().unwrap();
        let bits = dir.path().join("bits");
        for f in REQUIRED {
            exe(&bits.join(f));
        }
        symlink("busybox", bits.join("bin/sh")).unwrap();
        let tree = dir.path().join("tree");
        debian_like(&tree);
        // Whatever the image had at /.banger is replaced.
        fs::create_dir_all(tree.join(".banger/old")).unwrap();
        let g = GuestBits::at(&bits);
        let id = g.identity().unwrap();
        assert_eq!(id.len(), 16);
        let report = g.inject(&tree).unwrap();
        assert!(report.banger_ssh);
        assert!(!tree.join(".banger/old").exists());
        assert_eq!(
            fs::read_link(tree.join(".banger/bin/sh")).unwrap(),
            Path::new("busybox")
        );
        let env = fs::read_to_string(tree.join(".banger/image.env")).unwrap();
        assert!(
            env.contains("BANGER_IMAGE_INIT=\n") && env.contains("BANGER_START_SSH=1"),
            "{env}"
        );
        for d in ["proc", "sys", "dev", "run", "tmp", "root"] {
            assert!(tree.join(d).is_dir(), "{d}");
        }
        // Other bits, another identity.
        fs::write(bits.join("init"), b"#!/bin/sh\n# v2\n").unwrap();
        assert_ne!(g.identity().unwrap(), id);
        fs::remove_file(bits.join("sbin/dropbear")).unwrap();
        assert!(matches!(g.identity(), Err(GuestBitsError::Missing { .. })));
    }
}
