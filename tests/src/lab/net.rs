//! The lab's network: one namespace per host and per BMC, veths into a bridge in the
//! core namespace, and the faults tests inject into it (a cable pulled, a BMC cut
//! off, the router partitioned from the hosts). Also running commands inside those
//! namespaces, and removing them again, ours or those a dead test binary left.
//!
//! `ip -batch` does the setup in a handful of `ip` runs: one per namespace would make
//! a 3-host lab noticeably slower to build on a loaded machine.

use std::fs;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::cmd::{self, CmdError};
use super::names::{self, mac_string, Names};
use super::{freeze, procs, Lab, LabError};

/// Runs `ip [-n ns] -batch -` with `lines` on stdin.
fn ip_batch(ns: Option<&str>, lines: &str) -> Result<(), CmdError> {
    let mut c = Command::new("ip");
    if let Some(ns) = ns {
        c.args(["-n", ns]);
    }
    c.args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let describe = format!("{} <<< {lines:?}", cmd::describe(&c));
    let spawn_err = |source| CmdError::Spawn {
        command: describe.clone(),
        source,
    };
    let mut child = c.spawn().map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(lines.as_bytes()).map_err(spawn_err)?;
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if !out.status.success() {
        return Err(CmdError::Failed {
            command: describe,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// `ip -force -batch -`: goes on past lines that fail (a namespace never created),
/// which is what a teardown wants.
fn ip_batch_force(lines: &str) {
    let mut c = Command::new("ip");
    c.args(["-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let Ok(mut child) = c.spawn() else {
        return;
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(lines.as_bytes());
    }
    let _ = child.wait();
}

/// Deletes namespaces `nss` after killing every process in them (and removes the
/// freezer cgroups named after them).
fn delete_namespaces<'a>(nss: impl Iterator<Item = &'a String> + Clone) {
    for ns in nss.clone() {
        if let Err(e) = procs::kill_ns(ns, None, Duration::from_secs(5)) {
            eprintln!("lab teardown: cannot empty namespace {ns}: {e}");
        }
        freeze::remove_host_cgroups(ns);
    }
    let dels: String = nss.map(|ns| format!("netns del {ns}\n")).collect();
    if !dels.is_empty() {
        ip_batch_force(&dels);
    }
}

/// Tears down what labs of dead processes left behind (a test binary killed by
/// SIGKILL or a timeout never runs `Drop`): namespaces named `wl<pid>x<n>-*` whose
/// creator PID is gone, every process in them, and their temp dirs. Labs of live
/// processes (parallel test binaries) are never touched.
pub(super) fn reap_stale_labs() {
    let Ok(out) = cmd::run(Command::new("ip").args(["netns", "list"])) else {
        return;
    };
    let mut stale: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|ns| {
            let (tag, pid) = names::parse_ns(ns)?;
            let alive = i32::try_from(pid).is_ok_and(procs::is_alive);
            (!alive).then(|| (tag, ns.to_owned()))
        })
        .collect();
    if stale.is_empty() {
        return;
    }
    stale.sort();
    for (_, ns) in &stale {
        eprintln!("lab: removing stale namespace {ns} (its creator is gone)");
    }
    delete_namespaces(stale.iter().map(|(_, ns)| ns));
    stale.dedup_by(|a, b| a.0 == b.0);
    for (tag, _) in stale {
        let _ = fs::remove_dir_all(std::env::temp_dir().join(format!("wisp-lab-{tag}")));
    }
}

impl Lab {
    /// The core namespace with bridge `br0` and the router's address; per host a
    /// namespace for the host and one for its BMC, each with `eth0` on the bridge.
    pub(super) fn create_network(&mut self, n: usize) -> Result<(), LabError> {
        let core = self.names.core_ns();
        // Recorded before creation, so a half-done setup is undone by the teardown.
        let mut all = vec![core.clone()];
        for i in 1..=n {
            all.push(self.names.host_ns(i));
            all.push(self.names.bmc_ns(i));
        }
        self.namespaces = all.clone();
        let adds: String = all.iter().map(|ns| format!("netns add {ns}\n")).collect();
        ip_batch(None, &adds).map_err(LabError::Net)?;

        let mut core_cmds = format!(
            "link set lo up\nlink add br0 type bridge\naddr add {}/24 dev br0\nlink set br0 up\n",
            Names::router_ip()
        );
        for i in 1..=n {
            let mac = mac_string(&self.names.host_mac(i));
            core_cmds += &format!(
                "link add h{i} type veth peer name eth0 address {mac} netns {hns}\n\
                 link set h{i} master br0 up\n\
                 link add b{i} type veth peer name eth0 netns {bns}\n\
                 link set b{i} master br0 up\n",
                hns = self.names.host_ns(i),
                bns = self.names.bmc_ns(i),
            );
        }
        ip_batch(Some(&core), &core_cmds).map_err(LabError::Net)?;
        for i in 1..=n {
            // A host is wired like a real server that carries guests: its address on
            // a bridge `br0` whose uplink port is eth0, so a guest's tap on br0 is on
            // the lab network. The bridge gets the uplink's MAC, fixed: a bridge left
            // alone takes its lowest port's MAC and changes it as taps come and go.
            let mac = mac_string(&self.names.host_mac(i));
            ip_batch(
                Some(&self.names.host_ns(i)),
                &format!(
                    "link set lo up\nlink add br0 type bridge\nlink set br0 address {mac}\n\
                     link set eth0 master br0\nlink set eth0 up\n\
                     addr add {ip}/24 dev br0\nlink set br0 up\n",
                    ip = Names::host_ip(i)
                ),
            )
            .map_err(LabError::Net)?;
            ip_batch(
                Some(&self.names.bmc_ns(i)),
                &format!(
                    "link set lo up\naddr add {}/24 dev eth0\nlink set eth0 up\n",
                    Names::bmc_ip(i)
                ),
            )
            .map_err(LabError::Net)?;
        }
        Ok(())
    }

    /// Kills every process left in the lab's namespaces, then deletes them.
    pub(super) fn remove_namespaces(&mut self) {
        delete_namespaces(self.namespaces.iter());
        self.namespaces.clear();
    }

    fn set_port(&self, port: &str, up: bool) -> Result<(), LabError> {
        cmd::run(Command::new("ip").args([
            "-n",
            &self.names.core_ns(),
            "link",
            "set",
            port,
            if up { "up" } else { "down" },
        ]))?;
        Ok(())
    }

    /// Takes host `i`'s bridge port down: the host is alive but cut off.
    pub fn cut_host_link(&self, i: usize) -> Result<(), LabError> {
        self.host(i)?;
        self.set_port(&format!("h{i}"), false)
    }
    pub fn restore_host_link(&self, i: usize) -> Result<(), LabError> {
        self.host(i)?;
        self.set_port(&format!("h{i}"), true)
    }
    /// Takes BMC `i`'s bridge port down: the BMC stops answering.
    pub fn cut_bmc(&self, i: usize) -> Result<(), LabError> {
        self.host(i)?;
        self.set_port(&format!("b{i}"), false)
    }
    pub fn restore_bmc(&self, i: usize) -> Result<(), LabError> {
        self.host(i)?;
        self.set_port(&format!("b{i}"), true)
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

    /// Runs `program args` in namespace `ns`.
    pub fn exec_in(&self, ns: &str, program: &str, args: &[&str]) -> Result<Output, LabError> {
        let mut c = cmd::in_ns(ns, program);
        c.args(args);
        Ok(cmd::output(&mut c)?)
    }

    /// Runs `program args` in `ns` with `input` on its stdin.
    pub fn exec_in_with_input(
        &self,
        ns: &str,
        program: &str,
        args: &[&str],
        input: &[u8],
    ) -> Result<Output, LabError> {
        let mut c = cmd::in_ns(ns, program);
        c.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawn_err = |source| {
            LabError::Cmd(CmdError::Spawn {
                command: format!("{program} {}", args.join(" ")),
                source,
            })
        };
        let mut child = c.spawn().map_err(spawn_err)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input).map_err(spawn_err)?;
        }
        child.wait_with_output().map_err(spawn_err)
    }
}
