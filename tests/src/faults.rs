//! What the fault campaigns (tests/tests/faults.rs, tests/tests/faults_ha.rs) share:
//! the seeded generator that makes a campaign replayable, its parameters from the
//! environment, and the figures it prints (availability from the census samples,
//! failover times).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::lab::Census;

/// A small deterministic generator (xorshift64*): the campaign replays from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (0, which xorshift cannot leave, becomes 1).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }

    /// `base + step · k` ms for a random `k` in `0..steps`.
    pub fn millis(&mut self, base: u64, step: u64, steps: usize) -> Duration {
        Duration::from_millis(base + step * self.below(steps) as u64)
    }
}

/// How many faults and which seed: `WISP_FAULTS` (else `default_faults`) and
/// `WISP_FAULTS_SEED` (or the older `WISP_FAULT_SEED`; else the clock). A value that
/// does not parse is an error naming the variable, not a silent default.
pub fn params(default_faults: usize) -> (usize, u64) {
    let parse = |name: &str| -> Option<u64> {
        std::env::var(name).ok().map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}"))
        })
    };
    let faults = parse("WISP_FAULTS").map_or(default_faults, |n| n as usize);
    let seed = parse("WISP_FAULTS_SEED")
        .or_else(|| parse("WISP_FAULT_SEED"))
        .unwrap_or_else(|| wisp_common::time::unix_ms() | 1);
    (faults, seed)
}

/// VM availability measured from census samples: between two samples, a VM counts as
/// available if the later sample saw it running exactly once.
#[derive(Debug)]
pub struct Availability {
    vms: Vec<String>,
    last: Option<Instant>,
    total: Duration,
    up: BTreeMap<String, Duration>,
}

impl Availability {
    pub fn new(vms: &[&str]) -> Self {
        Availability {
            vms: vms.iter().map(|v| v.to_string()).collect(),
            last: None,
            total: Duration::ZERO,
            up: BTreeMap::new(),
        }
    }

    /// Accounts for the time since the previous sample with what `c` shows.
    pub fn sample(&mut self, c: &Census) {
        let now = Instant::now();
        if let Some(last) = self.last {
            let dt = now - last;
            self.total += dt;
            for vm in &self.vms {
                if c.running_on(vm).len() == 1 {
                    *self.up.entry(vm.clone()).or_default() += dt;
                }
            }
        }
        self.last = Some(now);
    }

    /// One line: the mean availability and each VM's, over the observed time.
    pub fn report(&self) -> String {
        let total = self.total.as_secs_f64().max(1e-9);
        let per: Vec<String> = self
            .vms
            .iter()
            .map(|vm| {
                let up = self.up.get(vm).copied().unwrap_or_default().as_secs_f64();
                format!("{vm} {:.2}%", 100.0 * up / total)
            })
            .collect();
        let mean = self
            .vms
            .iter()
            .map(|vm| self.up.get(vm).copied().unwrap_or_default().as_secs_f64())
            .sum::<f64>()
            / (total * self.vms.len().max(1) as f64);
        format!(
            "availability over {:.0} s: {:.2}% ({})",
            self.total.as_secs_f64(),
            100.0 * mean,
            per.join(", ")
        )
    }
}

/// Durations grouped by kind (e.g. "failover after a silent power loss"), printed as
/// count, min, median and max.
#[derive(Debug, Default)]
pub struct Timings(BTreeMap<String, Vec<Duration>>);

impl Timings {
    pub fn add(&mut self, kind: &str, d: Duration) {
        self.0.entry(kind.to_owned()).or_default().push(d);
    }

    /// One line per kind.
    pub fn report(&self) -> String {
        self.0
            .iter()
            .map(|(kind, ds)| {
                let mut ms: Vec<u128> = ds.iter().map(Duration::as_millis).collect();
                ms.sort_unstable();
                format!(
                    "{kind}: n={} min={} ms median={} ms max={} ms\n",
                    ms.len(),
                    ms[0],
                    ms[ms.len() / 2],
                    ms[ms.len() - 1]
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_replays_from_its_seed_and_stays_in_range() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        let xs: Vec<usize> = (0..50).map(|_| a.below(7)).collect();
        let ys: Vec<usize> = (0..50).map(|_| b.below(7)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|&x| x < 7));
        assert!(xs.iter().any(|&x| x != xs[0]), "{xs:?}");
    }

    #[test]
    fn timings_report_min_median_max() {
        let mut t = Timings::default();
        for ms in [30, 10, 20] {
            t.add("x", Duration::from_millis(ms));
        }
        assert_eq!(t.report(), "x: n=3 min=10 ms median=20 ms max=30 ms\n");
    }
}
