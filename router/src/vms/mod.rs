//! VM lifecycle on the router's side: create, start, stop, restart, delete, live
//! migration, and the reconciler that keeps the observed world equal to the desired
//! one (which is also how VMs of a failed host are restarted elsewhere).
//!
//! Every operation first claims the VM in the model (`Model::claim`), so a user
//! command, the reconciler and the energy planner never act on one VM at the same
//! time; the claim is a guard that releases the VM when dropped, cancellation included.

pub mod api;
pub mod commands;
pub mod console;
pub mod console_attach;
pub mod devices;
mod inflight;
pub mod migrate;
mod ops;
pub mod placement;
pub mod reconcile;

pub use ops::*;

use std::fmt;

use serde::{Deserialize, Serialize};
use wisp_common::{HostId, MacAddr, VmId, VmRunState};

use crate::link::LinkError;
use crate::model::host::HostStatus;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("no VM named {vm}")]
    NotFound { vm: VmId },
    #[error("a VM named {vm} already exists")]
    NameTaken { vm: VmId },
    #[error("no host named {host} in the inventory")]
    UnknownHost { host: HostId },
    #[error("host {host} cannot take VMs now: its state is {state}, not up")]
    HostNotUp { host: HostId, state: HostStatus },
    #[error("placement failed")]
    Placement(#[source] placement::PlacementError),
    #[error(
        "no awake host has room, so sleeping host {host} is being woken: try again in a moment"
    )]
    Waking {
        host: HostId,
        #[source]
        cause: placement::PlacementError,
    },
    #[error("VM {vm} is busy ({op}); try again when that finishes")]
    Busy { vm: VmId, op: crate::cluster::Op },
    #[error("VM {vm} is not running (it is {state})")]
    NotRunning { vm: VmId, state: NotRunning },
    #[error("VM {vm} already runs on {host}")]
    SameHost { vm: VmId, host: HostId },
    #[error("VM {vm} on {host}: {message}")]
    Genie {
        vm: VmId,
        host: HostId,
        message: String,
    },
    #[error("migration of {vm} from {from} to {to} failed; {vm} keeps running on {from}")]
    MigrationFailed {
        vm: VmId,
        from: HostId,
        to: HostId,
        #[source]
        source: Box<VmError>,
    },
    #[error("migration of {vm} from {from} to {to}: lost the genie of {from} before it finished; the reconciler keeps {vm} on whichever host runs it (see `router vm show {vm}`)")]
    SourceLost {
        vm: VmId,
        from: HostId,
        to: HostId,
        #[source]
        source: LinkError,
    },
    #[error("VM {vm}: unexpected answer from the genie on {host}: {answer}")]
    Unexpected {
        vm: VmId,
        host: HostId,
        answer: String,
    },
    #[error("genie link")]
    Link(#[source] LinkError),
    #[error("could not store the change (nothing was done)")]
    Store(#[source] StoreError),
    #[error("invalid VM spec: {reason}")]
    BadSpec { reason: String },
    #[error("VM {vm}: {field}: {reason}")]
    BadField {
        vm: VmId,
        field: String,
        reason: String,
    },
    #[error("VM {vm}: disk {disk} is already used by VM {other}")]
    DiskInUse {
        vm: VmId,
        disk: std::path::PathBuf,
        other: VmId,
    },
    #[error("VM {vm}: {field}: MAC {mac} is already used by VM {other}")]
    MacInUse {
        vm: VmId,
        field: String,
        mac: MacAddr,
        other: VmId,
    },
    #[error("the router is shutting down")]
    Shutdown,
}

/// A NIC asked for at create (`router vm create --nic NET[,mac=MAC]`): the router
/// generates the MAC when none is given and stores it in the VM's spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicRequest {
    pub network: String,
    #[serde(default)]
    pub mac: Option<MacAddr>,
}

/// Why a VM that should be running for an operation (a migration) is not, as the
/// error's "it is ..." clause words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotRunning {
    /// A connected genie reports it in another state.
    Reported { host: HostId, state: VmRunState },
    /// No connected genie reports it.
    Nowhere,
    /// Its desired state is stopped.
    DesiredStopped,
}

impl fmt::Display for NotRunning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reported { host, state } => write!(f, "{state} on {host}"),
            Self::Nowhere => f.write_str("not running anywhere"),
            Self::DesiredStopped => f.write_str("desired stopped"),
        }
    }
}

impl From<crate::cluster::Busy> for VmError {
    fn from(b: crate::cluster::Busy) -> Self {
        Self::Busy { vm: b.vm, op: b.op }
    }
}

impl VmError {
    /// The HTTP status that says whose fault it is.
    pub fn status(&self) -> u16 {
        match self {
            Self::NotFound { .. } | Self::UnknownHost { .. } => 404,
            Self::NameTaken { .. } | Self::Busy { .. } | Self::SameHost { .. } => 409,
            Self::BadSpec { .. } | Self::BadField { .. } => 400,
            Self::DiskInUse { .. } | Self::MacInUse { .. } => 409,
            Self::HostNotUp { .. }
            | Self::Placement(_)
            | Self::Waking { .. }
            | Self::NotRunning { .. } => 409,
            Self::Genie { .. } | Self::Unexpected { .. } | Self::Link(_) => 502,
            Self::Store(_) | Self::Shutdown => 503,
            Self::MigrationFailed { source, .. } => source.status(),
            Self::SourceLost { .. } => 502,
        }
    }
}

pub use wisp_common::error::chain;
