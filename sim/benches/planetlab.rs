//! The PlanetLab days through `simulate()`, in one run (`cargo bench -p wisp-sim --bench
//! planetlab`, release):
//!
//! 1. The three real days in the CloudSim scenario: our figures next to CloudSim's
//!    baselines, with PASS/MISS per goal against LR-MMT 1.2 — energy ≤ 0.80×,
//!    migrations ≤ 0.15×, SLAV ≤ 0.5×, SLATAH ≤ LR-MMT's — and energy ≤ 1.12× the
//!    published physical bound.
//! 2. Held-out synthetic days (`wisp_sim::synth`, seeds 1–8: VMs drawn with replacement
//!    from all three days, a circular time shift, per-VM jitter, a load scale, 800–1100
//!    VMs). The policies were chosen on other seeds (101–116, `examples/heldout.rs`), never
//!    on these nor on the real days. CloudSim never ran these days, so only the bound goal
//!    is exact; the LR-MMT goals use the proxies of `baseline::heldout_ratios`
//!    (LR-MMT energy ≈ 1.35 × the computed bound, 23.2 migrations per VM, SLATAH 5.86 %,
//!    SLAV 0.00462 %: the strict end of its three real days). Ratios ≤ 1 meet a goal.
//! 3. The realistic scenario per real day with three ways of choosing sleep depth:
//!    always suspend (S3), always soft-off (S5), and chosen per host
//!    (`wisp_planner::depth`).
//!
//! Needs the PlanetLab traces (sim/README.md says where they come from): the directory
//! named by WISP_TRACES, else `../shared/traces` beside the repository (the copy on the
//! project's build machines; benches only, the product never looks there). Fails loudly
//! when they are missing.

use std::path::PathBuf;
use std::time::Instant;

use wisp_planner::Policy;
use wisp_sim::baseline::{self, GOAL_NAMES};
use wisp_sim::{load_planetlab_day, simulate, synth_day, DepthMode, Scenario, Workload};

fn traces_dir() -> PathBuf {
    if let Ok(d) = std::env::var("WISP_TRACES") {
        return PathBuf::from(d);
    }
    // CARGO_MANIFEST_DIR is sim/; the shared copy sits beside the repository.
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces")
}

fn pf(ratio: f64) -> &'static str {
    if ratio <= 1.0 {
        "PASS"
    } else {
        "MISS"
    }
}

fn main() {
    let t_all = Instant::now();
    let root = traces_dir().join("planetlab");
    assert!(
        root.is_dir(),
        "PlanetLab traces not found at {} (set WISP_TRACES to the traces directory)",
        root.display()
    );
    let cloudsim = Scenario::cloudsim();
    let default = cloudsim.default_policy();
    let policies: Vec<(&str, Policy)> = vec![
        ("wisp default", default.clone()),
        // The runner-up of the held-out selection: 2 % planned overloads.
        (
            "wisp upper 1.02",
            Policy {
                upper: 1.02,
                ..default.clone()
            },
        ),
        // The default before the held-out selection (tuned on these three days).
        (
            "wisp previous default",
            Policy {
                lower: 0.72,
                min_vm_move_interval_s: 2400.0,
                move_k_stddev: 1.0,
                relieve_onto_kept: false,
                max_evacuation_vms: 32,
                ..default
            },
        ),
        ("wisp balanced", Policy::planetlab_balanced()),
    ];
    let mut days: Vec<(&str, f64, Workload)> = Vec::new();
    for (day, bound) in baseline::BOUNDS_KWH {
        let w = load_planetlab_day(&root.join(day))
            .unwrap_or_else(|e| panic!("loading day {day}: {e}"));
        days.push((day, bound, w));
    }

    // ---- 1. real days ----
    let mut default_pass = true;
    for (day, bound, w) in &days {
        println!("\n=== day {day}: {} VMs ===", w.samples.len());
        println!(
            "{:<22} {:>10} {:>10} {:>10} {:>9} {:>8} {:>10} {:>7}",
            "policy",
            "energy kWh",
            "migrations",
            "SLAV %",
            "SLATAH %",
            "PDM %",
            "shutdowns",
            "time s"
        );
        for b in baseline::for_day(day) {
            println!(
                "{:<22} {:>10.2} {:>10} {:>10.5} {:>9.2} {:>8.3} {:>10} {:>7}",
                format!("CloudSim {}", b.policy),
                b.energy_kwh,
                b.migrations,
                b.slav_pct,
                b.slatah_pct,
                b.pdm_pct,
                b.host_shutdowns,
                "-"
            );
        }
        let lr = baseline::for_day(day)[0];
        for (label, policy) in &policies {
            let t0 = Instant::now();
            let r = simulate(w, &cloudsim, policy);
            println!(
                "{:<22} {:>10.2} {:>10} {:>10.5} {:>9.2} {:>8.3} {:>10} {:>7.2}",
                label,
                r.energy_kwh,
                r.migrations,
                r.slav * 100.0,
                r.slatah * 100.0,
                r.pdm * 100.0,
                r.host_shutdowns,
                t0.elapsed().as_secs_f64()
            );
            let g = baseline::real_ratios(&lr, *bound, &r);
            if *label == "wisp default" {
                default_pass &= g.iter().all(|&x| x <= 1.0);
            }
            println!(
                "    vs LR-MMT 1.2: energy {:.3}x (<= 0.80) {}, migrations {:.3}x (<= 0.15) {}, SLAV {:.2}x (<= 0.5) {}, SLATAH {:.2} vs {:.2} % {}; energy / bound {:.3} (<= 1.12) {}",
                r.energy_kwh / lr.energy_kwh,
                pf(g[0]),
                r.migrations as f64 / lr.migrations as f64,
                pf(g[1]),
                r.slav * 100.0 / lr.slav_pct,
                pf(g[2]),
                r.slatah * 100.0,
                lr.slatah_pct,
                pf(g[3]),
                r.energy_kwh / bound,
                pf(g[4]),
            );
            println!(
                "    active hosts {:.1}; unserved {:.2} %; {} overload migrations; first 2 rounds {} migrations; bound computed from the traces {:.1} kWh",
                r.mean_active_hosts,
                r.unserved * 100.0,
                r.overload_migrations,
                r.series.iter().take(2).map(|x| x.migrations).sum::<usize>(),
                r.bound_kwh
            );
        }
    }
    println!(
        "\nall goals on all three real days with the default policy (Scenario::cloudsim().default_policy()): {}",
        if default_pass { "PASS" } else { "MISS" }
    );

    // ---- 2. held-out synthetic days ----
    let pool: Vec<Vec<f64>> = days
        .iter()
        .flat_map(|(_, _, w)| w.samples.iter().cloned())
        .collect();
    let synth: Vec<_> = (1..=8)
        .map(|seed| synth_day(&pool, 288, (800, 1100), seed))
        .collect();
    println!("\n=== held-out synthetic days (seeds 1-8; goal ratios, <= 1 meets the goal) ===");
    println!(
        "energy: vs 0.80 x (1.35 x bound) [proxy]; migrations: vs 0.15 x 23.2 per VM [proxy]; SLAV: vs 0.5 x 0.00462 % [proxy]; SLATAH: vs 5.86 % [proxy]; bound: vs 1.12 x bound computed from the day's traces [exact]"
    );
    for (label, policy) in &policies {
        println!("\n{label}:");
        println!(
            "{:>5} {:>5} {:>6} {:>6} {:>6} | {:>7} {:>10} {:>6} {:>7} {:>6} | {:>9} {:>6} {:>8}",
            "seed",
            "VMs",
            "shift",
            "jitter",
            "scale",
            "energy",
            "migrations",
            "SLAV",
            "SLATAH",
            "bound",
            "E/bound",
            "mig/VM",
            "SLATAH %"
        );
        let mut worst = [0.0f64; 5];
        let mut mean = [0.0f64; 5];
        for d in &synth {
            let r = simulate(&d.workload, &cloudsim, policy);
            let g = baseline::heldout_ratios(&r);
            for i in 0..5 {
                worst[i] = worst[i].max(g[i]);
                mean[i] += g[i] / synth.len() as f64;
            }
            println!(
                "{:>5} {:>5} {:>6} {:>6} {:>6.2} | {:>7.3} {:>10.3} {:>6.3} {:>7.3} {:>6.3} | {:>9.3} {:>6.2} {:>8.2}",
                d.seed,
                d.vms,
                d.shift,
                d.jitter,
                d.scale,
                g[0],
                g[1],
                g[2],
                g[3],
                g[4],
                r.energy_kwh / r.bound_kwh,
                r.migrations as f64 / r.vms as f64,
                r.slatah * 100.0
            );
        }
        let row = |name: &str, v: &[f64; 5]| {
            println!(
                "{:>33} | {:>7.3} {:>10.3} {:>6.3} {:>7.3} {:>6.3} | {}",
                name,
                v[0],
                v[1],
                v[2],
                v[3],
                v[4],
                GOAL_NAMES
                    .iter()
                    .zip(v)
                    .map(|(n, x)| format!("{n} {}", pf(*x)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        row("worst", &worst);
        row("mean", &mean);
    }

    // ---- 3. sleep depth in the realistic scenario ----
    println!(
        "\n=== realistic scenario: sleep depth (S3 8 W / 20 s, S5 3 W / 150 s; N+1 reserve) ==="
    );
    println!(
        "{:<9} {:<15} {:>10} {:>11} {:>9} {:>9} {:>10} {:>6} {:>7} {:>7}",
        "day",
        "depth",
        "energy kWh",
        "standby kWh",
        "SLATAH %",
        "SLAV %",
        "unserved %",
        "wakes",
        "S3 avg",
        "S3->S5"
    );
    for (day, _, w) in &days {
        for (label, mode) in [
            ("always S3", DepthMode::AlwaysSuspend),
            ("always S5", DepthMode::AlwaysOff),
            ("chosen per host", DepthMode::PerHost),
        ] {
            let sc = Scenario::realistic_with(mode);
            let r = simulate(w, &sc, &sc.default_policy());
            println!(
                "{:<9} {:<15} {:>10.2} {:>11.2} {:>9.3} {:>9.5} {:>10.3} {:>6} {:>7.1} {:>7}",
                day,
                label,
                r.energy_kwh,
                r.standby_kwh,
                r.slatah * 100.0,
                r.slav * 100.0,
                r.unserved * 100.0,
                r.wakes,
                r.mean_s3_hosts,
                r.deepenings
            );
        }
    }
    println!("\nbench time {:.1} s", t_all.elapsed().as_secs_f64());
}
