//! The high-availability fault matrix (issue 5) on the lab, with the real genie,
//! router, ipmi_sim BMCs and qemu: a crashed host, a killed genie, a host cut off with
//! and without its BMC, the router cut off from the hosts, the router restarted in the
//! middle of a failover, two hosts of four failing together, a repaired host
//! rejoining, maintenance mode and the SLA figures.
//!
//! In every case the witness is QMP on every host (a second QMP socket the lab adds to
//! every qemu, see `lab/witness.rs`), not the router: at every sample no VM runs on two
//! hosts, and at the end every VM runs exactly once.
//!
//! Needs `cargo build -p genie -p router -p wisp-tests --bins` first, root, ip,
//! ipmi_sim, ipmitool and qemu; fails loudly without them.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use wisp_common::time::unix_ms;
use wisp_tests::lab::{poll, procs, Census, EventRow, HostRow, Lab, LabSpec, WAIT};

/// Failovers wait for detection, a BMC round trip and a qemu start on a loaded
/// machine; leases add their own time. Generous, never a timing goal.
const FAILOVER_WAIT: Duration = Duration::from_secs(60);

fn lab(hosts: usize, extra: &str) -> Lab {
    let lab = Lab::start_with_witness(LabSpec::vms(hosts).router_toml(extra)).unwrap();
    lab.wait_all_up().unwrap();
    lab
}

fn hosts(lab: &Lab) -> Vec<HostRow> {
    lab.hosts_json().unwrap()
}

fn state(lab: &Lab, name: &str) -> String {
    hosts(lab)
        .into_iter()
        .find(|h| h.name == name)
        .map(|h| h.state)
        .unwrap_or_else(|| panic!("{name} missing from `router hosts`"))
}

fn wait_state(lab: &Lab, name: &str, want: &str, timeout: Duration) {
    poll(timeout, &format!("{name} to be {want}"), |last| {
        let s = state(lab, name);
        *last = s.clone();
        (s == want).then_some(())
    })
    .unwrap();
}

/// Takes a census, failing the test at once if any VM runs on two hosts.
fn census(lab: &Lab) -> Census {
    lab.census_never_twice()
}

/// Polls the census (checking "never twice" at every sample) until `ok` holds.
fn wait_census(lab: &Lab, timeout: Duration, what: &str, ok: impl Fn(&Census) -> bool) -> Census {
    poll(timeout, what, |last| {
        let c = census(lab);
        *last = format!("{:?}", c.seen);
        ok(&c).then_some(c)
    })
    .unwrap_or_else(|e| panic!("{e}\nrouter log tail:\n{}", log_tail(lab)))
}

fn log_tail(lab: &Lab) -> String {
    lab.router_log_tail(40)
}

/// Creates VMs `(name, host index)` and waits until each runs once, where asked.
fn create_all(lab: &Lab, vms: &[(&str, usize)]) -> Census {
    for (name, host) in vms {
        lab.create_guest_vm(name, 64, Some(*host), 0).unwrap();
    }
    let names: Vec<&str> = vms.iter().map(|v| v.0).collect();
    wait_census(lab, WAIT, "every VM running where it was created", |c| {
        c.each_once(&names)
            && vms
                .iter()
                .all(|(n, h)| c.running_on(n) == vec![format!("h{h}")])
    })
}

fn pid_of(c: &Census, vm: &str) -> i32 {
    c.seen
        .iter()
        .find(|s| s.vm == vm && s.status == "running")
        .unwrap_or_else(|| panic!("{vm} not running: {:?}", c.seen))
        .pid
}

fn host_index(name: &str) -> usize {
    name.trim_start_matches('h').parse().unwrap()
}

/// Reads the guest counter of `vm` wherever it runs, twice, and checks it advances.
fn counter_advances(lab: &Lab, c: &Census, vm: &str) -> u32 {
    let on = host_index(&c.running_on(vm)[0]);
    let first = lab.guest_counter(on, vm).unwrap();
    poll(WAIT, &format!("{vm}'s guest counter to advance"), |last| {
        let now = lab.guest_counter(on, vm).unwrap();
        *last = format!("{first} -> {now}");
        (now != first).then_some(now)
    })
    .unwrap()
}

fn events(lab: &Lab) -> Vec<EventRow> {
    lab.events_json(2000).unwrap()
}

/// Events of `kind` (about `host`/`vm` if given) since `since` (Unix ms): the start
/// of a lab has its own (hosts are `down` until the lab powers them on).
fn events_of(
    lab: &Lab,
    since: u64,
    kind: &str,
    host: Option<&str>,
    vm: Option<&str>,
) -> Vec<EventRow> {
    events(lab)
        .into_iter()
        .filter(|e| e.kind == kind && e.at_ms >= since)
        .filter(|e| host.is_none() || e.host.as_deref() == host)
        .filter(|e| vm.is_none() || e.vm.as_deref() == vm)
        .collect()
}

fn chassis_status(lab: &Lab, i: usize) -> String {
    let out = lab.ipmitool(i, &["chassis", "power", "status"]).unwrap();
    assert!(out.status.success(), "ipmitool on BMC {i}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Samples for `d` that the census stays `ok` (and never shows a twin).
fn stays(lab: &Lab, d: Duration, what: &str, ok: impl Fn(&Census) -> bool) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        let c = census(lab);
        assert!(
            ok(&c),
            "{what}: {:?}\nrouter log:\n{}",
            c.seen,
            log_tail(lab)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The scenario of vm1 on h1 and vm2 elsewhere after h1 failed: waits until vm1 runs
/// again on another host, each VM exactly once (never twice at any sample).
fn wait_vm1_failed_over_from_h1(lab: &Lab) -> Census {
    wait_census(lab, FAILOVER_WAIT, "vm1 running again away from h1", |c| {
        c.each_once(&["vm1", "vm2"]) && c.running_on("vm1")[0] != "h1"
    })
}

/// h1 is back after its failover: for 2 s, vm1 and vm2 each run once and nothing
/// runs on h1 (nothing stale came back with it).
fn stays_back_empty(lab: &Lab) {
    stays(lab, Duration::from_secs(2), "h1 back, nothing on it", |c| {
        c.each_once(&["vm1", "vm2"]) && c.on_host("h1").is_empty()
    });
}

/// f64 field of the `router sla --json` row of `vm`.
fn sla_row(sla: &serde_json::Value, vm: &str) -> serde_json::Value {
    sla["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["vm"] == vm)
        .unwrap_or_else(|| panic!("{vm} not in `router sla`: {sla}"))
        .clone()
}

#[test]
fn host_crash_fails_over_then_the_repaired_host_rejoins_clean_and_sla_counts_it() {
    let lab = lab(3, "");
    let before = create_all(&lab, &[("vm1", 1), ("vm2", 2), ("vm3", 3)]);
    let (p2, p3) = (pid_of(&before, "vm2"), pid_of(&before, "vm3"));

    // The BMC's chassis action: every process of h1 dies at once.
    let t0 = unix_ms();
    lab.power_off(1).unwrap();
    let after = wait_census(&lab, FAILOVER_WAIT, "vm1 running again on h2 or h3", |c| {
        c.each_once(&["vm1", "vm2", "vm3"]) && c.running_on("vm1")[0] != "h1"
    });
    wait_state(&lab, "h1", "down", WAIT);
    assert_eq!(pid_of(&after, "vm2"), p2, "vm2 untouched");
    assert_eq!(pid_of(&after, "vm3"), p3, "vm3 untouched");
    assert!(after.on_host("h1").is_empty(), "{:?}", after.seen);
    counter_advances(&lab, &after, "vm1");
    assert!(
        events_of(&lab, t0, "host_fenced", Some("h1"), None).is_empty(),
        "a host its BMC reports off needs no fencing"
    );

    // SLA: the incident of vm1 is counted, the others are at 100 %.
    let sla = poll(WAIT, "the SLA to record vm1's incident as closed", |last| {
        let s = lab.sla_json().unwrap();
        *last = s.to_string();
        let r = sla_row(&s, "vm1");
        (r["incidents_total"].as_u64() >= Some(1)
            && r["down_now"] == false
            && r["downtime_total_s"].as_f64().is_some_and(|d| d > 0.0))
        .then_some(s)
    })
    .unwrap();
    let r1 = sla_row(&sla, "vm1");
    assert!(r1["availability_total"].as_f64().unwrap() < 1.0, "{sla}");
    eprintln!(
        "measured: vm1 downtime {} s in `router sla`",
        r1["downtime_total_s"]
    );
    for vm in ["vm2", "vm3"] {
        let r = sla_row(&sla, vm);
        assert_eq!(r["availability_total"].as_f64(), Some(1.0), "{vm}: {sla}");
        assert_eq!(r["incidents_total"].as_u64(), Some(0), "{vm}: {sla}");
    }
    let text = lab.router_cli(&["sla"]).unwrap();
    assert!(text.status.success(), "{text:?}");

    // Repaired: powered on over IPMI, it rejoins and runs nothing stale.
    let out = lab.ipmitool(1, &["chassis", "power", "on"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    wait_state(&lab, "h1", "up", WAIT);
    stays(
        &lab,
        Duration::from_secs(3),
        "h1 back, every VM once, none on h1",
        |c| c.each_once(&["vm1", "vm2", "vm3"]) && c.on_host("h1").is_empty(),
    );
}

#[test]
fn silent_host_crash_is_detected_by_missed_heartbeats_and_proven_off_by_its_bmc() {
    // A real power loss sends nothing: the bridge port goes down first, so the FIN of
    // the dying host's sockets never reaches the router. The router must notice the
    // silence and take the BMC's "off" as proof, with no power-off of its own.
    let lab = lab(3, "");
    let before = create_all(&lab, &[("vm1", 1), ("vm2", 2)]);
    let t0 = unix_ms();
    lab.cut_host_link(1).unwrap();
    lab.power_off(1).unwrap();
    let after = wait_vm1_failed_over_from_h1(&lab);
    wait_state(&lab, "h1", "down", WAIT);
    assert!(chassis_status(&lab, 1).ends_with("off"));
    // Detected by silence, not by a closed link: a suspect event, or (when a status
    // tick came late on a loaded machine and the age was already past
    // unreachable_after) an unreachable one that says "no reports".
    let suspect = events_of(&lab, t0, "host_suspect", Some("h1"), None);
    let silent = events_of(&lab, t0, "host_unreachable", Some("h1"), None)
        .into_iter()
        .filter(|e| e.message.contains("no reports"))
        .count();
    assert!(
        !suspect.is_empty() || silent > 0,
        "detected by missed heartbeats: {:?}",
        events_of(&lab, t0, "host_unreachable", Some("h1"), None)
    );
    let fenced = events_of(&lab, t0, "host_fenced", Some("h1"), None);
    assert!(fenced.is_empty(), "{fenced:?}");
    assert_eq!(pid_of(&after, "vm2"), pid_of(&before, "vm2"));
    counter_advances(&lab, &after, "vm1");
    // The cable is back and the host repaired: it rejoins empty.
    lab.restore_host_link(1).unwrap();
    assert!(lab
        .ipmitool(1, &["chassis", "power", "on"])
        .unwrap()
        .status
        .success());
    wait_state(&lab, "h1", "up", WAIT);
    stays_back_empty(&lab);
}

#[test]
fn killed_genie_restarted_within_the_grace_fences_nothing() {
    // A grace longer than the default, so a slow restart on a loaded machine still
    // falls inside it: what is tested is that a genie restart is not a host failure.
    let lab = lab(2, "genie_grace_ms = 10000");
    let before = create_all(&lab, &[("vm1", 1), ("vm2", 2)]);
    let t0 = unix_ms();
    lab.kill_genie(1).unwrap();
    wait_state(&lab, "h1", "unreachable", WAIT);
    lab.start_genie(1).unwrap();
    wait_state(&lab, "h1", "up", WAIT);
    assert!(
        unix_ms() - t0 < 10_000,
        "the genie restart took longer than the grace"
    );
    // A census taken while the restarted genie reconnects to vm1's QMP socket may miss
    // vm1 (CI saw `running_on == []` once, likely QMP serving one client at a time).
    // Wait for it; the same-qemu checks below prove nothing was restarted.
    let after = poll(WAIT, "the census to see vm1 running on h1", |last| {
        let c = census(&lab);
        *last = format!("{:?}", c.running_on("vm1"));
        (c.running_on("vm1") == vec!["h1"]).then_some(c)
    })
    .unwrap();
    assert_eq!(after.running_on("vm1"), vec!["h1"]);
    assert_eq!(pid_of(&after, "vm1"), pid_of(&before, "vm1"), "same qemu");
    assert_eq!(pid_of(&after, "vm2"), pid_of(&before, "vm2"), "same qemu");
    assert!(chassis_status(&lab, 1).ends_with("on"));
    for kind in ["host_fenced", "host_down", "failover"] {
        assert!(
            events_of(&lab, t0, kind, Some("h1"), None).is_empty(),
            "{kind}"
        );
    }
    counter_advances(&lab, &after, "vm1");
}

#[test]
fn host_cut_off_with_its_bmc_reachable_is_fenced_over_ipmi_then_its_vm_restarts() {
    let lab = lab(3, "");
    let before = create_all(&lab, &[("vm1", 1), ("vm2", 2)]);
    let t0 = unix_ms();
    lab.cut_host_link(1).unwrap();
    let after = wait_vm1_failed_over_from_h1(&lab);
    wait_state(&lab, "h1", "fenced", WAIT);
    assert!(
        chassis_status(&lab, 1).ends_with("off"),
        "ipmitool confirms the fence"
    );
    assert!(!events_of(&lab, t0, "host_fenced", Some("h1"), None).is_empty());
    assert!(after.on_host("h1").is_empty(), "{:?}", after.seen);
    assert_eq!(pid_of(&after, "vm2"), pid_of(&before, "vm2"));
    counter_advances(&lab, &after, "vm1");
}

#[test]
fn host_cut_off_with_its_bmc_unreachable_restarts_only_after_the_self_fence_lease() {
    let lease_ms = 3000;
    let lab = lab(3, &format!("lease_ms = {lease_ms}"));
    let before = create_all(&lab, &[("vm1", 1), ("vm2", 2)]);
    let old = pid_of(&before, "vm1");
    let genie = lab.genie_pids(1).unwrap();
    lab.cut_bmc(1).unwrap();
    let t_cut = unix_ms();
    lab.cut_host_link(1).unwrap();

    let after = wait_vm1_failed_over_from_h1(&lab);
    // The genie (still alive: the host is on) killed its VMs itself.
    assert!(after.on_host("h1").is_empty(), "{:?}", after.seen);
    assert!(!procs::is_alive(old), "the old qemu of vm1 is dead");
    assert!(
        genie.iter().all(|&p| procs::is_alive(p)),
        "h1's genie still runs: the lease fenced its VMs, nobody powered it off"
    );
    wait_state(&lab, "h1", "fenced", WAIT);
    let restart = events_of(&lab, t_cut, "failover", None, Some("vm1"))
        .into_iter()
        .next()
        .expect("a failover event for vm1");
    let took = restart.at_ms - t_cut;
    eprintln!("measured: vm1 restarted {took} ms after the cut (lease {lease_ms} ms)");
    assert!(
        took >= lease_ms,
        "restarted after {took} ms, before the lease: {restart:?}"
    );
    let fenced = events_of(&lab, t_cut, "host_fenced", Some("h1"), None);
    assert!(
        fenced.iter().any(|e| e.message.contains("lease")),
        "{fenced:?}"
    );
    counter_advances(&lab, &after, "vm1");

    // Reconnected, the host rejoins with nothing stale on it.
    lab.restore_bmc(1).unwrap();
    lab.restore_host_link(1).unwrap();
    wait_state(&lab, "h1", "up", WAIT);
    stays_back_empty(&lab);
}

#[test]
fn router_cut_off_from_every_host_fences_nobody_and_a_restore_before_the_lease_changes_nothing() {
    // A long lease so the genies keep their VMs while the test waits well past the
    // genie grace (5 s): without self-suspicion the router, which still reaches the
    // BMCs, would power every host off then.
    let lab = lab(3, "lease_ms = 30000");
    let vms = ["vm1", "vm2", "vm3"];
    let before = create_all(&lab, &[("vm1", 1), ("vm2", 2), ("vm3", 3)]);
    let t_cut = unix_ms();
    lab.cut_router_from_hosts().unwrap();
    poll(WAIT, "the router to suspect itself", |last| {
        let evs = events_of(&lab, t_cut, "fence_refused", None, None);
        *last = format!("{evs:?}");
        evs.iter()
            .any(|e| e.at_ms >= t_cut && e.message.contains("router's own network"))
            .then_some(())
    })
    .unwrap();
    // Past the genie grace plus a BMC check: nobody powered off, every VM untouched.
    stays(&lab, Duration::from_secs(8), "every VM where it was", |c| {
        vms.iter()
            .all(|v| c.running_on(v).len() == 1 && pid_of(c, v) == pid_of(&before, v))
    });
    for i in 1..=3 {
        assert!(chassis_status(&lab, i).ends_with("on"), "h{i} still on");
    }
    lab.restore_router_to_hosts().unwrap();
    lab.wait_all_up().unwrap();
    let after = census(&lab);
    for v in vms {
        assert_eq!(pid_of(&after, v), pid_of(&before, v), "{v} untouched");
    }
    for kind in ["host_fenced", "host_down", "failover", "vm_lost"] {
        let evs = events_of(&lab, t_cut, kind, None, None);
        assert!(evs.is_empty(), "{evs:?}");
    }
    counter_advances(&lab, &after, "vm2");
}

#[test]
fn router_cut_off_beyond_the_lease_loses_every_vm_to_self_fencing_then_restarts_them() {
    // The design's limit, made visible: the genies cannot tell a dead router from a
    // dead host, so a router cut longer than the lease stops every VM. The router
    // fences nobody, and once the link is back it starts every VM again.
    let lab = lab(3, "lease_ms = 3000");
    let vms = ["vm1", "vm2", "vm3"];
    create_all(&lab, &[("vm1", 1), ("vm2", 2), ("vm3", 3)]);
    let t_cut = unix_ms();
    lab.cut_router_from_hosts().unwrap();
    wait_census(&lab, WAIT, "every genie to self-fence its VMs", |c| {
        c.seen.is_empty()
    });
    lab.restore_router_to_hosts().unwrap();
    if let Err(e) = lab.wait_all_up() {
        let evs: Vec<String> = events(&lab)
            .into_iter()
            .filter(|e| e.at_ms >= t_cut)
            .map(|e| format!("{} {} {:?} {}", e.at_ms - t_cut, e.kind, e.host, e.message))
            .collect();
        panic!(
            "{e}\nevents since the cut (ms after it):\n{}\n{}",
            evs.join("\n"),
            lab.genie_log_tails(20)
        );
    }
    let after = wait_census(&lab, FAILOVER_WAIT, "every VM running again", |c| {
        c.each_once(&vms)
    });
    for kind in ["host_fenced", "host_down"] {
        let evs = events_of(&lab, t_cut, kind, None, None);
        assert!(evs.is_empty(), "{evs:?}");
    }
    counter_advances(&lab, &after, "vm3");
}

#[test]
fn router_restarted_in_the_middle_of_a_failover_completes_it_once() {
    let mut lab = lab(3, "");
    create_all(&lab, &[("vm1", 1), ("vm2", 2)]);
    let t0 = unix_ms();
    // A silent crash (no FIN) with the BMC out of reach for the moment, so the router
    // is surely killed between detection (missed heartbeats) and proof; the BMC is
    // back for the new router.
    lab.cut_bmc(1).unwrap();
    lab.cut_host_link(1).unwrap();
    lab.power_off(1).unwrap();
    poll(WAIT, "the router to notice h1", |last| {
        let evs: Vec<EventRow> = events(&lab)
            .into_iter()
            .filter(|e| e.at_ms >= t0 && e.host.as_deref() == Some("h1"))
            .collect();
        *last = format!("{evs:?}");
        evs.iter()
            .any(|e| ["host_suspect", "host_unreachable", "host_down"].contains(&e.kind.as_str()))
            .then_some(())
    })
    .unwrap();
    let proven_before = !events_of(&lab, t0, "host_down", Some("h1"), None).is_empty()
        || !events_of(&lab, t0, "host_fenced", Some("h1"), None).is_empty();
    lab.kill_router();
    assert!(
        !proven_before,
        "the router was to be killed before any proof"
    );
    lab.restore_bmc(1).unwrap();
    lab.start_router().unwrap();
    let after = wait_vm1_failed_over_from_h1(&lab);
    let pid = pid_of(&after, "vm1");
    stays(
        &lab,
        Duration::from_secs(3),
        "vm1 restarted once, and stays",
        |c| {
            c.each_once(&["vm1", "vm2"])
                && pid_of(c, "vm1") == pid
                && c.seen.iter().filter(|s| s.vm == "vm1").count() == 1
        },
    );
    let row = lab
        .vms_json()
        .unwrap()
        .into_iter()
        .find(|r| r.name == "vm1")
        .unwrap();
    assert_eq!(
        row.host.as_deref(),
        Some(after.running_on("vm1")[0].as_str())
    );
    wait_state(&lab, "h1", "down", WAIT);
    counter_advances(&lab, &after, "vm1");
}

#[test]
fn two_hosts_of_four_failing_together_lose_no_vm() {
    let lab = lab(4, "");
    let vms = ["vm1", "vm2", "vm3", "vm4", "vm5"];
    let before = create_all(
        &lab,
        &[("vm1", 1), ("vm2", 1), ("vm3", 2), ("vm4", 2), ("vm5", 3)],
    );
    lab.power_off(1).unwrap();
    lab.power_off(2).unwrap();
    let after = wait_census(&lab, FAILOVER_WAIT, "every VM running on h3 or h4", |c| {
        c.each_once(&vms)
            && vms
                .iter()
                .all(|v| ["h3", "h4"].contains(&c.running_on(v)[0].as_str()))
    });
    wait_state(&lab, "h1", "down", WAIT);
    wait_state(&lab, "h2", "down", WAIT);
    assert_eq!(pid_of(&after, "vm5"), pid_of(&before, "vm5"));
    for v in vms {
        counter_advances(&lab, &after, v);
    }
}

#[test]
fn maintenance_migrates_every_vm_away_live_and_off_returns_the_host() {
    let lab = lab(3, "");
    let before = create_all(&lab, &[("vm1", 1), ("vm2", 1), ("vm3", 2)]);
    let c0 = lab.guest_counter(1, "vm1").unwrap();
    let t0 = unix_ms();
    lab.cli_ok(&["maintenance", "on", "h1"]).unwrap();
    assert_eq!(state(&lab, "h1"), "maintenance");
    let after = wait_census(&lab, WAIT, "h1 empty, every VM once elsewhere", |c| {
        c.each_once(&["vm1", "vm2", "vm3"]) && c.on_host("h1").is_empty()
    });
    // Live: the guest kept its memory, so its counter continues from where it was
    // (a restarted guest would count from zero again).
    let on = host_index(&after.running_on("vm1")[0]);
    let c1 = lab.guest_counter(on, "vm1").unwrap();
    assert!(
        c1 > c0,
        "vm1 counter went from {c0} to {c1}: not a live migration"
    );
    assert_eq!(pid_of(&after, "vm3"), pid_of(&before, "vm3"));
    let evs = events_of(&lab, t0, "failover", None, None);
    assert!(evs.is_empty(), "maintenance is not a failure: {evs:?}");

    lab.cli_ok(&["maintenance", "off", "h1"]).unwrap();
    wait_state(&lab, "h1", "up", WAIT);
    // Back in the pool: a VM can be moved onto it again, still live.
    let c2 = lab.guest_counter(on, "vm1").unwrap();
    lab.cli_ok(&["vm", "migrate", "vm1", "--to", "h1"]).unwrap();
    let back = wait_census(&lab, WAIT, "vm1 back on h1", |c| {
        c.each_once(&["vm1", "vm2", "vm3"]) && c.running_on("vm1") == vec!["h1"]
    });
    let c3 = lab.guest_counter(1, "vm1").unwrap();
    assert!(c3 > c2, "vm1 counter went from {c2} to {c3}");
    counter_advances(&lab, &back, "vm1");
}

/// libfaketime, which steps the wall clock of the process it is preloaded into.
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// Host `i`'s genie restarted under libfaketime: its wall clock (only: monotonic and
/// boot time stay true) is offset by what `offset_file` says, re-read every second.
fn genie_under_faketime(lab: &Lab, i: usize, offset_file: &std::path::Path) {
    use wisp_tests::lab::power;
    assert!(
        std::path::Path::new(FAKETIME_LIB).is_file(),
        "{FAKETIME_LIB} is missing: install libfaketime (tests/install-deps.sh)"
    );
    lab.kill_genie(i).unwrap();
    let mut hf = power::read_host_file(&lab.host(i).unwrap().dir).unwrap();
    let mut argv = vec![
        "env".to_string(),
        format!("LD_PRELOAD={FAKETIME_LIB}"),
        format!("FAKETIME_TIMESTAMP_FILE={}", offset_file.display()),
        "FAKETIME_CACHE_DURATION=1".into(),
        "FAKETIME_DONT_FAKE_MONOTONIC=1".into(),
    ];
    argv.append(&mut hf.genie_argv);
    hf.genie_argv = argv;
    power::start_genie(&hf).unwrap();
}

/// Samples for `d` that host `name` stays `up` and vm1 keeps running once, in the
/// same qemu process.
fn stays_up_with(lab: &Lab, name: &str, vm1_pid: i32, d: Duration, what: &str) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        let s = state(lab, name);
        assert_eq!(s, "up", "{what}: {name} flapped\n{}", log_tail(lab));
        let c = census(lab);
        assert!(c.each_once(&["vm1"]), "{what}: {:?}", c.seen);
        assert_eq!(pid_of(&c, "vm1"), vm1_pid, "{what}: vm1 was restarted");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_genie_whose_wall_clock_steps_an_hour_back_then_forward_keeps_its_vm_and_does_not_flap() {
    // The lab's router grants a 3 s self-fence lease: a step must not cost an ack.
    let lab = lab(2, "");
    let before = create_all(&lab, &[("vm1", 1)]);
    let pid = pid_of(&before, "vm1");
    let offset = lab.dir().join("h1-faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    genie_under_faketime(&lab, 1, &offset);
    // The restarted genie (a new instance) is heard again and adopts vm1.
    wait_state(&lab, "h1", "up", WAIT);
    let genie = lab.genie_pids(1).unwrap();
    assert_eq!(genie.len(), 1, "{genie:?}");
    let env = std::fs::read(format!("/proc/{}/environ", genie[0])).unwrap();
    assert!(
        String::from_utf8_lossy(&env).contains("FAKETIME_TIMESTAMP_FILE"),
        "the genie does not run under libfaketime"
    );
    stays_up_with(&lab, "h1", pid, Duration::from_secs(2), "settling");
    // The mechanism itself, witnessed by date(1) under the same settings.
    let date = |lab: &Lab| -> i64 {
        let out = lab
            .exec_in(
                &lab.host(1).unwrap().ns,
                "env",
                &[
                    &format!("LD_PRELOAD={FAKETIME_LIB}"),
                    &format!("FAKETIME_TIMESTAMP_FILE={}", offset.display()),
                    "FAKETIME_DONT_FAKE_MONOTONIC=1",
                    "date",
                    "+%s",
                ],
            )
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    let since = unix_ms();

    std::fs::write(&offset, "-1h\n").unwrap();
    let skew = unix_ms() as i64 / 1000 - date(&lab);
    assert!(
        (3590..=3610).contains(&skew),
        "the wall clock is {skew} s off"
    );
    stays_up_with(&lab, "h1", pid, Duration::from_secs(6), "an hour back");

    std::fs::write(&offset, "+1h\n").unwrap();
    let skew = date(&lab) - unix_ms() as i64 / 1000;
    assert!(
        (3590..=3610).contains(&skew),
        "the wall clock is {skew} s off"
    );
    stays_up_with(&lab, "h1", pid, Duration::from_secs(6), "two hours forward");

    // Nothing was ever suspected, fenced or restarted, and every report was applied.
    for kind in [
        "host_suspect",
        "host_unreachable",
        "host_fenced",
        "vm_restarted",
    ] {
        let evs = events_of(&lab, since, kind, None, None);
        assert!(evs.is_empty(), "{kind}: {evs:?}");
    }
    let status = lab.router_json(&["status", "--json"]).unwrap();
    assert_eq!(status["reports_dropped"], 0, "{status}");
    // The genie itself lives an hour ahead: its log stamps a command an hour late.
    lab.cli_ok(&["vm", "stop", "vm1", "--force"]).unwrap();
    let log = lab.host(1).unwrap().genie_log.clone();
    let line = poll(WAIT, "the genie to log the stop command", |last| {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        *last = text.lines().last().unwrap_or_default().to_owned();
        text.lines()
            .rev()
            .find(|l| l.contains("command from router") && l.contains("StopVm"))
            .map(str::to_owned)
    })
    .unwrap();
    let minute = |unix_s: u64| {
        let out = std::process::Command::new("date")
            .args(["-u", "-d", &format!("@{unix_s}"), "+%Y-%m-%dT%H:%M"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let ahead = unix_ms() / 1000 + 3600;
    assert!(
        [minute(ahead), minute(ahead - 60)]
            .iter()
            .any(|m| line.starts_with(m.as_str())),
        "the genie's clock is not an hour ahead: {line}"
    );
}
