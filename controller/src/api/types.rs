//! Wire types of the daemon's HTTP/JSON API (see `docs/api.md`).
//!
//! The CLI speaks only this API; `curl --unix-socket` can too. Every type here is plain
//! data shared by the server ([`super::server`]) and the CLI's client.

use std::collections::BTreeMap;
use std::path::PathBuf;

use banger_specs::{Kind, Problem};
use serde::{Deserialize, Serialize};

/// One file sent by `banger apply`/`diff`/`delete -f`: its path (used for problems and to
/// resolve relative paths in it) and its raw bytes as UTF-8 text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceFile {
    /// Absolute path of the file on the host, or `<stdin>`.
    pub path: String,
    /// Directory relative paths inside the file resolve against (the file's directory;
    /// the client's working directory for stdin).
    pub base_dir: String,
    /// The file's content.
    pub content: String,
}

/// `POST /v1/apply` (also used by `diff` and `--dry-run`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyRequest {
    /// The files to apply, all or nothing.
    pub files: Vec<SourceFile>,
    /// Plan only; change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Delete objects owned by earlier applies of the same path set that are no longer
    /// in these files.
    #[serde(default)]
    pub prune: bool,
    /// Take ownership of objects owned by another source.
    #[serde(default)]
    pub force: bool,
    /// Allow changes that rebuild a VM's root disk.
    #[serde(default)]
    pub allow_recreate: bool,
    /// The set of paths as the user named them (`-f` arguments, made absolute): the scope
    /// of `prune`.
    #[serde(default)]
    pub path_set: Vec<String>,
}

/// What happened (or would happen) to one object in an apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplyAction {
    /// New object.
    Created,
    /// Spec changed: generation moved.
    Configured,
    /// Same canonical spec: nothing to do.
    Unchanged,
    /// Removed by `--prune`.
    Pruned,
}

/// A planned step, as shown by `diff`, `apply --dry-run` and `describe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedStepView {
    /// Step name, e.g. `start-vm`.
    pub step: String,
    /// `live`, `restart`, `recreate`, `create` or `delete`.
    pub change_class: String,
    /// Why the step is needed.
    pub reason: String,
}

/// Result for one object of an apply.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyItem {
    /// Kind.
    pub kind: Kind,
    /// Name.
    pub name: String,
    /// What happened.
    pub action: ApplyAction,
    /// Field-level changes of the spec (`spec.memory: 536870912 -> 1073741824`).
    #[serde(default)]
    pub changes: Vec<String>,
    /// The steps the planner would run for this object now.
    #[serde(default)]
    pub plan: Vec<PlannedStepView>,
}

/// Response of `POST /v1/apply`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResponse {
    /// One entry per object touched.
    pub items: Vec<ApplyItem>,
    /// Warnings (for example a reference to an object not yet known).
    #[serde(default)]
    pub warnings: Vec<Problem>,
}

/// `POST /v1/delete`: by name, or by files.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteRequest {
    /// Objects named on the command line.
    #[serde(default)]
    pub objects: Vec<ObjectRef>,
    /// Files whose objects are deleted.
    #[serde(default)]
    pub files: Vec<SourceFile>,
}

/// Kind and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectRef {
    /// Kind.
    pub kind: Kind,
    /// Name.
    pub name: String,
}

/// Response of `POST /v1/delete`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteResponse {
    /// Objects marked for deletion.
    pub deleted: Vec<ObjectRef>,
    /// Objects that did not exist.
    pub not_found: Vec<ObjectRef>,
}

/// A status condition, Kubernetes style.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Reconciling`, `Stalled`, `GuestReady`, …
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase machine-readable reason.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// RFC 3339 time the status last changed.
    pub last_transition_time: String,
    /// Generation the condition was computed for.
    pub observed_generation: i64,
}

/// Object metadata as the daemon reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMetaView {
    /// Name.
    pub name: String,
    /// Unique id, fixed at creation; host objects are named from it.
    pub uid: String,
    /// Moves when the canonical spec hash changes.
    pub generation: i64,
    /// RFC 3339 creation time.
    pub creation_timestamp: String,
    /// Set while the object is being deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations. `banger.dev/owner` reports the owning source.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Status of an object.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    /// Pending, Creating, Running, Stopped, Failed, Deleting (Ready for Images/Workspaces).
    pub phase: String,
    /// Generation last reconciled.
    pub observed_generation: i64,
    /// Conditions.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// VM: guest IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// VM: hypervisor process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// VM: `qemu`, `firecracker` or `simulated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypervisor: Option<String>,
    /// VM: every host object banger made for it (process, sockets, tap, disk, lease, NAT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handles: Option<serde_json::Value>,
    /// Workspace: the host commit the last copy brought (the base of an export).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_commit: Option<String>,
    /// Workspace: when the last copy finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_at: Option<String>,
    /// Workspace: the last `banger workspace sync` request acted on (copied or refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_request: Option<u64>,
    /// Image: what it resolved to. Flattened: `status.digest`, `status.rootfs`,
    /// `status.rootfsBytes`, `status.kernel`, …
    #[serde(default, flatten, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageStatusView>,
    /// Image: the pull in progress, one entry per layer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull: Vec<LayerProgressView>,
}

/// What an Image resolved to (in its status).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageStatusView {
    /// The manifest digest (OCI) or the sha256 of the rootfs file (local).
    pub digest: String,
    /// The root filesystem VMs are made from (in the image store for OCI images).
    pub rootfs: PathBuf,
    /// Its size in bytes.
    pub rootfs_bytes: u64,
    /// The kernel VMs boot.
    pub kernel: PathBuf,
    /// The kernel is the daemon's default one.
    #[serde(default)]
    pub default_kernel: bool,
    /// What banger's guest bits found and added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<String>,
    /// OCI tags: when the tag was last checked for a new digest (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<String>,
    /// OCI tags: the digest the tag named at the last check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_digest: Option<String>,
}

/// One layer of a pull in progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerProgressView {
    /// The layer's digest.
    pub digest: String,
    /// Bytes received (or found in the store).
    pub bytes: u64,
    /// The layer's size.
    pub total: u64,
    /// Downloaded and verified.
    pub done: bool,
}

/// `POST /v1/images/{name}/refresh`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshRequest {
    /// Move the Image to the digest its tag names now.
    #[serde(default)]
    pub apply: bool,
}

/// One object as `get -o json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectView {
    /// `banger.dev/v1alpha1`.
    pub api_version: String,
    /// Kind.
    pub kind: Kind,
    /// Metadata.
    pub metadata: ObjectMetaView,
    /// Canonical spec.
    pub spec: serde_json::Value,
    /// Status.
    pub status: StatusView,
}

/// `{"items": [...]}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectList {
    /// The objects.
    pub items: Vec<ObjectView>,
}

/// One event.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    /// Monotonic id (for `--follow`).
    pub id: i64,
    /// RFC 3339 time.
    pub time: String,
    /// Kind.
    pub kind: Kind,
    /// Name.
    pub name: String,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    /// CamelCase reason.
    pub reason: String,
    /// Message.
    pub message: String,
}

/// One finished or running step, for `describe`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepRecordView {
    /// Step name.
    pub step: String,
    /// RFC 3339 start time.
    pub started: String,
    /// Duration in milliseconds, when finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// `running`, `done`, `failed`, `rolled-back`.
    pub outcome: String,
    /// Error message when failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /v1/{kind}/{name}/describe`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeView {
    /// The object.
    pub object: ObjectView,
    /// The last steps run for it, newest last.
    pub steps: Vec<StepRecordView>,
    /// Its recent events, newest last.
    pub events: Vec<EventView>,
    /// What the planner would do now.
    pub plan: Vec<PlannedStepView>,
}

/// Error body of every non-2xx response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// One-line error.
    pub error: String,
    /// Machine-readable code, one per HTTP status: `bad-request` (400), `forbidden`
    /// (403), `not-found` (404), `method-not-allowed` (405), `timeout` (408),
    /// `conflict` (409), `too-large` (413), `unsupported-media-type` (415), `invalid`
    /// (422), `upgrade-required` (426), `internal` (500), `unreachable` (502),
    /// `unavailable` (503).
    pub code: String,
    /// Spec problems, for `invalid`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
}

/// `GET /v1/ssh-identity`: how banger logs into its guests. Clients running `ssh`
/// (`banger ssh`, `exec`, `cp`, `ssh-config`) use these paths instead of guessing the
/// daemon's state directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshIdentityView {
    /// banger's private key, trusted by the root user of every VM banger made.
    pub private_key: PathBuf,
    /// banger's `known_hosts`: guest host keys pinned per VM uid (`HostKeyAlias
    /// banger-<uid>`).
    pub known_hosts: PathBuf,
    /// The guest user the key logs in as.
    pub user: String,
}

/// `POST /v1/workspaces/{name}/sync`: the request recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncRequestView {
    /// Its number: the Workspace's `status.lastSyncRequest` reaches it once the engine
    /// acted on it.
    pub request: u64,
    /// A copy onto a guest that changed is made anyway.
    pub force: bool,
}
