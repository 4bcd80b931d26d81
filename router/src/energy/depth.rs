//! How deep each sleeping host sleeps, for the energy task: feeds
//! `wisp_planner::depth::choose` with what the cluster looked like over the last two
//! hours (the peak of demand, the swing in running hosts) and remembers, per sleeping
//! host, since when it has not been counted as needed soon. With `[energy] sleep =
//! "auto"` the executor sleeps hosts at the chosen depth and powers off a suspended
//! host the choice moved to soft-off; `router energy status` shows each choice and why.

use std::collections::{BTreeMap, VecDeque};

use wisp_common::HostId;
use wisp_planner::depth::{choose, DepthHost, DepthInput, SleepDepth};
use wisp_planner::{HostIx, PlanPower, Policy};

use super::view::{Observed, Snapshot};
use crate::api::types::SuspendMode;
use crate::config::energy::EnergyConfig;

/// How far back the peak of demand and the swing in running hosts are looked for.
pub const LOOK_BACK_S: f64 = 7200.0;

/// One host's depth and the sentence that says why.
#[derive(Debug, Clone, PartialEq)]
pub struct Chosen {
    pub depth: SleepDepth,
    pub why: String,
}

/// The energy task's memory for sleep depths.
#[derive(Debug, Default)]
pub struct DepthBook {
    /// (task time, total CPU demand in CPUs, running hosts), oldest first.
    history: VecDeque<(f64, f64, usize)>,
    /// Since when each sleeping host has not been counted as needed soon.
    unneeded_since: BTreeMap<HostId, f64>,
    /// The last choice per host, for the status.
    pub last: BTreeMap<HostId, Chosen>,
}

impl From<SuspendMode> for SleepDepth {
    fn from(m: SuspendMode) -> Self {
        match m {
            SuspendMode::Ram => SleepDepth::Suspend,
            SuspendMode::SoftOff => SleepDepth::Off,
        }
    }
}

impl DepthBook {
    /// Records the demand and running hosts of `snap` (once per planner round).
    pub fn record(&mut self, snap: &Snapshot) {
        let now = snap.view.now_s;
        let demand: f64 = snap.view.vms.iter().map(|v| v.cpu_now).sum();
        let running = snap
            .view
            .hosts
            .iter()
            .filter(|h| h.power == PlanPower::On)
            .count();
        self.history.push_back((now, demand, running));
        while self
            .history
            .front()
            .is_some_and(|(t, _, _)| now - t > LOOK_BACK_S)
        {
            self.history.pop_front();
        }
    }

    /// Chooses the depth of every host asleep in `snap` and of `going` (about to be put
    /// to sleep by this round's plan).
    pub fn choose(
        &mut self,
        snap: &Snapshot,
        obs: &Observed,
        cfg: &EnergyConfig,
        policy: &Policy,
        going: &[HostIx],
    ) -> BTreeMap<HostId, Chosen> {
        let now = snap.view.now_s;
        let mut hosts = Vec::new();
        for (i, h) in snap.view.hosts.iter().enumerate() {
            let ix = HostIx(i as u32);
            let id = snap.host(ix);
            let asleep = h.power == PlanPower::Asleep;
            if !asleep && !going.contains(&ix) {
                self.unneeded_since.remove(id);
                continue;
            }
            let o = obs.hosts.iter().find(|o| &o.id == id);
            // A sleep stored without a depth (an older router) counts as suspended: a
            // power-off of a host that is already off does no harm.
            let current = asleep.then(|| {
                o.and_then(|o| o.depth)
                    .map(SleepDepth::from)
                    .unwrap_or(SleepDepth::Suspend)
            });
            let since = *self.unneeded_since.entry(id.clone()).or_insert(now);
            let draw = cfg.power(id);
            hosts.push(DepthHost {
                host: ix,
                cpu: h.cpu,
                mips_per_watt: h.cpu / draw.max_watts.max(1.0),
                can_suspend: o.is_none_or(|o| o.can_ram),
                // A measured wake of a host asleep in S3 is its S3 wake.
                wake_s3_s: o
                    .filter(|_| current != Some(SleepDepth::Off))
                    .and_then(|o| o.expected_wake_ms)
                    .map(|ms| ms as f64 / 1000.0)
                    .unwrap_or(cfg.wake_latency_s),
                wake_s5_s: cfg.wake_off_s,
                current,
                unneeded_since_s: since,
            });
        }
        let running_cpu = snap
            .view
            .hosts
            .iter()
            .filter(|h| h.power == PlanPower::On)
            .map(|h| h.cpu)
            .sum();
        let peak = self.history.iter().map(|x| x.1).fold(0.0, f64::max);
        let most = self.history.iter().map(|x| x.2).max().unwrap_or(0);
        let fewest = self.history.iter().map(|x| x.2).min().unwrap_or(0);
        let input = DepthInput {
            now_s: now,
            hosts,
            running_cpu,
            recent_peak_demand: peak,
            swing_hosts: most - fewest,
            reserve_hosts: policy.reserve_hosts,
            target: policy.target,
            s3_grace_s: cfg.s3_grace_s,
        };
        let mut out = BTreeMap::new();
        for c in choose(&input) {
            let id = snap.host(c.host).clone();
            if c.needed {
                self.unneeded_since.insert(id.clone(), now);
            }
            out.insert(
                id,
                Chosen {
                    depth: c.depth,
                    why: c.why,
                },
            );
        }
        self.last = out.clone();
        out
    }
}

/// Hosts asleep in S3 that `chosen` moves to S5 (an IPMI power-off of the suspended
/// host does it).
pub fn to_deepen(obs: &Observed, chosen: &BTreeMap<HostId, Chosen>) -> Vec<HostId> {
    obs.hosts
        .iter()
        .filter(|h| super::view::power_state(h) == PlanPower::Asleep)
        .filter(|h| {
            h.depth.map(SleepDepth::from).unwrap_or(SleepDepth::Suspend) == SleepDepth::Suspend
        })
        .filter(|h| {
            chosen
                .get(&h.id)
                .is_some_and(|c| c.depth == SleepDepth::Off)
        })
        .map(|h| h.id.clone())
        .collect()
}
