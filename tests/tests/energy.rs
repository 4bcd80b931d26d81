//! End-to-end test of energy-saving mode on the lab (issue 6): real genies, qemu,
//! ipmi_sim BMCs and Wake-on-LAN.
//!
//! Cycle: three hosts, one idle VM on each; `router energy on` → the VMs are packed
//! by live migration and an emptied host is asleep (the lab's power state, which the
//! BMC reports as off, says "suspended"; its processes are frozen); then a new VM takes part of the
//! room the reserve kept → the reserve is short → the sleeping host is woken by
//! Wake-on-LAN (verified by its genie registering) and is up again. Every guest's
//! counter keeps going up across all of it: no VM was restarted.
//!
//! Needs `cargo build -p router -p genie -p wisp-tests --bins` first, root, ip,
//! ipmi_sim, ipmitool and qemu; fails loudly without them.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use wisp_tests::lab::{poll, Lab, LabSpec, Power, WAIT};

/// The planner runs every 2 s here (30 s in production); a VM may move again after
/// 5 s, a host may sleep right after it changed state.
const ENERGY: &str = "[energy]
enabled = false
interval_s = 2
min_awake_s = 0
min_vm_move_interval_s = 5
wake_latency_s = 5
";

/// Generous on a loaded 2-core machine: the goal is a minute.
const CYCLE: Duration = Duration::from_secs(120);

/// A lab of `hosts` hosts with the Wake-on-LAN listener, guest counters read over the
/// witness QMP socket, and a fixed capacity of 4 vCPUs and 256 MiB per host (every
/// lab host sees the whole machine otherwise); returns once every host is up with
/// metrics.
fn lab_of_256_mib_hosts(hosts: usize, router_extra_toml: &str) -> Lab {
    let mut lab = Lab::start_with_witness(LabSpec {
        hosts,
        wol_listener: true,
        router_extra_toml: router_extra_toml.to_owned(),
        ..LabSpec::default()
    })
    .unwrap();
    lab.set_host_capacity(4, 256).unwrap();
    lab.wait_all_up_with_metrics().unwrap();
    lab
}

fn host_index(name: &str) -> usize {
    name.trim_start_matches('h').parse().unwrap()
}

/// Where each VM runs, per `router vms` (running rows only).
fn placement(lab: &Lab) -> BTreeMap<String, String> {
    lab.vms_json()
        .unwrap()
        .into_iter()
        .filter(|r| r.state == "running")
        .filter_map(|r| Some((r.name, r.host?)))
        .collect()
}

/// Reads every VM's guest counter where it runs and checks none went back since
/// `last` (a restarted guest counts from 0).
fn counters_advance(lab: &Lab, last: &mut BTreeMap<String, u32>) {
    for (vm, host) in placement(lab) {
        let Ok(c) = lab.guest_counter(host_index(&host), &vm) else {
            // Mid-migration the qemu may be changing hands; read it next time.
            continue;
        };
        if let Some(prev) = last.get(&vm) {
            assert!(
                c >= *prev,
                "{vm}'s counter went back from {prev} to {c} on {host}: the guest restarted"
            );
        }
        last.insert(vm, c);
    }
}

fn energy_status(lab: &Lab) -> serde_json::Value {
    let out = lab.router_ok(&["energy", "status", "--json"]).unwrap();
    serde_json::from_str(&out).unwrap()
}

#[test]
fn energy_mode_packs_sleeps_and_wakes_without_interrupting_vms() {
    // 256 MiB per host: three 64 MiB VMs fit on one host; the N+1 reserve keeps a
    // host's worth of memory free on the awake hosts.
    let lab = lab_of_256_mib_hosts(3, ENERGY);

    let guest = lab.guest_elf().to_owned();
    for i in 1..=3 {
        let (vm, host) = (format!("vm{i}"), format!("h{i}"));
        lab.vm_create(&vm, 64, &guest, Some(&host)).unwrap();
        lab.wait_counter_above(i, &vm, 0).unwrap();
    }
    let mut counters = BTreeMap::new();
    counters_advance(&lab, &mut counters);
    assert_eq!(counters.len(), 3, "{counters:?}");
    let off = energy_status(&lab);
    assert_eq!(off["enabled"], false, "{off}");

    // 1. Energy mode on: pack and sleep.
    let t_on = Instant::now();
    let on_ms = wisp_common::time::unix_ms();
    let on = lab.router_ok(&["energy", "on"]).unwrap();
    assert!(on.contains("energy mode: on"), "{on}");
    let asleep = poll(CYCLE, "VMs packed and an emptied host asleep", |last| {
        counters_advance(&lab, &mut counters);
        let p = placement(&lab);
        let used: std::collections::BTreeSet<&String> = p.values().collect();
        let sleeping: Vec<usize> = (1..=3)
            .filter(|i| lab.power_state(*i).ok() == Some(Power::Suspended))
            .collect();
        *last = format!("placement {p:?}, suspended hosts {sleeping:?}");
        (p.len() == 3 && used.len() < 3 && !sleeping.is_empty()).then(|| sleeping[0])
    })
    .unwrap();
    let sleeper = format!("h{asleep}");
    eprintln!(
        "packed: {:?}; {sleeper} asleep {} ms after `energy on` (goal: a minute)",
        placement(&lab),
        t_on.elapsed().as_millis()
    );
    // The BMC agrees (a suspended host is off as IPMI sees it) and its processes are frozen.
    let ipmi = lab
        .ipmitool(asleep, &["chassis", "power", "status"])
        .unwrap();
    let ipmi = String::from_utf8_lossy(&ipmi.stdout).into_owned();
    assert!(ipmi.contains("is off"), "ipmitool on {sleeper}: {ipmi}");
    // Suspend-to-RAM froze it: its processes are all stopped, none is gone.
    let frozen_genie = poll(WAIT, "the sleeping host's processes to be frozen", |last| {
        let p = lab.genie_pids(asleep).ok()?;
        *last = format!("genie pids {p:?}");
        (!p.is_empty() && lab.is_frozen(asleep).ok()?).then_some(p)
    })
    .unwrap();
    // The router's energy status catches up once the suspend is verified.
    let st = poll(
        WAIT,
        "`router energy status` to show a host asleep",
        |last| {
            let st = energy_status(&lab);
            *last = st.to_string();
            (st["asleep"].as_u64()? >= 1).then_some(st)
        },
    )
    .unwrap();
    eprintln!("{}", lab.router_ok(&["energy", "status"]).unwrap());
    assert_eq!(st["enabled"], true, "{st}");
    assert!(
        st["watts_now"].as_f64().unwrap() < st["watts_all_on"].as_f64().unwrap(),
        "{st}"
    );
    assert!(st["last"]["reason"].as_str().is_some(), "{st}");
    counters_advance(&lab, &mut counters);

    // 2. Demand rises: a 128 MiB VM on the awake host with the most room. The awake
    // hosts had 320 MiB free (the N+1 reserve wants at least one host's 256); after
    // it 192: the reserve is short and the sleeping host is woken.
    let rows = lab.vms_json().unwrap();
    let spare = (1..=3)
        .map(|i| format!("h{i}"))
        .filter(|h| *h != sleeper)
        .min_by_key(|h| {
            rows.iter()
                .filter(|r| r.host.as_deref() == Some(h.as_str()))
                .map(|r| r.mem_mib.unwrap_or(0))
                .sum::<u64>()
        })
        .unwrap();
    lab.vm_create("big", 128, &guest, Some(&spare)).unwrap();
    let t_big = Instant::now();
    poll(CYCLE, "the sleeping host to be woken and up", |last| {
        counters_advance(&lab, &mut counters);
        let rows = lab.hosts_json().ok()?;
        let row = rows.iter().find(|h| h.name == sleeper)?;
        *last = format!(
            "{sleeper}: {} / lab power {:?}",
            row.state,
            lab.power_state(asleep)
        );
        (row.state == "up" && lab.power_state(asleep).ok() == Some(Power::On)).then_some(())
    })
    .unwrap();
    // Woken by Wake-on-LAN and verified by its genie registering (the power code's
    // event says how).
    // The wake records its verdict once it sees the registration: poll for it.
    let woke = poll(WAIT, "the wake's verdict in `router events`", |last| {
        let evs = lab.events_json(200).ok()?;
        *last = format!("{evs:?}");
        evs.iter()
            .filter(|e| e.host.as_deref() == Some(sleeper.as_str()))
            .map(|e| e.message.clone())
            .find(|m| m.contains("woke by") || m.contains("failed to wake"))
    })
    .unwrap();
    eprintln!(
        "{woke} ({} ms after the big VM was created)",
        t_big.elapsed().as_millis()
    );
    assert!(woke.contains("Wake-on-LAN"), "{woke}");
    // Resumed, not rebooted: the same genie process goes on.
    assert_eq!(
        lab.genie_pids(asleep).unwrap(),
        frozen_genie,
        "the genie of {sleeper} restarted"
    );
    // Asleep on purpose is never a failure: no suspect, unreachable, down or fenced
    // host, and no failover, for the sleeper from `energy on` to now.
    let evs = lab.events_json(1000).unwrap();
    let failed: Vec<&str> = evs
        .iter()
        .filter(|e| e.at_ms >= on_ms && e.host.as_deref() == Some(sleeper.as_str()))
        .filter(|e| {
            matches!(
                e.kind.as_str(),
                "host_suspect" | "host_unreachable" | "host_down" | "host_fenced" | "failover"
            )
        })
        .map(|e| e.message.as_str())
        .collect();
    let story: Vec<String> = evs
        .iter()
        .filter(|e| e.at_ms >= on_ms && e.host.as_deref() == Some(sleeper.as_str()))
        .map(|e| format!("{} {}: {}", e.at_ms, e.kind, e.message))
        .collect();
    assert!(
        failed.is_empty(),
        "{sleeper} was taken for failed: {failed:?}; its events: {story:#?}"
    );
    // Every VM, the new one included, still runs and has kept counting.
    poll(WAIT, "every VM running and counting", |last| {
        counters_advance(&lab, &mut counters);
        let p = placement(&lab);
        *last = format!("{p:?} {counters:?}");
        (p.len() == 4 && counters.len() == 4).then_some(())
    })
    .unwrap();
    eprintln!("{}", lab.router_ok(&["energy", "status"]).unwrap());
}

/// A VM that fits on no awake host wakes a sleeping one (Wake-on-LAN, verified), even
/// with energy mode off: the create is refused with a message naming the host being
/// woken, and succeeds once it is up.
#[test]
fn a_vm_that_does_not_fit_wakes_a_sleeping_host() {
    let lab = lab_of_256_mib_hosts(2, "");
    let guest = lab.guest_elf().to_owned();
    lab.vm_create("small", 64, &guest, Some("h1")).unwrap();
    lab.router_ok(&["suspend", "h2"]).unwrap();
    poll(WAIT, "h2 asleep", |last| {
        let rows = lab.hosts_json().ok()?;
        let h2 = rows.iter().find(|h| h.name == "h2")?;
        *last = format!("{} / lab power {:?}", h2.state, lab.power_state(2));
        (h2.state == "standby" && lab.power_state(2).ok() != Some(Power::On)).then_some(())
    })
    .unwrap();

    // 200 MiB does not fit next to the 64 MiB VM on h1's 256.
    let kernel = guest.to_string_lossy().into_owned();
    let out = lab
        .router_cli(&["vm", "create", "big", "--mem", "200", "--kernel", &kernel])
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "create should be refused for now");
    assert!(err.contains("h2") && err.contains("woken"), "{err}");
    poll(WAIT, "h2 woken and up", |last| {
        let rows = lab.hosts_json().ok()?;
        let h2 = rows.iter().find(|h| h.name == "h2")?;
        *last = h2.state.clone();
        (h2.state == "up" && lab.power_state(2).ok() == Some(Power::On)).then_some(())
    })
    .unwrap();
    // The wake records its verdict once it has seen the registration.
    poll(WAIT, "the wake's verdict naming Wake-on-LAN", |last| {
        let evs = lab.events_json(200).ok()?;
        *last = format!("{evs:?}");
        evs.iter()
            .any(|e| e.host.as_deref() == Some("h2") && e.message.contains("Wake-on-LAN"))
            .then_some(())
    })
    .unwrap();
    lab.vm_create("big", 200, &guest, None).unwrap();
    let rows = lab.vms_json().unwrap();
    let big = rows.iter().find(|r| r.name == "big").unwrap();
    assert_eq!(big.host.as_deref(), Some("h2"), "{rows:?}");
    lab.wait_counter_above(2, "big", 0).unwrap();
}
