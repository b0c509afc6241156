//! TEST STAND-IN for the `firecracker` binary, used only by banger's Firecracker driver
//! tests (`tests/firecracker_api.rs` in this crate). It boots nothing.
//!
//! It accepts Firecracker's command line (`--api-sock PATH --id ID`, or `--version`; also
//! `--flag=value` and the `--start-time-us`/`--start-time-cpu-us`/`--parent-cpu-time-us`
//! the jailer adds when it execs Firecracker) and
//! serves the in-test API model (this crate's library) on the socket, so the driver's real
//! process handling (detached spawn, socket wait, identity, signals) is exercised. Its
//! stdout plays the guest's serial console: a line when the instance starts, and on
//! Ctrl-Alt-Del what its behaviour file asks for.
//!
//! The behaviour file is [`BEHAVIOUR_FILE`] next to the API socket (the test writes it
//! into the VM directory; absent means all defaults), JSON like
//! `{"on_ctrl_alt_del": "reset", "ignore_sigterm": false}`:
//! - `on_ctrl_alt_del`: `reset` (default): the "guest" resets and the process exits, as
//!   Firecracker does; `ignore`: the "guest" ignores the key press; `power-off`: the
//!   kernel's power-down line is printed and the process stays alive (a halted guest
//!   under a live VMM);
//! - `ignore_sigterm`: survive SIGTERM (SIGKILL still works). Every SIGTERM is noted on
//!   stdout.
//!
//! Every API request is appended as a JSON line to [`JOURNAL_FILE`] next to the socket.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use banger_test_firecracker::{FcApiServer, FirecrackerModel, InstanceEvent, MODEL_VERSION};
use tokio::signal::unix::{signal, SignalKind};

/// Behaviour file name, next to the API socket.
const BEHAVIOUR_FILE: &str = "fc-stand-in.json";
/// Request journal file name, next to the API socket.
const JOURNAL_FILE: &str = "fc-stand-in.journal";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
enum CtrlAltDel {
    #[default]
    Reset,
    Ignore,
    PowerOff,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Behaviour {
    on_ctrl_alt_del: CtrlAltDel,
    ignore_sigterm: bool,
}

enum Invocation {
    Version,
    Serve { socket: PathBuf, id: String },
}

fn parse_args(args: &[String]) -> Result<Invocation, String> {
    if args == ["--version"] {
        return Ok(Invocation::Version);
    }
    let mut socket = None;
    let mut id = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        // `--flag value` or `--flag=value` (the jailer passes `--id=<id>`).
        let (flag, value) = match arg.split_once('=') {
            Some((flag, value)) => (flag, value.to_owned()),
            None => (
                arg.as_str(),
                rest.next()
                    .ok_or_else(|| format!("{arg} needs a value"))?
                    .clone(),
            ),
        };
        match flag {
            "--api-sock" => socket = Some(PathBuf::from(value)),
            "--id" => id = Some(value),
            // What the jailer adds for Firecracker's own start-up metrics.
            "--start-time-us" | "--start-time-cpu-us" | "--parent-cpu-time-us" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Invocation::Serve {
        socket: socket.ok_or("--api-sock is required")?,
        id: id.unwrap_or_else(|| "anonymous-instance".to_owned()),
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match parse_args(&args) {
        Ok(Invocation::Version) => {
            println!("Firecracker v{MODEL_VERSION}");
            Ok(())
        }
        Ok(Invocation::Serve { socket, id }) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))
            .and_then(|runtime| runtime.block_on(serve(socket, id))),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("[stand-in firecracker] error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(socket: PathBuf, id: String) -> Result<(), String> {
    let dir = socket.parent().map(PathBuf::from).unwrap_or_default();
    let behaviour: Behaviour = match std::fs::read(dir.join(BEHAVIOUR_FILE)) {
        Ok(text) => serde_json::from_slice(&text).map_err(|e| format!("{BEHAVIOUR_FILE}: {e}"))?,
        Err(_) => Behaviour::default(),
    };
    let Behaviour {
        on_ctrl_alt_del,
        ignore_sigterm,
    } = behaviour;
    if socket.exists() {
        return Err(format!(
            "failed to open the API socket {}: address in use",
            socket.display()
        ));
    }
    let model = FirecrackerModel::new(&id).with_journal_file(dir.join(JOURNAL_FILE));
    let (reset_tx, mut reset_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let hook = Arc::new(move |event: InstanceEvent| match (event, on_ctrl_alt_del) {
        (InstanceEvent::Started, _) => {
            println!("[stand-in firecracker {id}] instance started (test stand-in: no guest runs)");
        }
        (InstanceEvent::CtrlAltDel, CtrlAltDel::Reset) => {
            println!("reboot: Restarting system");
            let _ = reset_tx.send(());
        }
        (InstanceEvent::CtrlAltDel, CtrlAltDel::Ignore) => {
            println!("[stand-in firecracker] Ctrl-Alt-Del ignored by the guest");
        }
        (InstanceEvent::CtrlAltDel, CtrlAltDel::PowerOff) => println!("reboot: Power down"),
    });
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    let _server = FcApiServer::start_model(&socket, model, Some(hook))
        .map_err(|e| format!("bind {}: {e}", socket.display()))?;
    loop {
        tokio::select! {
            Some(()) = reset_rx.recv() => {
                // The guest takes a moment to reset; meanwhile the answer is written.
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Ok(());
            }
            _ = sigterm.recv() => {
                println!("[stand-in firecracker] SIGTERM received");
                if !ignore_sigterm {
                    return Ok(());
                }
            }
        }
    }
}
