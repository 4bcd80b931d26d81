//! Waking by the fastest proven path on the lab, checked by independent witnesses:
//! `ipmitool -I lanplus -C 3` for chassis power, `tcpdump` on the bridge for the magic
//! packets, `router hosts`/`events` for the genie heard again.
//!
//! - magic packets dropped: the wake moves to IPMI power-on as soon as the BMC still
//!   says off after `wake_power_proof_ms`, not after a boot wait;
//! - the BMC down: Wake-on-LAN alone wakes the host (no power proof possible);
//! - neither: the host ends quarantined, `router power clear` clears it.
//!
//! A woken host is "awake" once its genie is heard after the wake started, whether the
//! lab suspends by killing the host's processes (a new genie boots) or by freezing
//! them (the old one resumes, as the lab does now). Magic packets are dropped by the
//! lab's WoL listener for that host only (`Lab::set_wol_ignored`).
//!
//! Needs `cargo build --workspace --bins` first, root, ip, ipmi_sim, ipmitool,
//! tcpdump; fails loudly without them. Prints the measured figures.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::Value;
use wisp_tests::lab::{poll, Lab, LabSpec, WAIT};
use wisp_tests::wol;

fn json(lab: &Lab, args: &[&str]) -> Value {
    lab.router_json(args).unwrap()
}

fn ipmitool_power(lab: &Lab, i: usize) -> String {
    lab.chassis_power(i).unwrap()
}

fn host_row(lab: &Lab, name: &str) -> Value {
    let rows = json(lab, &["hosts", "--json"]);
    rows.as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .cloned()
        .unwrap()
}

fn wait_state(lab: &Lab, name: &str, state: &str) {
    poll(WAIT, &format!("{name} to be {state}"), |last| {
        let s = host_row(lab, name)["state"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        *last = s.clone();
        (s == state).then_some(())
    })
    .unwrap();
}

fn lab(hosts: usize, wol_listener: bool) -> Lab {
    Lab::start(LabSpec {
        hosts,
        wol_listener,
        ..LabSpec::default()
    })
    .unwrap()
}

/// Puts h1 to sleep through the router and checks the BMC sees it off.
fn suspend_h1(lab: &Lab) {
    wait_state(lab, "h1", "up");
    let out = lab.router_ok(&["suspend", "h1"]).unwrap();
    assert!(out.contains("suspended"), "{out}");
    assert_eq!(host_row(lab, "h1")["state"], "standby");
    assert_eq!(ipmitool_power(lab, 1), "off");
}

/// Magic packets for `mac` among `frames`, by carrier.
fn magic_kinds(frames: &[Vec<u8>], mac: [u8; 6]) -> Vec<wol::WakeMethod> {
    frames
        .iter()
        .filter_map(|f| wol::parse_frame(f))
        .filter(|(m, _)| *m == mac)
        .map(|(_, k)| k)
        .collect()
}

fn events(lab: &Lab) -> Vec<String> {
    json(lab, &["events", "--json", "--limit", "300"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["host"] == "h1")
        .map(|e| e["message"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn lost_magic_packets_are_overtaken_by_ipmi_once_power_is_overdue() {
    let lab = lab(2, true);
    suspend_h1(&lab);
    lab.set_wol_ignored(1, true).unwrap();
    let cap = lab
        .tcpdump(&lab.core_ns(), "br0", "ether proto 0x0842 or udp port 9")
        .unwrap();
    let t = Instant::now();
    let out = json(&lab, &["wake", "h1", "--json"]);
    let took = t.elapsed();
    let frames = cap.stop().unwrap();
    assert_eq!(out["method"], "ipmi", "{out}");
    assert_eq!(out["fallback"], true, "{out}");
    let attempts = out["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{out}");
    assert_eq!(attempts[0]["method"], "wol");
    let why = attempts[0]["error"].as_str().unwrap();
    assert!(why.contains("still reported power off"), "{why}");
    // IPMI went out once the power proof (default 5000 ms) was overdue.
    let ipmi_at = attempts[1]["started_ms"].as_u64().unwrap();
    assert!(
        (5000..20_000).contains(&ipmi_at),
        "IPMI sent at {ipmi_at} ms: {out}"
    );
    assert!(attempts[1]["error"].is_null(), "{out}");
    // Far inside the boot wait (180 s by default).
    assert!(took < Duration::from_secs(60), "took {took:?}");
    // The witnesses: the BMC says on, the genie is heard, magic packets did go out.
    assert_eq!(ipmitool_power(&lab, 1), "on");
    assert_eq!(host_row(&lab, "h1")["state"], "up");
    let mac = lab.hosts()[0].mac;
    let kinds = magic_kinds(&frames, mac);
    assert!(
        kinds.contains(&wol::WakeMethod::EtherType0842) && kinds.contains(&wol::WakeMethod::Udp9),
        "tcpdump saw {kinds:?} among {} frames",
        frames.len()
    );
    let wol_log = std::fs::read_to_string(lab.wol_log()).unwrap();
    assert!(
        wol_log.contains("loses magic packets for this host"),
        "the listener did not drop them: {wol_log}"
    );
    let evs = events(&lab);
    assert!(evs.iter().any(|m| m.contains("wake 1/2 by wol")), "{evs:?}");
    assert!(
        evs.iter().any(|m| m.contains("trying the next method")),
        "{evs:?}"
    );
    assert!(
        evs.iter().any(|m| m.contains("woke by IPMI power-on")),
        "{evs:?}"
    );
    // Measured and shown.
    let row = host_row(&lab, "h1");
    assert!(row["expected_wake_ms"].as_u64().is_some(), "{row}");
    assert!(row["wake_ms"]["ipmi"].as_u64().is_some(), "{row}");
    println!(
        "FIGURE lost magic packets -> up by IPMI: {} ms (IPMI sent at {ipmi_at} ms, power seen {} ms after it, genie heard {} ms after it); {} magic frames seen",
        out["registered_ms"],
        attempts[1]["power_seen_ms"],
        attempts[1]["heard_ms"],
        kinds.len()
    );
}

#[test]
fn a_dead_bmc_leaves_wake_on_lan_to_do_it() {
    let mut lab = lab(2, true);
    suspend_h1(&lab);
    lab.stop_bmc(1).unwrap();
    let t = Instant::now();
    let out = json(&lab, &["wake", "h1", "--json"]);
    assert_eq!(out["method"], "wol", "{out}");
    assert_eq!(out["fallback"], false, "{out}");
    assert!(out["power_seen_ms"].is_null(), "{out}");
    assert_eq!(out["attempts"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(host_row(&lab, "h1")["state"], "up");
    assert!(!lab.genie_pids(1).unwrap().is_empty(), "h1's genie runs");
    let evs = events(&lab);
    assert!(
        evs.iter().any(|m| m.contains("BMC not reachable")),
        "{evs:?}"
    );
    println!(
        "FIGURE BMC down, woken by WoL: {} ms ({:?} CLI round trip)",
        out["registered_ms"],
        t.elapsed()
    );
}

#[test]
fn a_host_that_wakes_by_neither_is_quarantined_until_cleared() {
    let mut lab = lab(2, true);
    suspend_h1(&lab);
    lab.set_wol_ignored(1, true).unwrap();
    lab.stop_bmc(1).unwrap();
    let o = lab
        .router_cli(&["wake", "h1", "--deadline-ms", "4000"])
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(
        err.contains("failed to wake")
            && err.contains("wol: genie not heard")
            && err.contains("ipmi: IPMI power-on failed")
            && err.contains("router power clear h1"),
        "{err}"
    );
    let row = host_row(&lab, "h1");
    let q = row["quarantine"]
        .as_str()
        .unwrap_or_else(|| panic!("{row}"));
    assert!(q.contains("failed to wake by every method"), "{q}");
    assert_eq!(host_row(&lab, "h2")["quarantine"], Value::Null);
    let table = lab.router_ok(&["hosts"]).unwrap();
    assert!(table.contains(",quarantined"), "{table}");
    // `power status` exits 1 while a BMC does not answer; its JSON rows still come.
    let out = lab.router_cli(&["power", "status", "--json"]).unwrap();
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let r1 = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["host"] == "h1")
        .unwrap();
    assert_eq!(r1["quarantine"].as_str(), Some(q), "{rows}");
    assert!(events(&lab).iter().any(|m| m.contains("quarantined")));
    // The energy mode sees it as unavailable.
    let e = json(&lab, &["energy", "status", "--json"]);
    let h1 = e["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "h1")
        .unwrap();
    assert_eq!(h1["power"], "unavailable", "{e}");

    // Cleared only by the operator; refused when there is nothing to clear.
    let out = lab.router_ok(&["power", "clear", "h1"]).unwrap();
    assert!(out.contains("quarantine cleared"), "{out}");
    assert_eq!(host_row(&lab, "h1")["quarantine"], Value::Null);
    for (host, words) in [("h1", "not quarantined"), ("zz", "no host named zz")] {
        let o = lab.router_cli(&["power", "clear", host]).unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success() && err.contains(words), "{host}: {err}");
    }
    assert!(events(&lab)
        .iter()
        .any(|m| m.contains("quarantine cleared by the operator")));
}

#[test]
fn an_up_genie_relays_the_magic_packets_from_its_segment() {
    let lab = lab(2, true);
    suspend_h1(&lab);
    let cap = lab
        .tcpdump(&lab.core_ns(), "br0", "ether proto 0x0842 or udp port 9")
        .unwrap();
    let out = json(&lab, &["wake", "h1", "--json"]);
    let frames = cap.stop().unwrap();
    assert_eq!(out["method"], "wol", "{out}");
    assert_eq!(out["wol_relays"], 1, "{out}");
    assert!(
        out["message"]
            .as_str()
            .unwrap()
            .contains("relayed by 1 genie"),
        "{out}"
    );
    // The witness: magic packets for h1 that left h2's NIC (its source MAC), both kinds.
    let (h1, h2) = (lab.hosts()[0].mac, lab.hosts()[1].mac);
    let from_h2: Vec<wol::WakeMethod> = frames
        .iter()
        .filter(|f| f.len() >= 12 && f[6..12] == h2)
        .filter_map(|f| wol::parse_frame(f))
        .filter(|(m, _)| *m == h1)
        .map(|(_, k)| k)
        .collect();
    assert!(
        from_h2.contains(&wol::WakeMethod::EtherType0842)
            && from_h2.contains(&wol::WakeMethod::Udp9),
        "h2 sent {from_h2:?} among {} frames",
        frames.len()
    );
    assert_eq!(host_row(&lab, "h1")["state"], "up");
    println!(
        "FIGURE relayed wake: {} ms; {} magic frames for h1 from h2's NIC",
        out["registered_ms"],
        from_h2.len()
    );
}
