//! The VM spec (what the user asked for) and the run state (what QEMU says).
//!
//! Fields added after protocol v1 shipped (`initrd`, `append`, `disk_format`,
//! `cpu_model`, `nics`) default when absent and are left out of the JSON when unset,
//! so a spec without them still reads and writes exactly as before.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{MacAddr, Resources, VmId};

/// A disk image's format. Only these two are accepted: each is given to QEMU
/// explicitly, so QEMU never guesses a format from bytes a guest may have written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
        }
    }
}

impl fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DiskFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "raw" => Ok(Self::Raw),
            "qcow2" => Ok(Self::Qcow2),
            other => Err(format!(
                "unknown disk format {other:?}: expected raw or qcow2"
            )),
        }
    }
}

/// One virtio NIC: the named network of genie.toml's `[networks]` it joins and its
/// MAC, fixed for the VM's life so the guest keeps its address and the network its
/// forwarding entries across live migration and failover.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicSpec {
    pub network: String,
    pub mac: MacAddr,
}

/// True for a unicast MAC (the group bit, the lowest bit of the first octet, clear).
pub fn mac_is_unicast(mac: &MacAddr) -> bool {
    mac.0[0] & 1 == 0
}

/// A random locally administered unicast MAC (`x2:..`, `x6:..`, `xa:..`, `xe:..`):
/// never a vendor's address, so it cannot clash with a real NIC on the network.
pub fn random_local_mac() -> MacAddr {
    let mut b = [0u8; 6];
    // getrandom fails only without any OS entropy source; a fixed MAC is then still
    // unicast and local, and the router's duplicate check catches a second one.
    let _ = getrandom::fill(&mut b);
    b[0] = (b[0] & 0xfc) | 0x02;
    MacAddr(b)
}

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
    /// An initramfs for `kernel` (`-initrd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<PathBuf>,
    /// The kernel command line (`-append`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append: Option<String>,
    /// The disk's format; absent, the genie reads it from the image's header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_format: Option<DiskFormat>,
    /// The guest's CPU model (`-cpu`), fixed at create from router.toml's `cpu_model`
    /// so that every host the VM ever runs on gives it the same CPU (a live migration
    /// needs that). Absent (VMs created before it existed): QEMU's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_model: Option<String>,
    /// Virtio NICs, in guest PCI order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<NicSpec>,
}

impl VmSpec {
    /// A spec with only the required fields set (tests, tools).
    pub fn new(name: VmId, vcpus: u32, mem_mib: u64) -> Self {
        Self {
            name,
            vcpus,
            mem_mib,
            disk: None,
            kernel: None,
            priority: 0,
            initrd: None,
            append: None,
            disk_format: None,
            cpu_model: None,
            nics: Vec::new(),
        }
    }

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

/// `path` with `.` and `..` applied to its text, without touching the file system: the
/// genie checks a path against `image_dirs` with it (before canonicalizing), and the
/// router compares two VMs' disks with it.
pub fn lexical_path(path: &std::path::Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
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
    fn a_spec_of_before_the_new_fields_reads_and_writes_the_same() {
        let old = r#"{"name":"a","vcpus":1,"mem_mib":64,"disk":null,"kernel":null,"priority":0}"#;
        let s: VmSpec = serde_json::from_str(old).unwrap();
        assert_eq!(s, VmSpec::new(VmId::new("a").unwrap(), 1, 64));
        assert_eq!(serde_json::to_string(&s).unwrap(), old);
    }

    #[test]
    fn nics_and_formats_round_trip_and_bad_formats_are_named() {
        let mut s = VmSpec::new(VmId::new("a").unwrap(), 1, 64);
        s.nics.push(NicSpec {
            network: "lan".into(),
            mac: "02:00:00:00:00:01".parse().unwrap(),
        });
        s.disk_format = Some(DiskFormat::Qcow2);
        let text = serde_json::to_string(&s).unwrap();
        assert!(text.contains(r#""disk_format":"qcow2""#), "{text}");
        assert_eq!(serde_json::from_str::<VmSpec>(&text).unwrap(), s);
        let e = "vmdk".parse::<DiskFormat>().unwrap_err();
        assert!(e.contains("vmdk") && e.contains("raw or qcow2"), "{e}");
    }

    #[test]
    fn generated_macs_are_local_unicast() {
        for _ in 0..64 {
            let m = random_local_mac();
            assert!(mac_is_unicast(&m) && m.0[0] & 2 == 2, "{m}");
        }
        assert!(!mac_is_unicast(&"01:00:5e:00:00:01".parse().unwrap()));
    }

    #[test]
    fn spec_rejects_unknown_fields() {
        let e = serde_json::from_str::<VmSpec>(r#"{"name":"a","vcpus":1,"mem_mib":64,"cpus":2}"#)
            .unwrap_err();
        assert!(e.to_string().contains("cpus"), "{e}");
    }
}
