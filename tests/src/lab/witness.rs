//! Independent checks: what QEMU itself says, asked without the genie or the router,
//! so neither can hide its own bug from the tests.
//!
//! The one witness is a second QMP socket on every qemu, `<host dir>/witness/<vm>.qmp`,
//! read with the lab's own QMP client (qmp.rs):
//! - qemu the lab starts itself (`Lab::start_qemu_vm`) get it on their command line;
//! - qemu a genie starts (for the router) get it from a tiny wrapper: a genie holds its
//!   VM's contract QMP socket for good and QMP serves one client at a time, so
//!   `Lab::start_with_witness` points every genie's `qemu` (genie.toml) at a script
//!   that execs the real qemu with one more `-qmp` socket. Nothing in the genie or the
//!   router knows about it.
//!
//! On top of it: the guest's tick counter (a restarted guest counts from 0, a migrated
//! one goes on), a census of every qemu process on every host with its QMP status
//! (no VM may ever run on two hosts), and finding a VM's qemu processes by `-name`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{find_on_path, guest, io_err, poll, procs, Lab, LabError, LabSpec, Qmp, WAIT};

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

/// The VM name of process `pid` if it is a qemu.
fn qemu_of(pid: i32) -> Option<String> {
    qemu_name(&fs::read(format!("/proc/{pid}/cmdline")).ok()?)
}

/// The session id of `pid` (field 6 of /proc/<pid>/stat, after the `(comm)`).
pub(super) fn sid(pid: i32) -> Option<i32> {
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
    if sid == pid || !procs::is_alive(sid) {
        return true;
    }
    qemu_of(sid).is_some()
}

/// The file whose content (seconds, as `sleep` takes them) delays every qemu start of
/// a host: a test that must act while a start is in flight sets it.
const START_DELAY_FILE: &str = "qemu-start-delay";

/// The wrapper script: real qemu plus a witness QMP socket named after `-name`, after
/// the host's start delay if one is set.
fn wrapper_script(qemu: &Path, witness_dir: &Path) -> String {
    let delay = witness_dir
        .parent()
        .unwrap_or(witness_dir)
        .join(START_DELAY_FILE);
    format!(
        "#!/bin/sh\n\
         # wisp lab: run qemu with one more QMP socket, for tests only (witness.rs).\n\
         if [ -s {delay} ]; then sleep \"$(cat {delay})\"; fi\n\
         name=\"\"\nprev=\"\"\n\
         for a in \"$@\"; do\n  if [ \"$prev\" = \"-name\" ]; then name=\"$a\"; fi\n  prev=\"$a\"\ndone\n\
         name=\"${{name%%,*}}\"\nname=\"${{name#guest=}}\"\n\
         exec {qemu} \"$@\" -qmp \"unix:{dir}/$name.qmp,server=on,wait=off\"\n",
        qemu = sh_quote(&qemu.to_string_lossy()),
        dir = witness_dir.display(),
        delay = sh_quote(&delay.to_string_lossy()),
    )
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Writes the qemu wrapper for the host whose directory is `host_dir` (and its
/// witness dir); returns the script's path for genie.toml's `qemu`.
pub(super) fn install_wrapper(host_dir: &Path) -> Result<PathBuf, LabError> {
    let qemu = find_on_path("qemu-system-x86_64").ok_or(LabError::MissingTool {
        program: "qemu-system-x86_64",
        package: "qemu-system-x86",
    })?;
    let witness = host_dir.join("witness");
    fs::create_dir_all(&witness).map_err(io_err(&witness))?;
    let script = host_dir.join("qemu-witness.sh");
    fs::write(&script, wrapper_script(&qemu, &witness)).map_err(io_err(&script))?;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).map_err(io_err(&script))?;
    Ok(script)
}

impl Lab {
    /// Starts a lab whose genies run qemu through the witness wrapper (see the module
    /// doc), so every VM, the router's included, answers on its witness socket.
    pub fn start_with_witness(spec: LabSpec) -> Result<Lab, LabError> {
        Lab::start(LabSpec {
            witness: true,
            ..spec
        })
    }

    /// Delays every qemu start on host `i` by `delay` (`None`: no delay), in the
    /// witness wrapper, so a test can act while a start is in flight. The genie and
    /// the router do not know: to them qemu is just slow to start.
    pub fn set_qemu_start_delay(
        &self,
        i: usize,
        delay: Option<std::time::Duration>,
    ) -> Result<(), LabError> {
        let path = self.host(i)?.dir.join(START_DELAY_FILE);
        let text = delay.map_or(String::new(), |d| format!("{:.3}", d.as_secs_f64()));
        fs::write(&path, text).map_err(io_err(&path))
    }

    /// True while some qemu start on host `i` is still in the witness wrapper (in its
    /// start delay, or not yet exec'd into qemu).
    pub fn qemu_start_in_flight(&self, i: usize) -> bool {
        self.host_pids(i).unwrap_or_default().iter().any(|p| {
            fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains("qemu-witness.sh"))
                .unwrap_or(false)
        })
    }

    /// The witness QMP socket of VM `name` on host `i`.
    pub fn witness_qmp(&self, i: usize, name: &str) -> Result<PathBuf, LabError> {
        Ok(self
            .host(i)?
            .dir
            .join("witness")
            .join(format!("{name}.qmp")))
    }

    /// The guest's tick counter of VM `name` on host `i`, read over its witness QMP
    /// socket (HMP `xp` of the counter's guest-physical address).
    pub fn guest_counter(&self, i: usize, name: &str) -> Result<u32, LabError> {
        let path = self.witness_qmp(i, name)?;
        Qmp::connect(&path)
            .and_then(|mut q| q.read_u32(guest::COUNTER_ADDR))
            .map_err(|source| LabError::Qmp {
                vm: name.to_owned(),
                source,
            })
    }

    /// Polls until the counter of `vm` on host `i` is above `above`; returns it.
    pub fn wait_counter_above(&self, i: usize, vm: &str, above: u32) -> Result<u32, LabError> {
        poll(
            WAIT,
            &format!("the guest counter of {vm} on h{i} to pass {above}"),
            |last| match self.guest_counter(i, vm) {
                Ok(c) if c > above => Some(c),
                Ok(c) => {
                    *last = format!("counter {c}");
                    None
                }
                Err(e) => {
                    *last = e.to_string();
                    None
                }
            },
        )
    }

    /// Every qemu process of every host, each asked for its status over its witness
    /// socket. Independent of the router and the genies.
    /// The census, with "never twice" checked: panics (naming the VM, every copy seen
    /// and the router's last log lines) when a VM runs on two hosts. For tests.
    pub fn census_never_twice(&self) -> Census {
        let c = self
            .census()
            .unwrap_or_else(|e| panic!("census failed: {e}"));
        assert!(
            c.twice().is_empty(),
            "a VM runs twice: {:?}\ncensus: {:?}\nrouter log tail:\n{}",
            c.twice(),
            c.seen,
            self.router_log_tail(40)
        );
        c
    }

    /// The router log's last `n` lines.
    pub fn router_log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.router_log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Every host's genie log, its last `n` lines each under a `--- NAME genie ---`
    /// heading (for failure messages).
    pub fn genie_log_tails(&self, n: usize) -> String {
        self.hosts()
            .iter()
            .map(|h| {
                let text = std::fs::read_to_string(&h.genie_log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                format!(
                    "--- {} genie ---\n{}\n",
                    h.name,
                    lines[lines.len().saturating_sub(n)..].join("\n")
                )
            })
            .collect()
    }

    /// Every qemu of every host with its QMP status (see [`CensusProbe::take`]).
    pub fn census(&self) -> Result<Census, LabError> {
        self.census_probe().take()
    }

    /// What a census needs, detached from the lab, for a sampling thread.
    pub fn census_probe(&self) -> CensusProbe {
        CensusProbe {
            hosts: self
                .hosts
                .iter()
                .map(|h| (h.name.clone(), h.ns.clone(), h.dir.clone()))
                .collect(),
        }
    }

    /// Live (non-zombie) qemu processes of VM `vm` in host `i`'s namespace, found by
    /// their `-name` (independently of the genie's files and reports).
    pub fn qemu_pids(&self, i: usize, vm: &str) -> Result<Vec<i32>, LabError> {
        let pids = procs::ns_pids(&self.host(i)?.ns)?;
        Ok(pids
            .into_iter()
            .filter(|&p| qemu_of(p).is_some_and(|n| n == vm) && procs::is_alive(p))
            .collect())
    }

    /// The one live qemu of `vm` on host `i`.
    pub fn qemu_pid(&self, i: usize, vm: &str) -> Result<i32, LabError> {
        let pids = self.qemu_pids(i, vm)?;
        match pids[..] {
            [p] => Ok(p),
            [] => Err(LabError::NoQemu {
                vm: vm.to_owned(),
                host: i,
            }),
            _ => Err(LabError::ManyQemu {
                vm: vm.to_owned(),
                host: i,
                count: pids.len(),
                pids,
            }),
        }
    }

    /// Polls until no live qemu of `vm` is left on host `i`.
    pub fn wait_no_qemu(&self, i: usize, vm: &str) -> Result<(), LabError> {
        poll(
            WAIT,
            &format!("no qemu of {vm} left on h{i}"),
            |last| match self.qemu_pids(i, vm) {
                Ok(p) if p.is_empty() => Some(()),
                Ok(p) => {
                    *last = format!("still alive: {p:?}");
                    None
                }
                Err(e) => {
                    *last = e.to_string();
                    None
                }
            },
        )
    }
}

/// Each host's name, namespace and directory: enough to take a census from a thread
/// that does not hold the lab (a sampler running while the test drives the lab).
#[derive(Debug, Clone)]
pub struct CensusProbe {
    hosts: Vec<(String, String, PathBuf)>,
}

impl CensusProbe {
    /// `s`'s QMP status asked again over its host's witness socket (`unknown: ...`
    /// if it does not answer), or `gone` once the process is.
    pub fn status_again(&self, s: &SeenVm) -> String {
        let Some((_, _, dir)) = self.hosts.iter().find(|(n, _, _)| *n == s.host) else {
            return "unknown: no such host".into();
        };
        let socket = dir.join("witness").join(format!("{}.qmp", s.vm));
        let status = match Qmp::connect(&socket).and_then(|mut q| q.status()) {
            Ok(st) => st,
            Err(e) => format!("unknown: {e}"),
        };
        if procs::is_alive(s.pid) {
            status
        } else {
            "gone".into()
        }
    }

    /// Every qemu process of every host, each asked for its status over its witness
    /// socket. Independent of the router and the genies.
    pub fn take(&self) -> Result<Census, LabError> {
        let mut seen = Vec::new();
        for (name, ns, dir) in &self.hosts {
            for pid in procs::ns_pids(ns)? {
                let Some(vm) = qemu_of(pid) else {
                    continue;
                };
                if !daemonized(pid) {
                    continue;
                }
                let socket = dir.join("witness").join(format!("{vm}.qmp"));
                let status = match Qmp::connect(&socket).and_then(|mut q| q.status()) {
                    Ok(s) => s,
                    Err(e) => format!("unknown: {e}"),
                };
                // The process may have died while we asked: then it is not there.
                if !procs::is_alive(pid) {
                    continue;
                }
                seen.push(SeenVm {
                    host: name.clone(),
                    vm,
                    pid,
                    status,
                });
            }
        }
        Ok(Census { seen })
    }
}

/// The whole command line of `pid` (for assertions such as "started with -incoming").
pub fn qemu_cmdline(pid: i32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
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
