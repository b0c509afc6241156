//! TEST STAND-IN for Firecracker's `jailer`, used only by banger's Firecracker driver
//! tests (`tests/firecracker_api.rs` in this crate), as root.
//!
//! It takes the jailer's documented command line (`docs/jailer.md` in Firecracker's
//! repository) and refuses what the jailer refuses (a missing `--id`, `--exec-file`,
//! `--uid` or `--gid`; an id that is not 1-64 letters, digits and `-`; an exec file whose
//! name lacks `firecracker`; a `--cgroup` that is not `FILE=VALUE`; a cgroup version
//! other than 1 or 2). Then it does what the jailer does, in order:
//!
//! 1. creates `<chroot base>/<exec file name>/<id>/root` and copies the exec file in;
//! 2. for each `--cgroup FILE=VALUE`, finds the hierarchy of the controller the file
//!    belongs to (`/proc/mounts`), creates `<hierarchy>/<parent cgroup>/<id>`, writes the
//!    value and joins it (its pid into `tasks`, or `cgroup.procs` on v2);
//! 3. enters a new mount namespace with private propagation and confines itself to the
//!    jail's root;
//! 4. hands the root to `--uid`/`--gid`, drops to them (no other group), and execs
//!    `/<exec file name> --id=<id> --start-time-us=… --start-time-cpu-us=…
//!    --parent-cpu-time-us=…` followed by what came after `--`.
//!
//! Deviations, because it is a stand-in: it `chroot`s instead of `pivot_root`, makes no
//! `/dev/kvm` or `/dev/net/tun` (the stand-in Firecracker boots nothing), applies no
//! resource limits, and, since the stand-in Firecracker is dynamically linked while the
//! real jailer expects a static binary, bind-mounts `/usr`, `/lib` and `/lib64`
//! read-only into the jail (inside its private mount namespace only).

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{chroot, setgid, setgroups, setuid, Gid, Uid};

/// The jailer's invocation, as parsed.
#[derive(Debug, Default)]
struct Invocation {
    id: String,
    exec_file: PathBuf,
    uid: u32,
    gid: u32,
    chroot_base: PathBuf,
    parent_cgroup: Option<String>,
    cgroup_version: u8,
    cgroups: Vec<(String, String)>,
    extra: Vec<String>,
}

fn parse(args: &[String]) -> Result<Invocation, String> {
    let mut inv = Invocation {
        chroot_base: PathBuf::from("/srv/jailer"),
        cgroup_version: 1,
        ..Invocation::default()
    };
    let (mut id, mut exec, mut uid, mut gid) = (None, None, None, None);
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        if flag == "--" {
            inv.extra = rest.cloned().collect();
            break;
        }
        let mut value = || {
            rest.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--id" => id = Some(value()?),
            "--exec-file" => exec = Some(PathBuf::from(value()?)),
            "--uid" => uid = Some(value()?.parse().map_err(|_| "--uid is not a number")?),
            "--gid" => gid = Some(value()?.parse().map_err(|_| "--gid is not a number")?),
            "--chroot-base-dir" => inv.chroot_base = PathBuf::from(value()?),
            "--parent-cgroup" => inv.parent_cgroup = Some(value()?),
            "--cgroup-version" => {
                inv.cgroup_version = match value()?.as_str() {
                    "1" => 1,
                    "2" => 2,
                    other => return Err(format!("--cgroup-version {other}: 1 or 2")),
                }
            }
            "--cgroup" => {
                let text = value()?;
                let (file, v) = text
                    .split_once('=')
                    .filter(|(f, v)| f.contains('.') && !v.is_empty())
                    .ok_or_else(|| format!("--cgroup {text}: expected <cgroup_file>=<value>"))?;
                inv.cgroups.push((file.to_owned(), v.to_owned()));
            }
            "--netns" | "--resource-limit" => {
                value()?;
            }
            "--daemonize" | "--new-pid-ns" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    inv.id = id.ok_or("--id is required")?;
    if inv.id.is_empty()
        || inv.id.len() > 64
        || !inv
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(format!("invalid --id {:?}", inv.id));
    }
    inv.exec_file = exec.ok_or("--exec-file is required")?;
    let name_ok = inv
        .exec_file
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.contains("firecracker"));
    if !name_ok {
        return Err("the exec file's name must contain `firecracker`".into());
    }
    inv.uid = uid.ok_or("--uid is required")?;
    inv.gid = gid.ok_or("--gid is required")?;
    Ok(inv)
}

/// The mount point of the hierarchy holding `controller` (v1), or of the v2 tree.
fn hierarchy(controller: &str, version: u8) -> Result<PathBuf, String> {
    let mounts =
        std::fs::read_to_string("/proc/mounts").map_err(|e| format!("/proc/mounts: {e}"))?;
    mounts
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (point, fstype, options) = (fields.get(1)?, fields.get(2)?, fields.get(3)?);
            let found = match version {
                2 => *fstype == "cgroup2",
                _ => *fstype == "cgroup" && options.split(',').any(|o| o == controller),
            };
            found.then(|| PathBuf::from(point))
        })
        .ok_or_else(|| format!("no cgroup v{version} hierarchy for {controller}"))
}

fn join_cgroups(inv: &Invocation, exec_name: &str) -> Result<(), String> {
    let parent = inv
        .parent_cgroup
        .clone()
        .unwrap_or_else(|| exec_name.to_owned());
    let mut joined = Vec::new();
    for (file, value) in &inv.cgroups {
        let controller = file.split('.').next().unwrap_or_default();
        let dir = hierarchy(controller, inv.cgroup_version)?
            .join(&parent)
            .join(&inv.id);
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        std::fs::write(dir.join(file), value)
            .map_err(|e| format!("write {}: {e}", dir.join(file).display()))?;
        if !joined.contains(&dir) {
            let procs = if inv.cgroup_version == 2 {
                "cgroup.procs"
            } else {
                "tasks"
            };
            std::fs::write(dir.join(procs), std::process::id().to_string())
                .map_err(|e| format!("join {}: {e}", dir.display()))?;
            joined.push(dir);
        }
    }
    Ok(())
}

fn jail_and_exec(inv: &Invocation) -> Result<(), String> {
    let exec_name = inv
        .exec_file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("exec file has no name")?
        .to_owned();
    let root = inv.chroot_base.join(&exec_name).join(&inv.id).join("root");
    std::fs::create_dir_all(&root).map_err(|e| format!("create {}: {e}", root.display()))?;
    std::fs::copy(&inv.exec_file, root.join(&exec_name))
        .map_err(|e| format!("copy {}: {e}", inv.exec_file.display()))?;
    join_cgroups(inv, &exec_name)?;

    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare: {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("make / private: {e}"))?;
    for dir in ["/usr", "/lib", "/lib64"] {
        let source = Path::new(dir);
        if !source.is_dir() {
            continue;
        }
        let target = root.join(dir.trim_start_matches('/'));
        std::fs::create_dir_all(&target)
            .map_err(|e| format!("create {}: {e}", target.display()))?;
        mount(
            Some(source),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| format!("bind {dir}: {e}"))?;
        mount(
            None::<&str>,
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| format!("read-only {dir}: {e}"))?;
    }
    std::os::unix::fs::chown(&root, Some(inv.uid), Some(inv.gid))
        .map_err(|e| format!("chown {}: {e}", root.display()))?;
    chroot(&root).map_err(|e| format!("chroot {}: {e}", root.display()))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    setgid(Gid::from_raw(inv.gid)).map_err(|e| format!("setgid: {e}"))?;
    setuid(Uid::from_raw(inv.uid)).map_err(|e| format!("setuid: {e}"))?;

    let mut argv = vec![
        format!("/{exec_name}"),
        format!("--id={}", inv.id),
        "--start-time-us=0".to_owned(),
        "--start-time-cpu-us=0".to_owned(),
        "--parent-cpu-time-us=0".to_owned(),
    ];
    argv.extend(inv.extra.iter().cloned());
    let argv: Vec<CString> = argv
        .into_iter()
        .map(|a| CString::new(a).map_err(|_| "an argument contains a NUL byte".to_owned()))
        .collect::<Result<_, _>>()?;
    let env: [CString; 0] = [];
    // Replaces this process: only returns on failure.
    let err = nix::unistd::execve(&argv[0], &argv, &env).unwrap_err();
    Err(format!("exec /{exec_name}: {err}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args).and_then(|inv| jail_and_exec(&inv)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("[stand-in jailer] error: {e}");
            ExitCode::FAILURE
        }
    }
}
