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
    /// A request that changes something, with who made it (uid or token role).
    ApiRequest,
    /// A summary of refused genie-link connections (one per source and minute).
    ConnectionsRefused,
    Error,
}

impl EventKind {
    /// The event's name, as in the JSON (`router events --json`) and the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RouterStarted => "router_started",
            Self::GenieConnected => "genie_connected",
            Self::GenieRefused => "genie_refused",
            Self::GenieDisconnected => "genie_disconnected",
            Self::HostUp => "host_up",
            Self::HostSuspect => "host_suspect",
            Self::HostUnreachable => "host_unreachable",
            Self::HostDown => "host_down",
            Self::HostFenced => "host_fenced",
            Self::FenceRefused => "fence_refused",
            Self::Power => "power",
            Self::Wake => "wake",
            Self::VmCreated => "vm_created",
            Self::VmStarted => "vm_started",
            Self::VmStopped => "vm_stopped",
            Self::VmDeleted => "vm_deleted",
            Self::VmLost => "vm_lost",
            Self::VmRestarted => "vm_restarted",
            Self::VmMigrated => "vm_migrated",
            Self::MigrationFailed => "migration_failed",
            Self::Failover => "failover",
            Self::Energy => "energy",
            Self::Maintenance => "maintenance",
            Self::ApiRequest => "api_request",
            Self::ConnectionsRefused => "connections_refused",
            Self::Error => "error",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The text name and the JSON name are one name.
    #[test]
    fn display_is_the_json_name() {
        for k in [
            EventKind::RouterStarted,
            EventKind::GenieConnected,
            EventKind::GenieRefused,
            EventKind::GenieDisconnected,
            EventKind::HostUp,
            EventKind::HostSuspect,
            EventKind::HostUnreachable,
            EventKind::HostDown,
            EventKind::HostFenced,
            EventKind::FenceRefused,
            EventKind::Power,
            EventKind::Wake,
            EventKind::VmCreated,
            EventKind::VmStarted,
            EventKind::VmStopped,
            EventKind::VmDeleted,
            EventKind::VmLost,
            EventKind::VmRestarted,
            EventKind::VmMigrated,
            EventKind::MigrationFailed,
            EventKind::Failover,
            EventKind::Energy,
            EventKind::Maintenance,
            EventKind::ApiRequest,
            EventKind::ConnectionsRefused,
            EventKind::Error,
        ] {
            let json = serde_json::to_string(&k).expect("serializes");
            assert_eq!(json, format!("\"{k}\""));
            assert_eq!(serde_json::from_str::<EventKind>(&json).ok(), Some(k));
        }
        assert_eq!(EventKind::VmMigrated.to_string(), "vm_migrated");
    }
}
