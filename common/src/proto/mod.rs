//! Protocol v1 between genie and router.
//!
//! One TCP stream per genie, carrying length-prefixed JSON frames (see [`frame`]). The
//! stream is any `AsyncRead + AsyncWrite`, so TLS can wrap it later without touching
//! the messages.
//!
//! ```text
//! genie                                   router
//!   Hello{protocol, host, instance, nonce} ->
//!                                        <- Challenge{nonce, proof}   (router proves the secret)
//!   Auth{proof}                          ->                           (genie proves the secret)
//!                                        <- Welcome{session, rates, lease} | Refused{reason}
//!                                           (a follower router answers Hello with NotLeader)
//!   Report{gen, sent_at_ms, ...}         ->   many times a second
//!                                        <- Command{id, command}
//!   Progress{id, ...} / Reply{id, outcome} ->
//! ```
//!
//! Wire types live here and only here; the router and genie convert them into their own
//! internal types at the edge. Every report carries a generation number (strictly
//! increasing per genie instance) and a send timestamp, so the router drops stale or
//! reordered reports.

pub mod auth;
pub mod frame;
#[cfg(test)]
mod fuzz_tests;
pub mod handshake;
pub mod power;
pub mod session;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{HostId, VmId, VmRunState, VmSpec};
pub use auth::{Nonce, Proof};
pub use power::{PowerCaps, ResumeSign, Resumed, WolCaps, WolRelay};

/// Bumped on any incompatible change; checked in the handshake.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame either side accepts. A report of a host with a few hundred VMs is
/// ~100 KiB; anything near 1 MiB is a bug or an attack.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// Largest frame accepted before the peer is authenticated: a Hello, a Challenge or a
/// refusal is under 1 KiB, so an unauthenticated peer cannot make either side hold
/// more than this per connection.
pub const MAX_HANDSHAKE_FRAME_BYTES: usize = 4 << 10;

/// A genie's connect and each handshake step must finish within this; a router that
/// takes longer is as good as absent.
pub const GENIE_LINK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// The longest a genie waits between two reconnect attempts (before a jitter of up to
/// +25 %).
pub const GENIE_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a genie cut off from its router may take to be heard again once the path
/// is back: a connect attempt under way when the path returns may have sent its last
/// SYN already and time out ([`GENIE_LINK_TIMEOUT`]), then the genie waits out its
/// backoff ([`GENIE_BACKOFF_MAX`] + 25 %) and connects, handshakes and reports
/// (2 s allowed for that on a loaded machine). The router gives a host silent because
/// of its own fault at least this long before it powers it off.
pub const GENIE_RECONNECT_WITHIN: std::time::Duration = std::time::Duration::from_millis(
    GENIE_LINK_TIMEOUT.as_millis() as u64 + GENIE_BACKOFF_MAX.as_millis() as u64 * 5 / 4 + 2000,
);

/// Correlates a command with its progress and reply.
pub type CommandId = u64;

/// Messages a genie sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum GenieMsg {
    Hello {
        protocol: u32,
        host: HostId,
        /// Random per genie process start: a new instance restarts `gen` at 1.
        instance: u64,
        genie_version: String,
        nonce: Nonce,
    },
    Auth {
        proof: Proof,
    },
    Report(Report),
    /// Intermediate progress of a long command (a migration).
    Progress {
        id: CommandId,
        progress: MigrationProgress,
    },
    /// Final answer to a command.
    Reply {
        id: CommandId,
        outcome: Outcome,
    },
    /// Serial output of a VM for an attached console session (`Command::ConsoleAttach`),
    /// in chunks of at most [`MAX_CONSOLE_CHUNK`] bytes.
    ConsoleOutput {
        session: u64,
        bytes: Vec<u8>,
    },
    /// A console session ended on the genie's side (the VM stopped or moved away, or
    /// the session fell behind); nothing more comes for it.
    ConsoleClosed {
        session: u64,
        reason: String,
    },
}

/// Messages the router sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RouterMsg {
    Challenge {
        nonce: Nonce,
        /// The router's proof that it knows the secret, over the genie's nonce.
        proof: Proof,
    },
    Welcome {
        session: u64,
        heartbeat_ms: u64,
        metrics_ms: u64,
        /// A genie that has not heard from the router for this long kills its VMs
        /// (self-fence). 0 disables self-fencing.
        lease_ms: u64,
    },
    Refused {
        reason: String,
    },
    /// A follower of a replicated router turns a genie away at its Hello, naming the
    /// leader when it knows it, so the genie can follow it.
    NotLeader {
        reason: String,
        #[serde(default)]
        leader: Option<handshake::LeaderRef>,
    },
    Command {
        id: CommandId,
        command: Command,
    },
    /// Keeps the genie's lease alive; sent at the heartbeat rate.
    Ack {
        gen: u64,
    },
}

impl GenieMsg {
    /// The message's wire name, for errors ("sent report where hello was expected").
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Hello { .. } => "hello",
            Self::Auth { .. } => "auth",
            Self::Report(_) => "report",
            Self::Progress { .. } => "progress",
            Self::Reply { .. } => "reply",
            Self::ConsoleOutput { .. } => "console_output",
            Self::ConsoleClosed { .. } => "console_closed",
        }
    }
}

impl RouterMsg {
    /// The message's wire name, for errors ("sent ack during welcome").
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Challenge { .. } => "challenge",
            Self::Welcome { .. } => "welcome",
            Self::Refused { .. } => "refused",
            Self::NotLeader { .. } => "not_leader",
            Self::Command { .. } => "command",
            Self::Ack { .. } => "ack",
        }
    }
}

/// A genie's report. Heartbeats carry neither metrics nor VMs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub gen: u64,
    pub sent_at_ms: u64,
    #[serde(default)]
    pub metrics: Option<HostMetrics>,
    /// The full list of VMs on the host when present (absent = unchanged).
    #[serde(default)]
    pub vms: Option<Vec<VmStatus>>,
    /// The host's sleep and wake abilities; sent with the metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<Box<PowerCaps>>,
    /// Set in the first report after the genie noticed its host resumed from sleep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed: Option<Resumed>,
    /// How this host runs VMs (accelerator, CPU models); sent with the metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virt: Option<Box<VirtCaps>>,
}

/// How a host runs VMs, learned once at genie start.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtCaps {
    /// `kvm` or `tcg`: what the genie's VMs run on.
    pub accel: String,
    /// Why the accelerator is not what genie.toml asked for (a KVM that does not work).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel_note: Option<String>,
    /// The CPU models QEMU can give a guest on this host under `accel` (no missing
    /// feature); `None` when they could not be listed (`cpu_note` says why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_note: Option<String>,
    /// The networks of genie.toml `[networks]` whose bridge exists on the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
}

impl VirtCaps {
    /// True when every NIC of `spec` can join a network here and its CPU model (when
    /// it has one) is offered.
    pub fn serves(&self, spec: &crate::VmSpec) -> bool {
        spec.nics.iter().all(|n| self.networks.contains(&n.network))
            && spec
                .cpu_model
                .as_deref()
                .is_none_or(|m| self.can_run_cpu(m))
    }

    /// False only when the host's models are known and `model` is not among them.
    pub fn can_run_cpu(&self, model: &str) -> bool {
        self.cpu_models
            .as_ref()
            .is_none_or(|m| m.iter().any(|x| x == model))
    }
}

/// Host metrics read with sysinfo.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostMetrics {
    /// Average over all CPUs since the previous sample, 0–100.
    pub cpu_percent: f32,
    pub per_cpu_percent: Vec<f32>,
    pub mem_total_bytes: u64,
    pub mem_used_bytes: u64,
    pub mem_available_bytes: u64,
    pub load_avg: [f64; 3],
    pub uptime_s: u64,
    pub net: Vec<NetCounters>,
}

/// Byte counters of one network interface since boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetCounters {
    pub iface: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// One QEMU VM as its genie sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmStatus {
    pub id: VmId,
    pub state: VmRunState,
    pub vcpus: u32,
    pub mem_mib: u64,
    /// CPU time used by the qemu process (user + system), ms.
    pub cpu_time_ms: u64,
    pub pid: Option<u32>,
    pub qmp_socket: PathBuf,
    /// The fencing epoch the VM was started with (see `Command::StartVm`).
    #[serde(default)]
    pub epoch: u64,
}

/// What the router asks a genie to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Start a VM. `epoch` is the router's fencing token for this placement: a genie
    /// never resumes a VM whose epoch the router has since superseded.
    StartVm { spec: VmSpec, epoch: u64 },
    /// Stop a VM: ACPI powerdown, then `quit` after `timeout_ms` (immediately if `force`).
    StopVm {
        vm: VmId,
        force: bool,
        timeout_ms: u64,
    },
    /// Stop and forget a VM, removing its runtime files.
    DeleteVm { vm: VmId },
    /// Destination side of a live migration: start qemu with `-incoming` on a free port.
    /// Replied with `Outcome::Incoming`.
    PrepareIncoming { spec: VmSpec, epoch: u64 },
    /// Source side of a live migration to `uri` (as returned by `PrepareIncoming`).
    /// Progress messages follow; replied with `Outcome::Migrated` or an error.
    Migrate {
        vm: VmId,
        uri: String,
        max_bandwidth_mib_s: u64,
        downtime_limit_ms: u64,
    },
    /// Abort an incoming migration and remove the waiting qemu.
    CancelIncoming { vm: VmId },
    /// Arm Wake-on-LAN and suspend the host.
    Suspend,
    /// Kill every VM whose epoch is older than `min_epoch` (stale after a fence).
    DropStale { vms: Vec<VmId> },
    /// Send magic packets for another host from this host's segment (raw frames and
    /// UDP broadcast), for a router on another segment.
    SendWol(WolRelay),
    /// The last `max_bytes` of a VM's serial console log (at most
    /// [`MAX_CONSOLE_BYTES`]). Replied with `Outcome::Console`. Added after v1 shipped:
    /// a genie too old to know it drops the link, so send it only on request.
    ConsoleLog { vm: VmId, max_bytes: u64 },
    /// Attach console session `session` (chosen by the router) to a VM running here:
    /// its serial output then flows as `GenieMsg::ConsoleOutput`. Replied with `Done`,
    /// or `Failed` when the VM's console is not here. Like `ConsoleLog`, sent only on an
    /// operator's request.
    ConsoleAttach { vm: VmId, session: u64 },
    /// Keystrokes for an attached session (at most [`MAX_CONSOLE_CHUNK`] bytes),
    /// written to the VM's serial port. The router waits for the reply before sending
    /// the next chunk, so chunks stay in order.
    ConsoleInput { session: u64, bytes: Vec<u8> },
    /// End a console session (unknown sessions are fine: `Done`).
    ConsoleDetach { session: u64 },
}

/// The largest chunk of console bytes in one message, either way.
pub const MAX_CONSOLE_CHUNK: usize = 4096;

/// The most console text one reply carries (JSON escaping can double it; frames are
/// at most [`MAX_FRAME_BYTES`]).
pub const MAX_CONSOLE_BYTES: u64 = 256 * 1024;

/// A command's final outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    Done,
    Incoming {
        uri: String,
    },
    Migrated {
        total_ms: u64,
        downtime_ms: u64,
    },
    Failed {
        error: String,
    },
    /// A VM's console log text (`Command::ConsoleLog`).
    Console {
        text: String,
    },
}

/// Progress of an outgoing migration, from `query-migrate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationProgress {
    pub status: String,
    pub transferred_bytes: u64,
    pub remaining_bytes: u64,
    pub total_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_report() -> Report {
        Report {
            gen: 7,
            sent_at_ms: 1_700_000_000_000,
            metrics: Some(HostMetrics {
                cpu_percent: 12.5,
                per_cpu_percent: vec![10.0, 15.0],
                mem_total_bytes: 1 << 34,
                mem_used_bytes: 1 << 30,
                mem_available_bytes: 1 << 33,
                load_avg: [0.1, 0.2, 0.3],
                uptime_s: 100,
                net: vec![NetCounters {
                    iface: "eth0".into(),
                    rx_bytes: 1,
                    tx_bytes: 2,
                }],
            }),
            vms: Some(vec![VmStatus {
                id: VmId::new("vm1").unwrap(),
                state: VmRunState::Running,
                vcpus: 1,
                mem_mib: 64,
                cpu_time_ms: 5,
                pid: Some(42),
                qmp_socket: "/run/wisp/vm1.qmp".into(),
                epoch: 3,
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn messages_round_trip_as_json() {
        let msgs = vec![
            GenieMsg::Hello {
                protocol: PROTOCOL_VERSION,
                host: HostId::new("h1").unwrap(),
                instance: 9,
                genie_version: "0.1.0".into(),
                nonce: Nonce::from_bytes([1; 32]),
            },
            GenieMsg::Report(sample_report()),
            GenieMsg::Reply {
                id: 1,
                outcome: Outcome::Migrated {
                    total_ms: 10,
                    downtime_ms: 2,
                },
            },
        ];
        for m in msgs {
            let text = serde_json::to_string(&m).unwrap();
            assert_eq!(serde_json::from_str::<GenieMsg>(&text).unwrap(), m);
        }
        let c = RouterMsg::Command {
            id: 3,
            command: Command::StopVm {
                vm: VmId::new("a").unwrap(),
                force: false,
                timeout_ms: 1000,
            },
        };
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<RouterMsg>(&text).unwrap(), c);
    }

    #[test]
    fn unknown_message_type_is_an_error() {
        let e = serde_json::from_str::<GenieMsg>(r#"{"type":"launch_missiles"}"#).unwrap_err();
        assert!(e.to_string().contains("launch_missiles"), "{e}");
    }
}
