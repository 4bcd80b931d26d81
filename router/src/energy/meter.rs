//! Measurements the energy task keeps between planner runs: each VM's CPU demand in
//! cores (from the growth of its qemu `cpu_time_ms` between reports) and the energy
//! book (estimated watts integrated over time, against "every host on").
//!
//! Pure data with `now` passed in, so it is tested without clocks.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use wisp_common::{HostId, VmId};

use crate::store::StoredBook;

/// Demand samples kept per VM for the planner's prediction (it looks at the last
/// `Policy::prediction.window`, 6 by default).
pub const HISTORY: usize = 32;

/// `cpu_now` is the rate over at least this long: one report period (1 s) of
/// `cpu_time_ms` is too coarse (10 ms ticks) and too noisy to act on.
pub const NOW_WINDOW_S: f64 = 5.0;

#[derive(Debug, Default)]
struct VmCpu {
    /// Where the counter was read: a counter on a new host (or one that went back)
    /// starts again.
    host: Option<HostId>,
    /// (time s, cpu_time_ms) readings of the last `NOW_WINDOW_S` or so.
    recent: VecDeque<(f64, u64)>,
    /// Reading at the last planner round.
    round_mark: Option<(f64, u64)>,
    history: VecDeque<f64>,
}

/// Per-VM CPU demand in cores.
#[derive(Debug, Default)]
pub struct CpuMeter {
    vms: BTreeMap<VmId, VmCpu>,
}

fn rate(a: (f64, u64), b: (f64, u64)) -> Option<f64> {
    let dt = b.0 - a.0;
    (dt > 0.0 && b.1 >= a.1).then(|| (b.1 - a.1) as f64 / 1000.0 / dt)
}

impl CpuMeter {
    /// Records a reading of `vm`'s qemu CPU time on `host` at `now_s`.
    pub fn observe(&mut self, vm: &VmId, host: &HostId, cpu_time_ms: u64, now_s: f64) {
        let e = self.vms.entry(vm.clone()).or_default();
        let restarted = e.recent.back().is_some_and(|&(_, c)| cpu_time_ms < c);
        if e.host.as_ref() != Some(host) || restarted {
            // A migrated or restarted qemu counts from zero again.
            e.host = Some(host.clone());
            e.recent.clear();
            e.round_mark = None;
        }
        e.recent.push_back((now_s, cpu_time_ms));
        while e.recent.len() > 2 && now_s - e.recent[1].0 >= NOW_WINDOW_S {
            e.recent.pop_front();
        }
        if e.round_mark.is_none() {
            e.round_mark = Some((now_s, cpu_time_ms));
        }
    }

    /// Forgets VMs not seen in this round (deleted).
    pub fn retain(&mut self, keep: impl Fn(&VmId) -> bool) {
        self.vms.retain(|k, _| keep(k));
    }

    /// CPU cores `vm` used recently (0 before two readings).
    pub fn now(&self, vm: &VmId) -> f64 {
        self.vms
            .get(vm)
            .and_then(|e| rate(*e.recent.front()?, *e.recent.back()?))
            .unwrap_or(0.0)
    }

    /// Past demand per planner round, oldest first.
    pub fn history(&self, vm: &VmId) -> Vec<f64> {
        self.vms
            .get(vm)
            .map(|e| e.history.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Closes a planner round: each VM's mean demand since the last round joins its
    /// history.
    pub fn end_round(&mut self) {
        for e in self.vms.values_mut() {
            let (Some(mark), Some(&last)) = (e.round_mark, e.recent.back()) else {
                continue;
            };
            if let Some(r) = rate(mark, last) {
                e.history.push_back(r);
                if e.history.len() > HISTORY {
                    e.history.pop_front();
                }
                e.round_mark = Some(last);
            }
        }
    }
}

/// A host's contribution to the power estimate at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostWatts {
    /// Estimated draw now.
    pub actual: f64,
    /// What it would draw if energy saving had not put it to sleep.
    pub all_on: f64,
}

/// Energy integrated since the book was opened (carried over router restarts through
/// [`StoredBook`]), kWh.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EnergyBook {
    pub used_kwh: f64,
    pub all_on_kwh: f64,
    pub since_s: Option<f64>,
    last: Option<(f64, f64, f64)>,
    /// Seconds accounted before this router started.
    carried_s: f64,
}

impl EnergyBook {
    /// Adds the interval since the previous sample at the previous sample's draw
    /// (left Riemann sum), then records the draw now.
    pub fn sample(&mut self, now_s: f64, actual_w: f64, all_on_w: f64) {
        if let Some((t, a, b)) = self.last {
            let h = (now_s - t).max(0.0) / 3600.0;
            self.used_kwh += a * h / 1000.0;
            self.all_on_kwh += b * h / 1000.0;
        } else {
            self.since_s = Some(now_s);
        }
        self.last = Some((now_s, actual_w, all_on_w));
    }

    /// A book that continues `stored` (the time the router was down is not counted:
    /// nobody measured it).
    pub fn resume(stored: StoredBook) -> Self {
        Self {
            used_kwh: stored.used_kwh,
            all_on_kwh: stored.all_on_kwh,
            carried_s: stored.accounted_s,
            ..Self::default()
        }
    }

    /// Seconds the totals cover.
    pub fn accounted_s(&self) -> f64 {
        let here = match (self.since_s, self.last_at()) {
            (Some(s), Some(l)) => l - s,
            _ => 0.0,
        };
        self.carried_s + here
    }

    /// What survives a restart.
    pub fn stored(&self) -> StoredBook {
        StoredBook {
            used_kwh: self.used_kwh,
            all_on_kwh: self.all_on_kwh,
            accounted_s: self.accounted_s(),
        }
    }

    /// Time of the last sample.
    pub fn last_at(&self) -> Option<f64> {
        self.last.map(|l| l.0)
    }

    pub fn saved_kwh(&self) -> f64 {
        (self.all_on_kwh - self.used_kwh).max(0.0)
    }

    /// The draw at the last sample: (actual, all on), watts.
    pub fn watts_now(&self) -> (f64, f64) {
        self.last.map(|(_, a, b)| (a, b)).unwrap_or((0.0, 0.0))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn vm(s: &str) -> VmId {
        VmId::new(s).unwrap()
    }
    fn host(s: &str) -> HostId {
        HostId::new(s).unwrap()
    }

    #[test]
    fn demand_is_cpu_time_growth_in_cores() {
        let mut m = CpuMeter::default();
        let (v, h) = (vm("a"), host("h1"));
        assert_eq!(m.now(&v), 0.0);
        for i in 0..=10 {
            // Half a core: 500 ms of CPU per second.
            m.observe(&v, &h, 1000 + i * 500, i as f64);
        }
        assert!((m.now(&v) - 0.5).abs() < 1e-9, "{}", m.now(&v));
        m.end_round();
        assert_eq!(m.history(&v).len(), 1);
        assert!((m.history(&v)[0] - 0.5).abs() < 1e-9);
        // Moved to another host: the new qemu's counter starts at 0.
        m.observe(&v, &host("h2"), 10, 11.0);
        assert_eq!(m.now(&v), 0.0);
        m.observe(&v, &host("h2"), 2010, 12.0);
        assert!((m.now(&v) - 2.0).abs() < 1e-9);
        // History survives the move.
        assert_eq!(m.history(&v).len(), 1);
    }

    #[test]
    fn book_integrates_and_saves() {
        let mut b = EnergyBook::default();
        b.sample(0.0, 100.0, 300.0);
        b.sample(3600.0, 100.0, 300.0);
        assert!((b.used_kwh - 0.1).abs() < 1e-9);
        assert!((b.all_on_kwh - 0.3).abs() < 1e-9);
        assert!((b.saved_kwh() - 0.2).abs() < 1e-9);
        assert_eq!(b.watts_now(), (100.0, 300.0));
    }
}
