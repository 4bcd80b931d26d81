//! What the high-availability tests and the failover bench need from the lab beyond
//! its foundation: an independent QMP witness for VMs the *genie* starts, a census of
//! every qemu on every host, the router's events and SLA, router-created VMs, and a
//! partition of the router from the hosts.
//!
//! The witness: a genie holds its VM's contract QMP socket for good and QMP serves one
//! client at a time, so tests cannot ask QEMU directly about a VM the router created.
//! `Lab::start_ha` therefore points every genie's `qemu` (genie.toml) at a tiny wrapper
//! that execs the real qemu with one more `-qmp` socket in `<host dir>/witness/`, the
//! same place `Lab::witness_qmp` gives for VMs the lab starts itself. Nothing in the
//! genie or the router knows about it, so neither can hide its own bug from the tests.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use super::cmd;
use super::{configs, io_err, Lab, LabError, LabSpec, Names, Qmp};

/// One event of `router events --json`.
#[derive(Debug, Clone, Deserialize)]
pub struct EventRow {
    pub at_ms: u64,
    pub kind: String,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub vm: Option<String>,
    pub message: String,
}

/// One qemu process found in a host's namespace, with what its witness socket says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenVm {
    pub host: String,
    pub vm: String,
    pub pid: i32,
    /// QMP `query-status` over the witness socket (`running`, `paused`,
    /// `postmigrate`, `inmigrate`...), or `unknown: <why>` if it did not answer.
    pub status: String,
}

/// Every qemu on every host of the lab at one moment.
#[derive(Debug, Clone, Default)]
pub struct Census {
    pub seen: Vec<SeenVm>,
}

impl Census {
    /// Hosts on which `vm` runs (QMP status `running`).
    pub fn running_on(&self, vm: &str) -> Vec<String> {
        self.seen
            .iter()
            .filter(|s| s.vm == vm && s.status == "running")
            .map(|s| s.host.clone())
            .collect()
    }

    /// VMs that run (QMP `running`) on more than one host: must always be empty.
    pub fn twice(&self) -> BTreeMap<String, Vec<String>> {
        let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in self.seen.iter().filter(|s| s.status == "running") {
            by.entry(s.vm.clone()).or_default().push(s.host.clone());
        }
        by.retain(|_, hosts| hosts.len() > 1);
        by
    }

    /// qemu processes of host `host` (any status).
    pub fn on_host(&self, host: &str) -> Vec<&SeenVm> {
        self.seen.iter().filter(|s| s.host == host).collect()
    }

    /// True if each of `vms` runs on exactly one host and nothing runs twice.
    pub fn each_once(&self, vms: &[&str]) -> bool {
        self.twice().is_empty() && vms.iter().all(|v| self.running_on(v).len() == 1)
    }
}

/// The `-name` of a qemu command line (`vm1`, `vm1,debug-threads=on`, `guest=vm1,...`).
fn qemu_name(cmdline: &[u8]) -> Option<String> {
    let mut args = cmdline.split(|b| *b == 0);
    if !args
        .next()
        .is_some_and(|a0| String::from_utf8_lossy(a0).contains("qemu-system"))
    {
        return None;
    }
    while let Some(a) = args.next() {
        if a == b"-name" {
            let v = String::from_utf8_lossy(args.next()?).into_owned();
            let first = v.split(',').next().unwrap_or_default();
            return Some(first.strip_prefix("guest=").unwrap_or(first).to_owned());
        }
    }
    None
}

/// The session id of `pid` (field 6 of /proc/<pid>/stat, after the `(comm)`).
fn sid(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(3)?.parse().ok()
}

/// True unless `pid` is the first process of a `qemu -daemonize` still waiting for its
/// daemon: that one has the same command line for a moment but is not a second VM.
/// `-daemonize` forks, calls setsid and forks again, so the daemon lives in a session
/// led by a qemu (or by nobody once that middle process exits), while the waiting
/// process is still in its starter's session (the genie's, or the test's).
fn daemonized(pid: i32) -> bool {
    let Some(sid) = sid(pid) else {
        return false;
    };
    if sid == pid || !super::procs::is_alive(sid) {
        return true;
    }
    fs::read(format!("/proc/{sid}/cmdline"))
        .ok()
        .and_then(|c| qemu_name(&c))
        .is_some()
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The wrapper script: real qemu plus a witness QMP socket named after `-name`.
fn wrapper_script(qemu: &Path, witness_dir: &Path) -> String {
    format!(
        "#!/bin/sh\n\
         # wisp lab: run qemu with one more QMP socket, for tests only (ha_ext.rs).\n\
         name=\"\"\nprev=\"\"\n\
         for a in \"$@\"; do\n  if [ \"$prev\" = \"-name\" ]; then name=\"$a\"; fi\n  prev=\"$a\"\ndone\n\
         name=\"${{name%%,*}}\"\nname=\"${{name#guest=}}\"\n\
         exec {qemu} \"$@\" -qmp \"unix:{dir}/$name.qmp,server=on,wait=off\"\n",
        qemu = sh_quote(&qemu.to_string_lossy()),
        dir = witness_dir.display(),
    )
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Lab {
    /// Starts a lab whose genies run qemu through the witness wrapper (see the module
    /// doc). Hosts are powered on after the wrapper is in place if `spec.hosts_on`.
    pub fn start_ha(spec: LabSpec) -> Result<Lab, LabError> {
        let on = spec.hosts_on;
        let lab = Lab::start(LabSpec {
            hosts_on: false,
            ..spec
        })?;
        let qemu = find_on_path("qemu-system-x86_64").ok_or(LabError::MissingTool {
            program: "qemu-system-x86_64",
            package: "qemu-system-x86",
        })?;
        for h in &lab.hosts {
            let witness = h.dir.join("witness");
            fs::create_dir_all(&witness).map_err(io_err(&witness))?;
            let script = h.dir.join("qemu-witness.sh");
            fs::write(&script, wrapper_script(&qemu, &witness)).map_err(io_err(&script))?;
            fs::set_permissions(&script, fs::Permissions::from_mode(0o755))
                .map_err(io_err(&script))?;
            let mut toml = fs::read_to_string(&h.genie_toml).map_err(io_err(&h.genie_toml))?;
            toml.push_str(&format!(
                "qemu = {}\n",
                configs::q(script.to_string_lossy())
            ));
            fs::write(&h.genie_toml, toml).map_err(io_err(&h.genie_toml))?;
        }
        if on {
            for i in 1..=lab.hosts.len() {
                lab.power_on(i)?;
            }
        }
        Ok(lab)
    }

    /// Every qemu process of every host, each asked for its status over its witness
    /// socket. Independent of the router and the genies.
    pub fn census(&self) -> Result<Census, LabError> {
        let mut seen = Vec::new();
        for h in &self.hosts {
            for pid in super::procs::ns_pids(&h.ns)? {
                let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
                    continue;
                };
                let Some(vm) = qemu_name(&cmdline) else {
                    continue;
                };
                if !daemonized(pid) {
                    continue;
                }
                let socket = h.dir.join("witness").join(format!("{vm}.qmp"));
                let status = match Qmp::connect(&socket).and_then(|mut q| q.status()) {
                    Ok(s) => s,
                    Err(e) => format!("unknown: {e}"),
                };
                // The process may have died while we asked: then it is not there.
                if !super::procs::is_alive(pid) {
                    continue;
                }
                seen.push(SeenVm {
                    host: h.name.clone(),
                    vm,
                    pid,
                    status,
                });
            }
        }
        Ok(Census { seen })
    }

    /// `router events --json` (newest `limit` events), oldest first.
    pub fn events_json(&self, limit: usize) -> Result<Vec<EventRow>, LabError> {
        let limit = limit.to_string();
        let mut evs: Vec<EventRow> = self.cli_json(&["events", "--json", "--limit", &limit])?;
        evs.sort_by_key(|e| e.at_ms);
        Ok(evs)
    }

    /// `router sla --json`, untyped (tests read a few fields).
    pub fn sla_json(&self) -> Result<serde_json::Value, LabError> {
        self.cli_json(&["sla", "--json"])
    }

    /// `router vm create NAME --mem MEM --kernel <guest> [--host hN] [--priority P]`.
    pub fn create_ha_vm(
        &self,
        name: &str,
        mem_mib: u32,
        host: Option<usize>,
        priority: u8,
    ) -> Result<(), LabError> {
        let mem = mem_mib.to_string();
        let prio = priority.to_string();
        let kernel = self.guest.to_string_lossy().into_owned();
        let hn = host.map(Names::host_name);
        let mut args = vec![
            "vm",
            "create",
            name,
            "--mem",
            &mem,
            "--kernel",
            &kernel,
            "--priority",
            &prio,
        ];
        if let Some(h) = &hn {
            args.extend(["--host", h.as_str()]);
        }
        self.cli_ok(&args)
    }

    /// Runs a router CLI command and fails with its stderr if it fails.
    pub fn cli_ok(&self, args: &[&str]) -> Result<(), LabError> {
        let out = self.router_cli(args)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(LabError::Cli {
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }

    /// Partitions the router from every host: blackhole routes to the hosts' addresses
    /// in the core namespace. Hosts still reach each other over the bridge, and the
    /// router still reaches the BMCs (so without self-suspicion it *could* fence).
    pub fn cut_router_from_hosts(&self) -> Result<(), LabError> {
        self.router_routes("add")
    }

    /// Undoes [`Lab::cut_router_from_hosts`].
    pub fn restore_router_to_hosts(&self) -> Result<(), LabError> {
        self.router_routes("del")
    }

    fn router_routes(&self, op: &str) -> Result<(), LabError> {
        let core = self.names.core_ns();
        for h in &self.hosts {
            let ip = format!("{}/32", h.ip);
            cmd::run(Command::new("ip").args(["-n", &core, "route", op, "blackhole", &ip]))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_names_from_command_lines() {
        let c = b"/usr/bin/qemu-system-x86_64\0-name\0vm7,debug-threads=on\0-m\x00064\0";
        assert_eq!(qemu_name(c).as_deref(), Some("vm7"));
        let c = b"qemu-system-x86_64\0-name\0guest=web\0";
        assert_eq!(qemu_name(c).as_deref(), Some("web"));
        assert_eq!(qemu_name(b"/bin/sh\0-name\0x\0"), None);
        assert_eq!(qemu_name(b"qemu-system-x86_64\0-m\x0064\0"), None);
    }

    #[test]
    fn census_finds_twins_and_losses() {
        let s = |host: &str, vm: &str, status: &str| SeenVm {
            host: host.into(),
            vm: vm.into(),
            pid: 1,
            status: status.into(),
        };
        let c = Census {
            seen: vec![
                s("h1", "a", "running"),
                s("h2", "a", "postmigrate"),
                s("h2", "b", "running"),
            ],
        };
        assert!(c.each_once(&["a", "b"]));
        assert!(!c.each_once(&["a", "b", "c"]));
        let c = Census {
            seen: vec![s("h1", "a", "running"), s("h3", "a", "running")],
        };
        assert_eq!(c.twice().get("a").map(Vec::len), Some(2));
    }
}
