//! `banger connect VM PORT`: a byte stream between stdin/stdout and a guest's TCP
//! port, through the daemon (`GET /v1/vms/{name}/connect`). It is the `ProxyCommand`
//! of `banger ssh` and `banger ssh-config`.

use std::io::Read;
use std::process::ExitCode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{DaemonClient, GuestStream};
use crate::error::CliError;
use crate::guest_ssh::{vm_name, AccessError};

/// Bytes read from stdin at a time.
const CHUNK: usize = 64 * 1024;

/// Arguments of `banger connect`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
The daemon dials the guest (it may live in another network namespace) and refuses
with one line, before any byte flows, when the VM is unknown or not running or the
port does not accept. End of input on stdin is passed on to the guest (half-close);
banger exits when the guest closes its side.

Examples:
  # Talk to the guest's SSH server by hand
  banger connect dev 22

  # The ProxyCommand that `banger ssh` and `banger ssh-config` use (NAME.banger works too)
  ssh -o ProxyCommand='banger connect %h 22' root@dev.banger

  # Send a request to a web server in the guest
  printf 'GET / HTTP/1.0\\r\\n\\r\\n' | banger connect dev 8080")]
pub struct ConnectArgs {
    /// The VM: NAME or NAME.banger.
    #[arg(value_name = "VM")]
    pub vm: String,
    /// The guest's TCP port.
    #[arg(value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
}

/// Runs `banger connect`.
pub async fn run(client: &DaemonClient, args: &ConnectArgs) -> Result<ExitCode, CliError> {
    let vm = vm_name(&args.vm);
    let stream = client.connect(vm, args.port).await?;
    pump(stream).await.map_err(|source| AccessError::Local {
        vm: vm.to_string(),
        what: format!("port {}", args.port),
        source,
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A write to stdout that fails because its reader went away (`ssh` closing its
/// ProxyCommand after refusing a host key, `head` after enough lines) ends the stream
/// like the guest's end of file; any other error stays one.
fn reader_gone_is_the_end(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(e)
    }
}

/// Copies stdin to the guest and the guest to stdout. stdin is read on a thread of its
/// own (a blocked read of a terminal must not hold a runtime worker or the exit);
/// its end of file becomes a half-close towards the guest. Returns when the guest has
/// closed its side.
async fn pump(stream: GuestStream) -> std::io::Result<()> {
    let (mut from_guest, mut to_guest) = tokio::io::split(stream);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; CHUNK];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    });
    let upload = async move {
        while let Some(chunk) = rx.recv().await {
            to_guest.write_all(&chunk).await?;
        }
        to_guest.shutdown().await
    };
    let download = async move {
        let mut stdout = tokio::io::stdout();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = from_guest.read(&mut buf).await?;
            if n == 0 {
                return stdout.flush().await;
            }
            let written = match stdout.write_all(&buf[..n]).await {
                Ok(()) => stdout.flush().await,
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                return reader_gone_is_the_end(e);
            }
        }
    };
    tokio::pin!(upload);
    tokio::pin!(download);
    let mut uploading = true;
    loop {
        tokio::select! {
            done = &mut download => return done,
            sent = &mut upload, if uploading => {
                sent?;
                uploading = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::reader_gone_is_the_end;
    use std::io::{Error, ErrorKind};

    #[test]
    fn a_closed_reader_ends_the_stream_and_other_errors_stay() {
        assert!(reader_gone_is_the_end(Error::from(ErrorKind::BrokenPipe)).is_ok());
        let other = reader_gone_is_the_end(Error::from(ErrorKind::PermissionDenied));
        assert_eq!(
            other.map_err(|e| e.kind()),
            Err(ErrorKind::PermissionDenied)
        );
    }
}
