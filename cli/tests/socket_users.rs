//! Who may use the daemon, with real users: a daemon run as root (`--simulate`) whose
//! socket belongs to a test group, and the `banger` CLI run as a member of that group
//! and as an outsider (`runuser`). The outsider is refused at connect (by the socket's
//! mode, and by the daemon itself when the mode is opened); the member may apply, get
//! and delete, but not name a file it may not read, nor `gc --include-orphans`.
//!
//! The users and the group are made once per host, idempotently, and kept (the names
//! start with `bgtest-`); the tests need root for that and for `runuser`.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use support::{image_and_vm, Daemon, Run, BANGER};

const GROUP: &str = "bgtest-sock";
const MEMBER: &str = "bgtest-member";
const OUTSIDER: &str = "bgtest-outsider";

/// One user-creating test at a time in this process.
static USERS: Mutex<()> = Mutex::new(());

fn exists(database: &str, name: &str) -> bool {
    Command::new("getent")
        .args([database, name])
        .stdout(Stdio::null())
        .status()
        .expect("getent")
        .success()
}

fn run_ok(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().expect(program);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The group and both users exist, the member in the group and the outsider not.
fn ensure_users() {
    let _one = USERS.lock().unwrap_or_else(|p| p.into_inner());
    if !exists("group", GROUP) {
        run_ok("groupadd", &["--system", "-f", GROUP]);
    }
    for user in [MEMBER, OUTSIDER] {
        if !exists("passwd", user) {
            let made = Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    user,
                ])
                .status()
                .expect("useradd");
            // Another test process may have made it meanwhile.
            assert!(made.success() || exists("passwd", user), "useradd {user}");
        }
    }
    run_ok("usermod", &["-aG", GROUP, MEMBER]);
    let groups = Command::new("id")
        .args(["-nG", OUTSIDER])
        .output()
        .expect("id");
    assert!(
        !String::from_utf8_lossy(&groups.stdout)
            .split_whitespace()
            .any(|g| g == GROUP),
        "{OUTSIDER} must not be in {GROUP}"
    );
}

fn uid(user: &str) -> u32 {
    let out = Command::new("id").args(["-u", user]).output().expect("id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("uid")
}

/// `banger --socket S ARGS…` as `user`, in the daemon's work directory.
fn banger_as(user: &str, daemon: &Daemon, args: &[&str]) -> Run {
    Command::new("runuser")
        .args(["-u", user, "--", BANGER, "--socket"])
        .arg(&daemon.socket)
        .args(args)
        .current_dir(&daemon.work_dir)
        .stdin(Stdio::null())
        .output()
        .expect("runuser banger")
        .into()
}

/// A daemon as root whose socket belongs to [`GROUP`], its directories open for
/// reading so the test users can reach the socket and the work files.
fn daemon() -> Daemon {
    ensure_users();
    let daemon = Daemon::start_with(&["--socket-group", GROUP]);
    for dir in [daemon.dir.path(), daemon.work_dir.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    daemon
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
#[ignore = "needs root (creates users, runs the CLI as them)"]
fn outsiders_are_refused_at_connect() {
    let daemon = daemon();
    let meta = std::fs::metadata(&daemon.socket).unwrap();
    assert_eq!(mode(&daemon.socket), 0o660);
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);

    // The socket's mode keeps the outsider out, and the CLI says what to do.
    let run = banger_as(OUTSIDER, &daemon, &["get", "vms"]).expect_code(1);
    assert_eq!(
        run.stderr.trim(),
        format!(
            "error: permission denied on the banger daemon's socket {}: add yourself to the {GROUP} group (sudo usermod -aG {GROUP} $USER, then log in again), or run as root",
            daemon.socket.display()
        ),
        "{}",
        run.stderr
    );

    // Opened to everyone, the daemon itself closes the connection before any HTTP.
    std::fs::set_permissions(&daemon.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let run = banger_as(OUTSIDER, &daemon, &["get", "vms"]).expect_code(1);
    assert!(
        run.stderr
            .contains("closed the connection without answering"),
        "{}",
        run.stderr
    );
    assert!(
        daemon.log().contains(&format!(
            "refused at connect: uid {} is neither root nor in group {GROUP}",
            uid(OUTSIDER)
        )),
        "{}",
        daemon.log()
    );
    // The member is still served meanwhile.
    banger_as(MEMBER, &daemon, &["get", "vms"]).expect_code(0);
}

#[test]
#[ignore = "needs root (creates users, runs the CLI as them)"]
fn members_apply_get_and_delete_with_paths_they_may_read() {
    let daemon = daemon();
    for file in ["vmlinux", "rootfs.ext4"] {
        std::fs::set_permissions(
            daemon.work_dir.join(file),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    }
    daemon.write_work("dev.yaml", &image_and_vm("dev", "512MiB"));
    banger_as(
        MEMBER,
        &daemon,
        &["apply", "-f", "dev.yaml", "--wait", "--timeout", "60s"],
    )
    .expect_code(0);
    let run = banger_as(MEMBER, &daemon, &["get", "vms"]).expect_code(0);
    assert!(run.stdout.contains("dev"), "{}", run.stdout);

    // An Image whose kernel only root may read: refused, naming it, nothing made.
    let secret_dir = daemon.dir.path().join("root-only");
    std::fs::create_dir(&secret_dir).unwrap();
    std::fs::set_permissions(&secret_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let secret = secret_dir.join("vmlinux");
    std::fs::write(&secret, b"root's").unwrap();
    let spec = format!(
        "apiVersion: banger.dev/v1alpha1\nkind: Image\nmetadata:\n  name: stolen\nspec:\n  kernel: {}\n  rootfs: ./rootfs.ext4\n",
        secret.display()
    );
    let file = daemon.write_work("stolen.yaml", &spec);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = banger_as(MEMBER, &daemon, &["apply", "-f", "stolen.yaml"]).expect_code(1);
    assert!(
        run.stderr.contains(&format!(
            "{}:1: image/stolen: spec.kernel: {}: you may not read it (uid {})",
            file.display(),
            secret.display(),
            uid(MEMBER)
        )),
        "{}",
        run.stderr
    );
    daemon.banger(&["get", "image", "stolen"]).expect_code(1);
    // A Workspace copying a directory only root may list: refused the same way.
    let ws = format!(
        "apiVersion: banger.dev/v1alpha1\nkind: Workspace\nmetadata:\n  name: loot\nspec:\n  vm: dev\n  source: {}\n",
        secret_dir.display()
    );
    let ws_file = daemon.write_work("loot.yaml", &ws);
    std::fs::set_permissions(&ws_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = banger_as(MEMBER, &daemon, &["apply", "-f", "loot.yaml"]).expect_code(1);
    assert!(
        run.stderr.contains(&format!(
            "{}:1: workspace/loot: spec.source: {}: you may not list it (uid {})",
            ws_file.display(),
            secret_dir.display(),
            uid(MEMBER)
        )),
        "{}",
        run.stderr
    );
    daemon.banger(&["get", "workspace", "loot"]).expect_code(1);
    // Root may apply the same file.
    daemon
        .banger(&["apply", "-f", "stolen.yaml"])
        .expect_code(0);

    banger_as(
        MEMBER,
        &daemon,
        &["delete", "vm", "dev", "--wait", "--timeout", "60s"],
    )
    .expect_code(0);
    daemon.banger(&["get", "vm", "dev"]).expect_code(1);
}

#[test]
#[ignore = "needs root (creates users, runs the CLI as them)"]
fn gc_with_orphans_is_root_only() {
    let daemon = daemon();
    banger_as(MEMBER, &daemon, &["gc", "--dry-run"]).expect_code(0);
    let run = banger_as(MEMBER, &daemon, &["gc", "--dry-run", "--include-orphans"]).expect_code(1);
    assert!(
        run.stderr.contains(
            "gc --include-orphans is for root only: it removes VMs that no spec declares any more"
        ),
        "{}",
        run.stderr
    );
    daemon
        .banger(&["gc", "--dry-run", "--include-orphans"])
        .expect_code(0);
}
