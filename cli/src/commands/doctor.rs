//! `banger doctor`: can this host run banger's VMs? PASS/WARN/FAIL lines, exit 1 on FAIL.
//!
//! The checks themselves live in the controller ([`banger_controller::doctor`]);
//! this command only fills in the paths and prints the report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use banger_controller::doctor::{self, DoctorConfig};

use crate::error::{print_out, CliError};
use crate::paths::DefaultPaths;

/// Arguments of `banger doctor`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Checks /dev/kvm (and whether stock guest kernels can use it), the QEMU and Firecracker
binaries (QEMU must offer -sandbox and -add-fd), /dev/net/tun, the VMM user, the cgroup
hierarchies (memory and pids, v2 or v1), bridge support, nft, mkfs.ext4 and resize2fs,
which default kernel Images without `kernel` boot (<state-dir>/guest/vmlinux and its
initrd, or --guest-dir), free space in the state directory, and whether the daemon
answers on its socket.
Exit status: 0 when nothing FAILs, 1 otherwise.

Examples:
  sudo banger doctor
  banger doctor --state-dir /srv/banger --qemu-bin /opt/qemu/bin/qemu-system-x86_64")]
pub struct DoctorArgs {
    /// The daemon's state directory (default as for `banger daemon`).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// QEMU binary (default: qemu-system-x86_64 on PATH).
    #[arg(long, value_name = "PATH")]
    pub qemu_bin: Option<PathBuf>,
    /// Firecracker binary (default: firecracker on PATH).
    #[arg(long, value_name = "PATH")]
    pub firecracker_bin: Option<PathBuf>,
    /// The daemon's guest directory (default kernel, initrd, guest bits) [default:
    /// <state-dir>/guest].
    #[arg(long, value_name = "DIR")]
    pub guest_dir: Option<PathBuf>,
    /// The user the VMMs run as (default: banger-vmm).
    #[arg(long, value_name = "NAME")]
    pub vmm_user: Option<String>,
}

/// Runs `banger doctor`.
pub async fn run(socket: &Path, args: &DoctorArgs) -> Result<ExitCode, CliError> {
    let defaults = DefaultPaths::current();
    let state_dir = args.state_dir.clone().unwrap_or(defaults.state_dir);
    let mut config = DoctorConfig::new(state_dir, socket);
    if let Some(qemu) = &args.qemu_bin {
        config.qemu_bin = qemu.clone();
    }
    if let Some(firecracker) = &args.firecracker_bin {
        config.firecracker_bin = firecracker.clone();
    }
    if let Some(dir) = &args.guest_dir {
        config.guest_dir = dir.clone();
    }
    if let Some(user) = &args.vmm_user {
        config.vmm_user = user.clone();
    }
    let results = doctor::run_checks(&config).await;
    print_out(&doctor::format_report(&results))?;
    Ok(if doctor::has_failures(&results) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
