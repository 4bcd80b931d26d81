//! Wake times on the lab, per method, at the router's default settings: how long a
//! sleeping host takes to be heard again when woken by Wake-on-LAN, when woken by IPMI
//! power-on, and when its magic packets are lost so the router moves to IPMI once the
//! power proof (`wake_power_proof_ms`, 5000 ms) is overdue. Also the time until the BMC
//! sees chassis power on after each method: the basis of that default.
//!
//! Each run: `router suspend h1`, then `router wake h1 --json`; the figures come from
//! the wake's own outcome (attempt send, power seen, genie heard), which the lab tests
//! check against ipmitool and tcpdump. The lab's WoL listener first honours h1's magic
//! packets, then drops them (`Lab::set_wol_ignored`).
//!
//! Run: `cargo build --workspace --bins && cargo bench -p wisp-tests --bench wake` (as
//! root). `WISP_WAKE_RUNS=N` changes the count (default 3).
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use wisp_tests::bench::stats;
use wisp_tests::lab::bins::bench_bin_dir;
use wisp_tests::lab::{poll, Lab, LabSpec, WAIT};

const DEFAULT_RUNS: usize = 3;

fn cli(lab: &Lab, args: &[&str]) -> String {
    let o = lab.router_cli(args).unwrap();
    assert!(
        o.status.success(),
        "router {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `runs` suspend + wake cycles of h1; the wake outcomes.
fn cycles(lab: &Lab, runs: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for _ in 0..runs {
        poll(WAIT, "h1 up", |last| {
            *last = lab.host_state("h1");
            (*last == "up").then_some(())
        })
        .unwrap();
        cli(lab, &["suspend", "h1"]);
        let w: Value = serde_json::from_str(&cli(lab, &["wake", "h1", "--json"])).unwrap();
        out.push(w);
    }
    out
}

/// `key` of attempt `attempt` where the wake saw it (power is not seen when the genie
/// is heard before the BMC's first answer).
fn seen(ws: &[Value], attempt: usize, key: &str) -> Vec<u64> {
    ws.iter()
        .filter_map(|w| w["attempts"][attempt][key].as_u64())
        .collect()
}

fn field(w: &Value, attempt: usize, key: &str) -> u64 {
    w["attempts"][attempt][key]
        .as_u64()
        .unwrap_or_else(|| panic!("attempt {attempt} has no {key}: {w}"))
}

fn main() {
    let runs = std::env::var("WISP_WAKE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_RUNS);

    let lab = Lab::start(LabSpec {
        hosts: 2,
        wol_listener: true,
        bin_dir: bench_bin_dir(),
        ..LabSpec::default()
    })
    .unwrap();
    let wol = cycles(&lab, runs);
    // From now on the listener drops h1's magic packets, as a lossy switch would.
    lab.set_wol_ignored(1, true).unwrap();
    let lost = cycles(&lab, runs);
    drop(lab);

    for w in &wol {
        assert_eq!(w["method"], "wol", "{w}");
    }
    for w in &lost {
        assert_eq!(w["method"], "ipmi", "{w}");
    }
    println!("wake times on the lab (suspend, then router wake; {runs} runs each)");
    stats(
        "WoL: wake to genie heard",
        wol.iter().map(|w| field(w, 0, "heard_ms")).collect(),
        "",
    );
    stats(
        "WoL: wake to BMC power on",
        seen(&wol, 0, "power_seen_ms"),
        "(basis of wake_power_proof_ms; not seen when the genie answers first)",
    );
    stats(
        "IPMI: power-on to genie heard",
        lost.iter().map(|w| field(w, 1, "heard_ms")).collect(),
        "",
    );
    stats(
        "IPMI: power-on to BMC power on",
        seen(&lost, 1, "power_seen_ms"),
        "(basis of wake_power_proof_ms)",
    );
    stats(
        "lost magic packet: wake to IPMI sent",
        lost.iter().map(|w| field(w, 1, "started_ms")).collect(),
        "(= wake_power_proof_ms + a BMC poll)",
    );
    stats(
        "lost magic packet: wake to host up by IPMI",
        lost.iter()
            .map(|w| w["registered_ms"].as_u64().unwrap())
            .collect(),
        "(goal: far below wake_boot_ms = 180000)",
    );
}
