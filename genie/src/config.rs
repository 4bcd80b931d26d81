//! genie.toml: the typed configuration of one genie (keys as in docs/CONTRACTS.md).
//!
//! Loaded once with `wisp_common::config::load_toml`, so an unknown key or a value of
//! the wrong type is an error naming the file and the key.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use wisp_common::{config::ConfigError, HostId};

use crate::ports::PortRange;

/// Heartbeat period used until the router's Welcome says otherwise (5/s).
pub const DEFAULT_HEARTBEAT_MS: u64 = 200;
/// Full-report period used until the router's Welcome says otherwise.
pub const DEFAULT_METRICS_MS: u64 = 1000;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenieConfig {
    pub host: HostId,
    /// `ip:port` or `name:port` of the router's genie link; with replicated routers,
    /// every router's (`router = ["a:7100", "b:7100"]`), and the genie follows the
    /// leader among them. A single string stays valid.
    #[serde(deserialize_with = "one_or_many")]
    pub router: Vec<String>,
    /// etcd client URLs of replicated routers: the genie keeps a liveness lease there
    /// and self-fences only when it cannot renew it. Empty: no etcd lease.
    #[serde(default)]
    pub etcd: Vec<String>,
    /// The routers' cluster name (`[ha] cluster` in router.toml): where in etcd.
    #[serde(default = "default_cluster")]
    pub cluster: String,
    /// The liveness lease's TTL in etcd; the genie self-fences 1 s earlier when it
    /// cannot renew.
    #[serde(default = "default_etcd_ttl_ms")]
    pub etcd_ttl_ms: u64,
    pub secret_file: PathBuf,
    pub vm_dir: PathBuf,
    /// Address incoming migrations listen on; default: the local address of the link.
    #[serde(default)]
    pub address: Option<IpAddr>,
    /// The TCP ports incoming migrations listen on (`"49152-49215"`, inclusive, or
    /// one port), so a firewall can be opened for them; checked as it is parsed.
    #[serde(default)]
    pub migration_ports: PortRange,
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    #[serde(default = "default_metrics_ms")]
    pub metrics_ms: u64,
    #[serde(default = "default_qemu")]
    pub qemu: PathBuf,
    #[serde(default = "default_suspend")]
    pub suspend_command: Vec<String>,
    #[serde(default)]
    pub wol_interface: Option<String>,
    /// Where the kernel lists its sleep states (`state`, `mem_sleep`); default
    /// [`DEFAULT_SYS_POWER_DIR`]. Set, it must be a directory (the lab points it at a
    /// fake one); left out, a missing `/sys/power` only shows as a note in the report.
    #[serde(default)]
    pub sys_power_dir: Option<PathBuf>,
    /// What VMs run on: `auto` (KVM when /dev/kvm works, else TCG with a warning),
    /// `kvm` or `tcg`.
    #[serde(default)]
    pub accel: AccelChoice,
    /// Named networks VMs may join: name → host bridge (`lan = "br0"`).
    #[serde(default)]
    pub networks: BTreeMap<String, String>,
    /// The only directories disks, kernels and initrds may come from (after symlinks
    /// and `..` are resolved).
    #[serde(default = "default_image_dirs")]
    pub image_dirs: Vec<PathBuf>,
}

/// genie.toml's `accel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

/// Where images live unless genie.toml says otherwise.
pub const DEFAULT_IMAGE_DIR: &str = "/var/lib/wisp/images";

fn default_image_dirs() -> Vec<PathBuf> {
    vec![PathBuf::from(DEFAULT_IMAGE_DIR)]
}

/// `"a:1"` or `["a:1", "b:1"]`, as a list.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    match OneOrMany::deserialize(d) {
        Ok(OneOrMany::One(s)) => Ok(vec![s]),
        Ok(OneOrMany::Many(v)) => Ok(v),
        Err(_) => Err(serde::de::Error::custom(
            "expected \"host:port\" or a list of them",
        )),
    }
}

/// The kernel's power directory.
pub const DEFAULT_SYS_POWER_DIR: &str = "/sys/power";

fn default_cluster() -> String {
    "wisp".into()
}
fn default_etcd_ttl_ms() -> u64 {
    crate::liveness::DEFAULT_TTL_MS
}
fn default_heartbeat_ms() -> u64 {
    DEFAULT_HEARTBEAT_MS
}
fn default_metrics_ms() -> u64 {
    DEFAULT_METRICS_MS
}
fn default_qemu() -> PathBuf {
    PathBuf::from("qemu-system-x86_64")
}
fn default_suspend() -> Vec<String> {
    vec!["systemctl".into(), "suspend".into()]
}

impl GenieConfig {
    /// `sys_power_dir`, or the kernel's own.
    pub fn sys_power_dir(&self) -> PathBuf {
        self.sys_power_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SYS_POWER_DIR))
    }

    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let cfg: Self = wisp_common::config::load_toml(path)?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Parses `text` as if read from `path` (tests, examples).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let cfg: Self = wisp_common::config::parse_toml(path, text)?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    // Zero periods would make the link loop spin; an empty suspend command cannot run.
    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key: &str, message: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message: message.to_owned(),
        };
        if self.heartbeat_ms == 0 {
            return Err(bad("heartbeat_ms", "must be at least 1"));
        }
        if self.metrics_ms == 0 {
            return Err(bad("metrics_ms", "must be at least 1"));
        }
        if self.suspend_command.is_empty() {
            return Err(bad("suspend_command", "must name a program"));
        }
        if self.router.is_empty() {
            return Err(bad("router", "name at least one router (host:port)"));
        }
        if let Some(r) = self.router.iter().find(|r| !r.contains(':')) {
            return Err(bad("router", &format!("expected host:port, not {r:?}")));
        }
        let cluster_ok = !self.cluster.is_empty()
            && self.cluster.len() <= 64
            && self
                .cluster
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !cluster_ok {
            return Err(bad("cluster", "use 1 to 64 of a-z, 0-9, '-' and '_'"));
        }
        if self.etcd_ttl_ms < 2000 {
            return Err(bad(
                "etcd_ttl_ms",
                &format!(
                    "must be at least 2000 (the genie self-fences 1 s before it), not {}",
                    self.etcd_ttl_ms
                ),
            ));
        }
        for d in &self.image_dirs {
            if !d.is_absolute() {
                return Err(bad(
                    "image_dirs",
                    &format!("{} is not an absolute path", d.display()),
                ));
            }
        }
        for (name, bridge) in &self.networks {
            // A Linux interface name: 1–15 bytes, no '/', no white space.
            let ok_name = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok_name {
                return Err(bad(
                    "networks",
                    &format!("network name {name:?}: use letters, digits, - and _"),
                ));
            }
            let ok_bridge = !bridge.is_empty()
                && bridge.len() <= 15
                && !bridge.contains(['/', ' ', '\t', '\n', ':']);
            if !ok_bridge {
                return Err(bad(
                    &format!("networks.{name}"),
                    &format!("{bridge:?} is not an interface name (1 to 15 characters)"),
                ));
            }
        }
        if let Some(d) = &self.sys_power_dir {
            if !d.is_dir() {
                return Err(bad(
                    "sys_power_dir",
                    &format!("{} is not a directory", d.display()),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MIN: &str =
        "host = \"h1\"\nrouter = \"127.0.0.1:7100\"\nsecret_file = \"/s\"\nvm_dir = \"/v\"\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = GenieConfig::parse(Path::new("/g.toml"), MIN).unwrap();
        assert_eq!(c.host.as_str(), "h1");
        assert_eq!(c.heartbeat_ms, 200);
        assert_eq!(c.metrics_ms, 1000);
        assert_eq!(c.qemu, PathBuf::from("qemu-system-x86_64"));
        assert_eq!(c.suspend_command, vec!["systemctl", "suspend"]);
        assert_eq!(c.address, None);
        assert_eq!(c.sys_power_dir(), PathBuf::from("/sys/power"));
        assert_eq!(c.migration_ports.to_string(), "49152-49215");
    }

    #[test]
    fn migration_ports_is_a_range_or_one_port_and_a_bad_one_is_named() {
        for (text, want) in [
            ("\"50000-50009\"", "50000-50009"),
            ("\"50000\"", "50000"),
            ("50000", "50000"),
        ] {
            let c = GenieConfig::parse(
                Path::new("/g.toml"),
                &format!("{MIN}migration_ports = {text}\n"),
            )
            .unwrap();
            assert_eq!(c.migration_ports.to_string(), want);
        }
        for (bad, says) in [
            ("\"5000..5010\"", "not a port"),
            ("\"5010-5000\"", "after its end"),
            ("\"0\"", "port 0"),
            ("0", "port 0"),
            ("\"22-30\"", "well-known"),
            ("\"1024-65535\"", "at most 1024"),
            ("[1, 2]", "port range"),
        ] {
            let e = GenieConfig::parse(
                Path::new("/g.toml"),
                &format!("{MIN}migration_ports = {bad}\n"),
            )
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("/g.toml") && e.contains("`migration_ports`") && e.contains(says),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn router_is_one_address_or_a_list_and_a_bad_one_is_named() {
        let c = GenieConfig::parse(Path::new("/g.toml"), MIN).unwrap();
        assert_eq!(c.router, vec!["127.0.0.1:7100"]);
        let many = MIN.replace(
            "router = \"127.0.0.1:7100\"",
            "router = [\"10.0.0.1:7100\", \"10.0.0.2:7100\"]",
        );
        let c = GenieConfig::parse(Path::new("/g.toml"), &many).unwrap();
        assert_eq!(c.router, vec!["10.0.0.1:7100", "10.0.0.2:7100"]);
        for (bad, says) in [
            ("router = []", "at least one"),
            ("router = [\"10.0.0.1:7100\", \"nope\"]", "\"nope\""),
            ("router = 7", "host:port"),
        ] {
            let text = MIN.replace("router = \"127.0.0.1:7100\"", bad);
            let e = GenieConfig::parse(Path::new("/g.toml"), &text)
                .unwrap_err()
                .to_string();
            assert!(e.contains("router") && e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn etcd_is_optional_and_its_settings_are_checked() {
        let c = GenieConfig::parse(Path::new("/g.toml"), MIN).unwrap();
        assert!(c.etcd.is_empty());
        assert_eq!((c.cluster.as_str(), c.etcd_ttl_ms), ("wisp", 4000));
        let c = GenieConfig::parse(
            Path::new("/g.toml"),
            &format!("{MIN}etcd = [\"http://10.0.0.1:2379\"]\ncluster = \"c1\"\n"),
        )
        .unwrap();
        assert_eq!(c.etcd, vec!["http://10.0.0.1:2379"]);
        for (bad, key) in [
            ("cluster = \"A/B\"", "cluster"),
            ("etcd_ttl_ms = 1000", "etcd_ttl_ms"),
        ] {
            let e = GenieConfig::parse(Path::new("/g.toml"), &format!("{MIN}{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn sys_power_dir_must_exist_when_set() {
        let dir = std::env::temp_dir();
        let c = GenieConfig::parse(
            Path::new("/g.toml"),
            &format!("{MIN}sys_power_dir = \"{}\"\n", dir.display()),
        )
        .unwrap();
        assert_eq!(c.sys_power_dir(), dir);
        let e = GenieConfig::parse(
            Path::new("/g.toml"),
            &format!("{MIN}sys_power_dir = \"/wisp/no/such/dir\"\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("sys_power_dir") && e.contains("/wisp/no/such/dir"),
            "{e}"
        );
    }

    #[test]
    fn full_contract_example_parses() {
        let text = r#"
host = "h1"
router = "10.77.0.1:7100"
secret_file = "/etc/wisp/cluster.secret"
vm_dir = "/var/lib/wisp/vms"
address = "10.77.0.11"
heartbeat_ms = 200
metrics_ms = 1000
qemu = "qemu-system-x86_64"
suspend_command = ["systemctl", "suspend"]
wol_interface = "eth0"
"#;
        let c = GenieConfig::parse(Path::new("/g.toml"), text).unwrap();
        assert_eq!(c.address, Some("10.77.0.11".parse().unwrap()));
        assert_eq!(c.wol_interface.as_deref(), Some("eth0"));
    }

    #[test]
    fn the_packaged_example_parses() {
        let text = include_str!("../../systemd/genie.toml");
        let c = GenieConfig::parse(Path::new("systemd/genie.toml"), text).unwrap();
        assert_eq!(c.migration_ports, crate::ports::DEFAULT_MIGRATION_PORTS);
    }

    #[test]
    fn vm_keys_parse_and_bad_ones_are_named() {
        let c = GenieConfig::parse(Path::new("/g.toml"), MIN).unwrap();
        assert_eq!(c.accel, AccelChoice::Auto);
        assert!(c.networks.is_empty());
        assert_eq!(c.image_dirs, vec![PathBuf::from(DEFAULT_IMAGE_DIR)]);
        let c = GenieConfig::parse(
            Path::new("/g.toml"),
            &format!(
                "{MIN}accel = \"tcg\"\nimage_dirs = [\"/srv/img\"]\n[networks]\nlan = \"br0\"\n"
            ),
        )
        .unwrap();
        assert_eq!(c.accel, AccelChoice::Tcg);
        assert_eq!(c.networks["lan"], "br0");
        assert_eq!(c.image_dirs, vec![PathBuf::from("/srv/img")]);
        for (extra, key) in [
            ("accel = \"xen\"\n", "accel"),
            ("image_dirs = [\"img\"]\n", "image_dirs"),
            ("[networks]\nlan = \"a/b\"\n", "networks.lan"),
            (
                "[networks]\nlan = \"averyveryverylongbridge\"\n",
                "networks.lan",
            ),
        ] {
            let e = GenieConfig::parse(Path::new("/g.toml"), &format!("{MIN}{extra}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{extra}: {e}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let e = GenieConfig::parse(Path::new("/etc/g.toml"), &format!("{MIN}hearbeat_ms = 5\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/etc/g.toml") && e.contains("hearbeat_ms"),
            "{e}"
        );
    }

    #[test]
    fn wrong_type_is_named() {
        let e = GenieConfig::parse(
            Path::new("/g.toml"),
            &format!("{MIN}metrics_ms = \"fast\"\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("metrics_ms"), "{e}");
        let e = GenieConfig::parse(Path::new("/g.toml"), &format!("{MIN}address = \"nope\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("address"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = GenieConfig::parse(Path::new("/g.toml"), &format!("{MIN}heartbeat_ms = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("heartbeat_ms"), "{e}");
        let e = GenieConfig::parse(
            Path::new("/g.toml"),
            "host = \"bad host\"\nrouter = \"r:1\"\nsecret_file = \"/s\"\nvm_dir = \"/v\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("host"), "{e}");
    }
}
