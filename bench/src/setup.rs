//! What every section of a run shares: the `banger` binary, the guest kit, the scale
//! (full or `--quick`) and the run's temporary directory.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

/// How much a run measures. `--quick` trades precision for a run of a few minutes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scale {
    /// VMs in the simulated fleet (P2, P3, P5, P6, P7).
    pub fleet_vms: usize,
    /// Saves per editor pattern (P1).
    pub saves_per_pattern: usize,
    /// Runs of each `banger get vms` form (P6).
    pub get_runs: usize,
    /// Window for idle CPU with the default 30 s resync (P5): whole periods.
    pub idle_window: Duration,
    /// Resyncs measured for P2 (at `--resync 2s`).
    pub resyncs: u32,
    /// Boots of each kind, banger and bare, interleaved (P4, P8, P10).
    pub boots: usize,
    /// Deletes of a guest that ignores the power button (P9).
    pub deaf_deletes: usize,
}

impl Scale {
    /// The figures as the issue defines them.
    pub fn full() -> Scale {
        Scale {
            fleet_vms: 1000,
            saves_per_pattern: 15,
            get_runs: 20,
            idle_window: Duration::from_secs(60),
            resyncs: 10,
            boots: 5,
            deaf_deletes: 3,
        }
    }

    /// `--quick`: a check that every figure can be measured, in a few minutes.
    pub fn quick() -> Scale {
        Scale {
            fleet_vms: 200,
            saves_per_pattern: 3,
            get_runs: 5,
            idle_window: Duration::from_secs(30),
            resyncs: 3,
            boots: 2,
            deaf_deletes: 1,
        }
    }

    /// The scale as JSON, for the report.
    pub fn to_json(&self) -> Value {
        json!({
            "fleetVms": self.fleet_vms,
            "savesPerPattern": self.saves_per_pattern,
            "getRuns": self.get_runs,
            "idleWindowS": self.idle_window.as_secs_f64(),
            "resyncs": self.resyncs,
            "boots": self.boots,
            "deafDeletes": self.deaf_deletes,
        })
    }
}

/// The inputs of every section.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The `banger` binary run as daemon and client.
    pub banger: PathBuf,
    /// The guest kit directory (`scripts/guest-kit.sh`).
    pub kit: PathBuf,
    /// How much to measure.
    pub scale: Scale,
    /// The run's temporary directory (removed at the end).
    pub work: PathBuf,
}
