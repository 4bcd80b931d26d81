//! Policy exploration on the PlanetLab days: `cargo run --release --example tune -p wisp-sim`
//! with policy knobs in environment variables (TARGET, LOWER, UPPER, K, WINDOW, FREEZE,
//! EVAC, MK, SPREAD, CSPREAD, SQUEEZE, EFF = prefer efficient hosts, LEFF). Prints one line
//! per day on the real days (to explore; the default is chosen on held-out days with
//! `examples/heldout.rs`, not with this). WISP_TRACES names the directory
//! holding `planetlab/<day>/` (sim/README.md says where the traces come from).

use std::path::PathBuf;

use wisp_sim::{baseline, load_planetlab_day, simulate, Scenario};

fn env(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let Some(traces) = std::env::var_os("WISP_TRACES") else {
        eprintln!(
            "error: set WISP_TRACES to the directory holding planetlab/<day>/ (see sim/README.md)"
        );
        std::process::exit(1);
    };
    let root = PathBuf::from(traces).join("planetlab");
    let sc = if std::env::var("REALISTIC").is_ok() {
        Scenario::realistic()
    } else {
        Scenario::cloudsim()
    };
    let mut p = sc.default_policy();
    p.reserve_hosts = env("RESERVE", p.reserve_hosts as f64) as u32;
    p.target = env("TARGET", p.target);
    p.lower = env("LOWER", p.lower);
    p.lower_mean = env("LMEAN", p.lower_mean);
    p.min_awake_s = env("AWAKE", p.min_awake_s);
    p.move_k_stddev = env("MK", p.move_k_stddev);
    p.max_consolidation_migrations = env("CBUDGET", p.max_consolidation_migrations as f64) as usize;
    p.upper = env("UPPER", p.upper);
    p.prediction.k_stddev = env("K", p.prediction.k_stddev);
    p.prediction.window = env("WINDOW", p.prediction.window as f64) as usize;
    p.min_vm_move_interval_s = env("FREEZE", p.min_vm_move_interval_s);
    p.max_evacuation_vms = env("EVAC", p.max_evacuation_vms as f64) as usize;
    p.spread = env("SPREAD", 1.0) > 0.5;
    p.spread_consolidation = env("CSPREAD", 0.0) > 0.5;
    p.squeeze_before_wake = env("SQUEEZE", 1.0) > 0.5;
    p.prefer_efficient_hosts = env("EFF", 1.0) > 0.5;
    p.lower_less_efficient = env("LEFF", p.lower_less_efficient);
    for (day, _) in baseline::BOUNDS_KWH {
        let w = load_planetlab_day(&root.join(day)).expect("traces");
        let r = simulate(&w, &sc, &p);
        if std::env::var("SERIES").is_ok() {
            for c in r.series.chunks(12) {
                let n = c.len() as f64;
                eprintln!(
                    "h {:>4.1} active {:>5.1} ideal {:>5.1} mig {:>4} W/host {:>5.1}",
                    c[0].t_s / 3600.0,
                    c.iter().map(|x| x.hosts_active as f64).sum::<f64>() / n,
                    c.iter().map(|x| x.demand_mips / 5320.0).sum::<f64>() / n,
                    c.iter().map(|x| x.migrations).sum::<usize>(),
                    c.iter()
                        .map(|x| x.power_w / x.hosts_active.max(1) as f64)
                        .sum::<f64>()
                        / n,
                );
            }
        }
        let lr = baseline::for_day(day)[0];
        let first: usize = r.series.iter().take(2).map(|s| s.migrations).sum();
        println!(
            "{day}: wakes {} sleeps {} E {:.2} ({:.3}x) mig {} ({:.3}x, first 2 steps {}, overload {}) SLAV {:.5}% ({:.2}x) SLATAH {:.2}% PDM {:.3}% active {:.1} unserved {:.2}%",
            r.wakes,
            r.sleeps,
            r.energy_kwh,
            r.energy_kwh / lr.energy_kwh,
            r.migrations,
            r.migrations as f64 / lr.migrations as f64,
            first,
            r.overload_migrations,
            r.slav * 100.0,
            r.slav * 100.0 / lr.slav_pct,
            r.slatah * 100.0,
            r.pdm * 100.0,
            r.mean_active_hosts,
            r.unserved * 100.0
        );
    }
}
