//! Simulator tests on small synthetic traces: energy and SLA accounting checked against
//! hand-computed values, trace loading from files in CloudSim's format.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use wisp_planner::PowerModel;
use wisp_sim::{
    load_planetlab_day, render_svg, simulate, Accounting, DepthMode, HostType, Scenario, SleepSpec,
    TraceError, VmType, Workload,
};

/// Two identical hosts (1000 MIPS, 100 W idle → 200 W full, linear), one VM type of
/// 1000 MIPS / 100 MB, 300 s steps.
fn tiny(accounting: Accounting) -> Scenario {
    let host = HostType {
        name: "tiny".into(),
        cpu_mips: 1000.0,
        mem_mb: 4096,
        power: PowerModel::linear(100.0, 200.0),
        bw_mbit: 1000.0,
        sleep: SleepSpec::typical_server(),
    };
    Scenario {
        name: "tiny".into(),
        hosts: vec![host.clone(), host],
        vm_types: vec![VmType {
            mips: 1000.0,
            ram_mb: 100,
        }],
        step_s: 300.0,
        migration_degradation: 0.1,
        accounting,
        ram_only_at_placement: true,
    }
}

#[test]
fn cloudsim_energy_matches_hand_computation() {
    // Two VMs packed on one host: demand 600, 900, 600 MIPS at t = 0, 300, 600 (and the
    // repeated last sample, 600, at 900 s). Utilisation .6, .9, .6, .6, power 160, 190,
    // 160, 160 W. Trapezoids: (160+190)/2·300 + (190+160)/2·300 + 160·300 = 153,000 J.
    // The other host carries nothing and so counts as off.
    let w = Workload::from_samples(vec![vec![30.0, 60.0, 30.0], vec![30.0, 30.0, 30.0]]);
    let sc = tiny(Accounting::CloudSim);
    let r = simulate(&w, &sc, &sc.default_policy());
    let expected_kwh = 153_000.0 / 3.6e6;
    assert!(
        (r.energy_kwh - expected_kwh).abs() < 1e-9,
        "energy {} kWh, expected {expected_kwh}",
        r.energy_kwh
    );
    assert_eq!(r.migrations, 0);
    assert_eq!(r.slatah, 0.0);
    assert_eq!(r.pdm, 0.0);
    assert_eq!(r.series.len(), 3);
    assert_eq!(r.series[1].hosts_active, 1);
    assert!((r.series[1].power_w - 175.0).abs() < 1e-9);
    // CloudSim counts the never-used host as one shutdown (it starts "active").
    assert_eq!(r.host_shutdowns, 1);
}

#[test]
fn cloudsim_counts_a_host_at_zero_as_off_and_overload_as_violation() {
    // Two VMs at 0 % for the first interval (their host counts as off: 0 J), then both
    // at 60 %: 1200 MIPS on a 1000 MIPS host.
    let w = Workload::from_samples(vec![vec![0.0, 60.0], vec![0.0, 60.0]]);
    let sc = tiny(Accounting::CloudSim);
    let r = simulate(&w, &sc, &sc.default_policy());
    // t=0: both VMs at 0 on one host (best-fit packing) → first interval 0 J.
    // t=300: 1200 MIPS requested on a 1000 MIPS host → the planner moves one VM (600 MIPS)
    // to the other host, migration 100 MB / 62.5 MB/s = 1.6 s. Host A: 1.6 s at
    // u=1 (overloaded: a violation), then u=.6 until 600 s. Host B: off until the VM
    // arrives at 301.6 s, then u=.6.
    assert_eq!(r.migrations, 1);
    let d = 100.0 / 62.5;
    let host_a = 200.0 * d + 160.0 * (300.0 - d);
    let host_b = 160.0 * (300.0 - d);
    let expected_kwh = (host_a + host_b) / 3.6e6;
    assert!(
        (r.energy_kwh - expected_kwh).abs() < 1e-9,
        "energy {} kWh, expected {expected_kwh}",
        r.energy_kwh
    );
    // Active time: host A 300 s, host B 300 - d; violated: d.
    let slatah = d / (600.0 - d);
    assert!(
        (r.slatah - slatah).abs() < 1e-12,
        "slatah {} vs {slatah}",
        r.slatah
    );
    // PDM: 10 % of 600 MIPS for d seconds over (0 + 1200) MIPS · 300 s requested.
    let pdm = 0.1 * 600.0 * d / (1200.0 * 300.0);
    assert!((r.pdm - pdm).abs() < 1e-12, "pdm {} vs {pdm}", r.pdm);
    assert!((r.slav - slatah * pdm).abs() < 1e-15);
}

#[test]
fn realistic_counts_idle_and_standby_power() {
    // Same two-VM day as the first test, realistic accounting, hosts start on. Without a
    // reserve the empty host sleeps at t=0 and draws 8 W for the 900 s.
    let w = Workload::from_samples(vec![vec![30.0, 60.0, 30.0], vec![30.0, 30.0, 30.0]]);
    let sc = tiny(Accounting::Realistic {
        depth: DepthMode::AlwaysSuspend,
    });
    let mut policy = sc.default_policy();
    policy.reserve_hosts = 0;
    let r = simulate(&w, &sc, &policy);
    let expected_kwh = (153_000.0 + 8.0 * 900.0) / 3.6e6;
    assert!(
        (r.energy_kwh - expected_kwh).abs() < 1e-9,
        "energy {} kWh, expected {expected_kwh}",
        r.energy_kwh
    );
    assert!((r.standby_kwh - 8.0 * 900.0 / 3.6e6).abs() < 1e-12);
    assert_eq!(r.sleeps, 1);
    // With the N+1 reserve the second host must stay up (the first one's loss needs a
    // whole host of room), idling at 100 W: the price of the reserve.
    policy.reserve_hosts = 1;
    let r = simulate(&w, &sc, &policy);
    let expected_kwh = (153_000.0 + 100.0 * 900.0) / 3.6e6;
    assert!(
        (r.energy_kwh - expected_kwh).abs() < 1e-9,
        "{}",
        r.energy_kwh
    );
    assert_eq!(r.sleeps, 0);
    let svg = render_svg(&r);
    assert!(
        svg.starts_with("<svg") && svg.contains("polyline") && svg.trim_end().ends_with("</svg>")
    );
}

#[test]
fn standby_power_follows_the_sleep_depth() {
    // The same day as above without a reserve: the empty host sleeps the whole 900 s, in
    // S3 (8 W), in S5 (3 W), or as the depth policy chooses: nothing is needed soon (no
    // reserve, no swing, demand far below the running host), so it powers off at once.
    let w = Workload::from_samples(vec![vec![30.0, 60.0, 30.0], vec![30.0, 30.0, 30.0]]);
    for (mode, watts, s3_hosts) in [
        (DepthMode::AlwaysSuspend, 8.0, 1.0),
        (DepthMode::AlwaysOff, 3.0, 0.0),
        (DepthMode::PerHost, 3.0, 0.0),
    ] {
        let sc = tiny(Accounting::Realistic { depth: mode });
        let mut policy = sc.default_policy();
        policy.reserve_hosts = 0;
        let r = simulate(&w, &sc, &policy);
        let want = watts * 900.0 / 3.6e6;
        assert!(
            (r.standby_kwh - want).abs() < 1e-12,
            "{mode:?}: standby {} kWh, want {want}",
            r.standby_kwh
        );
        assert!((r.energy_kwh - (153_000.0 / 3.6e6 + want)).abs() < 1e-9);
        assert_eq!(r.mean_s3_hosts, s3_hosts, "{mode:?}");
        assert_eq!(r.deepenings, 0, "{mode:?}");
    }
    // With a host that cannot suspend, "always suspend" still sleeps it in S5.
    let mut sc = tiny(Accounting::Realistic {
        depth: DepthMode::AlwaysSuspend,
    });
    for h in &mut sc.hosts {
        h.sleep.s3 = None;
    }
    let mut policy = sc.default_policy();
    policy.reserve_hosts = 0;
    let r = simulate(&w, &sc, &policy);
    assert!((r.standby_kwh - 3.0 * 900.0 / 3.6e6).abs() < 1e-12);
    assert_eq!(r.mean_s3_hosts, 0.0);
}

#[test]
fn a_vm_waiting_for_a_host_waits_its_wake_time() {
    // One VM at 60 % then 100 % of a 1000-MIPS host next to one at 30 %: at t = 300 the
    // host is overloaded (1300 MIPS); the other host sleeps since t = 0, so the moved VM
    // waits for its wake while its source stays overloaded: longer from S5 (150 s) than
    // from S3 (20 s), and so more unserved demand and SLATAH.
    let w = Workload::from_samples(vec![vec![30.0, 100.0, 100.0], vec![30.0, 30.0, 30.0]]);
    let run = |mode| {
        let sc = tiny(Accounting::Realistic { depth: mode });
        let mut policy = sc.default_policy();
        policy.reserve_hosts = 0;
        policy.min_awake_s = 0.0;
        simulate(&w, &sc, &policy)
    };
    let (s3, s5) = (run(DepthMode::AlwaysSuspend), run(DepthMode::AlwaysOff));
    assert_eq!((s3.wakes, s5.wakes), (1, 1));
    assert!(
        s5.unserved > s3.unserved,
        "{} vs {}",
        s5.unserved,
        s3.unserved
    );
    assert!(s5.slatah > s3.slatah, "{} vs {}", s5.slatah, s3.slatah);
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "wisp-sim-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn loads_traces_in_sorted_order_and_rejects_bad_lines() {
    let dir = TempDir::new("traces");
    std::fs::write(dir.0.join("b_host"), "10\n20\n30\n").unwrap();
    std::fs::write(dir.0.join("a_host"), "1\n2\n3\n").unwrap();
    let w = load_planetlab_day(&dir.0).unwrap();
    assert_eq!(w.names, vec!["a_host", "b_host"]);
    assert_eq!(w.samples[0], vec![1.0, 2.0, 3.0]);
    assert_eq!(w.len(), 3);

    std::fs::write(dir.0.join("c_host"), "5\nlots\n").unwrap();
    match load_planetlab_day(&dir.0) {
        Err(TraceError::BadSample { line, text, .. }) => {
            assert_eq!(line, 2);
            assert_eq!(text, "lots");
        }
        other => panic!("expected BadSample, got {other:?}"),
    }
    let empty = TempDir::new("empty");
    assert!(matches!(
        load_planetlab_day(&empty.0),
        Err(TraceError::Empty { .. })
    ));
    assert!(matches!(
        load_planetlab_day(&empty.0.join("missing")),
        Err(TraceError::ReadDir { .. })
    ));
}

#[test]
fn synthetic_day_in_planetlab_format_runs_both_scenarios() {
    // 200 VMs × 288 samples of a bursty diurnal pattern, written and read back as files.
    let dir = TempDir::new("day");
    let mut seed = 42u64;
    for v in 0..200 {
        let mut text = String::new();
        for k in 0..288 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = (seed >> 33) % 20;
            let diurnal = 10.0 + 8.0 * ((k as f64 / 288.0) * std::f64::consts::TAU).sin();
            text.push_str(&format!("{}\n", (diurnal as u64 + noise).min(99)));
        }
        std::fs::write(dir.0.join(format!("vm{v:04}")), text).unwrap();
    }
    let w = load_planetlab_day(&dir.0).unwrap();
    for sc in [Scenario::cloudsim(), Scenario::realistic()] {
        let r = simulate(&w, &sc, &sc.default_policy());
        assert_eq!(r.series.len(), 288);
        assert!(r.energy_kwh > 0.0);
        // Nothing serves the demand below the physical bound.
        assert!(r.energy_kwh >= r.bound_kwh * 0.95, "{r}");
        assert!(r.mean_active_hosts < 100.0, "consolidates: {r}");
        let table = r.to_string();
        assert!(table.contains("energy") && table.contains("SLATAH"));
    }
}
