//! Errors of the router's power commands (status, on/off, wake, suspend). Each names
//! the host and, for BMC failures, carries the `BmcError` (which names the BMC address
//! and never the password) as its source.

use std::time::Duration;

use wisp_bmc::{BmcError, PowerAction};
use wisp_common::{HostId, VmId};

use crate::link::LinkError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    #[error("no host named {host} in the inventory")]
    UnknownHost { host: String },
    #[error("host {host} has no BMC configured (set bmc, bmc_user and bmc_password_file in router.toml)")]
    NoBmc { host: HostId },
    #[error("host {host}: power {action} failed")]
    Bmc {
        host: HostId,
        action: &'static str,
        #[source]
        source: BmcError,
    },
    #[error("host {host}: the BMC at {bmc} accepted power {action} but still reported power {seen} after {after:?}")]
    NotConfirmed {
        host: HostId,
        bmc: String,
        action: PowerAction,
        seen: String,
        after: Duration,
    },
    #[error("host {host} runs {count} VM(s): {list}; migrate or stop them first, or pass --force", list = join(vms))]
    VmsRunning {
        host: HostId,
        count: usize,
        vms: Vec<VmId>,
    },
    #[error("host {host} is {state}: its genie must be connected to suspend it (use --off for an IPMI soft-off)")]
    NotUp { host: HostId, state: String },
    #[error("host {host}: the genie refused to suspend: {message}")]
    Genie { host: HostId, message: String },
    #[error("host {host}: suspend not verified: {what} within {after:?}")]
    SuspendUnverified {
        host: HostId,
        what: String,
        after: Duration,
    },
    #[error("host {host} cannot suspend to RAM: its kernel offers {offers} in /sys/power/state; use --off for a soft-off")]
    NoRamSuspend { host: HostId, offers: String },
    #[error("host {host}: no way to wake it (no wol_interface in router.toml and no BMC)")]
    NoWakePath { host: HostId },
    #[error("host {host} failed to wake after {after:?}: {tried}")]
    WakeFailed {
        host: HostId,
        tried: String,
        after: Duration,
    },
    #[error("genie link")]
    Link(#[source] LinkError),
    #[error("could not store the change (nothing was done)")]
    Store(#[source] StoreError),
    #[error("the router is shutting down")]
    Shutdown,
}

fn join(vms: &[VmId]) -> String {
    vms.iter()
        .map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl PowerError {
    /// The HTTP status that says whose fault it is.
    pub fn status(&self) -> u16 {
        match self {
            Self::UnknownHost { .. } => 404,
            Self::NoBmc { .. } | Self::NoWakePath { .. } | Self::NoRamSuspend { .. } => 400,
            Self::VmsRunning { .. } | Self::NotUp { .. } => 409,
            Self::Bmc { source, .. } => match source {
                BmcError::Timeout { .. } => 504,
                _ => 502,
            },
            Self::NotConfirmed { .. }
            | Self::Genie { .. }
            | Self::SuspendUnverified { .. }
            | Self::WakeFailed { .. }
            | Self::Link(_) => 502,
            Self::Store(_) | Self::Shutdown => 503,
        }
    }
}
