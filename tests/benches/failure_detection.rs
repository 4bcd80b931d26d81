//! Benchmarks of the lab and of failure detection, printed next to their goals:
//! - lab setup (3 hosts with BMCs, no router): goal well under 1 s besides ipmi_sim;
//! - a SIGKILLed genie shown `unreachable` by `router hosts`: goal ≤ 1 s;
//! - a cut host link (genie alive, cable pulled) shown `unreachable`: goal ≤ 1 s.
//!
//! Run: `cargo build --workspace --bins && cargo bench -p wisp-tests --bench
//! failure_detection` (as root).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use wisp_tests::lab::{poll, GenieMode, Lab, LabSpec, WAIT};

const ROUNDS: usize = 5;

fn stats(name: &str, goal_ms: u128, mut v: Vec<Duration>) {
    v.sort();
    let ms: Vec<u128> = v.iter().map(Duration::as_millis).collect();
    let median = ms[ms.len() / 2];
    let max = *ms.last().unwrap();
    println!(
        "{name:<44} median {median:>5} ms  max {max:>5} ms  (n={}, goal <= {goal_ms} ms) {}",
        ms.len(),
        if max <= goal_ms { "OK" } else { "MISSED" }
    );
}

fn wait_state(lab: &Lab, host: &str, want: &str) -> Duration {
    let t0 = Instant::now();
    poll(WAIT, &format!("{host} {want}"), |last| {
        let s = lab.host_state(host);
        *last = s.clone();
        (s == want).then_some(())
    })
    .unwrap();
    t0.elapsed()
}

fn main() {
    // Lab setup without router or genie.
    let mut setup = Vec::new();
    for _ in 0..ROUNDS {
        let t0 = Instant::now();
        let lab = Lab::start(LabSpec {
            hosts: 3,
            start_router: false,
            genie: GenieMode::StandIn(vec!["sleep".into(), "infinity".into()]),
            ..LabSpec::default().bench_bins()
        })
        .unwrap();
        setup.push(t0.elapsed());
        drop(lab);
    }
    stats("lab setup, 3 hosts + BMCs + WoL (ready)", 1000, setup);

    // The router's defaults, then a tighter threshold: a cut link is only noticed when
    // reports stop, so it costs `unreachable_after_ms` (router default 1000) plus up to
    // a heartbeat; a killed genie closes its TCP connection and is noticed at once.
    for (label, extra) in [
        ("router defaults", ""),
        ("unreachable_after_ms = 700", "unreachable_after_ms = 700"),
    ] {
        detection(label, extra);
    }
}

fn detection(label: &str, extra: &str) {
    let lab = Lab::start(LabSpec {
        hosts: 3,
        wol_listener: false,
        router_extra_toml: extra.to_owned(),
        ..LabSpec::default().bench_bins()
    })
    .unwrap();
    for h in ["h1", "h2", "h3"] {
        wait_state(&lab, h, "up");
    }
    let mut killed = Vec::new();
    let mut cut = Vec::new();
    for r in 0..ROUNDS {
        let i = 1 + r % 3;
        let name = format!("h{i}");
        lab.kill_genie(i).unwrap();
        killed.push(wait_state(&lab, &name, "unreachable"));
        lab.start_genie(i).unwrap();
        wait_state(&lab, &name, "up");

        lab.cut_host_link(i).unwrap();
        cut.push(wait_state(&lab, &name, "unreachable"));
        lab.restore_host_link(i).unwrap();
        wait_state(&lab, &name, "up");
    }
    println!("[{label}]");
    stats("genie SIGKILL -> `router hosts` unreachable", 1000, killed);
    stats("host link cut -> `router hosts` unreachable", 1000, cut);
}
