//! Everything that must survive a router restart, behind one interface with one owner.
//!
//! **What is kept.** The desired world ([`PersistedState`]: VM specs and desired run
//! states, placements with their fencing epochs, per-host flags, the energy mode and
//! whether the operator chose it), the event history, and the SLA book. On disk
//! ([`FileStore`]) these are three files under `state_dir`: `state.json`,
//! `events.jsonl` and `sla.json`. Older routers also kept a marker file
//! `energy-mode-chosen`; [`FileStore::open`] moves it into the state.
//!
//! **Who owns it.** [`Store`] is the backend: plain blocking calls, implemented by
//! [`FileStore`] and by the in-memory fake [`MemStore`] (which can fail like a full disk
//! and be slow like a bad one). Exactly one thread calls it: the writer
//! ([`spawn_writer`]), fed by a channel. Everybody else holds a [`StoreHandle`]:
//!
//! - [`StoreHandle::commit`] / [`StoreHandle::commit_blocking`] store a whole desired
//!   state and return only once it is durable, or with the error: nothing is
//!   acknowledged that was not stored (the cluster task rolls the change back).
//! - [`StoreHandle::append_event`] and [`StoreHandle::save_sla`] are fire-and-forget:
//!   the caller never waits for their fsync. They are written in the order they were
//!   sent; events that arrive while a write is in progress are coalesced into one
//!   append (one fsync), and of several SLA books only the newest is written. A failed
//!   write is logged and kept for a retry, so a full disk that is freed again loses
//!   nothing; nothing is dropped without an error in the log.
//! - [`StoreHandle::flush`] waits until everything sent before it was written, and
//!   says what is still unwritten.
//!
//! **Reads never wait for writes**: the store is read once, at start (before the
//! writer takes it over); from then on the cluster task answers every read from its
//! memory.
//!
//! **Why the cluster task still waits for a commit.** `Model::update` is synchronous
//! because it runs inside closures that feature code sends to the cluster task
//! (`ClusterHandle::with`) and whose results (a placement, an epoch) are acted upon at
//! once; making it async would reach into every VM, power, HA and energy module.
//! So a commit costs the cluster task one state write, as before, but nothing more: a
//! commit is served before events or SLA books queued with it, and event and SLA
//! fsyncs never run on the cluster task. Coalescing commits would not help while the
//! only committer waits for each one.
//!
//! **Towards etcd (router HA).** The handle's async [`StoreHandle::commit`] is the
//! shape a replicated backend needs: a commit becomes a transaction guarded by the
//! leader's lease, events a put under a prefix. Such a backend implements [`Store`];
//! its calls run on the writer thread, where waiting for a network round trip is as
//! harmless as waiting for an fsync.

pub mod etcd;
#[cfg(any(test, feature = "fake"))]
mod fake;
mod file;
mod writer;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use wisp_common::{HostId, VmId, VmSpec};

use crate::events::Event;
use crate::model::sla::SlaBook;

#[cfg(any(test, feature = "fake"))]
pub use fake::{MemStore, SharedMemStore};
pub use file::{write_atomic, FileStore, LEGACY_ENERGY_MARKER};
pub use writer::{spawn_writer, StoreHandle, MAX_UNWRITTEN_EVENTS, RETRY};

/// Bumped when the on-disk shape changes incompatibly.
pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedState {
    pub version: u32,
    #[serde(default)]
    pub vms: BTreeMap<VmId, VmRecord>,
    #[serde(default)]
    pub hosts: BTreeMap<HostId, HostRecord>,
    /// Fencing epochs are never reused: the next placement gets this one.
    #[serde(default)]
    pub next_epoch: u64,
    #[serde(default)]
    pub energy_mode: bool,
    /// The operator chose `energy_mode` (`router energy on|off`), so the config's
    /// `[energy] enabled` no longer applies at start. Stored with the mode in one
    /// write, so the two cannot disagree after a crash. Left out of the file while
    /// false, so a state without a choice still loads in an older router.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub energy_chosen: bool,
    /// The energy book (kWh used and saved), so a router restart does not lose it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_book: Option<StoredBook>,
}

/// The totals of the energy book, stored about once a minute and at shutdown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredBook {
    pub used_kwh: f64,
    pub all_on_kwh: f64,
    /// Seconds the totals cover.
    pub accounted_s: f64,
}

/// A VM the router manages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmRecord {
    pub spec: VmSpec,
    pub desired: Desired,
    /// Where it is placed (where it should run).
    pub host: Option<HostId>,
    /// Fencing token of the current placement.
    pub epoch: u64,
    pub created_at_ms: u64,
    /// A live migration started and not yet ended, stored before its destination is
    /// prepared: a router that takes over (or restarts) mid-migration must neither
    /// cancel it nor start the VM anew while the source may still be streaming.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrating: Option<InFlightMigration>,
}

/// See [`VmRecord::migrating`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InFlightMigration {
    pub to: HostId,
    /// The destination copy's epoch.
    pub epoch: u64,
    /// Wall clock (Unix ms) when it was planned: a record older than any migration
    /// can last is a leftover, not a migration.
    pub since_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    Running,
    Stopped,
}

/// Operator-set host flags that must survive a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostRecord {
    #[serde(default)]
    pub maintenance: bool,
    /// Put to sleep by the router (suspend or power-off): expected to be off.
    #[serde(default)]
    pub standby: bool,
    /// How deep it sleeps, once the sleep was verified (`None` while awake, and for a
    /// sleep stored by an older router).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<crate::api::types::SuspendMode>,
    /// When that sleep was verified (wall clock, ms): how long a host has slept
    /// survives a router restart (wake drills count on it; a clock step only moves a
    /// drill that is days away anyway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slept_at_ms: Option<u64>,
    /// Failed to wake by every method: kept out of the energy planner until
    /// `router power clear`. Left out of the file while unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<crate::power::quarantine::Quarantine>,
    /// Measured wake times and drills (`power/wake/book.rs`).
    #[serde(
        default,
        skip_serializing_if = "crate::power::wake::book::WakeBook::is_empty"
    )]
    pub wake: crate::power::wake::book::WakeBook,
}

impl PersistedState {
    /// The state of a router that has never stored anything.
    pub fn empty() -> Self {
        Self {
            version: STATE_VERSION,
            next_epoch: 1,
            ..Default::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create state directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is corrupt: {reason} (move it away to start empty, or restore a backup)")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot encode the {what} for storing")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("the store writer has stopped (is the router shutting down?)")]
    WriterGone,
    #[error("{events} event(s) and {sla_books} SLA book(s) not yet stored (kept and retried; the log says why)")]
    Unwritten { events: usize, sla_books: usize },
    #[error("cannot store the {what}: not the leader any more ({reason})")]
    NotLeader { what: String, reason: String },
    #[error("the etcd store cannot {action}")]
    Etcd {
        action: String,
        #[source]
        source: etcd::client::EtcdError,
    },
}

/// The backend of the store: plain blocking calls, made by the writer thread only
/// (see the module header). A failed call leaves what was stored before intact.
pub trait Store: Send {
    /// The desired state (an empty one when nothing was stored yet).
    fn load(&self) -> Result<PersistedState, StoreError>;
    /// Replaces the desired state, durably: the old or the new one survives a crash.
    fn save(&mut self, state: &PersistedState) -> Result<(), StoreError>;
    /// Appends events, durably and in order, all or none.
    fn append_events(&mut self, events: &[Event]) -> Result<(), StoreError>;
    /// The newest `limit` events, oldest first.
    fn recent_events(&self, limit: usize) -> Result<Vec<Event>, StoreError>;
    /// The SLA book (an empty one when none was stored yet).
    fn load_sla(&self) -> Result<SlaBook, StoreError>;
    /// Replaces the SLA book, durably.
    fn save_sla(&mut self, book: &SlaBook) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests;
