//! # banger-controller: the reconciler behind `banger daemon`
//!
//! Desired state (spec files and applied objects) is diffed against observed state
//! (SQLite plus kernel handles probed live) and idempotent steps are driven under
//! per-object locks until the host matches.
//!
//! - Pure core: [`planner`] (`plan(desired, observed) -> Plan`) over plain values.
//! - Ports: [`runtime`] (what a reconcile needs from the host), [`driver`] (hypervisors).
//! - Shell: [`store`] (SQLite), [`queue`] and [`reconciler`] (the executor), [`sources`]
//!   (specs directory and apply), [`host`] (processes, network, disks), [`api`] (HTTP on
//!   a Unix socket).

pub mod api;
pub mod config;
pub mod daemon;
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
