//! The CLI's contract: every type that crosses the router's HTTP/JSON boundary, the
//! requests the CLI sends and the rows and reports the daemon answers with. The CLI
//! (`crate::cli`) imports API types from here and nowhere else, so this module is the
//! one place to read (and to change with care) for the JSON shapes; docs/CONTRACTS.md
//! documents the parts scripts and the lab parse.
//!
//! Most types are defined here and built by the domain. A few stay with the code that
//! owns them and are re-exported: the events (`crate::events`), the stored VM record
//! and desired state (`crate::store`), a VM's operation in flight (`crate::cluster`),
//! the host status words (`crate::model`) and the energy task's published status
//! (`crate::energy`).

pub mod energy;
pub mod hosts;
pub mod power;
pub mod vms;

pub use energy::{Decision, EnergyRequest, EnergyStatus, HostEnergy, HostPower};
pub use hosts::{HostView, MaintenanceReport, MaintenanceRequest, SlaReport, SlaRow, StatusView};
pub use power::{
    ActionReport, ChassisAction, ClearReport, PowerStatusRow, SuspendMode, SuspendOutcome,
    SuspendRequest, WakeAttempt, WakeMethod, WakeOutcome, WakeRequest, WakeVia,
};
pub use vms::{
    CreateRequest, MigrateRequest, MigrationReport, OpKind, OpReport, StopRequest, VmDetail,
    VmView, VmViewState,
};

pub use crate::cluster::Op;
pub use crate::events::{Event, EventKind};
pub use crate::model::host::{HostStatus, PowerKnown};
pub use crate::store::{Desired, VmRecord};
pub use wisp_common::proto::MigrationProgress;
pub use wisp_common::{HostId, VmId, VmRunState, VmSpec};
