//! Firecracker through its jailer: the jailer's command line, and the jail banger
//! prepares for it.
//!
//! When a jailer binary is configured (`banger daemon --jailer-bin`) or found beside
//! the Firecracker binary (a file named `jailer` in the same directory), the driver
//! starts `jailer` instead of `firecracker`, with the command line Firecracker's
//! `docs/jailer.md` documents ([`jailer_argv`]):
//!
//! ```text
//! jailer --id banger-<uid> --exec-file <firecracker> --uid <vmm uid> --gid <vmm gid>
//!        --chroot-base-dir <state>/jail
//!        --parent-cgroup banger/<key> --cgroup-version 1|2
//!        --cgroup memory.limit_in_bytes=<bytes> (v2: memory.max=…) --cgroup pids.max=<n>
//!        -- --api-sock /api.sock
//! ```
//!
//! The jailer makes the VM's cgroup at the same place banger does for QEMU
//! (`banger/<key>/banger-<uid>`, [`crate::host::cgroup`]; banger makes it first so that
//! cgroup v2's controllers are enabled down the path), copies Firecracker into the jail
//! `<chroot base>/<exec file name>/<id>/root`, pivots into it, makes `/dev/kvm` and
//! `/dev/net/tun` there, drops to the VMM user and execs Firecracker, which then sees only
//! the jail. No `--daemonize`: banger already starts it in a session of its own
//! ([`crate::host::process::spawn_detached`], which the jailer's `setsid` would refuse),
//! and Firecracker's standard output stays the guest's console log. No `--new-pid-ns`:
//! the pid banger records is Firecracker's own.
//!
//! Before the jailer runs, banger prepares the jail's root ([`prepare_jail`]): the VM's
//! root disk is hard-linked in (the same file, not a copy, so the jail root must be on
//! the state directory's filesystem) and given to the VMM user (0600), the kernel and
//! initrd are hard-linked when the VMM user may read them and copied for it (0400)
//! otherwise, and Firecracker's log file is created for it. Paths in the API calls are
//! then the jail's (`/vmlinux`, `/rootfs.ext4`, `/firecracker.log`: [`jailed_spec`]).
//! After the VMM has exited, [`remove_jail`] gives the disk back to root and removes the
//! jail.

use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::driver::LaunchSpec;
use crate::host::vmm_user::VmmUser;

/// The jailer's name, looked for beside the Firecracker binary.
pub const JAILER_BINARY: &str = "jailer";
/// The jailer's chroot base when none is configured (its documented default).
pub const DEFAULT_CHROOT_BASE: &str = "/srv/jailer";
/// The API socket inside the jail (`--api-sock`, after the jailer's `--`).
pub const JAILED_API_SOCKET: &str = "api.sock";
/// Firecracker's log inside the jail.
pub const JAILED_LOG: &str = "firecracker.log";
/// The kernel, initrd and root disk inside the jail.
pub const JAILED_KERNEL: &str = "vmlinux";
/// See [`JAILED_KERNEL`].
pub const JAILED_INITRD: &str = "initrd";
/// See [`JAILED_KERNEL`].
pub const JAILED_ROOT_DISK: &str = "rootfs.ext4";

/// A jailer and where it builds its jails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jailer {
    /// The jailer binary.
    pub binary: PathBuf,
    /// `--chroot-base-dir`: banger gives `<state>/jail`.
    pub chroot_base: PathBuf,
}

/// One VM's jail: `<chroot base>/<exec file name>/<id>` and its `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jail {
    /// `<chroot base>/<exec file name>/<id>`: outside the chroot, root's only; the driver
    /// keeps its launch record here, where the jailed Firecracker cannot write.
    pub instance_dir: PathBuf,
    /// `<instance dir>/root`: what Firecracker sees as `/`.
    pub root: PathBuf,
}

impl Jail {
    /// The jail the jailer builds for Firecracker `exec_file` and instance `id` below
    /// `chroot_base`. The jailer requires `firecracker` in the exec file's name.
    pub fn new(chroot_base: &Path, exec_file: &Path, id: &str) -> Result<Jail, String> {
        let name = exec_file
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.contains("firecracker"))
            .ok_or_else(|| {
                format!(
                    "the jailer runs only a binary whose file name contains `firecracker`, not {}",
                    exec_file.display()
                )
            })?;
        let instance_dir = chroot_base.join(name).join(id);
        Ok(Jail {
            root: instance_dir.join("root"),
            instance_dir,
        })
    }

    /// The API socket, as the host sees it.
    pub fn api_socket(&self) -> PathBuf {
        self.root.join(JAILED_API_SOCKET)
    }

    /// Firecracker's log, as the host sees it.
    pub fn log(&self) -> PathBuf {
        self.root.join(JAILED_LOG)
    }

    /// The jail of the instance whose API socket is `socket` (as [`Self::api_socket`]
    /// made it), if it is one.
    pub fn of_api_socket(socket: &Path) -> Option<Jail> {
        if socket.file_name()? != JAILED_API_SOCKET {
            return None;
        }
        let root = socket.parent()?;
        Some(Jail {
            instance_dir: root.parent()?.to_path_buf(),
            root: root.to_path_buf(),
        })
    }
}

/// The jailer's command line (after the program) for instance `id` of `exec_file`,
/// running as `user`, with the VM's cgroup arguments `cgroup_args`
/// ([`crate::host::cgroup::VmCgroup::jailer_args`]). Pure.
pub fn jailer_argv(
    id: &str,
    exec_file: &Path,
    user: &VmmUser,
    chroot_base: &Path,
    cgroup_args: &[String],
) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec![
        "--id".into(),
        id.into(),
        "--exec-file".into(),
        exec_file.as_os_str().to_owned(),
        "--uid".into(),
        user.uid.to_string().into(),
        "--gid".into(),
        user.gid.to_string().into(),
        "--chroot-base-dir".into(),
        chroot_base.as_os_str().to_owned(),
    ];
    argv.extend(cgroup_args.iter().map(OsString::from));
    argv.push("--".into());
    argv.push("--api-sock".into());
    argv.push(format!("/{JAILED_API_SOCKET}").into());
    argv
}

/// `spec` as the jailed Firecracker sees its files: the kernel, initrd and root disk at
/// the jail's root. Pure.
pub fn jailed_spec(spec: &LaunchSpec) -> LaunchSpec {
    LaunchSpec {
        kernel: Path::new("/").join(JAILED_KERNEL),
        initrd: spec
            .initrd
            .as_ref()
            .map(|_| Path::new("/").join(JAILED_INITRD)),
        root_disk: Path::new("/").join(JAILED_ROOT_DISK),
        ..spec.clone()
    }
}

/// Firecracker's log path inside the jail, for the logger call.
pub fn jailed_log() -> PathBuf {
    Path::new("/").join(JAILED_LOG)
}

/// The jailer to use with Firecracker `firecracker` (resolved): `explicit` when given
/// (it must be an executable file), else a `jailer` beside Firecracker, else none.
/// Blocking (a few `stat`s).
pub fn find_jailer(
    firecracker: Option<&Path>,
    explicit: Option<&Path>,
) -> Result<Option<PathBuf>, String> {
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if let Some(path) = explicit {
        return if executable(path) {
            Ok(Some(path.to_path_buf()))
        } else {
            Err(format!("jailer {}: not an executable file", path.display()))
        };
    }
    Ok(firecracker
        .and_then(Path::parent)
        .map(|dir| dir.join(JAILER_BINARY))
        .filter(|p| executable(p)))
}

/// Readies the jail of `spec` for the VMM user (blocking; see the module docs). A jail
/// left by an earlier launch is removed first (the caller has checked that no
/// Firecracker still serves it).
pub fn prepare_jail(jail: &Jail, spec: &LaunchSpec, user: &VmmUser) -> Result<(), String> {
    remove_jail(jail)?;
    std::fs::create_dir_all(&jail.root)
        .map_err(|e| format!("create {}: {e}", jail.root.display()))?;
    std::fs::set_permissions(&jail.instance_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("chmod {}: {e}", jail.instance_dir.display()))?;
    let disk = jail.root.join(JAILED_ROOT_DISK);
    std::fs::hard_link(&spec.root_disk, &disk).map_err(|e| {
        format!(
            "hard-link the root disk {} into the jail {}: {e} (the jail and the VM directory must be on one filesystem)",
            spec.root_disk.display(),
            jail.root.display()
        )
    })?;
    give(&disk, user, 0o600)?;
    bring_readable(&spec.kernel, &jail.root.join(JAILED_KERNEL), user)?;
    if let Some(initrd) = &spec.initrd {
        bring_readable(initrd, &jail.root.join(JAILED_INITRD), user)?;
    }
    let log = jail.log();
    std::fs::OpenOptions::new()
        .create_new(true)
        .append(true)
        .mode(0o600)
        .open(&log)
        .map_err(|e| format!("create {}: {e}", log.display()))?;
    give(&log, user, 0o600)
}

/// Removes a jail (blocking, idempotent): the root disk's link is given back to root
/// first, since it is the VM's own disk.
pub fn remove_jail(jail: &Jail) -> Result<(), String> {
    let disk = jail.root.join(JAILED_ROOT_DISK);
    match std::fs::symlink_metadata(&disk) {
        Ok(meta) if meta.is_file() => {
            std::os::unix::fs::lchown(&disk, Some(0), Some(0))
                .map_err(|e| format!("give {} back to root: {e}", disk.display()))?;
        }
        _ => {}
    }
    match std::fs::remove_dir_all(&jail.instance_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("remove {}: {e}", jail.instance_dir.display())),
    }
}

/// Hands `path` to the VMM user with `mode`.
fn give(path: &Path, user: &VmmUser, mode: u32) -> Result<(), String> {
    std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid))
        .map_err(|e| format!("chown {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

/// Puts a read-only input (kernel, initrd) at `to` for the VMM user: a hard link when it
/// may read the file and one can be made, else a copy it owns (0400). The original is
/// never changed.
fn bring_readable(from: &Path, to: &Path, user: &VmmUser) -> Result<(), String> {
    let meta = std::fs::metadata(from).map_err(|e| format!("{}: {e}", from.display()))?;
    if user.can_read(meta.uid(), meta.gid(), meta.mode()) && std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to).map_err(|e| format!("copy {} into the jail: {e}", from.display()))?;
    give(to, user, 0o400)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn user() -> VmmUser {
        VmmUser {
            name: "banger-vmm".into(),
            uid: 998,
            gid: 997,
        }
    }

    #[test]
    fn the_command_line_is_the_documented_one() {
        let args = vec![
            "--parent-cgroup".to_owned(),
            "banger/0123456789ab".to_owned(),
            "--cgroup-version".to_owned(),
            "1".to_owned(),
            "--cgroup".to_owned(),
            "memory.limit_in_bytes=805306368".to_owned(),
            "--cgroup".to_owned(),
            "pids.max=130".to_owned(),
        ];
        let argv = jailer_argv(
            "banger-7d1e0c52",
            Path::new("/usr/bin/firecracker"),
            &user(),
            Path::new("/var/lib/banger/jail"),
            &args,
        );
        let text: Vec<&str> = argv.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            text,
            [
                "--id",
                "banger-7d1e0c52",
                "--exec-file",
                "/usr/bin/firecracker",
                "--uid",
                "998",
                "--gid",
                "997",
                "--chroot-base-dir",
                "/var/lib/banger/jail",
                "--parent-cgroup",
                "banger/0123456789ab",
                "--cgroup-version",
                "1",
                "--cgroup",
                "memory.limit_in_bytes=805306368",
                "--cgroup",
                "pids.max=130",
                "--",
                "--api-sock",
                "/api.sock",
            ]
        );
        // What the documentation forbids or banger does not want: no --daemonize (the
        // driver starts it in its own session), no --new-pid-ns (the pid is recorded).
        assert!(!text.contains(&"--daemonize") && !text.contains(&"--new-pid-ns"));
    }

    #[test]
    fn the_jail_is_where_the_jailer_builds_it() {
        let jail = Jail::new(
            Path::new("/var/lib/banger/jail"),
            Path::new("/opt/fc/firecracker-v1.9.0-x86_64"),
            "banger-ab",
        )
        .unwrap();
        assert_eq!(
            jail.root,
            Path::new("/var/lib/banger/jail/firecracker-v1.9.0-x86_64/banger-ab/root")
        );
        assert_eq!(
            jail.api_socket(),
            Path::new("/var/lib/banger/jail/firecracker-v1.9.0-x86_64/banger-ab/root/api.sock")
        );
        assert_eq!(Jail::of_api_socket(&jail.api_socket()), Some(jail.clone()));
        assert_eq!(
            Jail::of_api_socket(Path::new("/vms/a/firecracker.sock")),
            None
        );
        let err = Jail::new(Path::new("/j"), Path::new("/usr/bin/vmm"), "x").unwrap_err();
        assert!(err.contains("`firecracker`"), "{err}");
    }

    #[test]
    fn the_jailed_firecracker_sees_jail_paths() {
        let spec = LaunchSpec {
            uid: "ab".into(),
            name: "web".into(),
            vcpus: 1,
            memory_mib: 256,
            kernel: "/images/vmlinux".into(),
            initrd: Some("/images/initrd.img".into()),
            cmdline: "console=ttyS0".into(),
            root_disk: "/state/vms/ab/rootfs.ext4".into(),
            tap: Some("bgt0123".into()),
            mac: "02:00:00:00:00:01".into(),
            vm_dir: "/state/vms/ab".into(),
            console_log: "/state/vms/ab/console.log".into(),
            confinement: crate::testutil::test_confinement(),
        };
        let jailed = jailed_spec(&spec);
        assert_eq!(jailed.kernel, Path::new("/vmlinux"));
        assert_eq!(jailed.initrd.as_deref(), Some(Path::new("/initrd")));
        assert_eq!(jailed.root_disk, Path::new("/rootfs.ext4"));
        assert_eq!(
            jailed.console_log, spec.console_log,
            "the console stays the host's"
        );
        assert_eq!(jailed_log(), Path::new("/firecracker.log"));
    }

    #[test]
    fn a_jailer_is_found_beside_firecracker_or_given() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fc = dir.path().join("firecracker");
        std::fs::write(&fc, b"").unwrap();
        assert_eq!(find_jailer(Some(&fc), None), Ok(None));
        let jailer = dir.path().join("jailer");
        std::fs::write(&jailer, b"").unwrap();
        assert_eq!(find_jailer(Some(&fc), None), Ok(None), "not executable");
        std::fs::set_permissions(&jailer, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_jailer(Some(&fc), None), Ok(Some(jailer.clone())));
        assert_eq!(find_jailer(None, None), Ok(None));
        assert_eq!(find_jailer(None, Some(&jailer)), Ok(Some(jailer.clone())));
        let err = find_jailer(Some(&fc), Some(&dir.path().join("nope"))).unwrap_err();
        assert!(err.contains("not an executable file"), "{err}");
    }
}
