//! One BMC per host: OpenIPMI `ipmi_sim` in its own namespace, IPMI 2.0 LAN on port
//! 623, chassis control wired to the host through `wisp-lab-chassis <hostdir>`.
//!
//! The files and the process come from `wisp_bmc::testkit` (the one ipmi_sim launcher
//! of the workspace); what is the lab's own is where a BMC lives (its namespace and
//! address), what its chassis does (power.rs), and how tests talk to it (`ipmitool`
//! from the core namespace, as the router would).
//!
//! The admin password is random per lab and lives only in 0600 files: the password
//! file (for the router and for `ipmitool -f`) and lan.conf (which ipmi_sim needs).

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Child, Output};

use wisp_bmc::testkit::{SimFiles, SimSpec};

use super::{cmd, poll, Lab, LabError, WAIT};

/// Writes a 0600 file.
pub fn write_private(path: &Path, content: &[u8]) -> Result<(), LabError> {
    let err = |source| LabError::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(content).map_err(err)
}

/// A random printable secret of `bytes` random bytes (hex encoded).
pub fn random_secret(bytes: usize) -> Result<String, LabError> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| LabError::Random {
        reason: e.to_string(),
    })?;
    Ok(hex::encode(b))
}

/// Writes the files of the BMC of host `index` (`host`) at `ip`:623 into `dir`, its
/// chassis program `chassis_cmd`.
pub fn write_files(
    dir: &Path,
    host: &str,
    ip: Ipv4Addr,
    chassis_cmd: &str,
    index: usize,
) -> Result<SimFiles, LabError> {
    let spec = SimSpec {
        name: format!("{host}-bmc"),
        addr: SocketAddr::from((ip, 623)),
        chassis_control: chassis_cmd.to_owned(),
        // 16 hex chars: IPMI 1.5 passwords are limited to 16 bytes, 2.0 to 20.
        password: random_secret(8)?,
        guid_tail: index as u16,
    };
    SimFiles::write(dir, &spec).map_err(|source| LabError::Bmc {
        host: host.to_owned(),
        source,
    })
}

impl Lab {
    /// Starts every host's ipmi_sim in its BMC namespace (they answer a moment later:
    /// see `wait_bmc`).
    pub(super) fn start_bmcs(&mut self) -> Result<(), LabError> {
        for h in self.hosts.clone() {
            let child = h
                .bmc
                .spawn(Some(&h.bmc_ns))
                .map_err(|source| LabError::Bmc {
                    host: h.name.clone(),
                    source,
                })?;
            self.bmcs.push(Some(child));
        }
        Ok(())
    }

    /// Waits until BMC `i` answers `ipmitool chassis power status`.
    pub(super) fn wait_bmc(&mut self, i: usize) -> Result<(), LabError> {
        let what = format!("the BMC of h{i} to answer ipmitool");
        poll(WAIT, &what, |last| {
            match self.ipmitool(i, &["chassis", "power", "status"]) {
                Ok(out) if out.status.success() => Some(()),
                Ok(out) => {
                    *last = String::from_utf8_lossy(&out.stderr).trim().to_owned();
                    None
                }
                Err(e) => {
                    *last = e.to_string();
                    None
                }
            }
        })
    }

    /// Kills BMC `i`'s ipmi_sim.
    pub fn stop_bmc(&mut self, i: usize) -> Result<(), LabError> {
        self.host(i)?;
        if let Some(mut c) = self.bmcs.get_mut(i - 1).and_then(Option::take) {
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(())
    }

    /// PID of host `i`'s ipmi_sim, if running.
    pub fn bmc_pid(&self, i: usize) -> Option<u32> {
        self.bmcs.get(i.wrapping_sub(1))?.as_ref().map(Child::id)
    }

    /// Runs `ipmitool -I lanplus -C 3` against BMC `i` from the core namespace, the
    /// password read from its file (never in argv).
    /// Chassis power of host `i` as ipmitool reads it from its BMC: `on` or `off`.
    pub fn chassis_power(&self, i: usize) -> Result<String, LabError> {
        let out = self.ipmitool(i, &["chassis", "power", "status"])?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.trim()
            .strip_prefix("Chassis Power is ")
            .map(str::to_owned)
            .ok_or_else(|| LabError::Cli {
                args: format!("ipmitool chassis power status (h{i})"),
                stderr: format!(
                    "{} {}",
                    text.trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            })
    }

    pub fn ipmitool(&self, i: usize, args: &[&str]) -> Result<Output, LabError> {
        let h = self.host(i)?;
        let mut c = cmd::in_ns(&self.names.core_ns(), "ipmitool");
        c.args([
            "-I",
            "lanplus",
            "-H",
            &h.bmc_ip.to_string(),
            "-U",
            "admin",
            "-f",
        ])
        .arg(&h.bmc.password_file)
        .args(["-C", "3", "-N", "1", "-R", "2"])
        .args(args);
        Ok(cmd::output(&mut c)?)
    }
}
