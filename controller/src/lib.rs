//! # banger-controller: the reconciler behind `banger daemon`
//!
//! Desired state (spec files and applied objects) is diffed against observed state
//! (SQLite plus kernel handles probed live) and idempotent steps are driven under
//! per-object locks until the host matches.
//!
//! - Pure core: [`planner`] (`plan(desired, observed) -> Plan`) over plain values,
//!   [`objects`] (ownership, annotations, spec diffs) and [`status`] (conditions, phases).
//! - Ports: [`runtime`] (what a reconcile needs from the host: the trait
//!   [`runtime::VmRuntime`], with the real [`runtime::linux::LinuxRuntime`] and the
//!   test-only [`runtime::simulated::SimulatedRuntime`]) and [`driver`] (hypervisors:
//!   QEMU and Firecracker behind one trait that owns every per-hypervisor fact).
//! - Shell: [`store`] (SQLite), [`queue`] and [`reconciler`] (the executor), [`sources`]
//!   (specs directory and apply), [`gc`] (host objects no object owns), [`host`]
//!   (plumbing: processes, KVM, network, disks, OCI pulls, banger's SSH key, workspace
//!   copies; it imports no driver), [`doctor`] (the checks of `banger doctor`), [`api`]
//!   (HTTP on a Unix socket), [`daemon`] (wires it all together from a
//!   [`config::DaemonConfig`]).

pub mod api;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod driver;
pub mod gc;
pub mod host;
pub mod objects;
pub mod planner;
pub mod queue;
pub mod reconciler;
pub mod runtime;
pub mod sources;
pub mod status;
pub mod store;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;
