//! Held-out synthetic days made from real traces, deterministically from a seed.
//!
//! A policy tuned on the days it is judged on says little about the next day. These days
//! are built from a pool of real VM traces (e.g. all PlanetLab days together) so that the
//! planner can be chosen on days it was not tuned on:
//! * a VM count drawn in `vms` (e.g. 800–1100);
//! * each VM a pool trace drawn with replacement (so VMs of different days mix);
//! * one circular time shift for the whole day (the day starts at another hour) plus a
//!   per-VM jitter of up to `±jitter` samples drawn per day from {0, 3, 12, 48}: from
//!   "all VMs keep their daily rhythm together" to "rhythms smeared out";
//! * a load scale per day in [0.9, 1.2] (values clamped to 0–99, as in the real files);
//! * VM types by block of the (shuffled) file order, as for a real day.
//!
//! Nothing here reads files: the caller gives the pool.

use crate::trace::Workload;

/// SplitMix64: small, seedable, good enough to draw traces; no dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How one synthetic day was drawn (for the report).
#[derive(Debug, Clone, PartialEq)]
pub struct SynthDay {
    pub seed: u64,
    pub vms: usize,
    pub shift: usize,
    pub jitter: usize,
    pub scale: f64,
    pub workload: Workload,
}

/// One synthetic day of `len` samples from `pool` (traces of at least `len` samples),
/// with a VM count in `vms` (inclusive). Same seed and pool, same day.
pub fn synth_day(pool: &[Vec<f64>], len: usize, vms: (usize, usize), seed: u64) -> SynthDay {
    assert!(!pool.is_empty(), "synth_day needs a non-empty trace pool");
    assert!(
        pool.iter().all(|t| t.len() >= len) && len > 0,
        "every pool trace needs at least {len} samples"
    );
    let mut rng = Rng::new(seed);
    let (lo, hi) = (vms.0.min(vms.1), vms.0.max(vms.1));
    let n = lo + rng.below((hi - lo + 1) as u64) as usize;
    let shift = rng.below(len as u64) as usize;
    let jitter = [0usize, 3, 12, 48][rng.below(4) as usize];
    let scale = 0.9 + 0.3 * rng.unit();
    let samples = (0..n)
        .map(|_| {
            let src = &pool[rng.below(pool.len() as u64) as usize][..len];
            let j = if jitter == 0 {
                0
            } else {
                rng.below(2 * jitter as u64 + 1) as usize
            };
            // shift + j − jitter, kept non-negative modulo len.
            let off = (shift + j + len - jitter % len) % len;
            (0..len)
                .map(|t| (src[(t + off) % len] * scale).round().clamp(0.0, 99.0))
                .collect()
        })
        .collect();
    SynthDay {
        seed,
        vms: n,
        shift,
        jitter,
        scale,
        workload: Workload::from_samples(samples),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Vec<Vec<f64>> {
        (0..20)
            .map(|i| (0..10).map(|t| ((i * 7 + t * 3) % 100) as f64).collect())
            .collect()
    }

    #[test]
    fn deterministic_and_in_range() {
        let a = synth_day(&pool(), 10, (5, 9), 42);
        let b = synth_day(&pool(), 10, (5, 9), 42);
        assert_eq!(a, b);
        assert!((5..=9).contains(&a.vms));
        assert_eq!(a.workload.samples.len(), a.vms);
        assert_eq!(a.workload.len(), 10);
        assert!(a
            .workload
            .samples
            .iter()
            .flatten()
            .all(|&x| (0.0..=99.0).contains(&x) && x.fract() == 0.0));
        let c = synth_day(&pool(), 10, (5, 9), 43);
        assert_ne!(a.workload, c.workload);
    }

    #[test]
    fn rows_are_shifted_and_scaled_pool_rows() {
        let p = pool();
        let d = synth_day(&p, 10, (3, 3), 7);
        for row in &d.workload.samples {
            let found = p.iter().any(|src| {
                (0..10).any(|off| {
                    (0..10).all(|t| {
                        let want = (src[(t + off) % 10] * d.scale).round().clamp(0.0, 99.0);
                        row[t] == want
                    })
                })
            });
            assert!(found, "row {row:?} is no shifted, scaled pool trace");
        }
    }
}
