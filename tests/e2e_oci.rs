//! End-to-end: images developers already have, from a real registry, on real QEMU guests.
//!
//! The image is Debian 12 made with `debootstrap --variant=minbase` (no init, no SSH
//! server; `scripts/test-image-debian.sh`, cached in `.cache/test-images`), pushed with
//! `skopeo` to Debian's `docker-registry` running inside the test's network namespace
//! on 127.0.0.1. An Image of `spec: {oci: {ref: …}}` alone boots (the daemon's default
//! kernel from the guest kit, banger's guest bits added), becomes Ready, and `banger
//! exec VM -- cat /etc/os-release` answers. A re-tag shows `UpdateAvailable` without
//! touching the running VM; applying it makes the VM wait for a recreate. A private
//! registry (TLS with a test CA, htpasswd users) pulls with the right credentials and
//! refuses the wrong ones with a clear condition.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use banger_tests::{condition, repo_root, run_ok, wait_for, Daemon, Kit, NetNs};
use serde_json::Value;

const READY_TIMEOUT: &str = "300s";

/// The cached Debian layout of `variant` (`minbase`: no init, no SSH server;
/// `systemd`: its own init), built on first use (minutes, then cached).
fn debian_layout(variant: &str) -> PathBuf {
    let dir = std::env::var_os("BANGER_TEST_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache/test-images"));
    let layout = dir.join(format!("debian-bookworm-{variant}"));
    if !layout.join("index.json").exists() {
        run_ok(Command::new(repo_root().join("scripts/test-image-debian.sh")).arg(variant));
    }
    layout
}

/// A small root tree of busybox-static (a shell for root, nothing else), with `marker`
/// in /etc/banger-test.
fn busybox_tree(work: &Path, marker: &str) -> PathBuf {
    let root = work.join(format!("root-{marker}"));
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(root.join("etc/banger-test"), format!("{marker}\n")).unwrap();
    root
}

/// [`busybox_tree`] as an OCI layout tagged `tag`.
fn busybox_layout(work: &Path, marker: &str, tag: &str) -> PathBuf {
    let root = busybox_tree(work, marker);
    let layout = work.join(format!("layout-{marker}"));
    run_ok(
        Command::new(repo_root().join("scripts/oci-layout.sh"))
            .arg(&root)
            .arg(&layout)
            .arg(tag),
    );
    layout
}

/// `docker-registry` serving a temp dir on 127.0.0.1 inside `ns`; killed on drop.
struct Registry {
    child: Child,
    port: u16,
}

impl Registry {
    /// Plain HTTP, or TLS with `cert`/`key` and htpasswd users.
    fn start(ns: &NetNs, dir: &Path, port: u16, tls: Option<(&Path, &Path, &Path)>) -> Registry {
        fs::create_dir_all(dir).unwrap();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        );
        if let Some((cert, key, htpasswd)) = tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: banger-test\n    path: {}\n",
                cert.display(),
                key.display(),
                htpasswd.display()
            ));
        }
        let file = dir.join("config.yml");
        fs::write(&file, config).unwrap();
        let child = ns
            .command("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (scripts/deps.sh installs it)");
        let up = wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
            ns.command("bash")
                .arg("-c")
                .arg(format!("exec 3<>/dev/tcp/127.0.0.1/{port}"))
                .stderr(Stdio::null())
                .status()
                .ok()
                .filter(|s| s.success())
        });
        assert!(up.is_some(), "registry on port {port} did not listen");
        Registry { child, port }
    }

    /// Pushes `layout:tag` as `repo_tag` with skopeo from inside `ns`.
    fn push(&self, ns: &NetNs, layout: &Path, tag: &str, repo_tag: &str, extra: &[&str]) {
        run_ok(
            ns.command("skopeo")
                .args(["copy", "--quiet", "--dest-tls-verify=false"])
                .args(extra)
                .arg(format!("oci:{}:{tag}", layout.display()))
                .arg(format!("docker://127.0.0.1:{}/{repo_tag}", self.port)),
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn apply(d: &Daemon, dir: &Path, name: &str, yaml: &str) {
    let file = dir.join(format!("{name}.yaml"));
    fs::write(&file, yaml).unwrap();
    d.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
}

fn image_yaml(name: &str, reference: &str, extra: &str) -> String {
    format!(
        "apiVersion: banger.dev/v1alpha1\nkind: Image\nmetadata:\n  name: {name}\nspec:\n  oci:\n    ref: {reference}\n{extra}"
    )
}

fn status_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj["status"][field].as_str().unwrap_or("")
}

/// A test CA and a server certificate for 127.0.0.1 and localhost, with openssl.
fn test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    fs::create_dir_all(dir).unwrap();
    let (ca_key, ca, key, csr, cert) = (
        dir.join("ca.key"),
        dir.join("ca.pem"),
        dir.join("server.key"),
        dir.join("server.csr"),
        dir.join("server.pem"),
    );
    run_ok(
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=banger test CA", "-keyout"])
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca),
    );
    run_ok(
        Command::new("openssl")
            .args([
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&csr),
    );
    let ext = dir.join("san.ext");
    fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    run_ok(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .args(["-CAcreateserial", "-extfile"])
            .arg(&ext)
            .arg("-out")
            .arg(&cert),
    );
    (ca, cert, key)
}

#[test]
#[ignore = "needs root (network namespaces, debootstrap), QEMU, the guest kit, docker-registry, skopeo and openssl"]
fn an_image_developers_already_have_boots_updates_and_pulls_privately() {
    let kit = Kit::require();
    let debian = debian_layout("minbase");
    let ns = NetNs::new("oci");
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let registry = Registry::start(&ns, &work.join("registry"), 5000, None);
    registry.push(&ns, &debian, "12", "debian:12", &[]);

    // A private registry: TLS from a test CA, htpasswd users. Reached as 127.0.0.1
    // (right password) and as localhost (wrong password).
    let (ca, cert, key) = test_ca(&work.join("ca"));
    let htpasswd = work.join("htpasswd");
    let out = run_ok(Command::new("htpasswd").args(["-Bbn", "alice", "s3cret"]));
    fs::write(&htpasswd, &out.stdout).unwrap();
    let private = Registry::start(
        &ns,
        &work.join("private"),
        5443,
        Some((&cert, &key, &htpasswd)),
    );
    let secret = busybox_layout(work, "private", "1");
    private.push(
        &ns,
        &secret,
        "1",
        "team/secret:1",
        &["--dest-creds", "alice:s3cret"],
    );
    let auth = work.join("auth.json");
    fs::write(
        &auth,
        r#"{"auths": {"127.0.0.1:5443": {"username": "alice", "password": "s3cret"},
                     "localhost:5443": {"username": "alice", "password": "wrong"}}}"#,
    )
    .unwrap();

    let d = Daemon::start(
        &ns,
        &work.join("daemon"),
        &[
            "--resync",
            "5s",
            "--guest-dir",
            kit.dir.to_str().unwrap(),
            "--registry-auth",
            auth.to_str().unwrap(),
        ],
    );
    let specs = work.join("apply");
    fs::create_dir_all(&specs).unwrap();

    // The Image is a reference alone; the VM boots it with the default kernel.
    // `apply --wait` shows the pull (plain lines: stderr is not a terminal here).
    let started = std::time::Instant::now();
    let file = specs.join("deb.yaml");
    fs::write(&file, image_yaml("deb", "127.0.0.1:5000/debian:12", "")).unwrap();
    let out = d.cli(&[
        "apply",
        "-f",
        file.to_str().unwrap(),
        "--wait",
        "--timeout",
        "300s",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{}", d.log_tail(40));
    assert!(
        stderr.contains("image/deb: layer 1/1 sha256:") && stderr.contains("pulled"),
        "{stderr}"
    );
    eprintln!(
        "debootstrap image pulled and built: {:?}",
        started.elapsed()
    );
    apply(
        &d,
        &specs,
        "vm",
        "apiVersion: banger.dev/v1alpha1\nkind: VM\nmetadata:\n  name: deb1\nspec:\n  image: deb\n  memory: 512MiB\n  disk: 2GiB\n  hypervisor: qemu\n",
    );
    let started = std::time::Instant::now();
    d.cli_ok(&[
        "wait",
        "vm/deb1",
        "--for=condition=Ready",
        "--timeout",
        READY_TIMEOUT,
    ]);
    eprintln!(
        "oci image pulled, built and booted to Ready: {:?}",
        started.elapsed()
    );
    let image = d.get_json("image", "deb").unwrap();
    let digest = status_str(&image, "digest").to_string();
    assert!(digest.starts_with("sha256:"), "{image:#}");
    assert!(
        status_str(&image, "rootfs").contains("/images/store/rootfs/"),
        "{image:#}"
    );
    assert!(
        image["status"]["rootfsBytes"].as_u64().unwrap() > 100 << 20,
        "{image:#}"
    );
    assert_eq!(image["status"]["defaultKernel"], true, "{image:#}");
    assert!(
        status_str(&image, "guest").contains("libc: glibc"),
        "{image:#}"
    );
    let describe = d.cli_ok(&["describe", "image", "deb"]);
    assert!(
        describe.contains(&digest) && describe.contains("Guest bits:"),
        "{describe}"
    );
    let events = d.cli_ok(&["events", "image/deb"]);
    assert!(events.contains("Pulled"), "layer progress events: {events}");

    let os_release = d.cli_ok(&["exec", "deb1", "--", "cat", "/etc/os-release"]);
    assert!(
        os_release.contains("Debian GNU/Linux 12 (bookworm)"),
        "{os_release}"
    );
    let hostname = d.cli_ok(&["exec", "deb1", "--", "hostname"]);
    assert_eq!(hostname.trim(), "deb1");
    let pid = d.get_json("vm", "deb1").unwrap()["status"]["pid"]
        .as_i64()
        .unwrap();

    // Re-tag: the check shows the new digest; the running VM is untouched.
    let v2 = busybox_layout(work, "v2", "12");
    registry.push(&ns, &v2, "12", "debian:12", &[]);
    let line = d.cli_ok(&["image", "refresh", "deb"]);
    assert!(
        line.contains("update available") && line.contains(&digest),
        "{line}"
    );
    let image = d.get_json("image", "deb").unwrap();
    let update = condition(&image, "UpdateAvailable").unwrap();
    assert_eq!(update["status"], "True", "{image:#}");
    let new_digest = image["status"]["latestDigest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_digest, digest);
    assert!(update["message"].as_str().unwrap().contains(&new_digest));
    assert_eq!(status_str(&image, "digest"), digest, "nothing applied yet");
    let vm = d.get_json("vm", "deb1").unwrap();
    assert_eq!(vm["status"]["pid"].as_i64(), Some(pid), "{vm:#}");
    assert_eq!(condition(&vm, "Ready").unwrap()["status"], "True", "{vm:#}");

    // Applied: the Image moves; its VM made from the old digest waits for a recreate.
    let line = d.cli_ok(&["image", "refresh", "deb", "--apply"]);
    assert!(
        line.contains("update applied") && line.contains(&new_digest),
        "{line}"
    );
    let blocked = wait_for(Duration::from_secs(60), Duration::from_millis(500), || {
        let vm = d.get_json("vm", "deb1")?;
        (condition(&vm, "Ready")?["reason"] == "RecreateBlocked").then_some(vm)
    });
    let vm = blocked.expect("the VM reports RecreateBlocked");
    assert_eq!(
        vm["status"]["pid"].as_i64(),
        Some(pid),
        "still the same VMM: {vm:#}"
    );

    // Private registry: TLS checked against the test CA, alice's credentials.
    let ca_line = format!("    caFile: {}\n", ca.display());
    apply(
        &d,
        &specs,
        "secret",
        &image_yaml("secret", "127.0.0.1:5443/team/secret:1", &ca_line),
    );
    // `banger run` waits for the pull and the boot, runs the command with its exit
    // status, and --rm leaves nothing.
    let out = d.cli(&[
        "run",
        "--image",
        "secret",
        "--name",
        "sec1",
        "--memory",
        "256MiB",
        "--rm",
        "--",
        "sh",
        "-c",
        "cat /etc/banger-test; exit 7",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log_tail(30)
    );
    assert_eq!(stdout.trim(), "private");
    assert!(d.get_json("vm", "sec1").is_none(), "run --rm left vm/sec1");
    let secret_img = d.get_json("image", "secret").unwrap();
    assert!(status_str(&secret_img, "digest").starts_with("sha256:"));

    // Wrong credentials: a clear condition naming the user and the registry.
    apply(
        &d,
        &specs,
        "denied",
        &image_yaml("denied", "localhost:5443/team/secret:1", &ca_line),
    );
    let denied = wait_for(Duration::from_secs(60), Duration::from_millis(500), || {
        let img = d.get_json("image", "denied")?;
        let ready = condition(&img, "Ready")?.clone();
        (ready["reason"] == "RegistryAuthFailed").then_some(ready)
    });
    let ready = denied.unwrap_or_else(|| panic!("no RegistryAuthFailed; log:\n{}", d.log_tail(40)));
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains("alice")
            && message.contains("localhost:5443")
            && message.contains("refused"),
        "{message}"
    );

    // An image banger cannot serve (no /etc/passwd, so no shell for root): a clear
    // condition, not a guest that never becomes ready.
    let bare = work.join("root-bare");
    fs::create_dir_all(bare.join("data")).unwrap();
    fs::write(bare.join("data/file"), b"no shell here\n").unwrap();
    let bare_layout = work.join("layout-bare");
    run_ok(
        Command::new(repo_root().join("scripts/oci-layout.sh"))
            .arg(&bare)
            .arg(&bare_layout)
            .arg("1"),
    );
    registry.push(&ns, &bare_layout, "1", "bare:1", &[]);
    apply(
        &d,
        &specs,
        "bare",
        &image_yaml("bare", "127.0.0.1:5000/bare:1", ""),
    );
    let refused = wait_for(Duration::from_secs(60), Duration::from_millis(500), || {
        let img = d.get_json("image", "bare")?;
        let ready = condition(&img, "Ready")?.clone();
        (ready["reason"] == "UnsupportedImage").then_some(ready)
    });
    let ready = refused.unwrap_or_else(|| panic!("no UnsupportedImage; log:\n{}", d.log_tail(40)));
    assert!(
        ready["message"].as_str().unwrap().contains("/etc/passwd"),
        "{ready}"
    );

    // Without the CA the TLS check fails, naming the reference.
    apply(
        &d,
        &specs,
        "noca",
        &image_yaml("noca", "127.0.0.1:5443/team/secret:1", ""),
    );
    let failed = wait_for(Duration::from_secs(60), Duration::from_millis(500), || {
        let img = d.get_json("image", "noca")?;
        let ready = condition(&img, "Ready")?.clone();
        (ready["status"] == "False").then_some(ready)
    });
    let ready = failed.expect("an Image without the CA fails");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1:5443/team/secret:1"),
        "{ready}"
    );

    // A local ext4 root with `guest: inject`: rebuilt in the store with the guest bits
    // (the file itself untouched), then booted.
    let local = work.join("local.ext4");
    run_ok(
        Command::new("mkfs.ext4")
            .args(["-q", "-d"])
            .arg(busybox_tree(work, "local"))
            .arg(&local)
            .arg("64M"),
    );
    let before = fs::read(&local).unwrap();
    apply(
        &d,
        &specs,
        "local",
        &format!(
            "apiVersion: banger.dev/v1alpha1\nkind: Image\nmetadata:\n  name: local\nspec:\n  rootfs: {}\n  guest: inject\n",
            local.display()
        ),
    );
    apply(
        &d,
        &specs,
        "vm-local",
        "apiVersion: banger.dev/v1alpha1\nkind: VM\nmetadata:\n  name: loc1\nspec:\n  image: local\n  memory: 256MiB\n  disk: 512MiB\n  hypervisor: qemu\n",
    );
    d.cli_ok(&[
        "wait",
        "vm/loc1",
        "--for=condition=Ready",
        "--timeout",
        READY_TIMEOUT,
    ]);
    let marker = d.cli_ok(&["exec", "loc1", "--", "cat", "/etc/banger-test"]);
    assert_eq!(marker.trim(), "local");
    let img = d.get_json("image", "local").unwrap();
    assert!(
        status_str(&img, "rootfs").contains("/images/store/rootfs/local-"),
        "{img:#}"
    );
    assert!(status_str(&img, "guest").contains("libc: none"), "{img:#}");
    assert_eq!(
        fs::read(&local).unwrap(),
        before,
        "the user's file is never changed"
    );

    // Stopping: banger's init (PID 1 here: the image has none) powers off cleanly on
    // the ACPI power button.
    apply(
        &d,
        &specs,
        "vm-local",
        "apiVersion: banger.dev/v1alpha1\nkind: VM\nmetadata:\n  name: loc1\nspec:\n  image: local\n  memory: 256MiB\n  disk: 512MiB\n  hypervisor: qemu\n  state: Stopped\n",
    );
    d.cli_ok(&[
        "wait",
        "vm/loc1",
        "--for=condition=Ready",
        "--timeout",
        "120s",
    ]);
    let console = d.cli_ok(&["logs", "vm", "loc1"]);
    assert!(
        console.contains("banger-init: poweroff: stopping processes"),
        "a clean power-off by banger's init: {console}"
    );

    d.cli_ok(&["delete", "vm", "deb1", "loc1", "--wait"]);
    drop(private);
    drop(registry);
}

#[test]
#[ignore = "needs root (network namespaces, debootstrap), QEMU, the guest kit, docker-registry and skopeo"]
fn an_image_with_its_own_init_keeps_it() {
    let kit = Kit::require();
    let layout = debian_layout("systemd");
    let ns = NetNs::new("sysd");
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let registry = Registry::start(&ns, &work.join("registry"), 5000, None);
    registry.push(&ns, &layout, "12", "debian-systemd:12", &[]);
    let d = Daemon::start(
        &ns,
        &work.join("daemon"),
        &["--resync", "5s", "--guest-dir", kit.dir.to_str().unwrap()],
    );
    let specs = work.join("apply");
    fs::create_dir_all(&specs).unwrap();
    apply(
        &d,
        &specs,
        "sysd",
        &image_yaml("sysd", "127.0.0.1:5000/debian-systemd:12", ""),
    );
    apply(
        &d,
        &specs,
        "vm",
        "apiVersion: banger.dev/v1alpha1\nkind: VM\nmetadata:\n  name: sysd1\nspec:\n  image: sysd\n  memory: 512MiB\n  disk: 2GiB\n  hypervisor: qemu\n",
    );
    let started = std::time::Instant::now();
    d.cli_ok(&[
        "wait",
        "vm/sysd1",
        "--for=condition=Ready",
        "--timeout",
        READY_TIMEOUT,
    ]);
    eprintln!(
        "systemd image pulled, built and booted to Ready: {:?}",
        started.elapsed()
    );
    let image = d.get_json("image", "sysd").unwrap();
    assert!(
        status_str(&image, "guest").contains("init: image's /sbin/init"),
        "{image:#}"
    );
    // banger's set-up ran (network, hostname, SSH), then the image's own init took PID 1.
    let init = d.cli_ok(&["exec", "sysd1", "--", "cat", "/proc/1/comm"]);
    assert_eq!(init.trim(), "systemd");
    let hostname = d.cli_ok(&["exec", "sysd1", "--", "hostname"]);
    assert_eq!(hostname.trim(), "sysd1");
    let os_release = d.cli_ok(&["exec", "sysd1", "--", "cat", "/etc/os-release"]);
    assert!(os_release.contains("bookworm"), "{os_release}");
    d.cli_ok(&["delete", "vm", "sysd1", "--wait"]);
}
