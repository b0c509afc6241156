//! The resource types of `banger.dev/v1alpha1`: what a user can ask for.
//!
//! These structs are the *canonical* form of a spec: every default filled, sizes in
//! bytes, paths absolute. Parsing (see [`crate::load`]) turns user YAML into these
//! values; printing them back (see [`crate::yaml`]) and parsing again gives the same
//! value. Field names are the contract users write in YAML (camelCase).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::quantity::ByteSize;

/// The one API version this crate understands.
pub const API_VERSION: &str = "banger.dev/v1alpha1";

/// The kinds of resource banger manages, in dependency order (an Image is needed by a
/// VM, a VM by a Workspace).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum Kind {
    /// A bootable image: kernel, optional initrd and a root filesystem.
    Image,
    /// A microVM.
    #[serde(rename = "VM")]
    Vm,
    /// A git checkout copied into a VM.
    Workspace,
}

impl Kind {
    /// All kinds, in dependency order.
    pub const ALL: [Kind; 3] = [Kind::Image, Kind::Vm, Kind::Workspace];

    /// The name used in YAML (`kind:`): `Image`, `VM`, `Workspace`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Image => "Image",
            Kind::Vm => "VM",
            Kind::Workspace => "Workspace",
        }
    }

    /// The lower-case plural used on the CLI and in API paths: `images`, `vms`, `workspaces`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Image => "images",
            Kind::Vm => "vms",
            Kind::Workspace => "workspaces",
        }
    }

    /// Parses a CLI/API spelling: `vm`, `vms`, `VM`, `image`, `images`, `workspace`, …
    /// (case-insensitive, singular or plural).
    pub fn parse_cli(s: &str) -> Option<Kind> {
        match s.to_ascii_lowercase().as_str() {
            "image" | "images" | "img" => Some(Kind::Image),
            "vm" | "vms" => Some(Kind::Vm),
            "workspace" | "workspaces" | "ws" => Some(Kind::Workspace),
            _ => None,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `metadata` of every document.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// The object's name: a DNS label (1–63 of `a-z 0-9 -`, no leading or trailing `-`),
    /// unique per kind.
    #[schemars(regex(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"))]
    pub name: String,
    /// Free-form string labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("propertyNames" = { "pattern": r"^\S{1,253}$" }))]
    pub labels: BTreeMap<String, String>,
    /// Free-form string annotations. banger reads `banger.dev/on-remove`
    /// (`Delete` | `Orphan` | `Stop`), `banger.dev/allow-recreate` (`"true"` | `"false"`)
    /// and, on Images, `banger.dev/auto-update` (`"true"` | `"false"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "propertyNames" = { "pattern": r"^\S{1,253}$" },
        "properties" = {
            "banger.dev/on-remove": { "enum": ["Delete", "Orphan", "Stop"] },
            "banger.dev/allow-recreate": { "enum": ["true", "false"] },
            "banger.dev/auto-update": { "enum": ["true", "false"] }
        }
    ))]
    pub annotations: BTreeMap<String, String>,
}

/// Where an Image's root filesystem comes from when it is pulled from an OCI registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OciSource {
    /// Image reference, e.g. `127.0.0.1:5000/dev/base:1.0`.
    #[serde(rename = "ref")]
    #[schemars(regex(pattern = r"^\S+$"))]
    pub reference: String,
    /// Allow plain HTTP and unverified TLS to the registry.
    #[serde(default)]
    pub insecure: bool,
    /// A PEM file of CA certificates the registry's TLS certificate is checked against
    /// (besides the system's), for registries with a private CA. Absolute after
    /// normalisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// Whether banger adds its guest bits (an init used when the image has none, network
/// and hostname set-up, an SSH server when the image has none, the readiness signal)
/// under `/.banger` of the Image's root filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GuestMode {
    /// Add them (the default for `oci` images).
    Inject,
    /// Boot the root filesystem as it is (the default for `rootfs` images).
    None,
}

/// How banger decides that a guest is really up (`GuestReady`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct Readiness {
    /// TCP port on the guest that accepts a connection once it is up (default 22, SSH).
    /// Exactly one of `tcpPort` and `consoleMarker` is set in canonical form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub tcp_port: Option<u16>,
    /// A line the guest prints on its serial console once it is up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), regex(pattern = r"^[^\n\r]+$"))]
    pub console_marker: Option<String>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            tcp_port: Some(22),
            console_marker: None,
        }
    }
}

/// `spec` of an Image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("oneOf" = [{ "required": ["rootfs"] }, { "required": ["oci"] }]))]
pub struct ImageSpec {
    /// Guest kernel (absolute after normalisation; relative paths resolve against the
    /// directory of the declaring file). When absent, the daemon's default kernel (and
    /// its initrd) boots the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<PathBuf>,
    /// Optional initrd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<PathBuf>,
    /// Root filesystem: an ext4 image file. Exactly one of `rootfs` and `oci`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<PathBuf>,
    /// Root filesystem pulled from an OCI registry. Exactly one of `rootfs` and `oci`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<OciSource>,
    /// Extra kernel command-line arguments for every VM of this image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^\s*[^\u0000-\u001f\u007f]*\s*$"))]
    pub kernel_args: Option<String>,
    /// Guest readiness probe (default: TCP port 22).
    #[serde(default)]
    pub readiness: Readiness,
    /// banger's guest bits: `inject` (default for `oci`) or `none` (default for
    /// `rootfs`). Always set in canonical form; a stored object written before the
    /// field existed reads as `none` (what it booted with then).
    #[serde(default = "guest_none")]
    pub guest: GuestMode,
}

impl ImageSpec {
    /// The default of `guest` for an image of this source: `inject` for `oci`, `none`
    /// for `rootfs`.
    pub fn default_guest(oci: bool) -> GuestMode {
        if oci {
            GuestMode::Inject
        } else {
            GuestMode::None
        }
    }
}

/// Desired power state of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum PowerState {
    /// The VM runs.
    #[default]
    Running,
    /// The VM is stopped; its disk is kept.
    Stopped,
}

/// What banger does when a VM's hypervisor process exits on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum RestartPolicy {
    /// Restart after every exit (with crash-loop backoff).
    #[default]
    Always,
    /// Restart only after an unclean exit (the guest did not power off by itself).
    OnFailure,
    /// Never restart: the VM goes to `Stopped` or `Failed`.
    Never,
}

/// Which hypervisor runs a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HypervisorChoice {
    /// Firecracker when its binary is found and KVM can run stock guests, else QEMU.
    #[default]
    Auto,
    /// Firecracker.
    Firecracker,
    /// QEMU `-M microvm`.
    Qemu,
}

/// `spec.network` of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkSpec {
    /// Masquerade the VM's traffic to the host's uplinks (default true).
    #[serde(default = "default_true")]
    pub nat: bool,
    /// A static IPv4 address inside the bridge's network; leased from the pool when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>", extend("format" = "ipv4"))]
    pub ip: Option<Ipv4Addr>,
    /// Keep other guests away from this one (default true): the host drops every frame
    /// between this VM and another. `false` lets it talk to the other VMs of its user
    /// that say `false` too.
    #[serde(default = "default_true")]
    pub isolated: bool,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        NetworkSpec {
            nat: true,
            ip: None,
            isolated: true,
        }
    }
}

fn guest_none() -> GuestMode {
    GuestMode::None
}

fn default_true() -> bool {
    true
}

fn default_vcpus() -> u8 {
    crate::decode::DEFAULT_VCPUS
}

fn default_memory() -> ByteSize {
    crate::decode::DEFAULT_MEMORY
}

fn default_disk() -> ByteSize {
    crate::decode::DEFAULT_DISK
}

/// `spec` of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmSpec {
    /// Name of the Image this VM boots.
    #[schemars(regex(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"))]
    pub image: String,
    /// Virtual CPUs, 1..=32 (default 1).
    #[serde(default = "default_vcpus")]
    #[schemars(range(min = 1, max = 32))]
    pub vcpus: u8,
    /// Guest memory in bytes (default 512MiB, at least 128MiB, a whole number of MiB).
    #[serde(default = "default_memory")]
    pub memory: ByteSize,
    /// Size of the VM's writable root disk in bytes (default 2GiB, at least 64MiB, a
    /// whole number of MiB).
    #[serde(default = "default_disk")]
    pub disk: ByteSize,
    /// Desired power state (default Running).
    #[serde(default)]
    pub state: PowerState,
    /// Restart policy (default Always).
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// Hypervisor (default auto).
    #[serde(default)]
    pub hypervisor: HypervisorChoice,
    /// Networking (default: NAT on, address leased from the pool).
    #[serde(default)]
    pub network: NetworkSpec,
    /// Extra kernel command-line arguments (appended after the Image's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^\s*[^\u0000-\u001f\u007f]*\s*$"))]
    pub kernel_args: Option<String>,
    /// Seconds a stop (`state: Stopped`) gives the guest to power off after the power
    /// button before its VMM is stopped by force, 0..=3600 (default: the daemon's
    /// `--stop-grace`). A delete gives none: the disk is discarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub stop_grace_period_seconds: Option<u32>,
}

/// Which files of a git checkout a Workspace copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IncludeMode {
    /// Tracked files only.
    Tracked,
    /// Tracked files plus untracked files that `.gitignore` does not exclude (default).
    #[default]
    Untracked,
}

/// `spec` of a Workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkspaceSpec {
    /// Name of the VM the workspace is copied into.
    #[schemars(regex(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"))]
    pub vm: String,
    /// Host path of a git checkout (absolute after normalisation).
    pub source: PathBuf,
    /// Absolute, normalised guest path (default `/root/<name of the source folder>`).
    #[schemars(regex(pattern = r"^/"))]
    pub path: String,
    /// Which files to copy (default untracked).
    #[serde(default)]
    pub include: IncludeMode,
}

/// One resource of any kind, in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// An Image.
    Image(Object<ImageSpec>),
    /// A VM.
    Vm(Object<VmSpec>),
    /// A Workspace.
    Workspace(Object<WorkspaceSpec>),
}

/// A document of one kind: `apiVersion`, `kind`, `metadata`, `spec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Object<S> {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// The kind's YAML name.
    pub kind: Kind,
    /// Name, labels, annotations.
    pub metadata: ObjectMeta,
    /// The kind's spec.
    pub spec: S,
}

/// Identifies one object: kind and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectKey {
    /// The kind.
    pub kind: Kind,
    /// The name.
    pub name: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}",
            self.kind.as_str().to_ascii_lowercase(),
            self.name
        )
    }
}

impl Resource {
    /// The resource's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Resource::Image(_) => Kind::Image,
            Resource::Vm(_) => Kind::Vm,
            Resource::Workspace(_) => Kind::Workspace,
        }
    }

    /// The resource's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Resource::Image(o) => &o.metadata,
            Resource::Vm(o) => &o.metadata,
            Resource::Workspace(o) => &o.metadata,
        }
    }

    /// The resource's name.
    pub fn name(&self) -> &str {
        &self.metadata().name
    }

    /// Kind and name.
    pub fn key(&self) -> ObjectKey {
        ObjectKey {
            kind: self.kind(),
            name: self.name().to_string(),
        }
    }
}
