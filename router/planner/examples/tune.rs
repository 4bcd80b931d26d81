//! Policy exploration on the PlanetLab days: `cargo run --release --example tune -p wisp-planner`
//! with policy knobs in environment variables (TARGET, LOWER, UPPER, K, WINDOW, FREEZE,
//! EVAC). Prints one line per day; used to choose `Scenario::default_policy`.

use std::path::PathBuf;

use wisp_planner::sim::{baseline, load_planetlab_day, simulate, Scenario};

fn env(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let root = std::env::var("WISP_TRACES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/traces"))
        .join("planetlab");
    let sc = Scenario::cloudsim();
    let mut p = sc.default_policy();
    p.target = env("TARGET", p.target);
    p.lower = env("LOWER", p.lower);
    p.upper = env("UPPER", p.upper);
    p.prediction.k_stddev = env("K", p.prediction.k_stddev);
    p.prediction.window = env("WINDOW", p.prediction.window as f64) as usize;
    p.min_vm_move_interval_s = env("FREEZE", p.min_vm_move_interval_s);
    p.max_evacuation_vms = env("EVAC", p.max_evacuation_vms as f64) as usize;
    p.spread = env("SPREAD", 1.0) > 0.5;
    for (day, _) in baseline::BOUNDS_KWH {
        let w = load_planetlab_day(&root.join(day)).expect("traces");
        let r = simulate(&w, &sc, &p);
        if std::env::var("SERIES").is_ok() {
            for x in r.series.iter().take(12) {
                eprintln!("t {} active {} on {} mig {} demand {:.0}", x.t_s, x.hosts_active, x.hosts_on, x.migrations, x.demand_mips);
            }
        }
        let lr = baseline::for_day(day)[0];
        let first: usize = r.series.iter().take(2).map(|s| s.migrations).sum();
        println!(
            "{day}: E {:.2} ({:.3}x) mig {} ({:.3}x, first 2 steps {}, overload {}) SLAV {:.5}% ({:.2}x) SLATAH {:.2}% PDM {:.3}% active {:.1} unserved {:.2}%",
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
