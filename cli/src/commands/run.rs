//! `banger run [PATH] [-- CMD…]`: the one-command sandbox. Writes a VM (and, with
//! PATH, a Workspace of that checkout) owned by the CLI, applies it, waits until the VM
//! is Ready and the Workspace Synced (with progress on a terminal), then opens a shell
//! (`banger ssh`) or runs CMD and exits with its status; `--rm` deletes what it created
//! afterwards, also after Ctrl-C. `--dry-run` prints the specs instead, for `apply` or
//! the specs directory.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use banger_controller::api::types::{
    ApplyRequest, DeleteRequest, ObjectRef, ObjectView, SourceFile,
};
use banger_specs::name::check_dns_label;
use banger_specs::{ByteSize, Kind};
use serde::Serialize;
use tokio::time::Instant;

use crate::client::DaemonClient;
use crate::duration::parse_duration;
use crate::error::{print_out, CliError};
use crate::guest_ssh::{off_runtime, GuestSsh};
use crate::output::{condition, to_json, to_yaml};
use crate::quoting::{sh_join, sh_quote};
use crate::waiting::{current_state, WaitFor};

/// Arguments of `banger run`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Writes a VM (and, with PATH, a Workspace that copies that git checkout into it) owned by
the CLI, applies them, waits until the VM is Ready and the checkout copied (progress on
stderr when it is a terminal; an Image being pulled shows its pull as `apply --wait`
does: a bar on a terminal, a line per layer otherwise), then opens a shell in the VM (in the checkout's
directory) or runs CMD there and exits with CMD's status. The objects stay afterwards
(get back in with `banger ssh NAME`) unless --rm is given: then they are deleted when
the shell or CMD ends, or when banger run is interrupted (Ctrl-C).

The Image is --image, else the only Image the daemon knows (with several, --image
must choose; `banger get images` lists them). The name is --name, else the checkout's
directory name (or `run`) and a random suffix; a name already taken is refused.

Examples:
  banger run .                          # a sandbox with this checkout, and a shell in it
  banger run . --rm -- make test        # run the tests in a fresh VM, then delete it
  banger run --image base --memory 1GiB --vcpus 2 -- uname -a
  banger run . --name dev --dry-run > dev.yaml   # the specs, to keep in git
  banger apply -f dev.yaml")]
pub struct RunArgs {
    /// A git checkout to copy into the VM (a Workspace).
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,
    /// The Image to boot (default: the only one the daemon knows).
    #[arg(long, value_name = "NAME")]
    pub image: Option<String>,
    /// The name of the VM (and Workspace).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Virtual CPUs (1-32; default: the VM spec's default).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=32))]
    pub vcpus: Option<u8>,
    /// Memory, e.g. 1GiB (default: the VM spec's default).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory: Option<String>,
    /// Root disk size, e.g. 4GiB (default: the VM spec's default).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub disk: Option<String>,
    /// Delete the VM and Workspace afterwards (also when interrupted).
    #[arg(long, conflicts_with = "dry_run")]
    pub rm: bool,
    /// Print the specs instead of applying them.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: yaml (default) or json.
    #[arg(
        short = 'o',
        long,
        value_enum,
        value_name = "FORMAT",
        requires = "dry_run"
    )]
    pub output: Option<SpecFormat>,
    /// How long to wait for the VM to be Ready and the checkout copied.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// The command to run instead of a shell (after `--`).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `--dry-run -o`: how the specs are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SpecFormat {
    /// YAML documents separated by `---` (what `apply` and the specs directory read).
    Yaml,
    /// A JSON list of the documents.
    Json,
}

/// A size flag: checked like a spec's size, kept as written.
fn parse_size(text: &str) -> Result<String, String> {
    ByteSize::parse(text)
        .map(|_| text.trim().to_string())
        .map_err(|e| e.to_string())
}

/// One spec document, in the order people write them.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Document<S> {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata,
    spec: S,
}

#[derive(Debug, Clone, Serialize)]
struct Metadata {
    name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
struct VmSpecOut {
    image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    vcpus: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disk: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct WorkspaceSpecOut {
    vm: String,
    source: String,
}

/// The label `banger run` puts on what it creates (`created-by: banger-run`).
pub const RUN_LABEL: &str = "created-by";

/// What `banger run` creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPlan {
    /// The VM's (and Workspace's) name.
    pub name: String,
    /// The Image.
    pub image: String,
    /// The checkout, absolute, when there is one.
    pub source: Option<PathBuf>,
    /// `--vcpus`, `--memory`, `--disk`.
    pub vcpus: Option<u8>,
    /// Memory as written.
    pub memory: Option<String>,
    /// Disk as written.
    pub disk: Option<String>,
}

impl RunPlan {
    fn metadata(&self) -> Metadata {
        Metadata {
            name: self.name.clone(),
            labels: [(RUN_LABEL.to_string(), "banger-run".to_string())].into(),
        }
    }

    /// The specs as YAML documents.
    pub fn yaml(&self) -> Result<String, CliError> {
        let mut out = to_yaml(&self.vm_document())?;
        if let Some(ws) = self.workspace_document() {
            out.push_str("---\n");
            out.push_str(&to_yaml(&ws)?);
        }
        Ok(out)
    }

    /// The specs as a JSON list.
    pub fn json(&self) -> Result<String, CliError> {
        let mut docs = vec![serde_json::to_value(self.vm_document()).map_err(json_error)?];
        if let Some(ws) = self.workspace_document() {
            docs.push(serde_json::to_value(ws).map_err(json_error)?);
        }
        Ok(to_json(&docs)?)
    }

    fn vm_document(&self) -> Document<VmSpecOut> {
        Document {
            api_version: banger_specs::API_VERSION,
            kind: "VM",
            metadata: self.metadata(),
            spec: VmSpecOut {
                image: self.image.clone(),
                vcpus: self.vcpus,
                memory: self.memory.clone(),
                disk: self.disk.clone(),
            },
        }
    }

    fn workspace_document(&self) -> Option<Document<WorkspaceSpecOut>> {
        let source = self.source.as_ref()?;
        Some(Document {
            api_version: banger_specs::API_VERSION,
            kind: "Workspace",
            metadata: self.metadata(),
            spec: WorkspaceSpecOut {
                vm: self.name.clone(),
                source: source.to_string_lossy().into_owned(),
            },
        })
    }

    /// The objects it creates, Workspace first (the order they are deleted in).
    pub fn objects(&self) -> Vec<ObjectRef> {
        let mut objects = Vec::new();
        if self.source.is_some() {
            objects.push(ObjectRef {
                kind: Kind::Workspace,
                name: self.name.clone(),
            });
        }
        objects.push(ObjectRef {
            kind: Kind::Vm,
            name: self.name.clone(),
        });
        objects
    }
}

fn json_error(e: serde_json::Error) -> CliError {
    CliError::Print(crate::output::PrintError {
        format: "json",
        message: e.to_string(),
    })
}

/// A DNS label from a directory name: lower case, other characters as `-`, at most 50
/// characters (room for the suffix); `run` when nothing is left.
pub fn name_stem(dir: Option<&Path>) -> String {
    let raw = dir
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let mut stem = String::new();
    for c in raw.chars() {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if !(c == '-' && (stem.is_empty() || stem.ends_with('-'))) {
            stem.push(c);
        }
    }
    let stem: String = stem.chars().take(50).collect();
    let stem = stem.trim_end_matches('-').to_string();
    if stem.is_empty() {
        "run".to_string()
    } else {
        stem
    }
}

/// A fresh name: `STEM-xxxxxx` (six hex digits from the OS's random source). Blocking:
/// call it off the async workers.
fn fresh_name(stem: &str) -> std::io::Result<String> {
    let mut bytes = [0u8; 3];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))?;
    Ok(format!(
        "{stem}-{:02x}{:02x}{:02x}",
        bytes[0], bytes[1], bytes[2]
    ))
}

/// The Image to use: `wanted`, else the only one in `images`.
pub fn choose_image(wanted: Option<&str>, images: &[ObjectView]) -> Result<String, String> {
    if let Some(image) = wanted {
        return Ok(image.to_string());
    }
    let names: Vec<&str> = images
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none())
        .map(|i| i.metadata.name.as_str())
        .collect();
    match names.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(
            "the daemon knows no Image: apply one first (see examples/), or pass --image".into(),
        ),
        many => Err(format!(
            "the daemon knows {} Images ({}): choose one with --image",
            many.len(),
            many.join(", ")
        )),
    }
}

/// Builds the plan from the arguments (asking the daemon for the Image when needed).
async fn plan(client: &DaemonClient, args: &RunArgs) -> Result<RunPlan, CliError> {
    let source = match &args.path {
        Some(path) => {
            let path = path.clone();
            let shown = path.display().to_string();
            let absolute = off_runtime(move || {
                let absolute = std::path::absolute(&path)?;
                if !absolute.is_dir() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "not a directory (a git checkout is expected)",
                    ));
                }
                Ok(absolute)
            })
            .await
            .map_err(|e| CliError::Usage(format!("PATH {shown}: {e}")))?;
            Some(absolute)
        }
        None => None,
    };
    let image = match &args.image {
        Some(image) => image.clone(),
        None => {
            let images = client.list(Some(Kind::Image)).await?.items;
            choose_image(None, &images).map_err(CliError::Usage)?
        }
    };
    check_dns_label(&image).map_err(|e| CliError::Usage(format!("--image: {e}")))?;
    let name = match &args.name {
        Some(name) => {
            check_dns_label(name).map_err(|e| CliError::Usage(format!("--name: {e}")))?;
            name.clone()
        }
        None => {
            let stem = name_stem(source.as_deref());
            off_runtime(move || fresh_name(&stem))
                .await
                .map_err(|e| CliError::Usage(format!("a name from /dev/urandom: {e}")))?
        }
    };
    Ok(RunPlan {
        name,
        image,
        source,
        vcpus: args.vcpus,
        memory: args.memory.clone(),
        disk: args.disk.clone(),
    })
}

/// The specs, checked with the spec language's own loader (as `banger validate`
/// would): a problem is reported as it would be for a file.
fn checked_yaml(plan: &RunPlan, base_dir: &Path) -> Result<String, CliError> {
    let yaml = plan.yaml()?;
    let load = banger_specs::parse_document_set(yaml.as_bytes(), "<banger run>", base_dir);
    let errors: Vec<String> = load
        .problems
        .iter()
        .filter(|p| p.is_error())
        .map(ToString::to_string)
        .collect();
    if !errors.is_empty() {
        return Err(CliError::Usage(errors.join("\n")));
    }
    Ok(yaml)
}

/// Where the VM and (`with_ws`) the Workspace stand, one line, for progress.
fn progress_line(vm: Option<&ObjectView>, ws: Option<&ObjectView>, with_ws: bool) -> String {
    let state = |o: Option<&ObjectView>, type_: &str| {
        o.map_or_else(
            || "not there yet".to_string(),
            |o| {
                current_state(
                    Some(o),
                    &WaitFor::Condition {
                        type_: type_.to_string(),
                        status: "True".to_string(),
                    },
                )
            },
        )
    };
    let mut line = format!("vm: {}", state(vm, "Ready"));
    if with_ws {
        line.push_str(&format!("; workspace: {}", state(ws, "Synced")));
    }
    line
}

/// Whether an object's condition is `True` for its current generation.
fn holds(object: Option<&ObjectView>, type_: &str) -> bool {
    crate::waiting::is_met(
        object,
        &WaitFor::Condition {
            type_: type_.to_string(),
            status: "True".to_string(),
        },
    )
}

/// A reason no waiting fixes: the VM's `Ready` or the Workspace's `Synced` blocked
/// until the user acts, or either `Stalled` (failures in a row: a checkout that cannot
/// be copied, a VM that cannot be made).
pub fn stuck(vm: Option<&ObjectView>, ws: Option<&ObjectView>) -> Option<String> {
    let check = |o: Option<&ObjectView>, type_: &str| {
        let o = o?;
        let blocked = condition(o, type_).filter(|c| {
            c.status == "False" && matches!(c.reason.as_str(), "RecreateBlocked" | "GuestChanged")
        });
        let stalled = condition(o, "Stalled").filter(|c| c.status == "True");
        blocked.or(stalled).map(|c| {
            format!(
                "{}/{}: {}: {}",
                o.kind.as_str().to_ascii_lowercase(),
                o.metadata.name,
                c.reason,
                c.message
            )
        })
    };
    check(vm, "Ready").or_else(|| check(ws, "Synced"))
}

/// Waits until the VM is Ready (and the Workspace Synced), printing progress on stderr
/// when it is a terminal.
async fn wait_ready(
    client: &DaemonClient,
    plan: &RunPlan,
    timeout: Duration,
) -> Result<(), CliError> {
    let deadline = Instant::now() + timeout;
    let tty = std::io::stderr().is_terminal();
    let mut last = String::new();
    let vm_ref = ObjectRef {
        kind: Kind::Vm,
        name: plan.name.clone(),
    };
    let ws_ref = ObjectRef {
        kind: Kind::Workspace,
        name: plan.name.clone(),
    };
    let image_ref = ObjectRef {
        kind: Kind::Image,
        name: plan.image.clone(),
    };
    // The Image's pull, shown until the Image is resolved (a bar on a terminal, a line
    // per layer otherwise), as `apply --wait` shows it.
    let mut pull = Some(crate::progress::PullProgress::default());
    loop {
        // A drawn bar is not interrupted by the lines below.
        let mut pulling = false;
        if let Some(progress) = pull.as_mut() {
            match client.get(&image_ref).await? {
                Some(image) if image.status.phase != "Ready" => {
                    pulling = !image.status.pull.is_empty();
                    progress.show(&image);
                }
                _ => {
                    progress.finish();
                    pull = None;
                }
            }
        }
        let vm = client.get(&vm_ref).await?;
        let ws = match plan.source {
            Some(_) => client.get(&ws_ref).await?,
            None => None,
        };
        let ready = holds(vm.as_ref(), "Ready")
            && holds(vm.as_ref(), "GuestReady")
            && (plan.source.is_none() || holds(ws.as_ref(), "Synced"));
        let line = progress_line(vm.as_ref(), ws.as_ref(), plan.source.is_some());
        if tty && line != last && !pulling {
            eprintln!("banger run: {line}");
            last = line.clone();
        }
        if ready {
            return Ok(());
        }
        let now = Instant::now();
        let stuck = stuck(vm.as_ref(), ws.as_ref());
        if stuck.is_some() || now >= deadline {
            // The error goes on a line of its own, not after a drawn bar.
            if let Some(progress) = pull.as_mut() {
                progress.finish();
            }
        }
        if let Some(why) = stuck {
            return Err(CliError::Refused(why));
        }
        if now >= deadline {
            return Err(CliError::TimedOut(format!(
                "timed out after {} waiting for vm/{} to be ready: {line}",
                crate::duration::show(timeout),
                plan.name
            )));
        }
        tokio::time::sleep(Duration::from_millis(250).min(deadline - now)).await;
    }
}

/// Deletes what the run created and waits (bounded) until it is gone.
async fn remove(client: &DaemonClient, plan: &RunPlan) -> Result<(), CliError> {
    let objects = plan.objects();
    client
        .delete(&DeleteRequest {
            objects: objects.clone(),
            files: Vec::new(),
        })
        .await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    for object in &objects {
        if let crate::waiting::WaitOutcome::TimedOut(state) =
            crate::waiting::wait_until(client, object, &WaitFor::Delete, deadline).await?
        {
            return Err(CliError::TimedOut(format!(
                "{}/{} is still being deleted: {state}",
                object.kind.as_str().to_ascii_lowercase(),
                object.name
            )));
        }
    }
    if std::io::stderr().is_terminal() {
        eprintln!("banger run: deleted vm/{}", plan.name);
    }
    Ok(())
}

/// Opens the shell or runs the command; returns its exit status.
async fn attach(client: &DaemonClient, plan: &RunPlan, command: &[String]) -> Result<u8, CliError> {
    let guest = GuestSsh::open(client, &plan.name).await?;
    let workdir = match &plan.source {
        Some(_) => {
            let ws = client
                .get(&ObjectRef {
                    kind: Kind::Workspace,
                    name: plan.name.clone(),
                })
                .await?;
            ws.and_then(|w| w.spec["path"].as_str().map(str::to_string))
        }
        None => None,
    };
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if command.is_empty() {
        let remote = workdir.map(|dir| {
            format!(
                "cd -- {} && exec \"${{SHELL:-/bin/sh}}\" -l",
                sh_quote(&dir)
            )
        });
        let flags: &[&str] = if remote.is_some() { &["-t"] } else { &[] };
        return guest.run_attached(flags, remote.as_deref()).await;
    }
    let remote = match &workdir {
        Some(dir) => format!("cd -- {} && {}", sh_quote(dir), sh_join(command)),
        None => sh_join(command),
    };
    let flags: &[&str] = if interactive { &["-tt"] } else { &["-T"] };
    guest.run_attached(flags, Some(&remote)).await
}

/// Runs `banger run`.
pub async fn run(client: &DaemonClient, args: &RunArgs) -> Result<ExitCode, CliError> {
    let plan = plan(client, args).await?;
    let base_dir = std::env::current_dir()
        .map_err(|e| CliError::Usage(format!("the current directory: {e}")))?;
    let yaml = checked_yaml(&plan, &base_dir)?;
    if args.dry_run {
        let text = match args.output.unwrap_or(SpecFormat::Yaml) {
            SpecFormat::Yaml => yaml,
            SpecFormat::Json => plan.json()?,
        };
        print_out(&text)?;
        return Ok(ExitCode::SUCCESS);
    }
    for object in plan.objects() {
        if client.get(&object).await?.is_some() {
            return Err(CliError::Refused(format!(
                "{}/{} already exists: choose another --name, or get in with `banger ssh {}`",
                object.kind.as_str().to_ascii_lowercase(),
                object.name,
                plan.name
            )));
        }
    }
    // From here on, Ctrl-C ends the wait (and, with --rm, deletes what was created).
    let mut interrupts = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| CliError::Usage(format!("handling Ctrl-C: {e}")))?;
    let source_name = format!("banger-run:{}", plan.name);
    let request = ApplyRequest {
        files: vec![SourceFile {
            path: source_name.clone(),
            base_dir: base_dir.to_string_lossy().into_owned(),
            content: yaml,
        }],
        dry_run: false,
        prune: false,
        force: false,
        allow_recreate: false,
        path_set: vec![source_name],
    };
    let applied = client.apply(&request).await;
    let ready = match applied {
        Err(e) => Err(CliError::from(e)),
        Ok(_) => {
            if std::io::stderr().is_terminal() {
                eprintln!(
                    "banger run: created vm/{}{}",
                    plan.name,
                    if plan.source.is_some() {
                        " and its workspace"
                    } else {
                        ""
                    }
                );
            }
            tokio::select! {
                _ = interrupts.recv() => Err(CliError::Interrupted),
                r = wait_ready(client, &plan, args.timeout) => r,
            }
        }
    };
    let outcome = match ready {
        Ok(()) => attach(client, &plan, &args.command).await,
        Err(e) => Err(e),
    };
    if args.rm {
        if let Err(e) = remove(client, &plan).await {
            eprintln!("error: banger run --rm: {e}");
            return match outcome {
                Ok(code) if code != 0 => Ok(ExitCode::from(code)),
                Ok(_) => Ok(ExitCode::from(1)),
                Err(first) => Err(first),
            };
        }
    } else if outcome.is_ok() && std::io::stderr().is_terminal() {
        let also = if plan.source.is_some() {
            format!(" workspace/{}", plan.name)
        } else {
            String::new()
        };
        eprintln!(
            "banger run: vm/{} keeps running (banger ssh {0}; banger delete vm/{0}{also})",
            plan.name
        );
    }
    outcome.map(ExitCode::from)
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn image(name: &str) -> ObjectView {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "banger.dev/v1alpha1",
            "kind": "Image",
            "metadata": {"name": name, "uid": "00", "generation": 1, "creationTimestamp": ""},
            "spec": {},
            "status": {"phase": "Ready", "observedGeneration": 1}
        }))
        .unwrap()
    }

    #[test]
    fn the_image_is_the_only_one_or_chosen() {
        assert_eq!(choose_image(Some("x"), &[]).unwrap(), "x");
        assert_eq!(choose_image(None, &[image("base")]).unwrap(), "base");
        let none = choose_image(None, &[]).unwrap_err();
        assert!(none.starts_with("the daemon knows no Image"), "{none}");
        let two = choose_image(None, &[image("a"), image("b")]).unwrap_err();
        assert_eq!(
            two,
            "the daemon knows 2 Images (a, b): choose one with --image"
        );
    }

    fn with_conditions(kind: &str, conditions: serde_json::Value) -> ObjectView {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "banger.dev/v1alpha1",
            "kind": kind,
            "metadata": {"name": "x", "uid": "00", "generation": 1, "creationTimestamp": ""},
            "spec": {},
            "status": {"phase": "Pending", "observedGeneration": 1, "conditions": conditions}
        }))
        .unwrap()
    }

    #[test]
    fn blocked_or_stalled_objects_end_the_wait() {
        let c = |t: &str, s: &str, r: &str| {
            serde_json::json!({"type": t, "status": s, "reason": r, "message": "m",
                               "lastTransitionTime": "", "observedGeneration": 1})
        };
        let booting = with_conditions("VM", serde_json::json!([c("Ready", "False", "Booting")]));
        assert_eq!(stuck(Some(&booting), None), None);
        let waiting = with_conditions(
            "Workspace",
            serde_json::json!([c("Synced", "False", "WaitingForVM")]),
        );
        assert_eq!(stuck(Some(&booting), Some(&waiting)), None);
        let stalled = with_conditions(
            "Workspace",
            serde_json::json!([
                c("Synced", "False", "SyncFailed"),
                c("Stalled", "True", "RepeatedFailures")
            ]),
        );
        assert_eq!(
            stuck(Some(&booting), Some(&stalled)).as_deref(),
            Some("workspace/x: RepeatedFailures: m")
        );
        let changed = with_conditions(
            "Workspace",
            serde_json::json!([c("Synced", "False", "GuestChanged")]),
        );
        assert_eq!(
            stuck(None, Some(&changed)).as_deref(),
            Some("workspace/x: GuestChanged: m")
        );
    }

    #[test]
    fn names_come_from_the_directory() {
        assert_eq!(
            name_stem(Some(Path::new("/home/me/My_Project.rs"))),
            "my-project-rs"
        );
        assert_eq!(name_stem(Some(Path::new("/x/--"))), "run");
        assert_eq!(name_stem(None), "run");
        let long = "a".repeat(80);
        assert_eq!(name_stem(Some(Path::new(&long))).len(), 50);
        let name = fresh_name("proj").unwrap();
        assert!(name.starts_with("proj-") && name.len() == 11, "{name}");
        check_dns_label(&name).unwrap();
    }

    #[test]
    fn the_specs_are_valid_yaml_for_apply() {
        let plan = RunPlan {
            name: "proj-0a1b2c".into(),
            image: "base".into(),
            source: Some(PathBuf::from("/home/me/my proj: \"x\"")),
            vcpus: Some(2),
            memory: Some("1GiB".into()),
            disk: None,
        };
        let yaml = checked_yaml(&plan, Path::new("/")).unwrap();
        assert!(
            yaml.starts_with(
                "apiVersion: banger.dev/v1alpha1\nkind: VM\nmetadata:\n  name: proj-0a1b2c\n"
            ),
            "{yaml}"
        );
        let load = banger_specs::parse_document_set(yaml.as_bytes(), "x", Path::new("/"));
        assert!(load.problems.is_empty(), "{:?}", load.problems);
        assert_eq!(load.objects.len(), 2);
        match &load.objects[1].resource {
            banger_specs::Resource::Workspace(ws) => {
                assert_eq!(ws.spec.source, PathBuf::from("/home/me/my proj: \"x\""));
                assert_eq!(ws.spec.vm, "proj-0a1b2c");
            }
            other => panic!("{other:?}"),
        }
        let json: serde_json::Value = serde_json::from_str(&plan.json().unwrap()).unwrap();
        assert_eq!(json[0]["spec"]["memory"], "1GiB");
        assert_eq!(
            plan.objects(),
            [
                ObjectRef {
                    kind: Kind::Workspace,
                    name: "proj-0a1b2c".into()
                },
                ObjectRef {
                    kind: Kind::Vm,
                    name: "proj-0a1b2c".into()
                },
            ]
        );
    }
}
