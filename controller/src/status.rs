//! Object status as the engine keeps it: typed phases, conditions, reasons and event
//! types. Pure: no I/O and no clock (times are passed in as RFC 3339 text).
//!
//! Every type here is stored as text (its serde form is its name: `Running`,
//! `GuestReady`, `True`, `CrashLoopBackOff`, `Warning`) and mapped to the API's wire
//! types by [`crate::api`], so the core never compares strings.
//!
//! Guarantee: a condition's `lastTransitionTime` moves only when its `status` changes;
//! reason, message and observedGeneration are refreshed in place ([`set_condition`]).

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use strum::{Display, EnumIter, EnumString, IntoStaticStr};

/// Lifecycle phase of an object.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    Serialize,
    Deserialize,
    Display,
    EnumString,
    IntoStaticStr,
    EnumIter,
)]
pub enum Phase {
    /// Accepted, nothing done yet (or waiting on another object).
    #[default]
    Pending,
    /// Being made.
    Creating,
    /// VM: the VMM runs.
    Running,
    /// VM: stopped on purpose (disk kept).
    Stopped,
    /// VM: exited and not restarted; or an unrecoverable error.
    Failed,
    /// Being deleted.
    Deleting,
    /// Image/Workspace: usable.
    Ready,
}

/// What a condition is about.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    Display,
    EnumString,
    IntoStaticStr,
    EnumIter,
)]
pub enum ConditionType {
    /// The object is as desired.
    Ready,
    /// The engine is working on the object.
    Reconciling,
    /// Repeated failures; the engine backs off.
    Stalled,
    /// VMs: the guest passed its readiness check.
    GuestReady,
    /// Workspaces: the files are copied into the VM's current guest.
    Synced,
    /// The object's spec file is invalid; the last good spec is kept.
    SpecValid,
    /// Images: the tag names a newer digest than the one the Image uses.
    UpdateAvailable,
}

/// A condition's status.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    Display,
    EnumString,
    IntoStaticStr,
    EnumIter,
)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// It does not.
    False,
    /// Not known (yet).
    Unknown,
}

impl From<bool> for ConditionStatus {
    fn from(b: bool) -> Self {
        if b {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

/// Whether an event is routine or worth a look.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    Display,
    EnumString,
    IntoStaticStr,
    EnumIter,
)]
pub enum EventType {
    /// Routine.
    Normal,
    /// Something went wrong or needs attention.
    Warning,
}

/// The machine-readable reason of a condition or an event (CamelCase on the wire).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    Display,
    EnumString,
    IntoStaticStr,
    EnumIter,
)]
pub enum Reason {
    // --- conditions: Ready, Reconciling, Stalled, GuestReady ---
    /// VM: the VMM runs and its guest is ready.
    Running,
    /// VM: the VMM runs; its guest has not passed its readiness check yet.
    Booting,
    /// VM: the guest passed its readiness check.
    GuestUp,
    /// VM: no VMM runs.
    NotRunning,
    /// VM: stopped as desired.
    Stopped,
    /// VM: the VMM exited and the restart policy keeps it down.
    Exited,
    /// Steps remain.
    Progressing,
    /// Nothing left to do.
    Converged,
    /// A failure; retried with backoff.
    Retrying,
    /// Failures in a row beyond the stall threshold.
    RepeatedFailures,
    /// The last reconcile succeeded.
    Reconciled,
    /// The spec file is invalid (`SpecValid=False`, and the event).
    InvalidSpec,
    /// A Workspace's VM is not running with its guest ready.
    #[strum(serialize = "WaitingForVM")]
    #[serde(rename = "WaitingForVM")]
    WaitingForVm,
    /// A VM's Image is not resolved yet.
    WaitingForImage,
    /// The change rebuilds the root disk and that was not allowed.
    RecreateBlocked,
    /// The VMM keeps exiting; the next restart waits.
    CrashLoopBackOff,
    /// The root disk is gone under a running VMM.
    DiskMissing,
    /// An Image still used by VMs waits to be deleted.
    InUse,
    /// Workspace: copied into its running VM (`Ready`).
    Synced,
    /// Workspace: the copy failed.
    SyncFailed,
    /// Workspace: a copy onto the guest was refused: the guest changed what the last
    /// copy wrote (`banger workspace sync --force` overwrites it).
    GuestChanged,
    /// A static address is taken, or no address is left.
    #[strum(serialize = "IPConflict")]
    #[serde(rename = "IPConflict")]
    IpConflict,
    /// The store failed.
    StoreError,
    /// The Image cannot be resolved.
    ImageUnavailable,
    /// banger's guest bits cannot serve the Image (no shell for root, …).
    UnsupportedImage,
    /// The registry refused the credentials of `--registry-auth`, or wants some.
    RegistryAuthFailed,
    /// Image: its tag names a newer digest (`UpdateAvailable=True`).
    NewDigest,
    /// Image: its tag names the digest it uses (`UpdateAvailable=False`).
    UpToDate,
    /// Image: its reference names a digest, which never changes.
    PinnedByDigest,
    /// Image: the update check failed (the registry is unreachable, …).
    CheckFailed,
    /// A runtime step failed.
    StepFailed,
    /// A VM's handles could not be saved (no longer produced: handles are stored with
    /// their step's journal row; kept so status rows of earlier versions still read).
    HandlesNotSaved,
    /// Steps succeeded but observation still wants them.
    NoProgress,
    // --- events ---
    /// An object was created by a source.
    Created,
    /// An object's spec changed (a new generation).
    SpecChanged,
    /// Deletion was requested.
    Deleting,
    /// The object is gone, with everything it made.
    Deleted,
    /// An Image's files are ready (also its `Ready` reason).
    Resolved,
    /// A VMM was launched.
    Launched,
    /// A VMM was stopped.
    ShutDown,
    /// A root disk was made.
    DiskPrepared,
    /// A root disk was removed.
    DiskRemoved,
    /// A root disk was grown.
    DiskGrown,
    /// A VMM was launched again after it exited.
    Restarted,
    /// The phase changed.
    PhaseChanged,
    /// A VMM exited on its own.
    ProcessExited,
    /// A probe of a VMM failed (tolerated below the failure threshold).
    ProbeFailed,
    /// A reconcile failed.
    ReconcileFailed,
    /// `banger retry` reset the backoff.
    RetryRequested,
    /// A step a dead daemon left unfinished was rolled back.
    StepRolledBack,
    /// Rolling back such a step failed.
    RollbackFailed,
    /// An Image's layer was downloaded (or found in the store).
    Pulled,
    /// An Image moved to the new digest of its tag.
    UpdateApplied,
    /// A Workspace's files were copied into its VM (also its `Synced` reason).
    Copied,
    /// `banger workspace sync` asked for a copy.
    SyncRequested,
    /// A directory object was forgotten (`on-remove: Orphan`).
    Orphaned,
    /// A directory object's file is gone and its VM is stopped (`on-remove: Stop`).
    SourceRemoved,
    /// The spec file is valid again.
    SpecValid,
    /// Two files declare the same object.
    DuplicateSpec,
    /// A file declares an object another source owns.
    SourceConflict,
    /// The specs directory is missing; its objects are kept.
    SpecsDirMissing,
}

/// A status condition, Kubernetes style.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// What it is about.
    #[serde(rename = "type")]
    pub type_: ConditionType,
    /// Whether it holds.
    pub status: ConditionStatus,
    /// Why.
    pub reason: Reason,
    /// For people.
    pub message: String,
    /// RFC 3339 time the status last changed.
    pub last_transition_time: String,
    /// Generation the condition was computed for.
    pub observed_generation: i64,
}

/// A condition to set: type, status, reason, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionUpdate {
    /// Condition type.
    pub type_: ConditionType,
    /// Its status.
    pub status: ConditionStatus,
    /// Its reason.
    pub reason: Reason,
    /// Its message.
    pub message: String,
}

impl ConditionUpdate {
    /// A condition update.
    pub fn new(
        type_: ConditionType,
        status: ConditionStatus,
        reason: Reason,
        message: impl Into<String>,
    ) -> Self {
        ConditionUpdate {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// Status of an object as the engine keeps it (the API maps it to its wire view).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStatus {
    /// The phase.
    pub phase: Phase,
    /// Generation last reconciled.
    pub observed_generation: i64,
    /// Conditions.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// VM: guest IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    /// VM: hypervisor process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// VM: the hypervisor it runs on (`qemu`, `firecracker`, `simulated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypervisor: Option<String>,
    /// VM: every host object banger made for it (process, sockets, tap, disk, lease, NAT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handles: Option<HandlesJson>,
    /// Workspace: the host commit (the checkout's `HEAD`) the last copy brought, the
    /// base of `banger workspace export`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_commit: Option<String>,
    /// Workspace: when the last copy finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_at: Option<String>,
    /// Workspace: the last `banger workspace sync` request the engine acted on (copied,
    /// or refused with `GuestChanged`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_request: Option<u64>,
    /// Image: what it resolved to (digest, root filesystem, kernel, guest bits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageStatus>,
    /// Image: the pull in progress, one entry per layer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull: Vec<LayerProgress>,
}

/// A VM's handles as its status shows them: a JSON object kept as its canonical text
/// (compact, keys sorted), written out verbatim. A converged VM's reconcile derives
/// them again and compares: as shared text, reading the status out of the store's
/// cache, comparing and dropping it allocate nothing, where a JSON tree was parsed,
/// cloned and dropped (a few dozen allocations) each time.
///
/// [`HandlesJson::of`] writes the canonical form, which is also what earlier builds
/// stored (a `serde_json::Value` written out), so equal handles give equal text; text
/// read back from the store is kept exactly as stored. Serialises as raw JSON, so only
/// through `serde_json`.
#[derive(Clone, PartialEq, Eq)]
pub struct HandlesJson(std::sync::Arc<str>);

impl HandlesJson {
    /// The canonical JSON text of `value`: compact, every object's keys sorted (the
    /// order a `serde_json::Value` keeps them in).
    pub fn of<T: Serialize>(value: &T) -> Result<Self, serde_json::Error> {
        let tree = serde_json::to_value(value)?;
        Ok(Self(serde_json::to_string(&tree)?.into()))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The handles as a JSON tree (`null` if the text does not parse; it always does:
    /// it was written by a JSON serialiser or read as a JSON value).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }
}

impl std::fmt::Debug for HandlesJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for HandlesJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &serde_json::value::RawValue =
            serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for HandlesJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        Ok(Self(raw.get().into()))
    }
}

/// What an Image resolved to, as its status shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageStatus {
    /// The manifest digest (OCI) or the sha256 of the rootfs file (local).
    pub digest: String,
    /// The root filesystem VMs are made from (in the store for OCI images).
    pub rootfs: std::path::PathBuf,
    /// Its size in bytes.
    pub rootfs_bytes: u64,
    /// The kernel VMs boot.
    pub kernel: std::path::PathBuf,
    /// The kernel is the daemon's default one.
    #[serde(default)]
    pub default_kernel: bool,
    /// What banger's guest bits found and added (`init: …, ssh: …, libc: …`).
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
pub struct LayerProgress {
    /// The layer's digest.
    pub digest: String,
    /// Bytes received (or found in the store).
    pub bytes: u64,
    /// The layer's size.
    pub total: u64,
    /// Downloaded and verified.
    pub done: bool,
}

impl ObjectStatus {
    /// The condition of this type, if set.
    pub fn condition(&self, type_: ConditionType) -> Option<&Condition> {
        condition(&self.conditions, type_)
    }

    /// Whether the condition of this type is `True`.
    pub fn is_true(&self, type_: ConditionType) -> bool {
        is_true(&self.conditions, type_)
    }
}

/// Sets a condition. `lastTransitionTime` becomes `now` only when the status changes
/// (or the condition is new). Returns whether anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    update: ConditionUpdate,
    generation: i64,
    now: &str,
) -> bool {
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == update.type_) {
        let before = c.clone();
        if c.status != update.status {
            c.last_transition_time = now.to_string();
        }
        c.status = update.status;
        c.reason = update.reason;
        c.message = update.message;
        c.observed_generation = generation;
        return *c != before;
    }
    conditions.push(Condition {
        type_: update.type_,
        status: update.status,
        reason: update.reason,
        message: update.message,
        last_transition_time: now.to_string(),
        observed_generation: generation,
    });
    true
}

/// Removes a condition; returns whether it was there.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: ConditionType) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != type_);
    before != conditions.len()
}

/// Finds a condition.
pub fn condition(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether a condition is `True`.
pub fn is_true(conditions: &[Condition], type_: ConditionType) -> bool {
    condition(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;
    use strum::IntoEnumIterator;

    fn up(status: ConditionStatus, reason: Reason) -> ConditionUpdate {
        ConditionUpdate::new(ConditionType::Ready, status, reason, reason.to_string())
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        use ConditionStatus::{False, True};
        let mut cs = Vec::new();
        assert!(set_condition(
            &mut cs,
            up(False, Reason::Progressing),
            1,
            "t1"
        ));
        assert!(set_condition(&mut cs, up(False, Reason::Booting), 1, "t2"));
        assert_eq!(cs[0].last_transition_time, "t1");
        assert_eq!(cs[0].reason, Reason::Booting);
        assert!(!set_condition(&mut cs, up(False, Reason::Booting), 1, "t3"));
        assert!(set_condition(&mut cs, up(True, Reason::Running), 2, "t4"));
        assert_eq!(cs[0].last_transition_time, "t4");
        assert_eq!(cs[0].observed_generation, 2);
        assert!(is_true(&cs, ConditionType::Ready));
        assert!(remove_condition(&mut cs, ConditionType::Ready));
        assert!(cs.is_empty());
    }

    /// The stored text of every reason is its name, and parses back (serde and strum
    /// agree, including the two acronyms).
    #[test]
    fn reasons_round_trip_as_text() {
        for r in Reason::iter() {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{r}\""));
            assert_eq!(Reason::from_str(&r.to_string()).unwrap(), r);
        }
        assert_eq!(Reason::WaitingForVm.to_string(), "WaitingForVM");
        assert_eq!(Reason::IpConflict.to_string(), "IPConflict");
        for p in Phase::iter() {
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
    }

    /// Handles are written in one canonical form whatever type wrote them (so a status
    /// stored by an earlier build, from a JSON tree, compares equal), and a status keeps
    /// their text exactly through the store's round trip.
    #[test]
    fn handles_are_canonical_text_and_round_trip_as_stored() {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Unsorted {
            vm_dir: &'static str,
            tap: &'static str,
            disk_size: u64,
            lease: serde_json::Value,
        }
        let typed = HandlesJson::of(&Unsorted {
            vm_dir: "/s/vms/u",
            tap: "bgt-u",
            disk_size: 1 << 30,
            lease: serde_json::json!({"prefix": 24, "ip": "172.30.0.2"}),
        })
        .unwrap();
        let tree = serde_json::json!({
            "tap": "bgt-u", "lease": {"ip": "172.30.0.2", "prefix": 24},
            "diskSize": 1u64 << 30, "vmDir": "/s/vms/u"
        });
        assert_eq!(typed, HandlesJson::of(&tree).unwrap());
        assert_eq!(typed.as_str(), serde_json::to_string(&tree).unwrap());
        assert_eq!(
            typed.as_str(),
            r#"{"diskSize":1073741824,"lease":{"ip":"172.30.0.2","prefix":24},"tap":"bgt-u","vmDir":"/s/vms/u"}"#
        );
        assert_eq!(typed.to_value(), tree);

        let status = ObjectStatus {
            handles: Some(typed.clone()),
            ..Default::default()
        };
        let stored = serde_json::to_string(&status).unwrap();
        assert!(
            stored.contains(&format!(r#""handles":{}"#, typed.as_str())),
            "{stored}"
        );
        let read: ObjectStatus = serde_json::from_str(&stored).unwrap();
        assert_eq!(read, status);
        // Text stored in another key order is kept as it is (and so compares unequal).
        let other =
            r#"{"phase":"Running","observedGeneration":1,"handles":{"tap":"x","diskSize":1}}"#;
        let read: ObjectStatus = serde_json::from_str(other).unwrap();
        assert_eq!(
            read.handles.unwrap().as_str(),
            r#"{"tap":"x","diskSize":1}"#
        );
    }
}
