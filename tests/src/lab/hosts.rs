//! The lab's hosts as machines: their directories and genie.toml, their power as the
//! chassis sees it, the genie that runs on them, and the Wake-on-LAN listener that
//! powers them on from a magic packet.
//!
//! Every power change goes through power.rs, the same code the BMC's chassis program
//! and the WoL listener run, so a test's `power_off` and the router's IPMI power-off
//! do exactly the same thing to a host.

use std::fs;
use std::path::PathBuf;
use std::process::Child;

use nix::sys::signal::Signal;

use super::cmd;
use super::freeze;
use super::power::{self, HostFile, OffHow, Power};
use super::spec::{GenieMode, HostInfo, LabSpec};
use super::{
    bmc, configs, guest, io_err, mac_string, poll, procs, spawn_logged, witness, Lab, LabError,
};
use super::{Names, WAIT};

impl Lab {
    /// The cluster secret (genies and router share it) and the guest image.
    pub(super) fn write_shared_files(&self) -> Result<(), LabError> {
        bmc::write_private(&self.secret_file, bmc::random_secret(32)?.as_bytes())?;
        let images = self.images_dir();
        fs::create_dir_all(&images).map_err(io_err(&images))?;
        fs::write(&self.guest, guest::elf()).map_err(io_err(&self.guest))
    }

    /// Host `i`'s directory, genie.toml, host file (what a power action needs) and
    /// BMC files. The host starts off.
    pub(super) fn add_host(&mut self, i: usize, spec: &LabSpec) -> Result<(), LabError> {
        let name = Names::host_name(i);
        let hdir = self.dir.join(&name);
        let vm_dir = hdir.join("vms");
        fs::create_dir_all(&vm_dir).map_err(io_err(&vm_dir))?;
        let genie_toml = hdir.join("genie.toml");
        let genie_log = hdir.join("genie.log");
        // The genie suspends its host through the chassis program, like a real host's
        // `systemctl suspend` would go through its firmware.
        let suspend = vec![
            self.bins.chassis.to_string_lossy().into_owned(),
            hdir.to_string_lossy().into_owned(),
            "suspend".to_owned(),
        ];
        let mut toml =
            configs::genie_toml(i, &self.secret_file, &vm_dir, &self.images_dir(), &suspend);
        let sys_power = write_sys_power(&hdir, !spec.no_ram_suspend.contains(&i))?;
        // The genie learns what its host can do from there, not from the machine's
        // /sys/power (the same for every lab host, and empty in containers).
        toml.push_str(&format!(
            "sys_power_dir = {}\n",
            configs::q(sys_power.to_string_lossy())
        ));
        if spec.witness {
            let wrapper = witness::install_wrapper(&hdir)?;
            toml.push_str(&format!(
                "qemu = {}\n",
                configs::q(wrapper.to_string_lossy())
            ));
        }
        toml.push_str(&configs::networks_table());
        fs::write(&genie_toml, toml).map_err(io_err(&genie_toml))?;
        let genie_argv = match (&spec.genie, &self.bins.genie) {
            (GenieMode::Real, Some(g)) => vec![
                g.to_string_lossy().into_owned(),
                "--config".to_owned(),
                genie_toml.to_string_lossy().into_owned(),
            ],
            (GenieMode::StandIn(argv), _) => argv.clone(),
            (GenieMode::Real, None) => Vec::new(),
        };
        let ns = self.names.host_ns(i);
        power::write_host_file(
            &hdir,
            &HostFile {
                name: name.clone(),
                ns: ns.clone(),
                genie_argv,
                genie_log: genie_log.clone(),
                core_ns: self.names.core_ns(),
                port: format!("h{i}"),
                cgroup: freeze::create_host_cgroup(&ns),
            },
        )?;
        power::set_recorded(&hdir, Power::Off)?;
        let chassis_cmd = format!("{} {}", self.bins.chassis.display(), hdir.display());
        let bmc_dir = self.dir.join(format!("bmc-{name}"));
        let bmc = bmc::write_files(&bmc_dir, &name, Names::bmc_ip(i), &chassis_cmd, i)?;
        self.hosts.push(HostInfo {
            index: i,
            name,
            ns,
            bmc_ns: self.names.bmc_ns(i),
            mac: self.names.host_mac(i),
            ip: Names::host_ip(i),
            bmc_ip: Names::bmc_ip(i),
            dir: hdir,
            vm_dir,
            genie_toml,
            genie_log,
            sys_power,
            bmc,
        });
        Ok(())
    }

    /// `<dir>/lab.json`: what the WoL listener needs (bridge, MACs, host dirs).
    pub(super) fn write_lab_file(&self) -> Result<(), LabError> {
        let hosts: Vec<serde_json::Value> = self
            .hosts
            .iter()
            .map(|h| serde_json::json!({"mac": mac_string(&h.mac), "dir": h.dir}))
            .collect();
        let path = self.dir.join("lab.json");
        let v = serde_json::json!({"bridge": "br0", "hosts": hosts});
        fs::write(&path, v.to_string()).map_err(io_err(&path))
    }

    /// Starts `wisp-lab-wol` on the bridge and waits until it listens.
    pub(super) fn start_wol(&mut self) -> Result<(), LabError> {
        let log_path = self.wol_log();
        // A fresh log: readiness is read from it below.
        fs::File::create(&log_path).map_err(io_err(&log_path))?;
        let mut c = cmd::in_ns(&self.names.core_ns(), &self.bins.wol);
        c.arg(&self.dir);
        let child = spawn_logged(&mut c, &log_path)?;
        self.wol = Some(child);
        let wol = &mut self.wol;
        poll(WAIT, "the WoL listener to listen on br0", |last| {
            let text = fs::read_to_string(&log_path).unwrap_or_default();
            *last = text.trim().to_owned();
            if let Some(Ok(Some(_))) = wol.as_mut().map(|c| c.try_wait()) {
                return Some(Err(()));
            }
            text.contains("listening on").then_some(Ok(()))
        })?
        .map_err(|()| LabError::Timeout {
            what: "the WoL listener (it exited)".into(),
            secs: 0,
            detail: fs::read_to_string(&log_path).unwrap_or_default(),
        })
    }

    pub fn wol_log(&self) -> PathBuf {
        self.dir.join("wol.log")
    }
    /// PID of the WoL listener, if running.
    pub fn wol_pid(&self) -> Option<u32> {
        self.wol.as_ref().map(Child::id)
    }

    /// Kills and reaps the lab's own children: router, WoL listener, BMCs. (Genies and
    /// qemu are not our children: they die with their namespaces.)
    pub(super) fn kill_children(&mut self) {
        let mut children: Vec<Child> = Vec::new();
        children.extend(self.router.take());
        children.extend(self.wol.take());
        children.extend(self.bmcs.iter_mut().filter_map(Option::take));
        for c in &mut children {
            let _ = c.kill();
        }
        for c in &mut children {
            let _ = c.wait();
        }
    }

    /// Powers host `i` on through the same action as IPMI and WoL.
    pub fn power_on(&self, i: usize) -> Result<bool, LabError> {
        Ok(power::power_on(&self.host(i)?.dir)?)
    }

    /// Powers host `i` off (hard) through the same action as IPMI.
    pub fn power_off(&self, i: usize) -> Result<(), LabError> {
        Ok(power::power_off(&self.host(i)?.dir, OffHow::Hard, None)?)
    }

    /// The power state the lab recorded for host `i`.
    pub fn power_state(&self, i: usize) -> Result<Power, LabError> {
        Ok(power::state(&self.host(i)?.dir)?)
    }

    /// PIDs of every live process in host `i`'s namespace.
    pub fn host_pids(&self, i: usize) -> Result<Vec<i32>, LabError> {
        Ok(procs::ns_pids(&self.host(i)?.ns)?)
    }

    /// PIDs of host `i`'s genie (processes whose command line starts like the genie's).
    pub fn genie_pids(&self, i: usize) -> Result<Vec<i32>, LabError> {
        let h = self.host(i)?;
        let hf = power::read_host_file(&h.dir)?;
        let Some(first) = hf.genie_argv.first() else {
            return Ok(Vec::new());
        };
        Ok(procs::ns_pids(&h.ns)?
            .into_iter()
            .filter(|p| {
                fs::read(format!("/proc/{p}/cmdline"))
                    .map(|c| c.split(|&b| b == 0).next() == Some(first.as_bytes()))
                    .unwrap_or(false)
            })
            .collect())
    }

    /// SIGKILLs host `i`'s genie (not its VMs) and waits until it is gone; returns the
    /// PIDs killed.
    pub fn kill_genie(&self, i: usize) -> Result<Vec<i32>, LabError> {
        let pids = self.genie_pids(i)?;
        for &p in &pids {
            procs::signal(p, Signal::SIGKILL);
        }
        let left = procs::wait_gone(&pids, WAIT);
        if !left.is_empty() {
            return Err(LabError::Timeout {
                what: format!("genie of h{i} to die"),
                secs: WAIT.as_secs(),
                detail: format!(" (still alive: {left:?})"),
            });
        }
        Ok(pids)
    }

    /// Starts host `i`'s genie again (the host stays on).
    pub fn start_genie(&self, i: usize) -> Result<(), LabError> {
        let hf = power::read_host_file(&self.host(i)?.dir)?;
        Ok(power::start_genie(&hf)?)
    }

    /// Starts a genie for host `i` whose secret file holds `secret` (a wrong one, for
    /// the authentication test). Returns its log file.
    pub fn start_genie_with_secret(&self, i: usize, secret: &str) -> Result<PathBuf, LabError> {
        let h = self.host(i)?;
        let genie = self.bin(self.bins.genie.as_ref(), "genie")?;
        let secret_file = h.dir.join("other.secret");
        bmc::write_private(&secret_file, secret.as_bytes())?;
        let toml = fs::read_to_string(&h.genie_toml).map_err(io_err(&h.genie_toml))?;
        let toml = toml.replace(
            &configs::q(self.secret_file.to_string_lossy()),
            &configs::q(secret_file.to_string_lossy()),
        );
        let alt = h.dir.join("genie-other-secret.toml");
        fs::write(&alt, toml).map_err(io_err(&alt))?;
        let log = h.dir.join("genie-other-secret.log");
        power::start_genie(&HostFile {
            name: h.name.clone(),
            ns: h.ns.clone(),
            genie_argv: vec![
                genie.to_string_lossy().into_owned(),
                "--config".into(),
                alt.to_string_lossy().into_owned(),
            ],
            genie_log: log.clone(),
            core_ns: self.names.core_ns(),
            port: format!("h{i}"),
            cgroup: None,
        })?;
        Ok(log)
    }
}

/// `<hostdir>/sys-power/`: what the host's kernel would say it can do, in the shape of
/// `/sys/power/state` and `/sys/power/mem_sleep`. A host without suspend-to-RAM (many
/// servers support only S0, S4 and S5) has no `mem` and no `deep`.
fn write_sys_power(hdir: &std::path::Path, ram: bool) -> Result<PathBuf, LabError> {
    let dir = hdir.join("sys-power");
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let (state, mem_sleep) = if ram {
        ("freeze mem disk\n", "s2idle [deep]\n")
    } else {
        ("freeze disk\n", "[s2idle]\n")
    };
    for (name, text) in [("state", state), ("mem_sleep", mem_sleep)] {
        let path = dir.join(name);
        fs::write(&path, text).map_err(io_err(&path))?;
    }
    Ok(dir)
}
