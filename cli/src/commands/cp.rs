//! `banger cp SRC DST`: copy files and directories between this machine and a VM, one
//! side written `VM:PATH` (like `kubectl cp`), as tar streams over ssh through the
//! daemon ([`crate::transfer`]).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use tokio::io::AsyncReadExt;

use crate::client::DaemonClient;
use crate::error::CliError;
use crate::guest_ssh::{vm_name, AccessError, GuestSsh};
use crate::transfer::{
    download_script, local_source, unpack_into_place, upload_script, write_archive, TransferError,
};

/// Most bytes of the guest command's stderr kept for the error message.
const STDERR_LIMIT: u64 = 64 * 1024;

/// Arguments of `banger cp`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Exactly one of SRC and DST is VM:PATH (a VM name, a colon, a path in the guest; a path
relative to root's home is fine). A local path that contains a colon before any slash
must be written ./like:this.

Works like `cp -r`: when DST is an existing directory the copy lands inside it under
SRC's name, otherwise it becomes DST; a directory copied onto an existing directory is
merged into it. Contents, permission bits, modification times and symbolic links are
kept; files belong to root in the guest and to you here (set-user-ID and set-group-ID
bits of files coming out of a guest are dropped). The guest needs `sh` and `tar`.

Examples:
  banger cp ./dir dev:/root/x
  banger cp dev:/etc/os-release .
  banger cp dev:/root/src/target/report.html ./report.html")]
pub struct CpArgs {
    /// What to copy: a local path or VM:PATH.
    #[arg(value_name = "SRC")]
    pub src: String,
    /// Where to: a local path or VM:PATH.
    #[arg(value_name = "DST")]
    pub dst: String,
}

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A path on this machine.
    Local(PathBuf),
    /// A path in a VM's guest.
    Guest {
        /// The VM.
        vm: String,
        /// The guest path.
        path: String,
    },
}

/// `VM:PATH` when a colon comes before any slash (kubectl's rule), else a local path.
pub fn parse_location(arg: &str) -> Location {
    match arg.split_once(':') {
        Some((vm, path)) if !vm.is_empty() && !vm.contains('/') => Location::Guest {
            vm: vm_name(vm).to_string(),
            path: path.to_string(),
        },
        _ => Location::Local(PathBuf::from(arg)),
    }
}

/// Runs `banger cp`.
pub async fn run(client: &DaemonClient, args: &CpArgs) -> Result<ExitCode, CliError> {
    let usage = |what: &str| CliError::Usage(format!("cp: {what}"));
    match (parse_location(&args.src), parse_location(&args.dst)) {
        (Location::Local(src), Location::Guest { vm, path }) => {
            if path.is_empty() {
                return Err(usage(&format!("name a guest path after {vm}:")));
            }
            upload(client, &src, &vm, &path).await?;
        }
        (Location::Guest { vm, path }, Location::Local(dst)) => {
            if path.is_empty() {
                return Err(usage(&format!("name a guest path after {vm}:")));
            }
            download(client, &vm, &path, &dst).await?;
        }
        (Location::Local(_), Location::Local(_)) => {
            return Err(usage(
                "one of SRC and DST must be VM:PATH (use ./a:b for a local path with a colon)",
            ))
        }
        (Location::Guest { .. }, Location::Guest { .. }) => {
            return Err(usage(
                "copies between this machine and a VM: one of SRC and DST must be local",
            ))
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn local(vm: &str, what: String) -> impl FnOnce(std::io::Error) -> AccessError {
    let vm = vm.to_string();
    move |source| AccessError::Local { vm, what, source }
}

/// Reads at most [`STDERR_LIMIT`] bytes of the guest command's stderr, then drains it.
async fn read_stderr(pipe: Option<tokio::process::ChildStderr>) -> Vec<u8> {
    let Some(pipe) = pipe else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut limited = pipe.take(STDERR_LIMIT);
    let _ = limited.read_to_end(&mut kept).await;
    let _ = tokio::io::copy(&mut limited.into_inner(), &mut tokio::io::sink()).await;
    kept
}

/// A local file copied or a directory's tree, to `vm:dst`.
async fn upload(client: &DaemonClient, src: &Path, vm: &str, dst: &str) -> Result<(), CliError> {
    let source = src.to_path_buf();
    let (kind, name) = tokio::task::spawn_blocking(move || local_source(&source))
        .await
        .map_err(|e| local(vm, "cp".to_string())(std::io::Error::other(e.to_string())))?
        .map_err(|e| transfer_failed(vm, e))?;
    let guest = GuestSsh::open(client, vm).await?;
    let script = upload_script(kind, dst, &name);
    let (mut child, log) = guest
        .spawn(&["-T"], &script, Stdio::piped(), Stdio::null())
        .await?;
    let what = format!("copying {} to {dst}", src.display());
    let stdin: OwnedFd = child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("no stdin pipe"))
        .and_then(|pipe| pipe.into_owned_fd())
        .map_err(local(vm, what.clone()))?;
    let source = src.to_path_buf();
    let writer = tokio::task::spawn_blocking(move || {
        write_archive(&source, kind, std::fs::File::from(stdin))
    });
    let stderr = read_stderr(child.stderr.take()).await;
    let status = child.wait().await.map_err(local(vm, what.clone()))?;
    let written = writer
        .await
        .map_err(|e| local(vm, what.clone())(std::io::Error::other(e.to_string())))?;
    guest.finish(&what, status, log.path(), &stderr).await?;
    let stats = written.map_err(|e| transfer_failed(vm, e))?;
    if stats.skipped > 0 {
        eprintln!(
            "warning: {} sockets, FIFOs or devices under {} were not copied",
            stats.skipped,
            src.display()
        );
    }
    Ok(())
}

/// `vm:src` (a file or a directory's tree) copied to `dst` here.
async fn download(client: &DaemonClient, vm: &str, src: &str, dst: &Path) -> Result<(), CliError> {
    let guest = GuestSsh::open(client, vm).await?;
    let (mut child, log) = guest
        .spawn(
            &["-T", "-n"],
            &download_script(src),
            Stdio::null(),
            Stdio::piped(),
        )
        .await?;
    let what = format!("copying {src} to {}", dst.display());
    let stdout: OwnedFd = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no stdout pipe"))
        .and_then(|pipe| pipe.into_owned_fd())
        .map_err(local(vm, what.clone()))?;
    let target = dst.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || {
        let mut archive = std::fs::File::from(stdout);
        let landed = unpack_into_place(&mut archive, &target);
        // Whatever follows the archive is read to the end, so the guest's tar never
        // blocks on a full pipe.
        let _ = std::io::copy(&mut archive, &mut std::io::sink());
        landed
    });
    let stderr = read_stderr(child.stderr.take()).await;
    let status = child.wait().await.map_err(local(vm, what.clone()))?;
    let landed = reader
        .await
        .map_err(|e| local(vm, what.clone())(std::io::Error::other(e.to_string())))?;
    guest.finish(&what, status, log.path(), &stderr).await?;
    landed.map_err(|e| transfer_failed(vm, e))?;
    Ok(())
}

fn transfer_failed(vm: &str, error: TransferError) -> CliError {
    AccessError::Remote {
        vm: vm.to_string(),
        what: "cp".to_string(),
        message: error.to_string(),
    }
    .into()
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_colon_before_any_slash_names_a_vm() {
        let guest = |vm: &str, path: &str| Location::Guest {
            vm: vm.into(),
            path: path.into(),
        };
        assert_eq!(
            parse_location("dev:/etc/os-release"),
            guest("dev", "/etc/os-release")
        );
        assert_eq!(parse_location("dev.banger:notes"), guest("dev", "notes"));
        assert_eq!(parse_location("dev:"), guest("dev", ""));
        for local in ["./a:b", "/tmp/a:b", "plain", ":x", "dir/dev:x"] {
            assert_eq!(
                parse_location(local),
                Location::Local(PathBuf::from(local)),
                "{local}"
            );
        }
    }
}
