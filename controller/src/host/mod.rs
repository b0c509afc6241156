//! Host plumbing: processes, KVM detection, network (bridge, taps, NAT), disks, SSH
//! keys in guest disks, workspace copies into guests, finding executables.
//!
//! The plumbing knows nothing of hypervisors or of the engine: the drivers
//! ([`crate::driver`]) and the Linux runtime ([`crate::runtime::linux`]) compose it, and
//! it imports neither.
//!
//! Every host object banger creates has a deterministic name derived from its owner's
//! uid ([`names`]), so it can be found again by probing and garbage-collected.

pub mod kvm;
pub mod process;

pub mod cgroup;
pub mod disk;
pub mod garbage;
pub mod guest_keys;
pub mod names;
pub mod net;
pub mod oci;
pub mod readiness;
pub mod safe_path;
pub mod state_lock;
pub mod vmm_user;
pub mod which;
pub mod workspace_copy;
