//! The router's configuration file (`router.toml`), loaded once into typed structs.
//!
//! Unknown keys are errors (a typo must not silently fall back to a default), and
//! cross-field rules (unique names and MACs, sane timing) are checked here so the rest
//! of the router can trust the config.

pub mod api;
pub mod energy;
pub mod wake;

pub use wake::WakeVia;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wisp_common::config::{load_toml, ConfigError};
use wisp_common::HostId;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// Where genies connect.
    pub listen: SocketAddr,
    /// TCP HTTP/JSON API (dashboards, remote tools): every request needs a bearer
    /// token (`[[api_token]]`), and TLS (`[api_tls]`) unless it is on loopback.
    #[serde(default = "default_api")]
    pub api: SocketAddr,
    /// The local API the CLI uses: a Unix socket (mode 0660, group `wisp`), no token.
    #[serde(default = "api::default_api_socket")]
    pub api_socket: PathBuf,
    /// Bearer tokens of the TCP API; none configured, the TCP API refuses everything.
    #[serde(default, rename = "api_token")]
    pub api_tokens: Vec<api::ApiTokenConfig>,
    #[serde(default)]
    pub api_tls: Option<api::ApiTlsConfig>,
    pub state_dir: PathBuf,
    /// The event log (`events.jsonl` in `state_dir`) is rotated when it passes this
    /// many MiB; one rotated file is kept, so the log never takes more than twice this.
    #[serde(default = "default_event_log_max_mib")]
    pub event_log_max_mib: u64,
    pub secret_file: PathBuf,
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    #[serde(default = "default_metrics_ms")]
    pub metrics_ms: u64,
    /// No report for this long: the host is suspect.
    #[serde(default = "default_suspect_ms")]
    pub suspect_after_ms: u64,
    /// No report for this long (or the link closed): the host is unreachable.
    #[serde(default = "default_unreachable_ms")]
    pub unreachable_after_ms: u64,
    /// Genie self-fence lease; 0 (the default) disables self-fencing.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// A host whose genie is silent but whose BMC says it is powered on gets this long
    /// for its genie to come back (systemd restarts it in about a second) before it is
    /// fenced: a genie crash is not a host failure.
    #[serde(default = "default_genie_grace_ms")]
    pub genie_grace_ms: u64,
    /// Safety margin added to `lease_ms` before a host whose BMC cannot be reached is
    /// taken as self-fenced (covers the genie's own timer granularity and kill time).
    #[serde(default = "default_lease_margin_ms")]
    pub lease_margin_ms: u64,
    /// Interface magic packets leave from.
    #[serde(default)]
    pub wol_interface: Option<String>,
    /// How long a woken host's genie gets to be heard once its power is on (or when
    /// its power cannot be seen): a full boot. `wake_deadline_ms` is its older name.
    /// Defaults and their basis: `config/wake.rs`.
    #[serde(default = "wake::default_boot_ms", alias = "wake_deadline_ms")]
    pub wake_boot_ms: u64,
    /// A wake moves on to the next method when the BMC still reports power off this
    /// long after an attempt.
    #[serde(default = "wake::default_power_proof_ms")]
    pub wake_power_proof_ms: u64,
    /// The wait for the genie when the BMC read "on" before the attempt (S3 shown as
    /// on): no power proof is possible, and a resume takes seconds.
    #[serde(default = "wake::default_resume_ms")]
    pub wake_resume_ms: u64,
    /// Also ask one up genie (same subnet first) to send the magic packets.
    #[serde(default = "wake::default_true")]
    pub wol_relay: bool,
    /// In energy mode, a host asleep this long gets a wake drill.
    #[serde(default = "wake::default_drill_after_s")]
    pub drill_after_s: u64,
    /// How long a power command waits for the BMC to confirm the new chassis state
    /// (and a suspend for the host to go quiet). ACPI soft-off waits for the OS.
    #[serde(default = "default_power_verify_ms")]
    pub power_verify_ms: u64,
    #[serde(default)]
    pub migration: MigrationConfig,
    /// The CPU model every VM gets (QEMU's `-cpu`), fixed in each VM's spec at
    /// create; a host that cannot give it gets no VMs. See [`DEFAULT_CPU_MODEL`].
    #[serde(default = "default_cpu_model")]
    pub cpu_model: String,
    /// Energy-saving mode (`[energy]`): planner interval, thresholds, power model.
    #[serde(default)]
    pub energy: energy::EnergyConfig,
    /// Router redundancy (`[ha]`, or `[cluster]` as issue 10 spelled it): several
    /// routers share their state in etcd and one of them leads; absent, this router
    /// runs alone on its `state_dir`.
    #[serde(default, alias = "cluster")]
    pub ha: Option<HaConfig>,
    #[serde(default, rename = "host")]
    pub hosts: Vec<HostConfig>,
}

/// Live-migration settings passed to QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationConfig {
    /// Bandwidth cap, MiB/s: high by default because a migration should end fast; set
    /// lower where the network is shared with latency-sensitive traffic.
    #[serde(default = "default_mig_bw")]
    pub max_bandwidth_mib_s: u64,
    /// Longest acceptable pause of the guest at switch-over: the genie asks for less
    /// first and raises it toward this only while a migration does not converge.
    #[serde(default = "default_mig_downtime")]
    pub downtime_limit_ms: u64,
}

impl Default for MigrationConfig {
    fn default() -> Self {
        Self {
            max_bandwidth_mib_s: default_mig_bw(),
            downtime_limit_ms: default_mig_downtime(),
        }
    }
}

fn default_mig_bw() -> u64 {
    1024
}
fn default_mig_downtime() -> u64 {
    300
}

fn default_api() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7101))
}
fn default_heartbeat_ms() -> u64 {
    200
}
fn default_metrics_ms() -> u64 {
    1000
}
fn default_suspect_ms() -> u64 {
    // Two and a half missed heartbeats at the default 5/s: the BMC gets asked early.
    500
}
fn default_unreachable_ms() -> u64 {
    // 3.5 missed heartbeats: with the 100 ms status tick a silent host is declared
    // unreachable within 0.8 s, inside the 1 s detection target.
    700
}
fn default_event_log_max_mib() -> u64 {
    // 16 MiB is some 100,000 events: weeks of a busy cluster, read in well under a second.
    16
}
fn default_lease_ms() -> u64 {
    // Off: the router's absence (a restart during an upgrade, a reboot of its server,
    // a switch hiccup) must never kill a VM. Silent hosts are proven off by their BMC;
    // a host whose BMC cannot be reached is then not failed over (no proof, no
    // restart), unless the operator turns the lease on.
    0
}
/// The default guest CPU: Nehalem is the x86-64-v2 level (SSE4.2, POPCNT, SSSE3),
/// which current distributions need (RHEL 9 requires it) and which every x86 server
/// of the last 15 years (Intel Nehalem, AMD Bulldozer and later) gives under KVM, and
/// QEMU's TCG gives too. One model for all hosts is what lets a VM live-migrate
/// between servers of different generations; `qemu64` would be more conservative
/// still, but lacks what those distributions need. A cluster of newer servers can
/// name a newer model (e.g. `Haswell-noTSX`, `EPYC`).
pub const DEFAULT_CPU_MODEL: &str = "Nehalem";

fn default_cpu_model() -> String {
    DEFAULT_CPU_MODEL.to_owned()
}
fn default_power_verify_ms() -> u64 {
    60_000
}
fn default_genie_grace_ms() -> u64 {
    5000
}
fn default_lease_margin_ms() -> u64 {
    1000
}

/// `[ha]`: the etcd cluster the routers share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaConfig {
    /// etcd client URLs, e.g. `["http://10.0.0.1:2379", ...]`.
    pub etcd: Vec<String>,
    /// The name this cluster's keys live under (`/wisp/<cluster>/...`).
    #[serde(default = "default_ha_cluster")]
    pub cluster: String,
    /// The API address other routers and the CLI are told to use while this router
    /// leads (default: `api`).
    #[serde(default)]
    pub advertise_api: Option<String>,
    /// This router's name, as followers name the leader to genies and `router status`
    /// shows it (default: the host name).
    #[serde(default)]
    pub name: Option<String>,
    /// The genie link address genies are sent to while this router leads (default:
    /// `listen`, which must then not be a wildcard address).
    #[serde(default)]
    pub advertise_link: Option<String>,
    /// The leader lease's TTL: a dead leader is replaced within about this long. etcd
    /// raises it to 1.5 election timeouts (2 s with `--election-timeout 1000`).
    #[serde(default = "default_ha_ttl_ms")]
    pub ttl_ms: u64,
}

fn default_ha_ttl_ms() -> u64 {
    2000
}

fn default_ha_cluster() -> String {
    "wisp".into()
}

/// One server of the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    pub name: HostId,
    pub mac: MacAddr,
    pub address: IpAddr,
    /// BMC address, `ip` or `ip:port` (port 623 when omitted).
    #[serde(default)]
    pub bmc: Option<String>,
    #[serde(default)]
    pub bmc_user: Option<String>,
    #[serde(default)]
    pub bmc_password_file: Option<PathBuf>,
    /// vCPUs the router may place here; default: the host's CPU count × 4.
    #[serde(default)]
    pub vcpus: Option<u32>,
    /// Memory (MiB) the router may give to VMs here; default: the host's total memory
    /// less 512 MiB for the host itself.
    #[serde(default)]
    pub mem_mib: Option<u64>,
    /// Wake methods in the order tried (`["wol", "ipmi"]`); default: WoL when a path
    /// exists, then IPMI when a BMC is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake: Option<Vec<WakeVia>>,
}

impl HostConfig {
    /// The BMC's socket address, port 623 by default.
    pub fn bmc_addr(&self) -> Option<Result<SocketAddr, String>> {
        let raw = self.bmc.as_deref()?;
        Some(
            raw.parse::<SocketAddr>()
                .or_else(|_| raw.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 623)))
                .map_err(|_| format!("bmc {raw:?} is not an address (ip or ip:port)")),
        )
    }
}

pub use wisp_common::MacAddr;

impl RouterConfig {
    /// Loads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let cfg: RouterConfig = load_toml(path)?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Parses and validates text as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let cfg: RouterConfig = wisp_common::config::parse_toml(path, text)?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        };
        if let Some(ha) = &self.ha {
            if ha.etcd.is_empty() {
                return Err(invalid(
                    "ha.etcd".into(),
                    "name at least one etcd client URL (three members tolerate one failure)".into(),
                ));
            }
            if ha.ttl_ms < 1000 {
                return Err(invalid(
                    "ha.ttl_ms".into(),
                    format!(
                        "must be at least 1000 (etcd's shortest lease), not {}",
                        ha.ttl_ms
                    ),
                ));
            }
            if ha.advertise_link.is_none() && self.listen.ip().is_unspecified() {
                return Err(invalid(
                    "ha.advertise_link".into(),
                    format!(
                        "listen is {}: say which address genies are sent to",
                        self.listen
                    ),
                ));
            }
        }
        let cpu_ok = !self.cpu_model.is_empty()
            && self.cpu_model.len() <= 64
            && self
                .cpu_model
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !cpu_ok {
            return Err(invalid(
                "cpu_model".into(),
                format!(
                    "{:?} is not a QEMU CPU model name (letters, digits, -, _, .)",
                    self.cpu_model
                ),
            ));
        }
        if self.heartbeat_ms == 0 || self.metrics_ms == 0 {
            return Err(invalid(
                "heartbeat_ms".into(),
                "heartbeat_ms and metrics_ms must be positive".into(),
            ));
        }
        if self.suspect_after_ms <= self.heartbeat_ms {
            return Err(invalid(
                "suspect_after_ms".into(),
                format!(
                    "must exceed heartbeat_ms ({}), or every host flaps to suspect",
                    self.heartbeat_ms
                ),
            ));
        }
        if self.unreachable_after_ms < self.suspect_after_ms {
            return Err(invalid(
                "unreachable_after_ms".into(),
                "must be at least suspect_after_ms".into(),
            ));
        }
        // Every duration has a ceiling: a value meant as "forever" (or a typo of one)
        // must not overflow the deadline arithmetic or make detection meaningless.
        for (key, v, max) in [
            ("heartbeat_ms", self.heartbeat_ms, 60_000),
            ("metrics_ms", self.metrics_ms, 3_600_000),
            ("suspect_after_ms", self.suspect_after_ms, 3_600_000),
            ("unreachable_after_ms", self.unreachable_after_ms, 3_600_000),
            ("genie_grace_ms", self.genie_grace_ms, 3_600_000),
            ("lease_margin_ms", self.lease_margin_ms, 3_600_000),
            ("wake_boot_ms", self.wake_boot_ms, 3_600_000),
            ("power_verify_ms", self.power_verify_ms, 3_600_000),
            (
                "migration.downtime_limit_ms",
                self.migration.downtime_limit_ms,
                3_600_000,
            ),
        ] {
            if v > max {
                return Err(invalid(
                    key.into(),
                    format!("{v} is above the limit of {max}"),
                ));
            }
        }
        if !(1..=4096).contains(&self.event_log_max_mib) {
            return Err(invalid(
                "event_log_max_mib".into(),
                format!("{} must be between 1 and 4096", self.event_log_max_mib),
            ));
        }
        // A lease at or below the detection time would make healthy genies kill their
        // VMs while the router still counts them as up; 0 turns self-fencing off.
        if self.lease_ms != 0
            && (self.lease_ms <= self.unreachable_after_ms || self.lease_ms > 3_600_000)
        {
            return Err(invalid(
                "lease_ms".into(),
                format!(
                    "{} must be 0 (no self-fencing) or above unreachable_after_ms ({}) and at most 3600000",
                    self.lease_ms, self.unreachable_after_ms
                ),
            ));
        }
        if let Err((key, message)) = api::check_tcp(&self.api, self.api_tls.as_ref())
            .and_then(|()| api::check_socket(&self.api_socket))
        {
            return Err(invalid(key, message));
        }
        if let Err((key, message)) = self.energy.validate() {
            return Err(invalid(key, message));
        }
        if let Err((key, message)) = self.validate_wake() {
            return Err(invalid(key, message));
        }
        let mut names = HashSet::new();
        let mut macs = HashSet::new();
        for (i, h) in self.hosts.iter().enumerate() {
            if !names.insert(h.name.clone()) {
                return Err(invalid(
                    format!("host[{i}].name"),
                    format!("host {} is listed twice", h.name),
                ));
            }
            if !macs.insert(h.mac) {
                return Err(invalid(
                    format!("host[{i}].mac"),
                    format!("MAC {} is used by another host", h.mac),
                ));
            }
            if let Some(Err(e)) = h.bmc_addr() {
                return Err(invalid(format!("host[{i}].bmc"), e));
            }
            if h.bmc.is_some() && h.bmc_password_file.is_none() {
                return Err(invalid(
                    format!("host[{i}].bmc_password_file"),
                    "a host with a bmc needs bmc_password_file".into(),
                ));
            }
        }
        Ok(())
    }

    pub fn host(&self, id: &HostId) -> Option<&HostConfig> {
        self.hosts.iter().find(|h| &h.name == id)
    }
}

/// Why `router check-config` refused a file.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Config(ConfigError),
    #[error("secret_file")]
    Secret(#[source] wisp_common::secret::SecretError),
    #[error(transparent)]
    Token(crate::api::auth::TokenError),
    #[error(transparent)]
    Tls(crate::api::tls::TlsError),
    #[error("host {host}: bmc_password_file")]
    BmcPassword {
        host: HostId,
        #[source]
        source: wisp_common::secret::SecretError,
    },
}

/// Loads and validates `path` the way the daemon would at start, and reads the secret
/// and BMC password files it names (never printing them). Returns a one-line summary.
pub fn check(path: &Path) -> Result<String, CheckError> {
    let cfg = RouterConfig::load(path).map_err(CheckError::Config)?;
    wisp_common::secret::Secret::cluster_from_file(&cfg.secret_file).map_err(CheckError::Secret)?;
    crate::api::auth::Guard::from_config(&cfg.api_tokens).map_err(CheckError::Token)?;
    if let Some(t) = &cfg.api_tls {
        crate::api::tls::acceptor(t).map_err(CheckError::Tls)?;
    }
    for h in &cfg.hosts {
        if let Some(p) = &h.bmc_password_file {
            wisp_common::secret::Secret::from_file(p).map_err(|source| {
                CheckError::BmcPassword {
                    host: h.name.clone(),
                    source,
                }
            })?;
        }
    }
    Ok(format!(
        "{}: ok ({} hosts, {} with a BMC; cluster secret readable)",
        path.display(),
        cfg.hosts.len(),
        cfg.hosts.iter().filter(|h| h.bmc.is_some()).count()
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const OK: &str = r#"
listen = "10.0.0.1:7100"
state_dir = "/tmp/x"
secret_file = "/tmp/s"
[[host]]
name = "h1"
mac = "02:77:00:00:00:01"
address = "10.0.0.11"
bmc = "10.0.1.11"
bmc_user = "admin"
bmc_password_file = "/tmp/p"
"#;

    #[test]
    fn parses_with_defaults() {
        let c = RouterConfig::parse(Path::new("r.toml"), OK).unwrap();
        assert_eq!(c.heartbeat_ms, 200);
        assert_eq!(c.api, default_api());
        assert_eq!(c.hosts[0].mac.to_string(), "02:77:00:00:00:01");
        assert_eq!(
            c.hosts[0].bmc_addr().unwrap().unwrap(),
            "10.0.1.11:623".parse().unwrap()
        );
    }

    #[test]
    fn cpu_model_defaults_to_the_baseline_and_cannot_carry_options() {
        let c = RouterConfig::parse(Path::new("r.toml"), OK).unwrap();
        assert_eq!(c.cpu_model, DEFAULT_CPU_MODEL);
        let text = format!("cpu_model = \"EPYC\"\n{OK}");
        let c = RouterConfig::parse(Path::new("r.toml"), &text).unwrap();
        assert_eq!(c.cpu_model, "EPYC");
        let text = format!("cpu_model = \"host,+vmx\"\n{OK}");
        let e = RouterConfig::parse(Path::new("r.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cpu_model") && e.contains("host,+vmx"), "{e}");
    }

    #[test]
    fn errors_name_file_and_key() {
        let bad = OK.replace("02:77:00:00:00:01", "02:77:zz:00:00:01");
        let e = RouterConfig::parse(Path::new("r.toml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("r.toml") && e.contains("host[0].mac") && e.contains("zz"),
            "{e}"
        );

        let dup = format!("{OK}{}", &OK[OK.find("[[host]]").unwrap()..]);
        let e = RouterConfig::parse(Path::new("r.toml"), &dup)
            .unwrap_err()
            .to_string();
        assert!(e.contains("host[1].name") && e.contains("twice"), "{e}");

        let typo = OK.replace("state_dir", "statedir");
        let e = RouterConfig::parse(Path::new("r.toml"), &typo)
            .unwrap_err()
            .to_string();
        assert!(e.contains("statedir"), "{e}");

        let open = format!("api = \"0.0.0.0:7101\"\n{OK}");
        let e = RouterConfig::parse(Path::new("r.toml"), &open)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("key api:") || e.contains("api") && e.contains("api_tls"),
            "{e}"
        );
        let tls = format!(
            "api = \"0.0.0.0:7101\"\n{}\n[api_tls]\ncert_file = \"/c\"\nkey_file = \"/k\"\n{}",
            &OK[..OK.find("[[host]]").unwrap()],
            &OK[OK.find("[[host]]").unwrap()..]
        );
        RouterConfig::parse(Path::new("r.toml"), &tls).unwrap();
        let rel = format!("api_socket = \"router.sock\"\n{OK}");
        let e = RouterConfig::parse(Path::new("r.toml"), &rel)
            .unwrap_err()
            .to_string();
        assert!(e.contains("api_socket") && e.contains("absolute"), "{e}");
        let role = format!(
            "{}[[api_token]]\nrole = \"root\"\nfile = \"/t\"\n{}",
            &OK[..OK.find("[[host]]").unwrap()],
            &OK[OK.find("[[host]]").unwrap()..]
        );
        let e = RouterConfig::parse(Path::new("r.toml"), &role)
            .unwrap_err()
            .to_string();
        assert!(e.contains("root"), "{e}");

        let slow = format!("suspect_after_ms = 100\n{OK}");
        let e = RouterConfig::parse(Path::new("r.toml"), &slow)
            .unwrap_err()
            .to_string();
        assert!(e.contains("suspect_after_ms"), "{e}");
    }
}
