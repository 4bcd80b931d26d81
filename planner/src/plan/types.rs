//! The planner's output: an ordered list of migrations in batches, hosts to wake and
//! hosts to put to sleep.

use serde::{Deserialize, Serialize};

use crate::model::{HostIx, VmIx};

/// Why a VM moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveReason {
    /// Its host is (predicted to be) overloaded in CPU or memory.
    Overload,
    /// Its host is being emptied so that it can sleep.
    Consolidate,
}

/// One live migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Migration {
    pub vm: VmIx,
    pub from: HostIx,
    pub to: HostIx,
    pub reason: MoveReason,
    /// Batches run in order; the migrations of one batch may run in parallel.
    pub batch: usize,
    /// The destination is being woken (by this plan or earlier): start only once it is up.
    pub waits_for_wake: bool,
}

/// First placement of a VM that has no host yet. The VM then counts as just moved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    pub vm: VmIx,
    pub to: HostIx,
    pub waits_for_wake: bool,
}

/// What to do now. Executing it in order keeps every host within its capacity.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Plan {
    /// Ordered by batch.
    pub migrations: Vec<Migration>,
    pub placements: Vec<Placement>,
    /// Hosts to wake (before the migrations that wait for them).
    pub wake: Vec<HostIx>,
    /// Hosts to put to sleep once their migrations are done (they are empty then).
    pub sleep: Vec<HostIx>,
    /// Overloaded hosts the plan could not relieve (no room anywhere, VMs frozen).
    pub unresolved_overloads: Vec<HostIx>,
    /// VMs that could not be placed anywhere.
    pub unplaced: Vec<VmIx>,
    /// One line for logs: what the plan does and why.
    pub reason: String,
}

impl Plan {
    /// Number of batches (0 for a plan without migrations).
    pub fn batches(&self) -> usize {
        self.migrations
            .iter()
            .map(|m| m.batch + 1)
            .max()
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.migrations.is_empty()
            && self.placements.is_empty()
            && self.wake.is_empty()
            && self.sleep.is_empty()
    }
}
