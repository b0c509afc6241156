//! Host paths a spec makes the daemon read, and reading them only as far as the client
//! could.
//!
//! The daemon runs as root; a member of the socket's group does not. An Image names
//! files the daemon reads (`kernel`, `initrd`, `rootfs`: booted, copied into a VM's
//! disk; `oci.caFile`: trusted for a registry's TLS), a Workspace a checkout it copies into a guest (`source`). Without a check a
//! member could have root read `/etc/shadow` into a guest they control. So before an
//! apply by a member changes anything, [`check_readable_by`] asks the kernel, as the
//! member ([`crate::host::read_as`]), whether the member may read every such path (a
//! file) or list it (a directory); the first refusal is a 403 naming the file, the
//! document's line, the object, the field and the path. Applies by root, and the specs
//! directory (its owner is trusted, [`super::dir`]), are not checked.
//!
//! What this does not cover (README, "Security model"): the check is made when the
//! spec is applied, not each time the daemon reads the path later; and a Workspace's
//! files below its `source` are read as root when copied.

use std::path::PathBuf;

use banger_specs::{LoadedObject, ObjectKey, Resource};

use super::SourceError;
use crate::host::peer::Credentials;
use crate::host::read_as::{self, describe_refusal, Wanted};

/// One host path a spec names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPath {
    /// The object that names it.
    pub object: ObjectKey,
    /// `file:line` of the object's document.
    pub origin: String,
    /// The field (`spec.kernel`).
    pub field: &'static str,
    /// The path, as the daemon will use it (absolute after the spec's normalisation).
    pub path: PathBuf,
    /// Read as a file, or listed as a directory.
    pub wanted: Wanted,
}

/// Every host path `object` makes the daemon read. VMs name none (their Image is an
/// object, not a path).
pub fn host_paths(object: &LoadedObject) -> Vec<HostPath> {
    let at = |field: &'static str, path: &PathBuf, wanted: Wanted| HostPath {
        object: object.resource.key(),
        origin: format!("{}:{}", object.origin.file, object.origin.line),
        field,
        path: path.clone(),
        wanted,
    };
    match &object.resource {
        Resource::Image(image) => {
            let spec = &image.spec;
            let mut paths = Vec::new();
            if let Some(kernel) = &spec.kernel {
                paths.push(at("spec.kernel", kernel, Wanted::ReadFile));
            }
            if let Some(initrd) = &spec.initrd {
                paths.push(at("spec.initrd", initrd, Wanted::ReadFile));
            }
            if let Some(rootfs) = &spec.rootfs {
                paths.push(at("spec.rootfs", rootfs, Wanted::ReadFile));
            }
            if let Some(ca_file) = spec.oci.as_ref().and_then(|oci| oci.ca_file.as_ref()) {
                paths.push(at("spec.oci.caFile", ca_file, Wanted::ReadFile));
            }
            paths
        }
        Resource::Workspace(ws) => vec![at("spec.source", &ws.spec.source, Wanted::ReadDir)],
        Resource::Vm(_) => Vec::new(),
    }
}

/// Checks, as `client`, every host path `objects` name; `Forbidden` names the first
/// the client may not read (and how many more there are). Runs the check on the
/// blocking pool.
pub async fn check_readable_by(
    client: &Credentials,
    objects: &[LoadedObject],
) -> Result<(), SourceError> {
    let paths: Vec<HostPath> = objects.iter().flat_map(host_paths).collect();
    if paths.is_empty() {
        return Ok(());
    }
    let asked: Vec<(PathBuf, Wanted)> = paths.iter().map(|p| (p.path.clone(), p.wanted)).collect();
    let who = client.clone();
    let answers = tokio::task::spawn_blocking(move || read_as::readable_as(&who, &asked))
        .await
        .map_err(|e| SourceError::Forbidden(format!("checking host paths: {e}")))?
        .map_err(|e| SourceError::Forbidden(e.to_string()))?;
    let refused: Vec<String> = paths
        .iter()
        .zip(&answers)
        .filter_map(|(p, answer)| {
            answer.as_ref().err().map(|e| {
                format!(
                    "{}: {}: {}: {} (uid {})",
                    p.origin,
                    p.object,
                    p.field,
                    describe_refusal(&p.path, p.wanted, e),
                    client.uid
                )
            })
        })
        .collect();
    match refused.as_slice() {
        [] => Ok(()),
        [first, rest @ ..] => {
            let more = match rest.len() {
                0 => String::new(),
                n => format!(" (and {n} more)"),
            };
            Err(SourceError::Forbidden(format!(
                "{first}{more}; the daemon reads host paths for a member of its group only where the member could read them"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn load(yaml: &str) -> Vec<LoadedObject> {
        let load =
            banger_specs::load::parse_document_set(yaml.as_bytes(), "/w/a.yaml", Path::new("/w"));
        assert!(load.problems.is_empty(), "{:?}", load.problems);
        load.objects
    }

    #[test]
    fn images_and_workspaces_name_their_host_paths() {
        let objects = load(
            "apiVersion: banger.dev/v1alpha1\nkind: Image\nmetadata: {name: base}\nspec:\n  kernel: vmlinux\n  initrd: /boot/initrd.img\n  rootfs: ./rootfs.ext4\n---\napiVersion: banger.dev/v1alpha1\nkind: Workspace\nmetadata: {name: src}\nspec: {vm: dev, source: /srv/repo}\n---\napiVersion: banger.dev/v1alpha1\nkind: VM\nmetadata: {name: dev}\nspec: {image: base}\n",
        );
        let paths: Vec<(String, String, &str, PathBuf, Wanted)> = objects
            .iter()
            .flat_map(host_paths)
            .map(|p| (p.origin, p.object.to_string(), p.field, p.path, p.wanted))
            .collect();
        assert_eq!(
            paths,
            vec![
                (
                    "/w/a.yaml:1".into(),
                    "image/base".into(),
                    "spec.kernel",
                    "/w/vmlinux".into(),
                    Wanted::ReadFile
                ),
                (
                    "/w/a.yaml:1".into(),
                    "image/base".into(),
                    "spec.initrd",
                    "/boot/initrd.img".into(),
                    Wanted::ReadFile
                ),
                (
                    "/w/a.yaml:1".into(),
                    "image/base".into(),
                    "spec.rootfs",
                    "/w/rootfs.ext4".into(),
                    Wanted::ReadFile
                ),
                (
                    "/w/a.yaml:9".into(),
                    "workspace/src".into(),
                    "spec.source",
                    "/srv/repo".into(),
                    Wanted::ReadDir
                ),
            ]
        );
    }

    #[tokio::test]
    async fn a_path_the_client_cannot_read_is_refused_by_name() {
        let me = Credentials {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            groups: nix::unistd::getgroups()
                .unwrap()
                .iter()
                .map(|g| g.as_raw())
                .collect(),
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vmlinux"), b"k").unwrap();
        std::fs::write(dir.path().join("rootfs.ext4"), b"r").unwrap();
        let yaml = |kernel: &str| {
            format!(
                "apiVersion: banger.dev/v1alpha1\nkind: Image\nmetadata: {{name: base}}\nspec:\n  kernel: {kernel}\n  rootfs: {}\n",
                dir.path().join("rootfs.ext4").display()
            )
        };
        let good = load(&yaml(&dir.path().join("vmlinux").display().to_string()));
        check_readable_by(&me, &good).await.unwrap();
        // Missing counts as not readable too (the daemon must not probe for the client).
        let missing = dir.path().join("gone");
        let bad = load(&yaml(&missing.display().to_string()));
        let err = check_readable_by(&me, &bad).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "/w/a.yaml:1: image/base: spec.kernel: {}: not found (uid {}); the daemon reads host paths for a member of its group only where the member could read them",
                missing.display(),
                me.uid
            )
        );
        assert!(matches!(err, SourceError::Forbidden(_)));
    }
}
