//! The VM spec (what the user asked for) and the run state (what QEMU says).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Resources, VmId};

/// What a user asked for. The router persists it; a genie turns it into a QEMU command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    pub name: VmId,
    pub vcpus: u32,
    pub mem_mib: u64,
    /// Disk image on storage every host can reach.
    #[serde(default)]
    pub disk: Option<PathBuf>,
    /// A multiboot or Linux kernel to boot directly (`-kernel`).
    #[serde(default)]
    pub kernel: Option<PathBuf>,
    /// Failover order: higher restarts first.
    #[serde(default)]
    pub priority: u8,
}

impl VmSpec {
    pub fn resources(&self) -> Resources {
        Resources::new(self.vcpus, self.mem_mib)
    }
}

/// A VM's run state as QEMU reports it (`query-status`), tolerant of states that newer
/// QEMUs add: anything unknown is kept verbatim in `Other` rather than failing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmRunState {
    Running,
    Paused,
    Prelaunch,
    Inmigrate,
    Postmigrate,
    FinishMigrate,
    Shutdown,
    Suspended,
    InternalError,
    IoError,
    GuestPanicked,
    /// No qemu process: the VM is defined but not running.
    Stopped,
    /// The genie could not reach the VM's QMP socket.
    Unreachable,
    Other(String),
}

impl VmRunState {
    /// Parses QMP's `status` string.
    pub fn from_qmp(status: &str) -> Self {
        match status {
            "running" => Self::Running,
            "paused" => Self::Paused,
            "prelaunch" => Self::Prelaunch,
            "inmigrate" => Self::Inmigrate,
            "postmigrate" => Self::Postmigrate,
            "finish-migrate" => Self::FinishMigrate,
            "shutdown" => Self::Shutdown,
            "suspended" => Self::Suspended,
            "internal-error" => Self::InternalError,
            "io-error" => Self::IoError,
            "guest-panicked" => Self::GuestPanicked,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Prelaunch => "prelaunch",
            Self::Inmigrate => "inmigrate",
            Self::Postmigrate => "postmigrate",
            Self::FinishMigrate => "finish-migrate",
            Self::Shutdown => "shutdown",
            Self::Suspended => "suspended",
            Self::InternalError => "internal-error",
            Self::IoError => "io-error",
            Self::GuestPanicked => "guest-panicked",
            Self::Stopped => "stopped",
            Self::Unreachable => "unreachable",
            Self::Other(s) => s,
        }
    }
}

impl std::fmt::Display for VmRunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_qmp_status_is_kept() {
        assert_eq!(VmRunState::from_qmp("running"), VmRunState::Running);
        let s = VmRunState::from_qmp("colo");
        assert_eq!(s, VmRunState::Other("colo".into()));
        assert_eq!(s.as_str(), "colo");
    }

    #[test]
    fn spec_rejects_unknown_fields() {
        let e = serde_json::from_str::<VmSpec>(r#"{"name":"a","vcpus":1,"mem_mib":64,"cpus":2}"#)
            .unwrap_err();
        assert!(e.to_string().contains("cpus"), "{e}");
    }
}
