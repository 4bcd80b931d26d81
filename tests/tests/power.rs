//! The router's power commands on the lab, checked by independent witnesses:
//! `ipmitool -I lanplus -C 3` for chassis power, the host's processes for "off",
//! `router hosts` for a genie registering, and `tcpdump` on the bridge for the magic
//! packets (compared byte for byte with what `etherwake` and `wakeonlan` send).
//!
//! Needs `cargo build -p router -p genie -p wisp-tests --bins` first, root, ip,
//! ipmi_sim, ipmitool, qemu, tcpdump, etherwake and wakeonlan; fails loudly without
//! them. Prints the measured wake-to-registration times.
#![allow(clippy::unwrap_used)]

use std::process::Output;
use std::time::{Duration, Instant};

use wisp_tests::lab::{mac_string, poll, GenieMode, Lab, LabSpec, WAIT};
use wisp_tests::wol;

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed: {}{}",
        text(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    text(&o)
}

fn json(lab: &Lab, args: &[&str]) -> serde_json::Value {
    lab.router_json(args).unwrap()
}

/// `on`/`off` as ipmitool reports it for host `i`.
fn ipmitool_power(lab: &Lab, i: usize) -> String {
    lab.chassis_power(i).unwrap()
}

/// `router power status` agrees with ipmitool for every host, one by one and all at
/// once.
fn assert_status_agrees(lab: &Lab) {
    let all = json(lab, &["power", "status", "--json"]);
    let rows = all.as_array().unwrap();
    assert_eq!(rows.len(), lab.hosts().len(), "{all}");
    for h in lab.hosts() {
        let witness = ipmitool_power(lab, h.index);
        let one = json(lab, &["power", "status", &h.name, "--json"]);
        assert_eq!(
            one[0]["power"],
            witness.as_str(),
            "{} vs ipmitool: {one}",
            h.name
        );
        let row = rows.iter().find(|r| r["host"] == h.name.as_str()).unwrap();
        assert_eq!(
            row["power"],
            witness.as_str(),
            "{} vs ipmitool: {all}",
            h.name
        );
        let plain = ok(
            lab.router_cli(&["power", "status", &h.name]).unwrap(),
            "status",
        );
        assert!(
            plain.starts_with(&format!("Chassis Power is {witness}\n")),
            "{plain}"
        );
    }
}

fn host_state(lab: &Lab, name: &str) -> (String, String) {
    let rows = lab.hosts_json().unwrap();
    let h = rows.iter().find(|h| h.name == name).unwrap();
    (h.state.clone(), h.power.clone())
}

fn wait_state(lab: &Lab, name: &str, state: &str) {
    poll(WAIT, &format!("{name} to be {state}"), |last| {
        let s = host_state(lab, name);
        *last = format!("{s:?}");
        (s.0 == state).then_some(())
    })
    .unwrap();
}

fn lab(hosts: usize, wol_listener: bool, extra: &str) -> Lab {
    Lab::start(LabSpec {
        hosts,
        wol_listener,
        router_extra_toml: extra.into(),
        ..LabSpec::default()
    })
    .unwrap()
}

#[test]
fn power_status_off_and_on_agree_with_ipmitool() {
    let lab = lab(2, false, "");
    wait_state(&lab, "h1", "up");
    wait_state(&lab, "h2", "up");
    assert_status_agrees(&lab);

    let vm = lab.start_qemu_vm(1, "pvm1", 64).unwrap();
    let t = Instant::now();
    let out = ok(
        lab.router_cli(&["power", "off", "h1"]).unwrap(),
        "power off",
    );
    eprintln!("router power off h1 ({:?}): {out}", t.elapsed());
    assert!(out.contains("Chassis Power Control: Down/Off"), "{out}");
    assert!(out.contains("reports power off after"), "{out}");
    assert_eq!(ipmitool_power(&lab, 1), "off");
    // Genie and VM are gone: nothing lives in the host's namespace.
    poll(WAIT, "h1's processes to be gone", |last| {
        let p = lab.host_pids(1).unwrap();
        *last = format!("{p:?}");
        p.is_empty().then_some(())
    })
    .unwrap();
    assert!(lab
        .host_pids(1)
        .unwrap()
        .iter()
        .all(|p| *p != vm.pid as i32));
    assert_eq!(host_state(&lab, "h1"), ("down".into(), "off".into()));
    assert_eq!(host_state(&lab, "h2").0, "up", "h2 untouched");
    assert_status_agrees(&lab);

    let t = Instant::now();
    let out = json(&lab, &["power", "on", "h1", "--json"]);
    assert_eq!(out["verified"], true, "{out}");
    assert_eq!(out["power"], "on", "{out}");
    wait_state(&lab, "h1", "up");
    eprintln!(
        "router power on h1 -> genie registered after {:?}",
        t.elapsed()
    );
    assert_status_agrees(&lab);

    // The transitions are in the event history.
    let evs = json(&lab, &["events", "--json", "--limit", "200"]);
    let msgs: Vec<&str> = evs
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "power" && e["host"] == "h1")
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(msgs.iter().any(|m| m.contains("power off")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.contains("power on")), "{msgs:?}");
}

/// The magic payload inside an 0x0842 frame or a UDP/9 datagram, with its carrier.
fn magic_of(f: &[u8]) -> Option<(Vec<u8>, wol::WakeMethod)> {
    let (_, method) = wol::parse_frame(f)?;
    let start = match method {
        wol::WakeMethod::EtherType0842 => 14,
        wol::WakeMethod::Udp9 => 14 + usize::from(f[14] & 0x0f) * 4 + 8,
    };
    Some((f[start..start + 102].to_vec(), method))
}

fn payloads(frames: &[Vec<u8>], mac: [u8; 6]) -> Vec<(Vec<u8>, wol::WakeMethod)> {
    frames
        .iter()
        .filter(|f| wol::parse_frame(f).map(|(m, _)| m) == Some(mac))
        .filter_map(|f| magic_of(f))
        .collect()
}

#[test]
fn wake_is_witnessed_by_tcpdump_and_verified_by_registration() {
    let lab = lab(2, true, "");
    wait_state(&lab, "h2", "up");
    let core = lab.core_ns();
    let h2 = lab.hosts()[1].clone();
    let filter = "ether proto 0x0842 or udp port 9";

    let mut figures = Vec::new();
    for how in ["power off", "suspend"] {
        if how == "suspend" {
            let out = ok(lab.router_cli(&["suspend", "h2"]).unwrap(), "suspend");
            // Verified by silence (a frozen host's link stays open), not a closed link.
            assert!(
                out.contains("suspended to RAM") && out.contains("silent"),
                "{out}"
            );
            assert_eq!(host_state(&lab, "h2").0, "standby");
            assert!(lab.is_frozen(2).unwrap(), "suspend to RAM freezes the host");
        } else {
            ok(
                lab.router_cli(&["power", "off", "h2"]).unwrap(),
                "power off",
            );
            assert_eq!(host_state(&lab, "h2").0, "down");
        }
        assert_eq!(ipmitool_power(&lab, 2), "off");
        assert_status_agrees(&lab);

        let cap = lab.tcpdump(&core, "br0", filter).unwrap();
        let t = Instant::now();
        let out = json(&lab, &["wake", "h2", "--json"]);
        let took = t.elapsed();
        let frames = cap.stop().unwrap();
        assert_eq!(out["method"], "wol", "{out}");
        assert_eq!(out["fallback"], false, "{out}");
        let ms = out["registered_ms"].as_u64().unwrap();
        figures.push((how, ms, took));
        assert_eq!(host_state(&lab, "h2"), ("up".into(), "on".into()));
        assert_eq!(ipmitool_power(&lab, 2), "on");
        let seen = payloads(&frames, h2.mac);
        assert!(
            seen.iter()
                .any(|(_, m)| *m == wol::WakeMethod::EtherType0842),
            "no 0x0842 frame for h2 among {} frames",
            frames.len()
        );
        assert!(
            seen.iter().any(|(_, m)| *m == wol::WakeMethod::Udp9),
            "no UDP/9 packet for h2 among {} frames",
            frames.len()
        );
        // Byte for byte what etherwake and wakeonlan send for that MAC (h2 is on now,
        // so the listener ignores these).
        let cap = lab.tcpdump(&core, "br0", filter).unwrap();
        let mac = mac_string(&h2.mac);
        ok(
            lab.exec_in(&core, "etherwake", &["-i", "br0", &mac])
                .unwrap(),
            "etherwake",
        );
        ok(
            lab.exec_in(&core, "wakeonlan", &["-i", "10.77.0.255", &mac])
                .unwrap(),
            "wakeonlan",
        );
        let theirs = payloads(&cap.stop().unwrap(), h2.mac);
        for m in [wol::WakeMethod::EtherType0842, wol::WakeMethod::Udp9] {
            let ours = seen.iter().find(|(_, x)| *x == m).unwrap();
            let tool = theirs
                .iter()
                .find(|(_, x)| *x == m)
                .unwrap_or_else(|| panic!("tcpdump did not see the tools' {m} packet"));
            assert_eq!(ours.0, tool.0, "{m} payload differs from the tools'");
        }
        let plain = ok(
            lab.router_cli(&["events", "--limit", "50"]).unwrap(),
            "events",
        );
        assert!(plain.contains("woke by Wake-on-LAN"), "{plain}");
    }
    for (how, ms, took) in figures {
        println!(
            "FIGURE wake-to-registration after {how}: {ms} ms (router), {} ms (CLI round trip); goal: well under the wake deadline",
            took.as_millis()
        );
    }
}

#[test]
fn wake_falls_back_to_ipmi_without_the_wol_listener() {
    let lab = lab(1, false, "wake_deadline_ms = 3000");
    wait_state(&lab, "h1", "up");
    ok(
        lab.router_cli(&["power", "off", "h1"]).unwrap(),
        "power off",
    );
    assert_eq!(ipmitool_power(&lab, 1), "off");
    let t = Instant::now();
    let out = ok(lab.router_cli(&["wake", "h1"]).unwrap(), "wake");
    println!(
        "FIGURE wake with IPMI fallback (WoL deadline 3000 ms): {:?}: {out}",
        t.elapsed()
    );
    assert!(out.contains("woke by IPMI power-on (fallback"), "{out}");
    assert_eq!(host_state(&lab, "h1").0, "up");
    assert_eq!(ipmitool_power(&lab, 1), "on");
}

#[test]
fn dead_bmc_and_wrong_password_are_clear_and_isolated() {
    let mut lab = Lab::start(LabSpec {
        hosts: 3,
        wol_listener: false,
        genie: GenieMode::StandIn(vec!["sleep".into(), "infinity".into()]),
        ..LabSpec::default()
    })
    .unwrap();
    // A wrong password for h2: rewrite its file and restart the router (it reads
    // password files once, at start).
    let pw_file = lab.hosts()[1].bmc.password_file.clone();
    let real = std::fs::read_to_string(&pw_file).unwrap();
    lab.stop_router();
    std::fs::write(&pw_file, "not-the-password").unwrap();
    lab.start_router().unwrap();
    lab.stop_bmc(1).unwrap();

    let o = lab.router_cli(&["power", "status", "h1"]).unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success());
    assert!(
        err.contains("10.77.0.101:623") && err.contains("connection refused"),
        "{err}"
    );
    println!("stopped BMC: {err}");

    let o = lab.router_cli(&["power", "off", "h2"]).unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success());
    assert!(
        err.contains("10.77.0.102:623") && err.contains("authentication"),
        "{err}"
    );

    // Others are unaffected: h3 answers, the router serves, and the table shows all.
    let o = json(&lab, &["power", "status", "h3", "--json"]);
    assert_eq!(o[0]["power"], "on", "{o}");
    // The table shows every host, and the command fails: two BMCs did not answer.
    let o = lab.router_cli(&["power", "status"]).unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let table = text(&o);
    assert!(
        table.contains("connection refused") && table.contains("authentication"),
        "{table}"
    );
    lab.hosts_json().unwrap();

    // A BMC that stops answering (its port cut): a timeout, within the BMC timeout.
    lab.cut_bmc(3).unwrap();
    let t = Instant::now();
    let o = lab.router_cli(&["power", "status", "h3"]).unwrap();
    let took = t.elapsed();
    let silent = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success());
    assert!(
        silent.contains("10.77.0.103:623") && silent.contains("no answer"),
        "{silent}"
    );
    assert!(took < Duration::from_secs(60), "took {took:?}");
    println!("FIGURE silent BMC reported after {took:?}: {silent}");
    lab.hosts_json().unwrap();
    // The password is nowhere in what the router said or logged.
    let log = std::fs::read_to_string(lab.router_log()).unwrap();
    for hay in [&table, &err, &silent, &log] {
        assert!(!hay.contains(real.trim()), "the BMC password leaked");
        assert!(!hay.contains("not-the-password"), "the BMC password leaked");
    }
    std::fs::write(&pw_file, real).unwrap();
}

/// What each host can do about sleeping is learned from its genie (its
/// `/sys/power/state`, here the lab's per-host copy), shown by `router hosts`, and
/// respected: a host without suspend-to-RAM is refused a RAM suspend with the reason
/// and nothing is sent (it keeps running, unfrozen); `--off` (IPMI soft-off) works, and
/// a magic packet boots it again.
#[test]
fn a_host_without_suspend_to_ram_is_refused_it_and_sleeps_by_soft_off() {
    let lab = Lab::start(
        LabSpec {
            hosts: 2,
            wol_listener: true,
            ..LabSpec::default()
        }
        .no_ram_suspend(vec![2]),
    )
    .unwrap();
    let sleep_of = |host: &str| -> Option<Vec<String>> {
        let rows = json(&lab, &["hosts", "--json"]);
        let row = rows.as_array()?.iter().find(|r| r["name"] == host)?.clone();
        let s: Vec<String> = serde_json::from_value(row["sleep"].clone()).ok()?;
        (!s.is_empty()).then_some(s)
    };
    let h1 = poll(WAIT, "h1's sleep abilities learned", |_| sleep_of("h1")).unwrap();
    let h2 = poll(WAIT, "h2's sleep abilities learned", |_| sleep_of("h2")).unwrap();
    assert_eq!(h1, ["ram", "off"]);
    assert_eq!(h2, ["off"]);
    let table = ok(lab.router_cli(&["hosts"]).unwrap(), "hosts");
    assert!(
        table.contains("SLEEP") && table.contains("ram+off"),
        "{table}"
    );

    let pids = lab.genie_pids(2).unwrap();
    let out = lab.router_cli(&["suspend", "h2"]).unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "a RAM suspend of h2 must be refused: {err}"
    );
    assert!(
        err.contains("h2") && err.contains("cannot suspend to RAM") && err.contains("freeze disk"),
        "{err}"
    );
    assert!(!lab.is_frozen(2).unwrap(), "nothing was sent, h2 runs on");
    assert_eq!(lab.genie_pids(2).unwrap(), pids);
    wait_state(&lab, "h2", "up");

    let out = ok(
        lab.router_cli(&["suspend", "h2", "--off"]).unwrap(),
        "suspend --off",
    );
    assert!(out.contains("soft-off"), "{out}");
    assert_eq!(ipmitool_power(&lab, 2), "off");
    assert_eq!(host_state(&lab, "h2").0, "standby");
    assert!(
        lab.genie_pids(2).unwrap().is_empty(),
        "soft-off ends its processes"
    );

    // A magic packet boots it again (a new genie), as ipmitool and the router agree.
    let cap = lab
        .tcpdump(&lab.core_ns(), "br0", "ether proto 0x0842 or udp port 9")
        .unwrap();
    let w = json(&lab, &["wake", "h2", "--json"]);
    let frames = cap.stop().unwrap();
    assert_eq!(w["method"], "wol", "{w}");
    assert!(
        !payloads(&frames, lab.hosts()[1].mac).is_empty(),
        "no magic packet for h2 seen"
    );
    assert_eq!(ipmitool_power(&lab, 2), "on");
    wait_state(&lab, "h2", "up");
    assert_ne!(lab.genie_pids(2).unwrap(), pids, "booted: a new genie");
}
