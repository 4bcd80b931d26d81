//! genie.toml and router.toml for a lab, in the shapes of docs/CONTRACTS.md.

use std::fmt::Write as _;
use std::path::Path;

use super::names::{mac_string, Names};

/// Router link port and TCP API address inside the core namespace. The CLI uses the
/// API socket in the lab's dir; the TCP API wants a token (the lab's admin and read
/// token files).
pub const ROUTER_PORT: u16 = 7100;
pub const API_ADDR: &str = "127.0.0.1:7101";

/// The files the router's API needs: its socket and its two token files.
#[derive(Debug, Clone, Copy)]
pub struct ApiFiles<'a> {
    pub socket: &'a Path,
    pub admin_token: &'a Path,
    pub read_token: &'a Path,
}

/// TOML string literal (paths with quotes or backslashes stay valid).
pub fn q(s: impl AsRef<str>) -> String {
    toml_basic_string(s.as_ref())
}

fn toml_basic_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The network lab guests join: the bridge every lab host has (net.rs).
pub const LAB_NETWORK: &str = "lan";

/// The `migration_ports` of every lab genie: not the default, so a migration that
/// lands in it shows the configured range is used (each host has its own namespace,
/// so every host may use the same range); 16 ports, more than the lab ever migrates
/// to one host at once.
pub const LAB_MIGRATION_PORTS: (u16, u16) = (50100, 50115);

/// genie.toml for host `i` (its `[networks]` table comes last: see [`networks_table`]).
/// The lab says `accel = "tcg"`: the KVM of the machines it runs on is a software one,
/// much slower than TCG (ARCHITECTURE.md, QEMU).
pub fn genie_toml(
    i: usize,
    secret_file: &Path,
    vm_dir: &Path,
    images: &Path,
    suspend: &[String],
) -> String {
    let suspend: Vec<String> = suspend.iter().map(q).collect();
    format!(
        "host = {host}\n\
         router = {router}\n\
         secret_file = {secret}\n\
         vm_dir = {vm_dir}\n\
         address = {addr}\n\
         migration_ports = \"{ports_from}-{ports_to}\"\n\
         suspend_command = [{suspend}]\n\
         wol_interface = \"eth0\"\n\
         accel = \"tcg\"\n\
         image_dirs = [{images}]\n",
        host = q(Names::host_name(i)),
        router = q(format!("{}:{ROUTER_PORT}", Names::router_ip())),
        secret = q(secret_file.to_string_lossy()),
        vm_dir = q(vm_dir.to_string_lossy()),
        addr = q(Names::host_ip(i).to_string()),
        ports_from = LAB_MIGRATION_PORTS.0,
        ports_to = LAB_MIGRATION_PORTS.1,
        suspend = suspend.join(", "),
        images = q(images.to_string_lossy()),
    )
}

/// The `[networks]` table of a lab genie.toml: appended last, since every key after a
/// table header belongs to that table.
pub fn networks_table() -> String {
    format!("[networks]\n{LAB_NETWORK} = \"br0\"\n")
}

/// One `[[host]]` of router.toml.
#[derive(Debug, Clone)]
pub struct RouterHost<'a> {
    pub index: usize,
    pub mac: [u8; 6],
    pub bmc_password_file: &'a Path,
}

/// Top-level keys the lab sets unless `extra` sets them itself (a TOML key may not
/// appear twice).
const DEFAULTS: &[(&str, &str)] = &[
    ("heartbeat_ms", "200"),
    ("metrics_ms", "1000"),
    ("suspect_after_ms", "600"),
    ("lease_ms", "3000"),
];

/// router.toml: the lab's fixed keys, the defaults `extra` does not override, `extra`
/// (top-level keys only, or tables placed after), then one `[[host]]` per host.
pub fn router_toml(
    state_dir: &Path,
    secret_file: &Path,
    api: ApiFiles<'_>,
    extra: &str,
    hosts: &[RouterHost<'_>],
) -> String {
    let mut s = format!(
        "listen = {listen}\napi = {api}\napi_socket = {socket}\nstate_dir = {state}\nsecret_file = {secret}\nwol_interface = \"br0\"\n",
        listen = q(format!("{}:{ROUTER_PORT}", Names::router_ip())),
        api = q(API_ADDR),
        socket = q(api.socket.to_string_lossy()),
        state = q(state_dir.to_string_lossy()),
        secret = q(secret_file.to_string_lossy()),
    );
    for (k, v) in DEFAULTS {
        let overridden = extra
            .lines()
            .any(|l| l.trim_start().split(['=', ' ']).next() == Some(*k));
        if !overridden {
            let _ = writeln!(s, "{k} = {v}");
        }
    }
    if !extra.trim().is_empty() {
        s.push_str(extra.trim_end());
        s.push('\n');
    }
    for (role, file) in [("admin", api.admin_token), ("read", api.read_token)] {
        let _ = write!(
            s,
            "\n[[api_token]]\nrole = \"{role}\"\nfile = {}\n",
            q(file.to_string_lossy())
        );
    }
    for h in hosts {
        let _ = write!(
            s,
            "\n[[host]]\nname = {name}\nmac = {mac}\naddress = {addr}\nbmc = {bmc}\nbmc_user = \"admin\"\nbmc_password_file = {pw}\n",
            name = q(Names::host_name(h.index)),
            mac = q(mac_string(&h.mac)),
            addr = q(Names::host_ip(h.index).to_string()),
            bmc = q(format!("{}:623", Names::bmc_ip(h.index))),
            pw = q(h.bmc_password_file.to_string_lossy()),
        );
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn extra_overrides_defaults_without_duplicates() {
        let pw = Path::new("/x/pw");
        let t = router_toml(
            Path::new("/s"),
            Path::new("/sec"),
            ApiFiles {
                socket: Path::new("/l/router.sock"),
                admin_token: Path::new("/l/admin"),
                read_token: Path::new("/l/read"),
            },
            "lease_ms = 0",
            &[RouterHost {
                index: 1,
                mac: [2, 0x77, 0, 0, 0, 1],
                bmc_password_file: pw,
            }],
        );
        assert_eq!(t.matches("lease_ms").count(), 1, "{t}");
        assert!(t.contains("heartbeat_ms = 200"));
        let v: toml::Value = toml::from_str(&t).unwrap();
        assert_eq!(v["host"][0]["bmc"].as_str(), Some("10.77.0.101:623"));
        assert_eq!(v["api_token"][1]["role"].as_str(), Some("read"));
        assert_eq!(v["api_socket"].as_str(), Some("/l/router.sock"));
        let g = genie_toml(
            2,
            Path::new("/sec"),
            Path::new("/vms"),
            Path::new("/img"),
            &["a b".into(), "c".into()],
        );
        let g = format!("{g}{}", networks_table());
        let v: toml::Value = toml::from_str(&g).unwrap();
        assert_eq!(v["suspend_command"][0].as_str(), Some("a b"));
        assert_eq!(v["address"].as_str(), Some("10.77.0.12"));
        assert_eq!(v["accel"].as_str(), Some("tcg"));
        assert_eq!(v["migration_ports"].as_str(), Some("50100-50115"));
        assert_eq!(v["image_dirs"][0].as_str(), Some("/img"));
        assert_eq!(v["networks"]["lan"].as_str(), Some("br0"));
    }
}
