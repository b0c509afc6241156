//! # banger-controller: the reconciler behind `banger daemon`
//!
//! Desired state (spec files and applied objects) is diffed against observed state
//! (SQLite plus kernel handles probed live) and idempotent steps are driven under
//! per-object locks until the host matches. `docs/architecture.md` walks one spec
//! from its file to the VMM's argv and says what to touch to add a hypervisor, a step
//! or a kind.
//!
//! - Pure core (no I/O, no clock, no randomness): [`planner`] (`plan(desired,
//!   observed) -> Plan` over plain values), [`status`] (typed phases, conditions,
//!   reasons), [`journal`] (step records), [`objects`] (ownership, annotations, spec
//!   diffs) and [`engine::vm_status`] (a VM's phase and conditions from its plan and
//!   observation).
//! - Ports: [`runtime`] (what a reconcile needs from the host: the trait
//!   [`runtime::VmRuntime`], with the real [`runtime::linux::LinuxRuntime`] and the
//!   test-only [`runtime::simulated::SimulatedRuntime`]) and [`driver`] (hypervisors:
//!   QEMU and Firecracker behind one trait that owns every per-hypervisor fact).
//! - Shell: [`engine`] (the reconciles, journal recovery, the worker loop),
//!   [`store`] (SQLite, off the async workers), [`queue`], [`control`] and [`events`]
//!   (the narrow interface the sources, the API and gc share with the engine),
//!   [`sources`] (specs directory and apply), [`gc`] (host objects no object owns),
//!   [`host`] (the plumbing: processes, KVM, network, disks, OCI pulls, banger's SSH
//!   key, workspace copies; it imports no driver), [`doctor`] (the checks of `banger
//!   doctor`), [`api`] (HTTP on a Unix socket), [`clock`] and [`ids`] (time and fresh
//!   uids), [`heap`] (few malloc arenas; freed memory given back after a burst), and
//!   [`daemon`] (wires it all together from a [`config::DaemonConfig`]).

pub mod api;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod doctor;
pub mod driver;
pub mod engine;
pub mod events;
pub mod gc;
pub mod heap;
pub mod host;
pub mod ids;
pub mod journal;
pub mod objects;
pub mod planner;
pub mod queue;
pub mod refresh;
pub mod runtime;
pub mod sources;
pub mod status;
pub mod store;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;
