//! One energy-mode round without I/O: feed the CPU meter, build the planner's view
//! from a copy of the model, plan. It runs every `interval_s` (30 s) on the daemon's
//! runtime next to the cluster task, so it must stay far below that.
//!
//! Goal: a round for 1,000 hosts / 10,000 VMs under 100 ms (0.3 % of the interval);
//! printed next to the figures. `cargo bench -p router --bench energy_round`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use router::config::energy::EnergyConfig;
use router::energy::view::{build, Observed, ObservedHost, ObservedVm, Records};
use router::model::host::HostStatus;
use wisp_common::{HostId, VmId, VmRunState};

const GOAL: Duration = Duration::from_millis(100);

/// `hosts` 16-CPU hosts, two thirds up, the rest asleep; `per_host` VMs on each
/// running host with demand from a cheap deterministic generator.
fn cluster(hosts: usize, per_host: usize, t: u64) -> Observed {
    let mut obs = Observed {
        energy_mode: true,
        wake_wanted: BTreeSet::new(),
        ..Default::default()
    };
    for i in 0..hosts {
        let id = HostId::new(format!("h{i}")).expect("valid");
        let up = i % 3 != 2;
        let mut vms = Vec::new();
        if up {
            for j in 0..per_host {
                let vm = VmId::new(format!("vm{i}-{j}")).expect("valid");
                // 0.05–0.8 cores, stable per VM.
                let rate = 50 + ((i * 31 + j * 17) % 750) as u64;
                vms.push((vm.clone(), VmRunState::Running, rate * t, 2, 2048));
                obs.vms.push(ObservedVm {
                    id: vm,
                    vcpus: 2,
                    mem_mib: 2048,
                    host: Some(id.clone()),
                    busy: false,
                    only_on: None,
                });
            }
        }
        obs.hosts.push(ObservedHost {
            id,
            status: if up {
                HostStatus::Up
            } else {
                HostStatus::Standby
            },
            linked: up,
            maintenance: false,
            standby: !up,
            quarantined: false,
            cpus: Some(16),
            cpu_percent: Some(30.0),
            vcpus: 64,
            mem_mib: 128 * 1024,
            vms,
            depth: None,
            can_ram: true,
            expected_wake_ms: None,
        });
    }
    obs
}

fn main() {
    // Hosts were first seen at t = 0: with the default 15 min minimum awake time no
    // host could sleep yet and the planner would have nothing to do.
    let cfg = EnergyConfig {
        min_awake_s: Some(0.0),
        ..EnergyConfig::default()
    };
    let policy = cfg.policy();
    println!(
        "energy round (meter update + view + plan), best of 3; goal < {GOAL:?} at 1,000 hosts"
    );
    for (hosts, per_host) in [(100, 15), (1000, 15), (3000, 15)] {
        let mut best = Duration::MAX;
        let mut moves = 0;
        let mut parts = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        for _ in 0..3 {
            let mut rec = Records::default();
            // Warm the meter with two rounds of history.
            for t in [0u64, 30, 60] {
                rec.update(&cluster(hosts, per_host, t), t as f64);
                rec.meter.end_round();
            }
            let obs = cluster(hosts, per_host, 90);
            let t0 = Instant::now();
            rec.update(&obs, 90.0);
            let t1 = Instant::now();
            let snap = build(&obs, &rec, &cfg, 90.0);
            let t2 = Instant::now();
            let p = wisp_planner::plan(&snap.view, &policy);
            let t3 = Instant::now();
            if t3 - t0 < best {
                best = t3 - t0;
                parts = (t1 - t0, t2 - t1, t3 - t2);
                moves = p.migrations.len();
            }
        }
        let vms = hosts / 3 * 2 * per_host;
        println!(
            "{hosts:>5} hosts / {vms:>6} VMs: {:>8.1} ms (meter {:.1}, view {:.1}, plan {:.1}); {moves} moves planned{}",
            best.as_secs_f64() * 1e3,
            parts.0.as_secs_f64() * 1e3,
            parts.1.as_secs_f64() * 1e3,
            parts.2.as_secs_f64() * 1e3,
            if hosts == 1000 {
                if best < GOAL { "  [goal met]" } else { "  [GOAL MISSED]" }
            } else {
                ""
            }
        );
    }
}
