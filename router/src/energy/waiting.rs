//! Why energy-saving mode is not doing anything right now, in words for
//! `router energy status`: the mode is off, a plan is being carried out, the first round
//! waits for CPU readings, or awake hosts are held by `min_awake_s` (a host that just
//! changed power state is not put back to sleep at once). Pure: the caller passes the
//! clock.

use wisp_planner::PlanPower;

use super::view::{power_state, Observed, Records};

/// What the energy task knows when it publishes its status.
#[derive(Debug, Clone, Copy)]
pub struct WaitInput<'a> {
    pub obs: &'a Observed,
    pub rec: &'a Records,
    pub min_awake_s: f64,
    /// Task clock, seconds.
    pub now_s: f64,
    /// When the next planner round is due (task clock).
    pub next_round_s: f64,
    pub executing: bool,
}

/// One sentence per reason, most important first; empty when nothing holds it back.
pub fn waiting(i: &WaitInput<'_>) -> Vec<String> {
    if !i.obs.energy_mode {
        return vec!["energy-saving mode is off (`router energy on` starts it)".into()];
    }
    let mut out = Vec::new();
    if i.executing {
        out.push("carrying out the last plan".into());
    }
    let next = i.next_round_s - i.now_s;
    if next > 0.5 {
        out.push(format!("next planner round in {next:.0} s"));
    }
    for h in &i.obs.hosts {
        if power_state(h) != PlanPower::On {
            continue;
        }
        let Some((PlanPower::On, since)) = i.rec.power.get(&h.id) else {
            continue;
        };
        let awake = (i.now_s - since).max(0.0);
        if awake < i.min_awake_s {
            out.push(format!(
                "{} awake for {awake:.0} s of min_awake_s {:.0}: it may not be put to sleep before",
                h.id, i.min_awake_s
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use wisp_common::HostId;

    use super::*;
    use crate::energy::view::ObservedHost;
    use crate::model::host::HostStatus;

    fn host(name: &str, status: HostStatus) -> ObservedHost {
        ObservedHost {
            id: HostId::new(name).unwrap(),
            status,
            linked: status == HostStatus::Up,
            maintenance: false,
            standby: status == HostStatus::Standby,
            quarantined: false,
            cpus: Some(2),
            cpu_percent: Some(1.0),
            vcpus: 8,
            mem_mib: 1024,
            vms: Vec::new(),
            depth: None,
            can_ram: true,
            expected_wake_ms: None,
        }
    }

    #[test]
    fn says_which_host_min_awake_holds_and_for_how_long() {
        let obs = Observed {
            energy_mode: true,
            hosts: vec![host("h1", HostStatus::Up), host("h2", HostStatus::Standby)],
            ..Observed::default()
        };
        let mut rec = Records::default();
        rec.update(&obs, 100.0);
        let i = WaitInput {
            obs: &obs,
            rec: &rec,
            min_awake_s: 900.0,
            now_s: 140.0,
            next_round_s: 150.0,
            executing: false,
        };
        let w = waiting(&i);
        assert_eq!(
            w,
            vec![
                "next planner round in 10 s".to_owned(),
                "h1 awake for 40 s of min_awake_s 900: it may not be put to sleep before"
                    .to_owned(),
            ]
        );
        // Past min_awake_s and at the round: nothing holds it.
        let i = WaitInput {
            now_s: 1000.0,
            next_round_s: 1000.0,
            ..i
        };
        assert!(waiting(&i).is_empty(), "{:?}", waiting(&i));
    }

    #[test]
    fn mode_off_is_the_only_reason_when_off() {
        let obs = Observed {
            energy_mode: false,
            hosts: vec![host("h1", HostStatus::Up)],
            ..Observed::default()
        };
        let rec = Records::default();
        let w = waiting(&WaitInput {
            obs: &obs,
            rec: &rec,
            min_awake_s: 900.0,
            now_s: 0.0,
            next_round_s: 30.0,
            executing: true,
        });
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("energy-saving mode is off"), "{w:?}");
    }
}
