//! The API calls that configure and boot one microVM, computed from a [`LaunchSpec`].
//!
//! Pure: no I/O. The driver sends the calls in order and stops at the first refusal.
//! The order is: logger, machine, boot source, root drive, network interface (when
//! the VM has a tap), then `InstanceStart`. Everything Firecracker needs is configured
//! before the start; nothing is reconfigured after it.

use std::path::Path;

use super::api::{
    ActionType, ApiCall, ApiError, BootSource, Drive, InstanceActionInfo, Logger,
    MachineConfiguration, NetworkInterface,
};
use crate::driver::LaunchSpec;

/// Drive id of the VM's root disk (`PUT /drives/rootfs`).
pub const ROOT_DRIVE_ID: &str = "rootfs";
/// Interface id of the VM's one NIC (`PUT /network-interfaces/eth0`).
pub const NET_IFACE_ID: &str = "eth0";

/// Why the boot calls could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum BootPlanError {
    /// Firecracker's API carries paths as JSON strings, so they must be UTF-8.
    #[error("{field} path {path} is not valid UTF-8")]
    NonUtf8Path {
        /// Which launch field.
        field: &'static str,
        /// The offending path.
        path: std::path::PathBuf,
    },
    /// A body could not be encoded.
    #[error(transparent)]
    Encode(#[from] ApiError),
}

/// The configuration calls, in order, followed by `InstanceStart`. `log_path` is the
/// file Firecracker's own log goes to (it must exist before the logger call).
pub fn boot_sequence(spec: &LaunchSpec, log_path: &Path) -> Result<Vec<ApiCall>, BootPlanError> {
    let mut calls = vec![
        ApiCall::put(
            "/logger",
            &Logger {
                log_path: utf8("firecracker log", log_path)?,
                level: Some("Info".to_owned()),
                show_level: Some(true),
                show_log_origin: Some(false),
            },
        )?,
        ApiCall::put(
            "/machine-config",
            &MachineConfiguration {
                vcpu_count: spec.vcpus,
                mem_size_mib: spec.memory_mib,
            },
        )?,
        ApiCall::put(
            "/boot-source",
            &BootSource {
                kernel_image_path: utf8("kernel", &spec.kernel)?,
                initrd_path: spec
                    .initrd
                    .as_deref()
                    .map(|p| utf8("initrd", p))
                    .transpose()?,
                boot_args: Some(spec.cmdline.clone()),
            },
        )?,
        ApiCall::put(
            format!("/drives/{ROOT_DRIVE_ID}"),
            &Drive {
                drive_id: ROOT_DRIVE_ID.to_owned(),
                path_on_host: utf8("root disk", &spec.root_disk)?,
                is_root_device: true,
                is_read_only: false,
            },
        )?,
    ];
    if let Some(tap) = &spec.tap {
        calls.push(ApiCall::put(
            format!("/network-interfaces/{NET_IFACE_ID}"),
            &NetworkInterface {
                iface_id: NET_IFACE_ID.to_owned(),
                host_dev_name: tap.clone(),
                guest_mac: Some(spec.mac.clone()),
            },
        )?);
    }
    calls.push(ApiCall::put(
        "/actions",
        &InstanceActionInfo {
            action_type: ActionType::InstanceStart,
        },
    )?);
    Ok(calls)
}

fn utf8(field: &'static str, path: &Path) -> Result<String, BootPlanError> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| BootPlanError::NonUtf8Path {
            field,
            path: path.to_path_buf(),
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::PathBuf;

    fn spec() -> LaunchSpec {
        LaunchSpec {
            uid: "3f0c2a4e-0000-4000-8000-000000000001".into(),
            name: "web".into(),
            vcpus: 2,
            memory_mib: 512,
            kernel: "/images/k/vmlinux".into(),
            initrd: Some("/images/k/initrd.img".into()),
            cmdline: "console=ttyS0 reboot=k panic=1 root=/dev/vda rw".into(),
            root_disk: "/state/vms/web/root.ext4".into(),
            tap: Some("bgtap3f0c2a4e".into()),
            mac: "02:3f:0c:2a:4e:01".into(),
            vm_dir: "/state/vms/web".into(),
            console_log: "/state/vms/web/console.log".into(),
            confinement: crate::testutil::test_confinement(),
        }
    }

    #[test]
    fn full_sequence_in_order_with_exact_bodies() {
        let calls = boot_sequence(&spec(), Path::new("/state/vms/web/firecracker.log")).unwrap();
        let paths: Vec<&str> = calls.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/logger",
                "/machine-config",
                "/boot-source",
                "/drives/rootfs",
                "/network-interfaces/eth0",
                "/actions"
            ]
        );
        assert_eq!(
            calls[0].body,
            json!({"log_path": "/state/vms/web/firecracker.log", "level": "Info",
                   "show_level": true, "show_log_origin": false})
        );
        assert_eq!(calls[1].body, json!({"vcpu_count": 2, "mem_size_mib": 512}));
        assert_eq!(
            calls[2].body,
            json!({"kernel_image_path": "/images/k/vmlinux",
                   "initrd_path": "/images/k/initrd.img",
                   "boot_args": "console=ttyS0 reboot=k panic=1 root=/dev/vda rw"})
        );
        assert_eq!(
            calls[3].body,
            json!({"drive_id": "rootfs", "path_on_host": "/state/vms/web/root.ext4",
                   "is_root_device": true, "is_read_only": false})
        );
        assert_eq!(
            calls[4].body,
            json!({"iface_id": "eth0", "host_dev_name": "bgtap3f0c2a4e",
                   "guest_mac": "02:3f:0c:2a:4e:01"})
        );
        assert_eq!(calls[5].body, json!({"action_type": "InstanceStart"}));
    }

    #[test]
    fn no_tap_means_no_network_interface_and_no_initrd_means_no_field() {
        let mut spec = spec();
        spec.tap = None;
        spec.initrd = None;
        let calls = boot_sequence(&spec, Path::new("/l")).unwrap();
        assert!(calls
            .iter()
            .all(|c| !c.path.starts_with("/network-interfaces")));
        let boot = calls.iter().find(|c| c.path == "/boot-source").unwrap();
        assert!(boot.body.get("initrd_path").is_none());
        assert_eq!(calls.last().unwrap().path, "/actions");
    }

    #[test]
    fn non_utf8_path_is_refused_naming_the_field() {
        use std::os::unix::ffi::OsStringExt;
        let mut spec = spec();
        spec.root_disk = PathBuf::from(std::ffi::OsString::from_vec(vec![b'/', 0xff]));
        let err = boot_sequence(&spec, Path::new("/l")).unwrap_err();
        assert!(err.to_string().starts_with("root disk path"), "{err}");
    }
}
