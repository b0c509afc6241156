//! Accelerator detection: can stock guest kernels run on this host's KVM?
//!
//! `/dev/kvm` existing is not enough. A host whose KVM is the paravirtualised `kvm_pvm`
//! module (recognised by `/sys/module/kvm_pvm`) accepts VMs but stock guest kernels
//! never get past early boot, so such a host must use TCG (QEMU) and cannot run
//! Firecracker. [`detect`] is the one probe behind what each hypervisor driver says it
//! needs of the host (and so `hypervisor: auto`), the QEMU driver's `accel` choice and
//! `banger doctor`; [`resolve`] is the pure accelerator decision.

use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The accelerator a user asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM when stock guests can run on it, else TCG.
    #[default]
    Auto,
    /// KVM, even on a host where detection says stock guests cannot use it.
    Kvm,
    /// QEMU's TCG software emulation.
    Tcg,
}

impl FromStr for Accel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Accel::Auto),
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            other => Err(format!("accelerator {other:?}: expected auto, kvm or tcg")),
        }
    }
}

/// A concrete accelerator, after detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResolvedAccel {
    /// Hardware virtualisation through `/dev/kvm`.
    Kvm,
    /// Software emulation.
    Tcg,
}

impl ResolvedAccel {
    /// `kvm` or `tcg`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResolvedAccel::Kvm => "kvm",
            ResolvedAccel::Tcg => "tcg",
        }
    }
}

/// What the host's KVM can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmStatus {
    /// `/dev/kvm` opens and answers, and it is not a paravirtual-only KVM.
    Usable,
    /// `/dev/kvm` works but the module is `kvm_pvm`: stock guests cannot boot.
    ParavirtOnly,
    /// `/dev/kvm` does not exist.
    Missing,
    /// `/dev/kvm` exists but cannot be used.
    Unusable {
        /// Why (permission, wrong API version, …).
        reason: String,
    },
}

impl KvmStatus {
    /// Whether stock guest kernels can run with KVM acceleration.
    pub fn stock_guests_can_run(&self) -> bool {
        matches!(self, KvmStatus::Usable)
    }

    /// Whether `/dev/kvm` itself can be opened and used (even if only by PVM guests).
    pub fn device_usable(&self) -> bool {
        matches!(self, KvmStatus::Usable | KvmStatus::ParavirtOnly)
    }
}

impl fmt::Display for KvmStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvmStatus::Usable => write!(f, "/dev/kvm is usable by stock guests"),
            KvmStatus::ParavirtOnly => {
                write!(f, "/dev/kvm is provided by kvm_pvm: stock guest kernels cannot run on it (TCG is used)")
            }
            KvmStatus::Missing => write!(f, "/dev/kvm does not exist (TCG is used)"),
            KvmStatus::Unusable { reason } => {
                write!(f, "/dev/kvm is unusable: {reason} (TCG is used)")
            }
        }
    }
}

/// Where [`detect_at`] looks; [`KvmPaths::default`] is the real host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmPaths {
    /// The KVM device, `/dev/kvm`.
    pub device: PathBuf,
    /// The loaded-modules directory, `/sys/module`.
    pub sys_module: PathBuf,
}

impl Default for KvmPaths {
    fn default() -> Self {
        KvmPaths {
            device: PathBuf::from("/dev/kvm"),
            sys_module: PathBuf::from("/sys/module"),
        }
    }
}

/// `KVM_GET_API_VERSION` is `_IO(KVMIO = 0xAE, 0x00)`; every KVM answers 12.
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
const KVM_API_VERSION: libc::c_int = 12;

/// Probes the real host's KVM.
pub fn detect() -> KvmStatus {
    detect_at(&KvmPaths::default())
}

/// Probes KVM at the given paths: opens the device read-write, asks its API version and
/// looks for the `kvm_pvm` module.
pub fn detect_at(paths: &KvmPaths) -> KvmStatus {
    let device = open_and_check(&paths.device);
    let pvm = paths.sys_module.join("kvm_pvm").exists();
    classify(device, pvm)
}

/// The pure decision of [`detect_at`]: what opening the device gave, and whether the
/// `kvm_pvm` module is loaded.
pub fn classify(device: Result<(), io::Error>, pvm_module_loaded: bool) -> KvmStatus {
    match device {
        Err(e) if e.kind() == io::ErrorKind::NotFound => KvmStatus::Missing,
        Err(e) => KvmStatus::Unusable {
            reason: e.to_string(),
        },
        Ok(()) if pvm_module_loaded => KvmStatus::ParavirtOnly,
        Ok(()) => KvmStatus::Usable,
    }
}

fn open_and_check(device: &Path) -> Result<(), io::Error> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(device)?;
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an integer; the
    // descriptor is valid for the duration of the call.
    let version = unsafe { libc::ioctl(file.as_raw_fd(), KVM_GET_API_VERSION, 0) };
    if version < 0 {
        return Err(io::Error::other(format!(
            "KVM_GET_API_VERSION: {}",
            io::Error::last_os_error()
        )));
    }
    if version != KVM_API_VERSION {
        return Err(io::Error::other(format!(
            "KVM API version {version}, expected {KVM_API_VERSION}"
        )));
    }
    Ok(())
}

/// An accelerator that cannot be used as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("accelerator kvm was requested but {status}")]
pub struct AccelError {
    /// What detection found.
    pub status: KvmStatus,
}

/// Picks the accelerator: `auto` uses KVM only when stock guests can run on it; `kvm`
/// is honoured whenever `/dev/kvm` itself works (an explicit override, also on a
/// `kvm_pvm` host), and refused otherwise; `tcg` is always possible.
pub fn resolve(requested: Accel, status: &KvmStatus) -> Result<ResolvedAccel, AccelError> {
    match requested {
        Accel::Tcg => Ok(ResolvedAccel::Tcg),
        Accel::Auto if status.stock_guests_can_run() => Ok(ResolvedAccel::Kvm),
        Accel::Auto => Ok(ResolvedAccel::Tcg),
        Accel::Kvm if status.device_usable() => Ok(ResolvedAccel::Kvm),
        Accel::Kvm => Err(AccelError {
            status: status.clone(),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        assert_eq!(classify(Ok(()), false), KvmStatus::Usable);
        assert_eq!(classify(Ok(()), true), KvmStatus::ParavirtOnly);
        assert_eq!(
            classify(Err(io::ErrorKind::NotFound.into()), false),
            KvmStatus::Missing
        );
        let denied = classify(Err(io::ErrorKind::PermissionDenied.into()), true);
        assert!(matches!(denied, KvmStatus::Unusable { .. }));
        assert!(!denied.device_usable());
    }

    #[test]
    fn resolves() {
        use Accel::*;
        assert_eq!(
            resolve(Auto, &KvmStatus::Usable).unwrap(),
            ResolvedAccel::Kvm
        );
        assert_eq!(
            resolve(Auto, &KvmStatus::ParavirtOnly).unwrap(),
            ResolvedAccel::Tcg
        );
        assert_eq!(
            resolve(Auto, &KvmStatus::Missing).unwrap(),
            ResolvedAccel::Tcg
        );
        assert_eq!(
            resolve(Tcg, &KvmStatus::Usable).unwrap(),
            ResolvedAccel::Tcg
        );
        assert_eq!(
            resolve(Kvm, &KvmStatus::ParavirtOnly).unwrap(),
            ResolvedAccel::Kvm
        );
        let err = resolve(Kvm, &KvmStatus::Missing).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn parses_accel() {
        assert_eq!("auto".parse::<Accel>().unwrap(), Accel::Auto);
        assert_eq!("tcg".parse::<Accel>().unwrap(), Accel::Tcg);
        assert!("hvf"
            .parse::<Accel>()
            .unwrap_err()
            .contains("auto, kvm or tcg"));
    }

    #[test]
    fn detects_fake_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let sys_module = dir.path().join("module");
        std::fs::create_dir_all(sys_module.join("kvm_pvm")).unwrap();
        let missing = KvmPaths {
            device: dir.path().join("kvm"),
            sys_module: sys_module.clone(),
        };
        assert_eq!(detect_at(&missing), KvmStatus::Missing);
        // A regular file is not a KVM device: the ioctl fails.
        std::fs::write(dir.path().join("kvm"), b"").unwrap();
        assert!(matches!(detect_at(&missing), KvmStatus::Unusable { .. }));
    }

    #[test]
    fn detects_this_host_consistently() {
        // On this project's machines the answer is ParavirtOnly; elsewhere it must at
        // least agree with what the filesystem shows.
        let status = detect();
        let pvm = Path::new("/sys/module/kvm_pvm").exists();
        let dev = Path::new("/dev/kvm").exists();
        match status {
            KvmStatus::Usable => assert!(dev && !pvm),
            KvmStatus::ParavirtOnly => assert!(dev && pvm),
            KvmStatus::Missing => assert!(!dev),
            KvmStatus::Unusable { .. } => assert!(dev),
        }
    }
}
