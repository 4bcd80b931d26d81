//! VM shapes of the API: the lifecycle and migration requests, the VM rows of
//! `GET /v1/vms`, the detail of `GET /v1/vms/{name}` and the reports the operations
//! answer with.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use wisp_common::proto::MigrationProgress;
use wisp_common::{HostId, VmId, VmRunState, VmSpec};

use crate::cluster::Op;
use crate::events::Event;
use crate::store::{Desired, VmRecord};

/// `POST /v1/vms`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreateRequest {
    pub spec: VmSpec,
    #[serde(default)]
    pub host: Option<HostId>,
    /// NICs to add to `spec.nics`, a MAC generated for each that has none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<crate::vms::NicRequest>,
}

/// `POST /v1/vms/{name}/migrate`.
#[derive(Debug, Serialize, Deserialize)]
pub struct MigrateRequest {
    pub to: HostId,
}

/// `POST /v1/vms/{name}/stop` (the body is optional: no body is a graceful stop).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StopRequest {
    #[serde(default)]
    pub force: bool,
}

/// A VM's state as `router vms` shows it: what its genie reports, or `not running` for
/// a VM the router knows only from its record (it runs nowhere the router can see).
/// Serialized as one string, exactly the words of [`VmRunState`] plus `"not running"`,
/// so the JSON is the same as when this was a `String`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmViewState {
    Reported(VmRunState),
    NotRunning,
}

impl VmViewState {
    /// The word used in the JSON and the tables.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Reported(s) => s.as_str(),
            Self::NotRunning => "not running",
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self, Self::Reported(VmRunState::Running))
    }

    /// The inverse of [`Self::as_str`]. `VmRunState::from_qmp` knows only QMP's
    /// words; `stopped` and `unreachable` are the genie's own, so they are read here.
    pub fn parse(s: &str) -> Self {
        match s {
            "not running" => Self::NotRunning,
            "stopped" => Self::Reported(VmRunState::Stopped),
            "unreachable" => Self::Reported(VmRunState::Unreachable),
            other => Self::Reported(VmRunState::from_qmp(other)),
        }
    }
}

impl fmt::Display for VmViewState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for VmViewState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for VmViewState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Any word is accepted: QEMU may add run states, kept verbatim as `Other`.
        let s = String::deserialize(d)?;
        Ok(Self::parse(&s))
    }
}

/// The word of a desired state in tables (the same as its JSON). Here rather than in
/// `crate::store` because only the API's text needs it.
impl fmt::Display for Desired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Desired::Running => "running",
            Desired::Stopped => "stopped",
        })
    }
}

/// One row of `GET /v1/vms` (`router vms --json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmView {
    pub name: VmId,
    /// Where it runs (or, if it runs nowhere, where it is placed).
    pub host: Option<HostId>,
    pub state: VmViewState,
    pub vcpus: u32,
    pub mem_mib: u64,
    pub cpu_time_ms: Option<u64>,
    pub pid: Option<u32>,
    pub qmp_socket: Option<PathBuf>,
    pub desired: Option<Desired>,
}

/// Everything about one VM (`GET /v1/vms/{name}`).
#[derive(Debug, Serialize, Deserialize)]
pub struct VmDetail {
    pub views: Vec<VmView>,
    pub record: Option<VmRecord>,
    pub op: Option<Op>,
    pub migration: Option<MigrationProgress>,
    pub events: Vec<Event>,
}

/// Which lifecycle command an [`OpReport`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Create,
    Start,
    Stop,
    Restart,
    Delete,
}

impl OpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Delete => "delete",
        }
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a lifecycle command did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpReport {
    pub vm: VmId,
    pub host: Option<HostId>,
    pub action: OpKind,
    pub elapsed_ms: u64,
    pub message: String,
}

/// What a live migration did (`router vm migrate --json`, and each VM moved by
/// maintenance).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationReport {
    pub vm: VmId,
    pub from: HostId,
    pub to: HostId,
    /// QEMU's total migration time.
    pub total_ms: u64,
    /// QEMU's measured guest pause at switch-over.
    pub downtime_ms: u64,
    /// From the request to the source genie being told to migrate (includes starting
    /// the destination qemu).
    pub to_migrate_command_ms: u64,
    /// From the request to the placement being recorded.
    pub elapsed_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every word the state had as a `String`, and back.
    #[test]
    fn vm_view_state_json_is_the_old_strings() {
        let cases = [
            (VmViewState::Reported(VmRunState::Running), "running"),
            (VmViewState::Reported(VmRunState::Paused), "paused"),
            (
                VmViewState::Reported(VmRunState::FinishMigrate),
                "finish-migrate",
            ),
            (VmViewState::Reported(VmRunState::Inmigrate), "inmigrate"),
            (
                VmViewState::Reported(VmRunState::GuestPanicked),
                "guest-panicked",
            ),
            (VmViewState::Reported(VmRunState::Stopped), "stopped"),
            (
                VmViewState::Reported(VmRunState::Unreachable),
                "unreachable",
            ),
            (
                VmViewState::Reported(VmRunState::Other("colo".into())),
                "colo",
            ),
            (VmViewState::NotRunning, "not running"),
        ];
        for (state, word) in cases {
            let json = serde_json::to_string(&state).expect("serializes");
            assert_eq!(json, format!("\"{word}\""));
            assert_eq!(state.to_string(), word);
            let back: VmViewState = serde_json::from_str(&json).expect("parses");
            assert_eq!(back, state);
        }
        assert!(VmViewState::Reported(VmRunState::Running).is_running());
        assert!(!VmViewState::NotRunning.is_running());
    }

    #[test]
    fn op_kind_json_is_lowercase_and_matches_display() {
        for (k, word) in [
            (OpKind::Create, "create"),
            (OpKind::Start, "start"),
            (OpKind::Stop, "stop"),
            (OpKind::Restart, "restart"),
            (OpKind::Delete, "delete"),
        ] {
            assert_eq!(
                serde_json::to_string(&k).expect("serializes"),
                format!("\"{word}\"")
            );
            assert_eq!(k.to_string(), word);
            assert_eq!(
                serde_json::from_str::<OpKind>(&format!("\"{word}\"")).ok(),
                Some(k)
            );
        }
        assert!(serde_json::from_str::<OpKind>("\"Stop\"").is_err());
    }

    #[test]
    fn desired_display_matches_its_json() {
        for d in [Desired::Running, Desired::Stopped] {
            assert_eq!(
                serde_json::to_string(&d).expect("serializes"),
                format!("\"{d}\"")
            );
        }
    }

    #[test]
    fn vm_row_keeps_its_shape() {
        let v = VmView {
            name: VmId::new("vm1").expect("valid"),
            host: None,
            state: VmViewState::NotRunning,
            vcpus: 1,
            mem_mib: 64,
            cpu_time_ms: None,
            pid: None,
            qmp_socket: None,
            desired: Some(Desired::Stopped),
        };
        assert_eq!(
            serde_json::to_value(&v).expect("serializes"),
            serde_json::json!({"name":"vm1","host":null,"state":"not running","vcpus":1,
                "mem_mib":64,"cpu_time_ms":null,"pid":null,"qmp_socket":null,
                "desired":"stopped"})
        );
    }
}
