//! Per-VM cgroups: one cgroup per VMM, with a memory limit and a pids limit, on cgroup
//! v2 where the host gives v2 its controllers and on the v1 hierarchies otherwise.
//!
//! # Where a VM's cgroup is
//! Below the root of each hierarchy banger uses, at `banger/<daemon key>/banger-<uid>`:
//!
//! - `banger/<daemon key>` is the daemon's own parent ([`daemon_parent`]): the key is
//!   derived from the daemon's state directory, so several daemons on one host (each
//!   with its own state directory) never take each other's cgroups for garbage;
//! - `banger-<uid>` is the VM's uid marker ([`crate::host::process::uid_marker`]), the
//!   name its VMM carries on its command line, and the id Firecracker's jailer names
//!   its own cgroup after.
//!
//! On cgroup v2 that is one directory (`/sys/fs/cgroup/banger/<key>/banger-<uid>`), with
//! the `memory` and `pids` controllers enabled down the path; on v1 it is one directory
//! in the memory hierarchy and one in the pids hierarchy (the same one when they are
//! mounted together).
//!
//! # Which version
//! [`CgroupLayout::detect`] reads `/proc/self/mountinfo`: cgroup v2 is used when a
//! `cgroup2` mount lists both `memory` and `pids` in its `cgroup.controllers`, else the
//! v1 hierarchies that carry `memory` and `pids`. A host with neither cannot confine
//! VMMs, and says so ([`CgroupError::NoControllers`]). Hosts of the kind banger is
//! developed on mount the v1 hierarchies and an empty v2 tree, so they use v1.
//!
//! # Limits
//! [`CgroupLimits::for_vm`]: memory is the guest's memory plus [`MEMORY_OVERHEAD_MIB`]
//! (what QEMU or Firecracker itself needs: code, libraries, device state, I/O buffers)
//! plus, under TCG, the translation cache the driver gives QEMU; a VMM that goes beyond
//! is killed by the kernel's OOM killer, and its restart policy applies. The pids limit
//! is [`PIDS_BASE`] plus one per vCPU: QEMU's main loop, RCU and vCPU threads and its
//! pool of at most 64 I/O workers fit; a VMM cannot fork (its seccomp filter forbids
//! it), so the limit bounds threads.
//!
//! # How a VMM gets in
//! A VMM is spawned into its cgroup: the child writes `0` (itself) to each file of
//! [`VmCgroup::join_files`] (`tasks` on v1, `cgroup.procs` on v2) between fork and exec
//! ([`crate::host::process::spawn_detached`]), so no instruction of the VMM runs outside
//! it. Firecracker's jailer instead creates its cgroup itself, at the same path, from
//! the arguments [`VmCgroup::jailer_args`] gives it.
//!
//! Everything here that touches the filesystem is blocking: call it on the blocking
//! pool. The path and limit computations are pure.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::host::names::ObjectUid;
use crate::host::process::uid_marker;

/// Name of the cgroup below each hierarchy's root that holds every banger daemon's.
pub const CGROUP_ROOT_NAME: &str = "banger";
/// What a VMM needs besides its guest's memory, in MiB: its code and libraries, device
/// state and I/O buffers (a QEMU `microvm` guest with one disk and one NIC peaks well
/// below this; see `docs/security.md`).
pub const MEMORY_OVERHEAD_MIB: u64 = 256;
/// Processes (threads) a VMM may have besides one per vCPU.
pub const PIDS_BASE: u64 = 128;

const HEX_KEY_LEN: usize = 12;
/// How often [`VmCgroup::ensure`] starts over when a parent vanished under it.
const ENSURE_ATTEMPTS: u32 = 3;

/// Why cgroups could not be detected or used.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup v2 mount with `memory` and `pids`, and no v1 hierarchies with them.
    #[error("no cgroup hierarchy offers the memory and pids controllers ({found}); VMMs cannot be confined (is /sys/fs/cgroup mounted where the daemon runs? `ip netns exec` hides it: join a namespace with `nsenter --net=` instead)")]
    NoControllers {
        /// What was found instead.
        found: String,
    },
    /// A cgroup file could not be read or written, or a directory made or removed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What banger was doing (`create`, `write`, `remove`, …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The cgroup still holds processes, so it cannot be removed.
    #[error("{path} still holds processes {pids:?}")]
    Busy {
        /// The cgroup directory.
        path: PathBuf,
        /// The processes in it.
        pids: Vec<i32>,
    },
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// One cgroup mount as `/proc/self/mountinfo` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// `None` for cgroup v2; the controllers of a v1 hierarchy (from its super options).
    pub v1_controllers: Option<Vec<String>>,
}

/// Parses the cgroup mounts out of `/proc/self/mountinfo` text. Pure.
///
/// A line is `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL…] - FSTYPE SOURCE
/// SUPER_OPTIONS`; octal escapes (`\040` for a space) in the mount point are decoded.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let mount_point = before.split(' ').nth(4)?;
            let mut after = after.split(' ');
            let fstype = after.next()?;
            let _source = after.next()?;
            let super_options = after.next().unwrap_or("");
            let v1_controllers = match fstype {
                "cgroup2" => None,
                "cgroup" => Some(
                    super_options
                        .split(',')
                        .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains('='))
                        .map(str::to_owned)
                        .collect(),
                ),
                _ => return None,
            };
            Some(CgroupMount {
                mount_point: PathBuf::from(unescape_octal(mount_point)),
                v1_controllers,
            })
        })
        .collect()
}

/// Decodes the `\NNN` octal escapes the kernel writes in mountinfo paths.
fn unescape_octal(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match escape {
            Some(d) => {
                let value = d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Which cgroup hierarchies hold banger's VMMs on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupLayout {
    /// cgroup v2: one tree, `memory` and `pids` enabled in it.
    V2 {
        /// Its mount point (usually `/sys/fs/cgroup`).
        root: PathBuf,
    },
    /// cgroup v1: the hierarchies carrying `memory` and `pids` (equal when co-mounted).
    V1 {
        /// The memory hierarchy's mount point.
        memory: PathBuf,
        /// The pids hierarchy's mount point.
        pids: PathBuf,
    },
}

impl CgroupLayout {
    /// Chooses the layout from the host's cgroup mounts and the `cgroup.controllers` text
    /// of each v2 mount (`v2_controllers(mount point)`, `None` when unreadable). Pure
    /// given the closure.
    pub fn choose(
        mounts: &[CgroupMount],
        v2_controllers: impl Fn(&Path) -> Option<String>,
    ) -> Result<CgroupLayout, CgroupError> {
        for mount in mounts.iter().filter(|m| m.v1_controllers.is_none()) {
            let listed = v2_controllers(&mount.mount_point).unwrap_or_default();
            let has = |c: &str| listed.split_whitespace().any(|l| l == c);
            if has("memory") && has("pids") {
                return Ok(CgroupLayout::V2 {
                    root: mount.mount_point.clone(),
                });
            }
        }
        let v1 = |controller: &str| {
            mounts
                .iter()
                .find(|m| {
                    m.v1_controllers
                        .as_ref()
                        .is_some_and(|cs| cs.iter().any(|c| c == controller))
                })
                .map(|m| m.mount_point.clone())
        };
        if let (Some(memory), Some(pids)) = (v1("memory"), v1("pids")) {
            return Ok(CgroupLayout::V1 { memory, pids });
        }
        let found = if mounts.is_empty() {
            "no cgroup mounts".to_owned()
        } else {
            mounts
                .iter()
                .map(|m| match &m.v1_controllers {
                    None => format!("v2 at {}", m.mount_point.display()),
                    Some(cs) => format!("v1 {} at {}", cs.join(","), m.mount_point.display()),
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        Err(CgroupError::NoControllers { found })
    }

    /// Detects the layout of this host (blocking: reads `/proc/self/mountinfo` and the
    /// v2 `cgroup.controllers`).
    pub fn detect() -> Result<CgroupLayout, CgroupError> {
        let path = Path::new("/proc/self/mountinfo");
        let text = std::fs::read_to_string(path).map_err(io_err("read", path))?;
        CgroupLayout::choose(&parse_mountinfo(&text), |root| {
            std::fs::read_to_string(root.join("cgroup.controllers")).ok()
        })
    }

    /// `1` or `2`, as Firecracker's jailer takes it (`--cgroup-version`).
    pub fn version(&self) -> u8 {
        match self {
            CgroupLayout::V2 { .. } => 2,
            CgroupLayout::V1 { .. } => 1,
        }
    }

    /// The hierarchy roots in use, without duplicates.
    pub fn roots(&self) -> Vec<PathBuf> {
        match self {
            CgroupLayout::V2 { root } => vec![root.clone()],
            CgroupLayout::V1 { memory, pids } if memory == pids => vec![memory.clone()],
            CgroupLayout::V1 { memory, pids } => vec![memory.clone(), pids.clone()],
        }
    }

    /// The cgroup of VM `uid` for the daemon whose parent is `parent` ([`daemon_parent`]).
    pub fn vm_cgroup(&self, parent: &str, uid: &ObjectUid) -> VmCgroup {
        VmCgroup {
            layout: self.clone(),
            parent: parent.to_owned(),
            leaf: uid_marker(uid.as_str()),
        }
    }

    /// The daemon's parent directory in each hierarchy in use.
    pub fn parent_dirs(&self, parent: &str) -> Vec<PathBuf> {
        self.roots().into_iter().map(|r| r.join(parent)).collect()
    }
}

/// The parent of every VM cgroup of the daemon with this state directory:
/// `banger/<12 hex digits of SHA-256 of the state directory's path>`.
pub fn daemon_parent(state_dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let digest = Sha256::digest(state_dir.as_os_str().as_bytes());
    let key = hex::encode(&digest[..HEX_KEY_LEN / 2]);
    format!("{CGROUP_ROOT_NAME}/{key}")
}

/// The uid a VM cgroup's directory name ([`VmCgroup::leaf`]) belongs to, if it is one.
pub fn uid_of_leaf(name: &str) -> Option<ObjectUid> {
    name.strip_prefix(&uid_marker(""))
        .and_then(|uid| ObjectUid::parse(uid).ok())
}

/// The limits of one VM's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimits {
    /// Memory limit in bytes.
    pub memory_bytes: u64,
    /// Most processes (threads included) at once.
    pub pids: u64,
}

impl CgroupLimits {
    /// The limits of a VM with `memory_mib` of guest memory and `vcpus` vCPUs, whose VMM
    /// needs `extra_mib` beyond [`MEMORY_OVERHEAD_MIB`] (QEMU's translation cache under
    /// TCG). Pure.
    pub fn for_vm(memory_mib: u64, vcpus: u8, extra_mib: u64) -> CgroupLimits {
        let mib = memory_mib
            .saturating_add(MEMORY_OVERHEAD_MIB)
            .saturating_add(extra_mib);
        CgroupLimits {
            memory_bytes: mib.saturating_mul(1024 * 1024),
            pids: PIDS_BASE + u64::from(vcpus.max(1)),
        }
    }
}

/// One VM's cgroup: where it is in each hierarchy, and how to make, fill and remove it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmCgroup {
    layout: CgroupLayout,
    parent: String,
    leaf: String,
}

impl VmCgroup {
    /// The layout it lives in.
    pub fn layout(&self) -> &CgroupLayout {
        &self.layout
    }

    /// The daemon's parent (`banger/<key>`), relative to each hierarchy's root.
    pub fn parent(&self) -> &str {
        &self.parent
    }

    /// Its own directory name: `banger-<uid>`.
    pub fn leaf(&self) -> &str {
        &self.leaf
    }

    /// Its directory in each hierarchy in use.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.layout
            .parent_dirs(&self.parent)
            .into_iter()
            .map(|p| p.join(&self.leaf))
            .collect()
    }

    /// The files a process writes `0` into to join the cgroup, one per hierarchy:
    /// `cgroup.procs` on v2; `tasks` on v1, which moves the writing thread, so it is for
    /// a single-threaded process such as a child between fork and exec. Moving the
    /// calling thread spares the kernel's global threadgroup lock that a write to v1's
    /// `cgroup.procs` takes: its writer waits for an RCU grace period (5–8 ms on an
    /// idle host here, ~20 ms from fork to exec of a VMM while other steps run).
    pub fn join_files(&self) -> Vec<PathBuf> {
        let name = match self.layout {
            CgroupLayout::V2 { .. } => "cgroup.procs",
            CgroupLayout::V1 { .. } => "tasks",
        };
        self.dirs().into_iter().map(|d| d.join(name)).collect()
    }

    /// The `cgroup.procs` file of each hierarchy: the processes in the cgroup.
    fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// Each limit file and the value it gets. Pure.
    pub fn limit_writes(&self, limits: &CgroupLimits) -> Vec<(PathBuf, String)> {
        let rel = Path::new(&self.parent).join(&self.leaf);
        let memory = limits.memory_bytes.to_string();
        let pids = limits.pids.to_string();
        match &self.layout {
            CgroupLayout::V2 { root } => vec![
                (root.join(&rel).join("memory.max"), memory),
                (root.join(&rel).join("pids.max"), pids),
            ],
            CgroupLayout::V1 {
                memory: memory_root,
                pids: pids_root,
            } => vec![
                (memory_root.join(&rel).join("memory.limit_in_bytes"), memory),
                (pids_root.join(&rel).join("pids.max"), pids),
            ],
        }
    }

    /// The limits as Firecracker's jailer takes them: `--cgroup FILE=VALUE` pairs, plus
    /// `--parent-cgroup` and `--cgroup-version`. The jailer then makes this very cgroup
    /// (its `--id` is the uid marker, the cgroup's leaf). Pure.
    pub fn jailer_args(&self, limits: &CgroupLimits) -> Vec<String> {
        let mut args = vec![
            "--parent-cgroup".to_owned(),
            self.parent.clone(),
            "--cgroup-version".to_owned(),
            self.layout.version().to_string(),
        ];
        for (file, value) in self.limit_writes(limits) {
            if let Some(name) = file.file_name() {
                args.push("--cgroup".to_owned());
                args.push(format!("{}={value}", name.to_string_lossy()));
            }
        }
        args
    }

    /// Makes the cgroup exist with `limits` (idempotent; blocking). On v2 the `memory`
    /// and `pids` controllers are enabled from the root down to the daemon's parent.
    ///
    /// Removing a VM's cgroup also removes the parents it leaves empty ([`Self::remove`]),
    /// so another VM's removal may take a parent away halfway through: a step that finds
    /// a directory gone starts over, a bounded number of times.
    pub fn ensure(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        let mut attempt = 1;
        loop {
            match self.ensure_once(limits) {
                Err(CgroupError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound
                        && attempt < ENSURE_ATTEMPTS =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn ensure_once(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        if let CgroupLayout::V2 { root } = &self.layout {
            let mut dir = root.clone();
            enable_v2_controllers(&dir)?;
            for part in Path::new(&self.parent).components() {
                dir.push(part);
                make_dir(&dir)?;
                enable_v2_controllers(&dir)?;
            }
        }
        for dir in self.dirs() {
            make_dir(&dir)?;
        }
        for (file, value) in self.limit_writes(limits) {
            std::fs::write(&file, value.as_bytes()).map_err(io_err("write", &file))?;
        }
        Ok(())
    }

    /// The processes in the cgroup, in any hierarchy (blocking). Empty when it does not
    /// exist.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut pids = Vec::new();
        for file in self.procs_files() {
            match std::fs::read_to_string(&file) {
                Ok(text) => pids.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(CgroupError::Io {
                        action: "read",
                        path: file,
                        source,
                    })
                }
            }
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// Whether its directory exists in any hierarchy (blocking).
    pub fn exists(&self) -> bool {
        self.dirs().iter().any(|d| d.is_dir())
    }

    /// Removes the cgroup from every hierarchy (idempotent; blocking), then the daemon's
    /// parent and `banger` above it where they are left empty (another VM's cgroup keeps
    /// them). A cgroup that still holds processes is left alone: [`CgroupError::Busy`].
    pub fn remove(&self) -> Result<(), CgroupError> {
        let pids = self.pids()?;
        if !pids.is_empty() {
            return Err(CgroupError::Busy {
                path: self.dirs().into_iter().next().unwrap_or_default(),
                pids,
            });
        }
        for dir in self.dirs() {
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(CgroupError::Io {
                        action: "remove",
                        path: dir,
                        source,
                    })
                }
            }
        }
        for parent in self.layout.parent_dirs(&self.parent) {
            // Fails (busy, not empty) while another VM's cgroup is below: that is fine.
            let _ = std::fs::remove_dir(&parent);
            if let Some(banger) = parent.parent() {
                let _ = std::fs::remove_dir(banger);
            }
        }
        Ok(())
    }
}

/// The VM cgroups below the daemon's parent in any hierarchy, by uid (blocking): the
/// candidates for garbage collection. Entries not named like a VM cgroup are ignored.
pub fn list_vm_cgroups(layout: &CgroupLayout, parent: &str) -> Result<Vec<VmCgroup>, CgroupError> {
    let mut uids = std::collections::BTreeSet::new();
    for dir in layout.parent_dirs(parent) {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(CgroupError::Io {
                    action: "list",
                    path: dir,
                    source,
                })
            }
        };
        for entry in entries.flatten() {
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if let Some(uid) = entry.file_name().to_str().and_then(uid_of_leaf) {
                if is_dir {
                    uids.insert(uid);
                }
            }
        }
    }
    Ok(uids
        .iter()
        .map(|uid| layout.vm_cgroup(parent, uid))
        .collect())
}

fn make_dir(dir: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A missing parent (the first VM of this daemon): make the whole path.
            std::fs::create_dir_all(dir).map_err(io_err("create", dir))
        }
        Err(source) => Err(CgroupError::Io {
            action: "create",
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Enables `memory` and `pids` for the children of the v2 cgroup `dir` (idempotent).
fn enable_v2_controllers(dir: &Path) -> Result<(), CgroupError> {
    let file = dir.join("cgroup.subtree_control");
    let current = std::fs::read_to_string(&file).map_err(io_err("read", &file))?;
    let missing: Vec<&str> = ["memory", "pids"]
        .into_iter()
        .filter(|c| !current.split_whitespace().any(|have| have == *c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let text = missing
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    std::fs::write(&file, text.as_bytes()).map_err(io_err("write", &file))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The mounts of this machine kind: v1 hierarchies plus an empty v2 tree.
    const HYBRID: &str = "\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 24 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
34 31 0:30 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
35 31 0:31 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
36 31 0:32 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const PURE_V2: &str = "\
29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    fn uid() -> ObjectUid {
        ObjectUid::parse("0b6d8f1e-4a2c-4f7e-9d51-3c2a1b0e9f88").unwrap()
    }

    #[test]
    fn parses_cgroup_mounts_only() {
        let mounts = parse_mountinfo(HYBRID);
        assert_eq!(mounts.len(), 5, "{mounts:?}");
        assert_eq!(
            mounts[1].mount_point,
            PathBuf::from("/sys/fs/cgroup/memory")
        );
        assert_eq!(mounts[1].v1_controllers, Some(vec!["memory".to_owned()]));
        assert_eq!(
            mounts[3].v1_controllers,
            Some(Vec::new()),
            "name= is no controller"
        );
        assert_eq!(mounts[4].v1_controllers, None);
        let escaped = "1 2 0:3 / /a\\040b rw - cgroup cgroup rw,cpu,cpuacct\n";
        let mounts = parse_mountinfo(escaped);
        assert_eq!(mounts[0].mount_point, PathBuf::from("/a b"));
        assert_eq!(
            mounts[0].v1_controllers,
            Some(vec!["cpu".to_owned(), "cpuacct".to_owned()])
        );
        assert!(parse_mountinfo("garbage\n\n").is_empty());
    }

    #[test]
    fn uses_v1_when_v2_has_no_controllers() {
        let mounts = parse_mountinfo(HYBRID);
        let layout = CgroupLayout::choose(&mounts, |_| Some("hugetlb\n".into())).unwrap();
        assert_eq!(
            layout,
            CgroupLayout::V1 {
                memory: "/sys/fs/cgroup/memory".into(),
                pids: "/sys/fs/cgroup/pids".into()
            }
        );
        assert_eq!(layout.version(), 1);
    }

    #[test]
    fn uses_v2_when_it_has_memory_and_pids() {
        let mounts = parse_mountinfo(PURE_V2);
        let layout = CgroupLayout::choose(&mounts, |_| {
            Some("cpuset cpu io memory hugetlb pids\n".into())
        })
        .unwrap();
        assert_eq!(
            layout,
            CgroupLayout::V2 {
                root: "/sys/fs/cgroup".into()
            }
        );
        assert_eq!(layout.version(), 2);
        // The same host with v2 holding only some controllers, and no v1: refused.
        let err = CgroupLayout::choose(&mounts, |_| Some("cpu memory".into())).unwrap_err();
        assert!(err.to_string().contains("v2 at /sys/fs/cgroup"), "{err}");
        let err = CgroupLayout::choose(&[], |_| None).unwrap_err();
        assert!(err.to_string().contains("no cgroup mounts"), "{err}");
    }

    #[test]
    fn co_mounted_v1_controllers_share_one_directory() {
        let text = "1 2 0:3 / /cg rw - cgroup cgroup rw,memory,pids\n";
        let layout = CgroupLayout::choose(&parse_mountinfo(text), |_| None).unwrap();
        assert_eq!(layout.roots(), vec![PathBuf::from("/cg")]);
        let cgroup = layout.vm_cgroup("banger/k", &uid());
        assert_eq!(cgroup.dirs().len(), 1);
        assert_eq!(cgroup.join_files().len(), 1);
    }

    #[test]
    fn a_vm_cgroup_is_named_from_the_daemon_and_the_uid() {
        let parent = daemon_parent(Path::new("/var/lib/banger"));
        assert!(parent.starts_with("banger/"), "{parent}");
        assert_eq!(parent.len(), "banger/".len() + 12);
        assert_ne!(parent, daemon_parent(Path::new("/var/lib/banger2")));
        let layout = CgroupLayout::V1 {
            memory: "/sys/fs/cgroup/memory".into(),
            pids: "/sys/fs/cgroup/pids".into(),
        };
        let cgroup = layout.vm_cgroup("banger/abc", &uid());
        assert_eq!(cgroup.leaf(), format!("banger-{}", uid()));
        assert_eq!(
            cgroup.dirs(),
            vec![
                PathBuf::from(format!("/sys/fs/cgroup/memory/banger/abc/banger-{}", uid())),
                PathBuf::from(format!("/sys/fs/cgroup/pids/banger/abc/banger-{}", uid())),
            ]
        );
        assert_eq!(
            cgroup.join_files()[1],
            PathBuf::from(format!(
                "/sys/fs/cgroup/pids/banger/abc/banger-{}/tasks",
                uid()
            ))
        );
        assert_eq!(uid_of_leaf(cgroup.leaf()), Some(uid()));
        assert_eq!(
            uid_of_leaf(uid().as_str()),
            None,
            "a bare uid is no VM cgroup"
        );
        assert_eq!(uid_of_leaf("banger-XYZ"), None);
    }

    #[test]
    fn limits_are_guest_memory_plus_overhead() {
        let limits = CgroupLimits::for_vm(512, 2, 256);
        assert_eq!(limits.memory_bytes, (512 + MEMORY_OVERHEAD_MIB + 256) << 20);
        assert_eq!(limits.pids, PIDS_BASE + 2);
        assert_eq!(CgroupLimits::for_vm(128, 0, 0).pids, PIDS_BASE + 1);
    }

    #[test]
    fn limit_files_follow_the_version() {
        let limits = CgroupLimits {
            memory_bytes: 1 << 30,
            pids: 130,
        };
        let v1 = CgroupLayout::V1 {
            memory: "/m".into(),
            pids: "/p".into(),
        }
        .vm_cgroup("banger/k", &uid());
        let leaf = format!("banger-{}", uid());
        assert_eq!(
            v1.limit_writes(&limits),
            vec![
                (
                    PathBuf::from(format!("/m/banger/k/{leaf}/memory.limit_in_bytes")),
                    "1073741824".to_owned()
                ),
                (
                    PathBuf::from(format!("/p/banger/k/{leaf}/pids.max")),
                    "130".to_owned()
                ),
            ]
        );
        let v2 = CgroupLayout::V2 { root: "/cg".into() }.vm_cgroup("banger/k", &uid());
        assert_eq!(
            v2.limit_writes(&limits),
            vec![
                (
                    PathBuf::from(format!("/cg/banger/k/{leaf}/memory.max")),
                    "1073741824".to_owned()
                ),
                (
                    PathBuf::from(format!("/cg/banger/k/{leaf}/pids.max")),
                    "130".to_owned()
                ),
            ]
        );
        assert_eq!(
            v2.jailer_args(&limits),
            [
                "--parent-cgroup",
                "banger/k",
                "--cgroup-version",
                "2",
                "--cgroup",
                "memory.max=1073741824",
                "--cgroup",
                "pids.max=130"
            ]
        );
        assert_eq!(
            v1.jailer_args(&limits)[4..],
            [
                "--cgroup",
                "memory.limit_in_bytes=1073741824",
                "--cgroup",
                "pids.max=130"
            ]
        );
    }
}
