//! The three PlanetLab days through `simulate()`: our figures next to CloudSim's
//! baselines and the physical bound, with PASS/MISS against the goals
//! (energy ≤ 0.85 × LR-MMT 1.2, SLAV ≤ LR-MMT's, migrations ≤ 0.2 × LR-MMT's).
//!
//! Needs the PlanetLab traces (sim/README.md says where they come from): the directory
//! named by WISP_TRACES, else `../shared/traces` beside the repository (the copy on the
//! project's build machines; benches only, the product never looks there). Fails loudly
//! when they are missing.

use std::path::PathBuf;
use std::time::Instant;

use wisp_planner::Policy;
use wisp_sim::{baseline, load_planetlab_day, simulate, Scenario};

fn traces_dir() -> PathBuf {
    if let Ok(d) = std::env::var("WISP_TRACES") {
        return PathBuf::from(d);
    }
    // CARGO_MANIFEST_DIR is sim/; the shared copy sits beside the repository.
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces")
}

fn main() {
    let root = traces_dir().join("planetlab");
    assert!(
        root.is_dir(),
        "PlanetLab traces not found at {} (set WISP_TRACES to the traces directory)",
        root.display()
    );
    let cloudsim = Scenario::cloudsim();
    let realistic = Scenario::realistic();
    // (label, scenario, policy, judged against the goals)
    let runs: Vec<(&str, &Scenario, Policy, bool)> = vec![
        ("wisp default", &cloudsim, cloudsim.default_policy(), true),
        (
            "wisp balanced",
            &cloudsim,
            Policy::planetlab_balanced(),
            true,
        ),
        (
            "wisp energy-first",
            &cloudsim,
            Policy::planetlab_energy_first(),
            true,
        ),
        (
            "wisp few-migrations",
            &cloudsim,
            Policy::planetlab_few_migrations(),
            true,
        ),
        (
            "wisp v1 (old default)",
            &cloudsim,
            Policy::planetlab_v1(),
            true,
        ),
        (
            "wisp realistic",
            &realistic,
            realistic.default_policy(),
            false,
        ),
    ];
    let mut default_pass = true;
    for (day, bound) in baseline::BOUNDS_KWH {
        let w = load_planetlab_day(&root.join(day))
            .unwrap_or_else(|e| panic!("loading day {day}: {e}"));
        println!("\n=== day {day}: {} VMs ===", w.samples.len());
        println!(
            "{:<26} {:>10} {:>10} {:>10} {:>9} {:>8} {:>10} {:>9}",
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
                "{:<26} {:>10.2} {:>10} {:>10.5} {:>9.2} {:>8.3} {:>10} {:>9}",
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
        for (label, sc, policy, judged) in &runs {
            let t0 = Instant::now();
            let r = simulate(&w, sc, policy);
            let secs = t0.elapsed().as_secs_f64();
            println!(
                "{:<26} {:>10.2} {:>10} {:>10.5} {:>9.2} {:>8.3} {:>10} {:>9.2}",
                label,
                r.energy_kwh,
                r.migrations,
                r.slav * 100.0,
                r.slatah * 100.0,
                r.pdm * 100.0,
                r.host_shutdowns,
                secs
            );
            if *judged {
                let e_ratio = r.energy_kwh / lr.energy_kwh;
                let m_ratio = r.migrations as f64 / lr.migrations as f64;
                let slav_ok = r.slav * 100.0 <= lr.slav_pct;
                let e_ok = e_ratio <= 0.85;
                let m_ok = m_ratio <= 0.2;
                if *label == "wisp default" {
                    default_pass &= e_ok && slav_ok && m_ok;
                }
                let pf = |b: bool| if b { "PASS" } else { "MISS" };
                println!(
                    "    vs LR-MMT 1.2: energy {:.3}x (goal <= 0.85) {}, SLAV {:.2}x (goal <= 1) {}, migrations {:.3}x (goal <= 0.2) {}; energy / bound {:.3}; active hosts {:.1}; unserved {:.2} %; first 2 rounds {} migrations",
                    e_ratio,
                    pf(e_ok),
                    r.slav * 100.0 / lr.slav_pct,
                    pf(slav_ok),
                    m_ratio,
                    pf(m_ok),
                    r.energy_kwh / bound,
                    r.mean_active_hosts,
                    r.unserved * 100.0,
                    r.series.iter().take(2).map(|x| x.migrations).sum::<usize>()
                );
            } else {
                println!(
                    "    20 s wake, 8 W standby ({:.1} kWh of it), idle power when empty, N+1 reserve: energy {:.3}x LR-MMT, without standby {:.3}x; active hosts {:.1}; unserved {:.2} %",
                    r.standby_kwh,
                    r.energy_kwh / lr.energy_kwh,
                    (r.energy_kwh - r.standby_kwh) / lr.energy_kwh,
                    r.mean_active_hosts,
                    r.unserved * 100.0
                );
            }
        }
        println!(
            "  physical bound: {bound:.1} kWh (README); {:.1} kWh computed here from the traces with the README's VM types",
            simulate(&w, &cloudsim, &cloudsim.default_policy()).bound_kwh
        );
    }
    println!(
        "\nall goals on all days with the default policy (Scenario::cloudsim().default_policy()): {}",
        if default_pass { "PASS" } else { "MISS" }
    );
}
