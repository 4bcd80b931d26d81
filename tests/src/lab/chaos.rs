//! Faults the fault campaigns inject beyond power and cables: a genie whose wall
//! clock steps (libfaketime), a duplicate genie (a second server claiming an existing
//! host's name, as a reinstalled machine would), and a replicated router cut off
//! (its bridge address gone and the process frozen).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::signal::Signal;

use super::ha::HaRouter;
use super::power::{self, HostFile};
use super::{cmd, configs, io_err, procs, Lab, LabError, Names};

/// libfaketime, which steps the wall clock of the process it is preloaded into.
pub const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// A second genie started by [`Lab::start_duplicate_genie`].
#[derive(Debug, Clone)]
pub struct DuplicateGenie {
    /// The host whose name it claims.
    pub claims: usize,
    /// The host whose namespace (machine) it runs in.
    pub runs_in: usize,
    pub toml: PathBuf,
    pub vm_dir: PathBuf,
    pub log: PathBuf,
}

impl Lab {
    /// Restarts host `i`'s genie under libfaketime: its wall clock (only: monotonic
    /// and boot time stay true) is offset by what `offset_file` says (`+0`, `-1h`...),
    /// re-read every second. The host file keeps the plain argv, so a power cycle
    /// brings back a genie with a true clock.
    pub fn genie_under_faketime(&self, i: usize, offset_file: &Path) -> Result<(), LabError> {
        if !Path::new(FAKETIME_LIB).is_file() {
            return Err(LabError::MissingTool {
                program: "libfaketimeMT.so.1",
                package: "libfaketime",
            });
        }
        self.kill_genie(i)?;
        let mut hf = power::read_host_file(&self.host(i)?.dir)?;
        let mut argv = vec![
            "env".to_string(),
            format!("LD_PRELOAD={FAKETIME_LIB}"),
            format!("FAKETIME_TIMESTAMP_FILE={}", offset_file.display()),
            "FAKETIME_CACHE_DURATION=1".into(),
            "FAKETIME_DONT_FAKE_MONOTONIC=1".into(),
        ];
        argv.append(&mut hf.genie_argv);
        hf.genie_argv = argv;
        Ok(power::start_genie(&hf)?)
    }

    /// Starts, on host `runs_in`'s machine, a second genie that claims host
    /// `claims`'s name: `claims`'s genie.toml with `runs_in`'s address, qemu wrapper
    /// (so the census sees its VMs on `runs_in`) and a VM directory of its own.
    pub fn start_duplicate_genie(
        &self,
        claims: usize,
        runs_in: usize,
    ) -> Result<DuplicateGenie, LabError> {
        let owner = self.host(claims)?;
        let host = self.host(runs_in)?;
        let genie = self.bin(self.bins.genie.as_ref(), "genie")?;
        let dir = host.dir.join(format!("dup-of-{}", owner.name));
        let vm_dir = dir.join("vms");
        fs::create_dir_all(&vm_dir).map_err(io_err(&vm_dir))?;
        let text = fs::read_to_string(&owner.genie_toml).map_err(io_err(&owner.genie_toml))?;
        let text = text
            .replace(
                &format!("vm_dir = {}", configs::q(owner.vm_dir.to_string_lossy())),
                &format!("vm_dir = {}", configs::q(vm_dir.to_string_lossy())),
            )
            .replace(
                &format!(
                    "address = {}",
                    configs::q(Names::host_ip(claims).to_string())
                ),
                &format!(
                    "address = {}",
                    configs::q(Names::host_ip(runs_in).to_string())
                ),
            )
            .replace(
                &configs::q(owner.dir.join("qemu-witness.sh").to_string_lossy()),
                &configs::q(host.dir.join("qemu-witness.sh").to_string_lossy()),
            );
        let toml = dir.join("genie.toml");
        fs::write(&toml, text).map_err(io_err(&toml))?;
        let log = dir.join("genie.log");
        power::start_genie(&HostFile {
            name: owner.name.clone(),
            ns: host.ns.clone(),
            genie_argv: vec![
                genie.to_string_lossy().into_owned(),
                "--config".into(),
                toml.to_string_lossy().into_owned(),
            ],
            genie_log: log.clone(),
            core_ns: self.names.core_ns(),
            port: format!("h{runs_in}"),
            cgroup: None,
        })?;
        Ok(DuplicateGenie {
            claims,
            runs_in,
            toml,
            vm_dir,
            log,
        })
    }

    /// Takes the duplicate server away as an operator would (powered off): SIGKILLs
    /// its genie and every qemu it started (found by its VM directory on their
    /// command lines), and waits until they are gone. Returns how many qemu it had.
    pub fn stop_duplicate_genie(&self, d: &DuplicateGenie) -> Result<usize, LabError> {
        let ns = &self.host(d.runs_in)?.ns;
        let toml = d.toml.to_string_lossy().into_owned();
        let vm_dir = d.vm_dir.to_string_lossy().into_owned();
        let mut genies = Vec::new();
        let mut qemus = Vec::new();
        for p in procs::ns_pids(ns)? {
            let cmdline = fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains(&toml) {
                genies.push(p);
            } else if cmdline.contains("qemu") && cmdline.contains(&vm_dir) {
                qemus.push(p);
            }
        }
        // The genie first: it must not restart what we kill next.
        for &p in genies.iter().chain(&qemus) {
            procs::signal(p, Signal::SIGKILL);
        }
        let all: Vec<i32> = genies.iter().chain(&qemus).copied().collect();
        let left = procs::wait_gone(&all, super::WAIT);
        if !left.is_empty() {
            return Err(LabError::Timeout {
                what: format!("the duplicate {} genie to go", self.host(d.claims)?.name),
                secs: super::WAIT.as_secs(),
                detail: format!(" (still alive: {left:?})"),
            });
        }
        Ok(qemus.len())
    }

    /// Cuts replicated router `r` off: its bridge address goes (no genie reaches
    /// it) and the process is frozen (it hears nothing from etcd either, and wakes
    /// up later with a stale view). Router 1's address is the lab's core address
    /// (etcd listens there): it stays, and router 1 is only frozen.
    pub fn cut_router(&self, r: &HaRouter) -> Result<(), LabError> {
        self.router_addr(r, "del")?;
        if let Some(pid) = r.pid() {
            procs::signal(pid as i32, Signal::SIGSTOP);
        }
        Ok(())
    }

    /// Undoes [`Lab::cut_router`].
    pub fn restore_router(&self, r: &HaRouter) -> Result<(), LabError> {
        if let Some(pid) = r.pid() {
            procs::signal(pid as i32, Signal::SIGCONT);
        }
        self.router_addr(r, "add")
    }

    fn router_addr(&self, r: &HaRouter, op: &str) -> Result<(), LabError> {
        if r.ip == Names::router_ip() {
            return Ok(());
        }
        cmd::run(Command::new("ip").args([
            "-n",
            &self.names.core_ns(),
            "addr",
            op,
            &format!("{}/24", r.ip),
            "dev",
            "br0",
        ]))?;
        Ok(())
    }
}
