//! Sleep, wake and power loss for tests: the lab's helpers around power.rs.
//!
//! A suspended host's processes are frozen and its link cut (nothing closed, nothing on
//! the wire), the same processes carry on after a wake; a silent power loss kills a
//! host without any of its connections saying goodbye. Every helper goes through
//! power.rs, or through the programs that do (the chassis program, the WoL listener),
//! so a test does what the genie, the BMC and a magic packet do.

use super::power::{self, OffHow, Power};
use super::{poll, Lab, LabError, WAIT};

impl Lab {
    /// Suspends host `i` as its genie's `suspend_command` would (the chassis program's
    /// `suspend`, run in the host's namespace), and waits until the host is recorded
    /// `suspended`.
    pub fn suspend_host(&self, i: usize) -> Result<(), LabError> {
        let h = self.host(i)?;
        let chassis = self.bins.chassis.to_string_lossy().into_owned();
        let out = self.exec_in(&h.ns, &chassis, &[&h.dir.to_string_lossy(), "suspend"])?;
        if !out.status.success() {
            return Err(LabError::Cmd(super::cmd::CmdError::Failed {
                command: format!("{chassis} {} suspend", h.dir.display()),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            }));
        }
        poll(WAIT, &format!("h{i} to be suspended"), |last| {
            let p = self.power_state(i);
            *last = format!("{p:?}");
            matches!(p, Ok(Power::Suspended)).then_some(())
        })
    }

    /// True if host `i` has processes and every one of them is frozen (in its frozen
    /// cgroup, or stopped by SIGSTOP where the lab has no cgroup freezer).
    pub fn is_frozen(&self, i: usize) -> Result<bool, LabError> {
        Ok(power::is_frozen(&self.host(i)?.dir)?)
    }

    /// Sends a magic packet for host `i` with `etherwake` on the bridge, from the core
    /// namespace (the router's side): an independent sender, received by the lab's WoL
    /// listener. Returns once it is sent; poll [`Lab::power_state`] for the wake.
    pub fn wake_host_by_wol(&self, i: usize) -> Result<(), LabError> {
        let mac = super::mac_string(&self.host(i)?.mac);
        let mut c = super::cmd::in_ns(&self.core_ns(), "etherwake");
        c.args(["-i", "br0", &mac]);
        super::cmd::run(&mut c)?;
        Ok(())
    }

    /// Pulls host `i`'s plug for real: its link is cut first, then every process is
    /// killed with its sockets destroyed, so no FIN or RST leaves the host; the link is
    /// restored afterwards (a later power-on boots normally) and `off` recorded.
    /// [`Lab::power_off`] is the other kind: processes die, their kernel closes their
    /// connections.
    pub fn silent_power_loss(&self, i: usize) -> Result<(), LabError> {
        Ok(power::power_off(
            &self.host(i)?.dir,
            OffHow::PowerLoss,
            None,
        )?)
    }

    /// Makes the WoL listener ignore (`true`) or honour (`false`) magic packets for host
    /// `i`, as a NIC or switch that loses them would. The listener logs each one it
    /// ignores, with the MAC.
    pub fn set_wol_ignored(&self, i: usize, ignored: bool) -> Result<(), LabError> {
        Ok(power::set_wol_ignored(&self.host(i)?.dir, ignored)?)
    }
}
