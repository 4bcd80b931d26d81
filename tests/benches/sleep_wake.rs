//! Sleep and wake of a lab host as suspend-to-RAM does it (issue 9): the host's
//! processes freeze with their sockets open, its link goes dark, its BMC says off; a
//! magic packet thaws them. Three figures per cycle, printed next to their goals:
//! - suspend-to-verified: `router suspend h2` until the router has verified it (the
//!   genie acknowledged, the host went silent, the BMC said off), from the CLI's own
//!   `elapsed_ms`;
//! - resume-to-heard: `etherwake` from the core namespace (not the router: the host
//!   wakes by itself as far as the router knows) until the router hears the genie
//!   again (the first `genie_connected`/`host_up` event of h2 after the packet; the
//!   router's event clock and the bench's are the same wall clock). Goal ≤ 1 s;
//! - wake-to-placed: `router wake h2` then `router vm create ... --host h2` until the
//!   create returns with the VM running there.
//!
//! Run: `cargo build --workspace --bins && cargo bench -p wisp-tests --bench
//! sleep_wake` (as root). `WISP_SLEEP_RUNS=N` changes the count (default 5).
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use wisp_common::time::unix_ms;
use wisp_tests::bench::stats;
use wisp_tests::lab::{poll, Lab, LabSpec, Power, WAIT};

const DEFAULT_RUNS: usize = 5;

/// `router suspend h2 --json`; waits for the lab to show it frozen. Returns the
/// router's verified time.
fn suspend(lab: &Lab) -> u64 {
    let out = lab.router_ok(&["suspend", "h2", "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(lab.host_state("h2"), "standby");
    poll(WAIT, "h2 frozen", |_| {
        (lab.power_state(2).ok()? == Power::Suspended && lab.is_frozen(2).ok()?).then_some(())
    })
    .unwrap();
    v["elapsed_ms"].as_u64().unwrap()
}

fn main() {
    let runs: usize = std::env::var("WISP_SLEEP_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_RUNS);
    let lab = Lab::start(LabSpec {
        hosts: 2,
        ..LabSpec::default().bench_bins()
    })
    .unwrap();
    lab.wait_all_up().unwrap();
    let guest = lab.guest_elf().to_owned();
    let (mut verified, mut heard, mut placed) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=runs {
        // 1 and 2: suspend, then a magic packet from outside the router.
        let v = suspend(&lab);
        let t0 = unix_ms();
        lab.wake_host_by_wol(2).unwrap();
        let at = poll(WAIT, "the router to hear h2 again", |last| {
            let evs = lab.events_json(500).ok()?;
            *last = format!("{} events", evs.len());
            evs.iter()
                .find(|e| {
                    e.at_ms >= t0
                        && e.host.as_deref() == Some("h2")
                        && matches!(e.kind.as_str(), "genie_connected" | "host_up")
                })
                .map(|e| e.at_ms)
        })
        .unwrap();
        poll(WAIT, "h2 up", |_| {
            (lab.host_state("h2") == "up").then_some(())
        })
        .unwrap();
        let h = at.saturating_sub(t0);

        // 3: asleep again; the router wakes it and a VM is placed there.
        suspend(&lab);
        let t1 = Instant::now();
        lab.router_ok(&["wake", "h2"]).unwrap();
        let vm = format!("vm{run}");
        lab.vm_create(&vm, 64, &guest, Some("h2")).unwrap();
        let p = t1.elapsed().as_millis() as u64;
        // A VM must be stopped before it is deleted; the host is then empty again.
        lab.router_ok(&["vm", "stop", &vm]).unwrap();
        lab.router_ok(&["vm", "delete", &vm]).unwrap();
        println!(
            "run {run}: suspend verified in {v} ms; resume to heard {h} ms; wake to VM placed {p} ms"
        );
        verified.push(v);
        heard.push(h);
        placed.push(p);
    }
    println!();
    println!("suspend-to-RAM of a lab host (frozen processes, dark link, BMC off), 2-host lab:");
    stats(
        "suspend-to-verified",
        verified,
        "(ack, then silence for suspect_after_ms = 600, then the BMC)",
    );
    stats("resume-to-heard", heard, "(goal: <= 1000 ms)");
    stats(
        "wake-to-placed",
        placed,
        "(router wake + vm create on the woken host)",
    );
}
