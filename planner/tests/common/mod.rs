//! Shared test helpers: a seeded random generator and random clusters.
#![allow(dead_code)]

use wisp_planner::{ClusterView, HostIx, PlanHost, PlanPower, PlanVm, PowerModel};

/// SplitMix64: tiny, seeded, good enough to explore cluster shapes reproducibly.
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
    /// Uniform in 0..n.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

/// A random cluster: mixed host sizes and power states, VMs placed where they fit in
/// memory (some hosts start overloaded in CPU), a few VMs unplaced, some moved recently,
/// some allowed on only some hosts.
pub fn random_cluster(rng: &mut Rng) -> ClusterView {
    let now = 100_000.0;
    let nh = 2 + rng.below(25) as usize;
    let mut hosts = Vec::with_capacity(nh);
    for _ in 0..nh {
        let power = match rng.below(20) {
            0..=12 => PlanPower::On,
            13..=16 => PlanPower::Asleep,
            17 => PlanPower::Off,
            18 => PlanPower::Waking,
            _ => PlanPower::Unavailable,
        };
        let idle = 50.0 + 50.0 * rng.unit();
        hosts.push(PlanHost {
            cpu: rng.pick(&[1000.0, 2000.0, 4000.0, 5320.0]),
            mem_mb: rng.pick(&[4096, 8192, 16384]),
            power,
            power_model: PowerModel::linear(idle, idle + 20.0 + 100.0 * rng.unit()),
            wake_latency_s: rng.pick(&[0.0, 10.0, 30.0]),
            power_changed_at_s: now - 3600.0 * rng.unit() * 2.0,
        });
    }
    let nv = rng.below(8 * nh as u64) as usize;
    let mut mem_used = vec![0u64; nh];
    let mut vms = Vec::with_capacity(nv);
    for _ in 0..nv {
        let cpu_max: f64 = rng.pick(&[250.0, 500.0, 1000.0, 2000.0]);
        let mem_mb = rng.pick(&[128u64, 512, 1024, 2048]);
        let cpu_now = cpu_max * rng.unit() * rng.unit();
        let hist_len = rng.below(9) as usize;
        let cpu_history = (0..hist_len)
            .map(|_| cpu_max * rng.unit() * rng.unit())
            .collect();
        let mut host = None;
        if rng.below(10) > 0 {
            let h = rng.below(nh as u64) as usize;
            let running = matches!(hosts[h].power, PlanPower::On | PlanPower::Unavailable);
            if running && mem_used[h] + mem_mb <= hosts[h].mem_mb {
                mem_used[h] += mem_mb;
                host = Some(HostIx(h as u32));
            }
        }
        let last_moved_at_s = match rng.below(4) {
            0 => Some(now - 60.0),
            1 => Some(now - 7200.0),
            _ => None,
        };
        // A quarter of the VMs may run only on some hosts (a network or CPU model
        // that the others lack), always including the one they run on.
        let only_on = (rng.below(4) == 0).then(|| {
            (0..nh as u32)
                .filter(|&h| host == Some(HostIx(h)) || rng.below(10) < 6)
                .map(HostIx)
                .collect()
        });
        vms.push(PlanVm {
            mem_mb,
            cpu_max,
            cpu_now,
            cpu_history,
            host,
            last_moved_at_s,
            only_on,
        });
    }
    ClusterView {
        now_s: now,
        hosts,
        vms,
    }
}
