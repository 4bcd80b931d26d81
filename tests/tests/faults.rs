//! A fault campaign on the lab (issue 10): random faults, one after another, on a
//! 3-host cluster running two VMs, with the real genies, router, ipmi_sim BMCs and qemu.
//! Faults: a host crash (its kernel says goodbye), a silent power loss (nothing does),
//! an isolation (cable cut, host still on, BMC reachable), a killed and restarted
//! genie, a genie frozen for a second or two, and a router restart.
//!
//! The witness is QMP on every host, sampled all the time: no VM ever runs on two hosts;
//! after each fault every VM runs again exactly once; then the fault is repaired (cable
//! back, host powered on over IPMI) and every host is up again before the next one.
//!
//! `WISP_FAULTS` sets the number of faults (20 in the suite; the campaign of the issue
//! is `WISP_FAULTS=100`); `WISP_FAULTS_SEED` the seed (printed, so a failure can be
//! replayed).
//!
//! Needs `cargo build --workspace --bins` first, root, ip, ipmi_sim, ipmitool and qemu;
//! fails loudly without them.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use nix::sys::signal::Signal;
use wisp_tests::faults::{params, Rng};
use wisp_tests::lab::{poll, procs, Census, Lab, LabSpec};

/// Generous on a loaded 2-core machine: never a timing goal.
const RECOVER: Duration = Duration::from_secs(90);

const VMS: [&str; 2] = ["vm1", "vm2"];

#[derive(Debug, Clone, Copy)]
enum Fault {
    Crash,
    SilentPowerLoss,
    Isolation,
    GenieKilled,
    GenieFrozen,
    RouterRestart,
}

const ALL: [Fault; 6] = [
    Fault::Crash,
    Fault::SilentPowerLoss,
    Fault::Isolation,
    Fault::GenieKilled,
    Fault::GenieFrozen,
    Fault::RouterRestart,
];

fn census(lab: &Lab) -> Census {
    lab.census_never_twice()
}

fn log_tail(lab: &Lab) -> String {
    lab.router_log_tail(40)
}

/// Polls the census (never twice, at every sample) until every VM runs once.
fn every_vm_once(lab: &Lab, what: &str) -> Census {
    poll(RECOVER, what, |last| {
        let c = census(lab);
        *last = format!("{:?}", c.seen);
        c.each_once(&VMS).then_some(c)
    })
    .unwrap_or_else(|e| panic!("{e}\nrouter log tail:\n{}", log_tail(lab)))
}

/// Samples the census (never twice) for `d`.
fn watch(lab: &Lab, d: Duration) {
    let end = std::time::Instant::now() + d;
    while std::time::Instant::now() < end {
        census(lab);
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn state(lab: &Lab, host: &str) -> String {
    lab.hosts_json()
        .ok()
        .and_then(|hs| hs.into_iter().find(|h| h.name == host).map(|h| h.state))
        .unwrap_or_default()
}

/// Repairs whatever a fault left: every link back, every host powered on (again and
/// again: the router may still be fencing a host when the repair starts), every host
/// up, and every VM running once.
fn repair(lab: &Lab) {
    for i in 1..=3 {
        lab.restore_host_link(i).unwrap();
    }
    poll(RECOVER, "every host up again", |last| {
        census(lab);
        for i in 1..=3 {
            let out = lab.ipmitool(i, &["chassis", "power", "status"]).ok()?;
            if String::from_utf8_lossy(&out.stdout).contains("is off") {
                let on = lab.ipmitool(i, &["chassis", "power", "on"]).unwrap();
                assert!(on.status.success(), "{on:?}");
            }
        }
        let states: Vec<String> = (1..=3).map(|i| state(lab, &format!("h{i}"))).collect();
        *last = format!("{states:?}");
        states.iter().all(|s| s == "up").then_some(())
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nrouter log tail:\n{}\n{}",
            log_tail(lab),
            lab.genie_log_tails(8)
        )
    });
    every_vm_once(lab, "every VM running once after the repair");
}

fn host_index(name: &str) -> usize {
    name.trim_start_matches('h').parse().unwrap()
}

#[test]
fn random_faults_never_run_a_vm_twice_and_every_vm_comes_back() {
    let (faults, seed) = params(20);
    eprintln!("fault campaign: {faults} faults, WISP_FAULTS_SEED={seed}");
    let mut rng = Rng::new(seed);
    let mut lab = Lab::start_with_witness(LabSpec::vms(3)).unwrap();
    lab.wait_all_up().unwrap();
    lab.create_guest_vm("vm1", 64, Some(1), 0).unwrap();
    lab.create_guest_vm("vm2", 64, Some(2), 0).unwrap();
    every_vm_once(&lab, "both VMs running");

    let mut counts = std::collections::BTreeMap::new();
    for n in 1..=faults {
        let fault = ALL[rng.below(ALL.len())];
        // Mostly a host that runs a VM: that is where a fault can run one twice.
        let c = census(&lab);
        let busy: Vec<usize> = VMS
            .iter()
            .flat_map(|v| c.running_on(v))
            .map(|h| host_index(&h))
            .collect();
        let i = if !busy.is_empty() && rng.below(4) != 0 {
            busy[rng.below(busy.len())]
        } else {
            1 + rng.below(3)
        };
        eprintln!("fault {n}/{faults}: {fault:?} on h{i}");
        *counts.entry(format!("{fault:?}")).or_insert(0usize) += 1;
        match fault {
            Fault::Crash => lab.power_off(i).unwrap(),
            Fault::SilentPowerLoss => lab.silent_power_loss(i).unwrap(),
            Fault::Isolation => {
                lab.cut_host_link(i).unwrap();
                // Cut off for 0.2 to 4 s: a short cut may heal before the router acts;
                // a longer one gets the host powered off over IPMI before its VMs run
                // elsewhere. Either way, never twice.
                watch(
                    &lab,
                    Duration::from_millis(200 + 200 * rng.below(20) as u64),
                );
            }
            Fault::GenieKilled => {
                lab.kill_genie(i).unwrap();
                watch(
                    &lab,
                    Duration::from_millis(300 + 100 * rng.below(20) as u64),
                );
                lab.start_genie(i).unwrap();
            }
            Fault::GenieFrozen => {
                let pids = lab.genie_pids(i).unwrap();
                for &p in &pids {
                    procs::signal(p, Signal::SIGSTOP);
                }
                watch(
                    &lab,
                    Duration::from_millis(1000 + 100 * rng.below(10) as u64),
                );
                for &p in &pids {
                    procs::signal(p, Signal::SIGCONT);
                }
            }
            Fault::RouterRestart => {
                lab.stop_router();
                lab.start_router().unwrap();
            }
        }
        every_vm_once(&lab, "every VM running once after the fault");
        repair(&lab);
    }
    eprintln!("fault campaign done: {faults} faults {counts:?}, never twice");
}
