//! Events: every detection, fence, restart, refusal and power transition, with a
//! timestamp. The cluster task records them in the store and keeps the newest in memory
//! for the API.

use serde::{Deserialize, Serialize};
use wisp_common::{HostId, VmId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    RouterStarted,
    GenieConnected,
    GenieRefused,
    GenieDisconnected,
    HostUp,
    HostSuspect,
    HostUnreachable,
    HostDown,
    HostFenced,
    FenceRefused,
    Power,
    Wake,
    VmCreated,
    VmStarted,
    VmStopped,
    VmDeleted,
    VmLost,
    VmRestarted,
    VmMigrated,
    MigrationFailed,
    Failover,
    Energy,
    Maintenance,
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at_ms: u64,
    pub kind: EventKind,
    #[serde(default)]
    pub host: Option<HostId>,
    #[serde(default)]
    pub vm: Option<VmId>,
    pub message: String,
}

impl Event {
    pub fn new(
        at_ms: u64,
        kind: EventKind,
        host: Option<HostId>,
        vm: Option<VmId>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            at_ms,
            kind,
            host,
            vm,
            message: message.into(),
        }
    }
}
