//! `banger port-forward VM [LOCAL:]REMOTE...`: listen on 127.0.0.1 and forward each
//! connection to a guest port through the daemon, until interrupted.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use tokio::net::{TcpListener, TcpStream};

use crate::client::DaemonClient;
use crate::error::{print_out, CliError};
use crate::guest_ssh::{ready_vm, vm_name, AccessError};

/// One forwarded port: `local` on 127.0.0.1 (0: any free port) to `remote` in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// Local port on 127.0.0.1; 0 lets the system choose.
    pub local: u16,
    /// Guest port.
    pub remote: u16,
}

/// Parses `REMOTE`, `LOCAL:REMOTE` or `:REMOTE` (a free local port).
pub fn parse_forward(s: &str) -> Result<Forward, String> {
    let port = |p: &str, what: &str| -> Result<u16, String> {
        p.parse::<u16>()
            .map_err(|_| format!("{what} port {p:?} is not a number from 0 to 65535"))
    };
    let (local, remote) = match s.split_once(':') {
        Some(("", remote)) => (0, port(remote, "remote")?),
        Some((local, remote)) => (port(local, "local")?, port(remote, "remote")?),
        None => {
            let p = port(s, "remote")?;
            (p, p)
        }
    };
    if remote == 0 {
        return Err(format!("{s:?}: the remote port must be 1 to 65535"));
    }
    Ok(Forward { local, remote })
}

/// Arguments of `banger port-forward`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Each [LOCAL:]REMOTE listens on 127.0.0.1:LOCAL (LOCAL defaults to REMOTE; `:REMOTE` or
`0:REMOTE` picks a free port) and forwards every connection to port REMOTE of the guest,
through the daemon, until Ctrl-C. It prints one line per port:
`Forwarding from 127.0.0.1:LOCAL -> VM:REMOTE`. A connection the guest refuses is closed
and reported on stderr; the others go on.

Examples:
  banger port-forward dev 8080
  banger port-forward dev 9000:80 :5432")]
pub struct PortForwardArgs {
    /// The VM: NAME or NAME.banger.
    #[arg(value_name = "VM")]
    pub vm: String,
    /// Ports to forward: [LOCAL:]REMOTE.
    #[arg(value_name = "[LOCAL:]REMOTE", required = true, value_parser = parse_forward)]
    pub ports: Vec<Forward>,
}

/// Runs `banger port-forward`.
pub async fn run(client: &DaemonClient, args: &PortForwardArgs) -> Result<ExitCode, CliError> {
    let vm = vm_name(&args.vm).to_string();
    ready_vm(client, &vm).await?;
    let mut listeners = Vec::new();
    for forward in &args.ports {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, forward.local));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AccessError::Local {
                vm: vm.clone(),
                what: format!("listening on {addr}"),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| AccessError::Local {
            vm: vm.clone(),
            what: format!("listening on {addr}"),
            source,
        })?;
        print_out(&format!(
            "Forwarding from {local} -> {vm}:{}\n",
            forward.remote
        ))?;
        listeners.push((listener, forward.remote));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (listener, remote) in listeners {
        tasks.spawn(accept_loop(client.clone(), vm.clone(), listener, remote));
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(ExitCode::SUCCESS),
        Some(Ok(Err(error))) = tasks.join_next() => Err(error),
    }
}

/// Accepts connections on `listener` and forwards each one in a task of its own.
async fn accept_loop(
    client: DaemonClient,
    vm: String,
    listener: TcpListener,
    remote: u16,
) -> Result<(), CliError> {
    loop {
        let (conn, peer) = listener
            .accept()
            .await
            .map_err(|source| AccessError::Local {
                vm: vm.clone(),
                what: format!("accepting on port {remote}"),
                source,
            })?;
        let (client, vm) = (client.clone(), vm.clone());
        tokio::spawn(async move {
            if let Err(e) = forward(&client, &vm, conn, remote).await {
                eprintln!("error: forwarding {peer} -> {vm}:{remote}: {e}");
            }
        });
    }
}

/// One connection: a connect stream to the guest, bytes copied both ways (half-close
/// passed on) until both sides are done.
async fn forward(
    client: &DaemonClient,
    vm: &str,
    mut conn: TcpStream,
    remote: u16,
) -> Result<(), CliError> {
    let mut guest = client.connect(vm, remote).await?;
    tokio::io::copy_bidirectional(&mut conn, &mut guest)
        .await
        .map_err(|source| AccessError::Local {
            vm: vm.to_string(),
            what: format!("port {remote}"),
            source,
        })?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn forwards_parse_like_kubectl() {
        let f = |local, remote| Forward { local, remote };
        assert_eq!(parse_forward("8080"), Ok(f(8080, 8080)));
        assert_eq!(parse_forward("9000:80"), Ok(f(9000, 80)));
        assert_eq!(parse_forward(":80"), Ok(f(0, 80)));
        assert_eq!(parse_forward("0:80"), Ok(f(0, 80)));
        for bad in ["", "0", "80:", "x", "1:2:3", "70000", "80:0", "-1"] {
            assert!(parse_forward(bad).is_err(), "{bad:?} accepted");
        }
    }
}
