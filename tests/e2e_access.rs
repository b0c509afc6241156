//! End-to-end: getting into a real QEMU guest through a real `banger daemon` that runs
//! in a network namespace the test creates, while the CLI (and plain `ssh`) run outside
//! it: every byte goes through the daemon's connect stream.
//!
//! `exec` (exit statuses 0/1/7, stdout and stderr apart, `-i`, argv kept word for word,
//! the Workspace's path as the default directory), `ssh -- CMD`, `cp` both ways (a
//! directory with modes and a symbolic link, a single file), `port-forward` to a web
//! server in the guest, `ssh-config` with plain `ssh`, a VM that is not running refused
//! before ssh runs, and a guest whose host key changed refused with one line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{BufRead, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use banger_tests::{banger_bin, condition, run_ok, wait_for, Daemon, Kit, NetNs};

const READY_TIMEOUT: &str = "240s";

fn git(repo: &Path, args: &[&str]) {
    run_ok(
        Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args),
    );
}

/// `banger --socket S ARGS…` outside the namespace, with `stdin` fed (or /dev/null).
fn banger(d: &Daemon, args: &[&str], stdin: Option<&[u8]>) -> Output {
    d.cli_with_stdin(args, stdin)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn expect(out: &Output, code: i32, stdout: &str, stderr: &str) {
    assert_eq!(
        (
            out.status.code(),
            text(&out.stdout).as_str(),
            text(&out.stderr).as_str()
        ),
        (Some(code), stdout, stderr),
    );
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
#[ignore = "needs root and QEMU"]
fn getting_into_a_real_guest() {
    let kit = Kit::require();
    let ns = NetNs::new("access");
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(&ns, tmp.path(), &["--resync", "5s"]);

    let repo = tmp.path().join("src").join("proj");
    fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    fs::write(repo.join("README"), "proj\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "initial"]);
    let specs = tmp.path().join("apply");
    fs::create_dir_all(&specs).unwrap();
    fs::write(
        specs.join("all.yaml"),
        format!(
            "apiVersion: banger.dev/v1alpha1\nkind: Image\nmetadata:\n  name: kit\nspec:\n  kernel: {}\n  initrd: {}\n  rootfs: {}\n---\n\
apiVersion: banger.dev/v1alpha1\nkind: VM\nmetadata:\n  name: dev\nspec:\n  image: kit\n  memory: 256MiB\n  disk: 512MiB\n  hypervisor: qemu\n---\n\
apiVersion: banger.dev/v1alpha1\nkind: VM\nmetadata:\n  name: idle\nspec:\n  image: kit\n  state: Stopped\n  hypervisor: qemu\n---\n\
apiVersion: banger.dev/v1alpha1\nkind: Workspace\nmetadata:\n  name: proj\nspec:\n  vm: dev\n  source: {}\n",
            kit.kernel.display(),
            kit.initrd.display(),
            kit.rootfs.display(),
            repo.display()
        ),
    )
    .unwrap();
    d.cli_ok(&["apply", "-f", specs.to_str().unwrap()]);
    d.cli_ok(&[
        "wait",
        "workspace/proj",
        "--for=condition=Synced",
        "--timeout",
        READY_TIMEOUT,
    ]);
    let vm = d.get_json("vm", "dev").expect("vm dev");
    assert_eq!(condition(&vm, "GuestReady").unwrap()["status"], "True");
    let uid = vm["metadata"]["uid"].as_str().unwrap().to_string();

    // exec: the command's status, stdout and stderr apart, the Workspace as directory.
    expect(&banger(&d, &["exec", "dev", "--", "true"], None), 0, "", "");
    expect(
        &banger(&d, &["exec", "dev", "--", "false"], None),
        1,
        "",
        "",
    );
    expect(
        &banger(&d, &["exec", "dev", "--", "exit", "7"], None),
        7,
        "",
        "",
    );
    expect(
        &banger(
            &d,
            &[
                "exec",
                "dev",
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 7",
            ],
            None,
        ),
        7,
        "out\n",
        "err\n",
    );
    expect(
        &banger(&d, &["exec", "dev", "--", "pwd"], None),
        0,
        "/root/proj\n",
        "",
    );
    expect(
        &banger(&d, &["exec", "dev", "--workdir", "/tmp", "--", "pwd"], None),
        0,
        "/tmp\n",
        "",
    );
    // Each word arrives as it was given, whatever the shell would make of it.
    let hostile = ["a  b", "it's", "$(id)", "`id`", "*", "x\ny", ";exit 3"];
    let mut args = vec!["exec", "dev", "--", "printf", "[%s]\\n"];
    args.extend(hostile);
    expect(
        &banger(&d, &args, None),
        0,
        "[a  b]\n[it's]\n[$(id)]\n[`id`]\n[*]\n[x\ny]\n[;exit 3]\n",
        "",
    );
    // stdin only with -i.
    expect(
        &banger(&d, &["exec", "-i", "dev", "--", "cat"], Some(b"fed\n")),
        0,
        "fed\n",
        "",
    );
    expect(
        &banger(&d, &["exec", "dev", "--", "cat"], Some(b"not fed\n")),
        0,
        "",
        "",
    );

    // ssh -- CMD: the command's status.
    expect(&banger(&d, &["ssh", "dev", "--", "true"], None), 0, "", "");
    expect(&banger(&d, &["ssh", "dev", "--", "false"], None), 1, "", "");
    expect(
        &banger(&d, &["ssh", "dev", "--", "sh", "-c", "exit 7"], None),
        7,
        "",
        "",
    );
    expect(
        &banger(&d, &["ssh", "dev.banger", "--", "hostname"], None),
        0,
        "dev\n",
        "",
    );
    // The first contact pinned the guest's key under the VM's uid, not its IP.
    let known_hosts = d.state_dir.join("ssh/known_hosts");
    let pins = fs::read_to_string(&known_hosts).unwrap();
    assert!(
        pins.lines()
            .any(|l| l.starts_with(&format!("banger-{uid} ssh-ed25519 "))),
        "{pins}"
    );

    // cp to the guest and back: contents, modes, a symbolic link, a directory tree.
    let local = tmp.path().join("local");
    let src = local.join("tree");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("sub/run.sh"), "#!/bin/sh\nexit 7\n").unwrap();
    fs::set_permissions(src.join("sub/run.sh"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(src.join("secret file"), [0u8, 1, 2, 255, 10]).unwrap();
    fs::set_permissions(src.join("secret file"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("sub/run.sh", src.join("link")).unwrap();
    let src_arg = src.to_str().unwrap();
    expect(
        &banger(&d, &["cp", src_arg, "dev:/root/x"], None),
        0,
        "",
        "",
    );
    expect(
        &banger(
            &d,
            &["exec", "dev", "--workdir", "/root/x", "--", "sh", "-c",
              "stat -c '%a %n' sub/run.sh 'secret file'; readlink link; od -An -tx1 'secret file'; ./link"],
            None,
        ),
        7,
        "750 sub/run.sh\n600 secret file\nsub/run.sh\n 00 01 02 ff 0a\n",
        "",
    );
    // Into an existing directory: lands under the source's name.
    expect(&banger(&d, &["cp", src_arg, "dev:/root"], None), 0, "", "");
    expect(
        &banger(
            &d,
            &[
                "exec",
                "dev",
                "--",
                "stat",
                "-c",
                "%a",
                "/root/tree/sub/run.sh",
            ],
            None,
        ),
        0,
        "750\n",
        "",
    );
    let back = local.join("back");
    expect(
        &banger(&d, &["cp", "dev:/root/x", back.to_str().unwrap()], None),
        0,
        "",
        "",
    );
    assert_eq!(
        fs::read(back.join("secret file")).unwrap(),
        [0u8, 1, 2, 255, 10]
    );
    assert_eq!(mode(&back.join("secret file")), 0o600);
    assert_eq!(mode(&back.join("sub/run.sh")), 0o750);
    assert_eq!(
        fs::read_to_string(back.join("sub/run.sh")).unwrap(),
        "#!/bin/sh\nexit 7\n"
    );
    assert_eq!(
        fs::read_link(back.join("link")).unwrap(),
        Path::new("sub/run.sh")
    );
    // A single file into an existing directory.
    expect(
        &banger(
            &d,
            &["cp", "dev:/etc/hostname", local.to_str().unwrap()],
            None,
        ),
        0,
        "",
        "",
    );
    assert_eq!(fs::read_to_string(local.join("hostname")).unwrap(), "dev\n");
    let missing = banger(
        &d,
        &["cp", "dev:/no/such/file", local.to_str().unwrap()],
        None,
    );
    assert_eq!(missing.status.code(), Some(1));
    let err = text(&missing.stderr);
    assert!(
        err.starts_with("error: vm dev: copying /no/such/file to "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    // port-forward reaches a web server in the guest.
    expect(
        &banger(
            &d,
            &["exec", "dev", "--", "sh", "-c",
              "mkdir -p /root/www && echo hello-from-the-guest > /root/www/index.html && httpd -p 8080 -h /root/www"],
            None,
        ),
        0,
        "",
        "",
    );
    let mut forward = Command::new(banger_bin())
        .arg("--socket")
        .arg(&d.socket)
        .args(["port-forward", "dev", ":8080"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = std::io::BufReader::new(forward.stdout.take().unwrap())
        .lines()
        .next()
        .expect("port-forward prints its port")
        .unwrap();
    let local_addr: std::net::SocketAddr = line
        .strip_prefix("Forwarding from ")
        .and_then(|l| l.strip_suffix(" -> dev:8080"))
        .unwrap_or_else(|| panic!("{line:?}"))
        .parse()
        .unwrap();
    let mut page = String::new();
    {
        let mut conn = std::net::TcpStream::connect(local_addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        conn.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").unwrap();
        conn.read_to_string(&mut page).unwrap();
    }
    assert!(
        page.starts_with("HTTP/1.") && page.contains(" 200 "),
        "{page}"
    );
    assert!(page.ends_with("hello-from-the-guest\n"), "{page}");
    // SAFETY: kill(2) on the port-forward child this test started.
    unsafe {
        libc::kill(i32::try_from(forward.id()).unwrap(), libc::SIGINT);
    }
    assert_eq!(forward.wait().unwrap().code(), Some(0));

    // ssh-config: plain ssh (and its exit statuses) with nothing but the printed file.
    let config = tmp.path().join("ssh_config");
    fs::write(&config, d.cli_ok(&["ssh-config"])).unwrap();
    for (remote, code) in [("true", 0), ("exit 7", 7)] {
        let out = Command::new("ssh")
            .arg("-F")
            .arg(&config)
            .args(["-o", "BatchMode=yes", "dev.banger", remote])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "ssh {remote}: {out:?}");
    }

    // A VM that is not running is refused before ssh runs.
    let out = banger(&d, &["exec", "idle", "--", "true"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("error: vm idle is not ready: it is not running (phase Stopped)"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    // The guest's host key changes on the same disk: refused with one line, status 255.
    expect(
        &banger(
            &d,
            &["exec", "dev", "--", "sh", "-c",
              "k=/etc/dropbear/dropbear_ed25519_host_key; rm -f $k && dropbearkey -t ed25519 -f $k >/dev/null 2>&1 && sync"],
            None,
        ),
        0,
        "",
        "",
    );
    let pid = vm["status"]["pid"].as_i64().unwrap();
    // SAFETY: kill(2) of the VMM pid the daemon reported for this test's VM.
    unsafe {
        libc::kill(i32::try_from(pid).unwrap(), libc::SIGKILL);
    }
    let restarted = wait_for(Duration::from_secs(240), Duration::from_secs(1), || {
        let vm = d.get_json("vm", "dev")?;
        let up = vm["status"]["pid"].as_i64()? != pid
            && condition(&vm, "GuestReady")?["status"] == "True";
        up.then_some(())
    });
    assert!(
        restarted.is_some(),
        "the VM did not come back; log:\n{}",
        d.log_tail(40)
    );
    let out = banger(&d, &["exec", "dev", "--", "true"], None);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert_eq!(
        err,
        format!(
            "error: vm dev: the guest's SSH host key is not the one banger pinned for this VM \
             (banger-{uid} in {kh}); refusing to connect. If the guest's host key was replaced \
             on purpose, forget the old one with: ssh-keygen -R banger-{uid} -f {kh}\n",
            kh = known_hosts.display()
        )
    );
    // Doing what the message says lets the new key in.
    run_ok(
        Command::new("ssh-keygen")
            .args(["-R", &format!("banger-{uid}"), "-f"])
            .arg(&known_hosts),
    );
    expect(&banger(&d, &["exec", "dev", "--", "true"], None), 0, "", "");

    d.cli_ok(&["delete", "vm", "dev", "idle", "--wait", "--timeout", "120s"]);
}
