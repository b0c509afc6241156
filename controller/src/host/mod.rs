//! Host plumbing: processes, KVM detection, network (bridge, taps, NAT), disks, SSH
//! keys in guest disks and the options of banger's guest ssh, a Workspace's round
//! trip (copies into guests, checks of what changed there, exports), finding
//! executables, and the file-system and socket facts access control rests on (who is
//! on the socket, what that user may read, who could change a directory, the state
//! directory's modes).
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
pub mod console;
pub mod disk;
pub mod garbage;
pub mod guest_bits;
pub mod guest_keys;
pub mod guest_ssh;
pub mod names;
pub mod net;
pub mod oci;
pub mod path_trust;
pub mod peer;
pub mod prepared_disk;
pub mod read_as;
pub mod readiness;
pub mod safe_path;
pub mod state_dir;
pub mod state_lock;
pub mod vmm_user;
pub mod which;
pub mod workspace;
