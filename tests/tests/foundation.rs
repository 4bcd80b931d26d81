//! End-to-end tests of the foundation on the lab, with the real genie and router
//! (docs/CONTRACTS.md): metrics from each host's namespace, VMs found on hosts, a
//! killed genie detected while its VM keeps running, a restarted genie reporting the
//! same VM, a wrong secret refused with reasons on both sides, and a malformed frame
//! on the link port that disturbs nobody.
//!
//! Needs `cargo build --workspace --bins` first (genie, router and the lab helpers),
//! root, ip, ipmi_sim, ipmitool, qemu and socat; fails loudly without them.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use wisp_tests::lab::{poll, query_status, HostRow, Lab, LabSpec, VmRow, WAIT};

fn lab(hosts: usize) -> Lab {
    Lab::start(LabSpec {
        hosts,
        // No WoL listener: nothing here sends magic packets, and it keeps the lab small.
        wol_listener: false,
        ..LabSpec::default()
    })
    .unwrap()
}

fn host<'a>(rows: &'a [HostRow], name: &str) -> &'a HostRow {
    rows.iter()
        .find(|h| h.name == name)
        .unwrap_or_else(|| panic!("{name} missing from `router hosts`: {rows:?}"))
}

fn hosts(lab: &Lab) -> Vec<HostRow> {
    lab.hosts_json().unwrap()
}

fn wait_state(lab: &Lab, name: &str, state: &str) -> Duration {
    let t0 = Instant::now();
    poll(WAIT, &format!("{name} to be {state}"), |last| {
        let rows = hosts(lab);
        let h = host(&rows, name);
        *last = format!("{h:?}");
        (h.state == state).then_some(())
    })
    .unwrap();
    t0.elapsed()
}

fn wait_vm(lab: &Lab, vm: &str, on: &str, pid: u32) -> VmRow {
    poll(
        WAIT,
        &format!("{vm} running on {on} with pid {pid}"),
        |last| {
            let rows = lab.vms_json().unwrap();
            *last = format!("{rows:?}");
            rows.into_iter().find(|r| {
                r.name == vm
                    && r.host.as_deref() == Some(on)
                    && r.state == "running"
                    && r.pid == Some(pid)
            })
        },
    )
    .unwrap()
}

fn read_log(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn genies_report_metrics_from_their_namespaces() {
    let lab = lab(3);
    let rows = lab.wait_all_up_with_metrics().unwrap();
    for h in lab.hosts() {
        let r = host(&rows, &h.name);
        assert_eq!(r.power, "on", "{r:?}");
        assert_eq!(r.address.as_deref(), Some(h.ip.to_string().as_str()));
        assert!(r.genie_version.is_some(), "{r:?}");
        assert!(r.uptime_s.is_some() && r.load_avg.is_some(), "{r:?}");
        assert!(r.last_report_age_ms.is_some_and(|a| a < 5_000), "{r:?}");
        let used = r.mem_used_bytes.unwrap();
        assert!(used > 0 && used <= r.mem_total_bytes.unwrap(), "{r:?}");

        // The genie sees its host's network namespace: eth0 there (and the host's own
        // br0), not the core's ports of the lab bridge.
        let out = lab
            .exec_in(
                &h.ns,
                lab_genie(&lab).to_str().unwrap(),
                &[
                    "--config",
                    h.genie_toml.to_str().unwrap(),
                    "report",
                    "--once",
                    "--json",
                ],
            )
            .unwrap();
        assert!(out.status.success(), "genie report --once: {out:?}");
        let report: wisp_common::proto::Report = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        let net: Vec<String> = report
            .metrics
            .expect("a one-shot report carries metrics")
            .net
            .into_iter()
            .map(|n| n.iface)
            .collect();
        assert!(net.iter().any(|i| i == "eth0"), "{}: {net:?}", h.name);
        let core_port = format!("h{}", h.index);
        assert!(!net.contains(&core_port), "{}: {net:?}", h.name);
    }
}

fn lab_genie(lab: &Lab) -> std::path::PathBuf {
    // The genie the lab runs is the first word of each host's genie command line.
    let hf = wisp_tests::lab::power::read_host_file(&lab.hosts()[0].dir).unwrap();
    hf.genie_argv[0].clone().into()
}

#[test]
fn a_vm_started_on_a_host_appears_in_router_vms() {
    let lab = lab(2);
    lab.wait_all_up_with_metrics().unwrap();
    let vm = lab.start_qemu_vm(2, "vm1", 64).unwrap();
    let row = wait_vm(&lab, "vm1", "h2", vm.pid);
    assert_eq!(row.mem_mib, Some(64), "{row:?}");
    assert_eq!(row.desired, None, "the router did not create vm1: {row:?}");
    assert_eq!(
        row.qmp_socket.as_deref(),
        Some(vm.qmp.to_str().unwrap()),
        "{row:?}"
    );
    let rows = hosts(&lab);
    assert_eq!(host(&rows, "h2").vms, Some(1));
}

#[test]
fn killed_genie_is_unreachable_fast_while_its_vm_runs_and_a_restart_finds_the_vm() {
    let lab = lab(2);
    lab.wait_all_up_with_metrics().unwrap();
    let vm = lab.start_qemu_vm(1, "vm1", 64).unwrap();
    wait_vm(&lab, "vm1", "h1", vm.pid);

    let killed = lab.kill_genie(1).unwrap();
    assert_eq!(killed.len(), 1, "one genie on h1: {killed:?}");
    let took = wait_state(&lab, "h1", "unreachable");
    eprintln!(
        "measured: h1 unreachable {} ms after its genie was killed",
        took.as_millis()
    );
    assert!(
        took <= Duration::from_secs(3),
        "h1 took {} ms to become unreachable (goal 1 s, bound 3 s)",
        took.as_millis()
    );
    // The VM is a separate process: still running, and QMP still answers, on the
    // contract's socket (free now that its genie is dead) and on the witness.
    assert_eq!(query_status(&vm.qmp).unwrap(), "running");
    assert_eq!(query_status(&vm.witness).unwrap(), "running");
    let c1 = lab.guest_counter(1, "vm1").unwrap();
    assert_eq!(host(&hosts(&lab), "h2").state, "up");

    lab.start_genie(1).unwrap();
    wait_state(&lab, "h1", "up");
    wait_vm(&lab, "vm1", "h1", vm.pid);
    let c2 = lab.guest_counter(1, "vm1").unwrap();
    assert_ne!(c1, c2, "the guest kept counting");
    assert!(wisp_tests::lab::procs::is_alive(vm.pid as i32));
}

#[test]
fn genie_with_a_wrong_secret_is_refused_and_says_why() {
    let lab = lab(2);
    lab.wait_all_up_with_metrics().unwrap();
    lab.kill_genie(2).unwrap();
    wait_state(&lab, "h2", "unreachable");

    let log = lab
        .start_genie_with_secret(2, "not-the-cluster-secret")
        .unwrap();
    poll(WAIT, "the genie to log an authentication failure", |last| {
        let text = read_log(&log);
        *last = text.clone();
        text.to_lowercase().contains("authentication").then_some(())
    })
    .unwrap();
    poll(WAIT, "the router to log the refusal of h2", |last| {
        let text = read_log(&lab.router_log());
        *last = text.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
        text.lines()
            .any(|l| l.contains("h2") && l.to_lowercase().contains("refus"))
            .then_some(())
    })
    .unwrap();
    // And it stays unreachable (sampled for 2 s).
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let rows = hosts(&lab);
        assert_eq!(host(&rows, "h2").state, "unreachable", "{rows:?}");
        assert_eq!(host(&rows, "h1").state, "up", "{rows:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Neither log holds the secrets.
    let secret = std::fs::read_to_string(lab.secret_file()).unwrap();
    for text in [read_log(&log), read_log(&lab.router_log())] {
        assert!(!text.contains(secret.trim()));
        assert!(!text.contains("not-the-cluster-secret"));
    }
}

#[test]
fn malformed_frames_on_the_link_port_do_not_disturb_other_genies() {
    let lab = lab(2);
    lab.wait_all_up_with_metrics().unwrap();
    let core = lab.core_ns();
    let target = "TCP:10.77.0.1:7100";
    let mut garbage: Vec<&[u8]> = vec![
        b"\xff\xff\xff\xffnot a frame at all",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ];
    let bad_json = [&12u32.to_be_bytes()[..], b"{\"type\":\"no"].concat();
    garbage.push(&bad_json);
    for g in &garbage {
        // socat exits when the router closes the connection or stdin ends.
        let out = lab
            .exec_in_with_input(&core, "socat", &["-t", "2", "-", target], g)
            .unwrap();
        assert!(
            out.status.success() || !out.stderr.is_empty(),
            "socat could not even connect: {out:?}"
        );
    }
    // Every genie stays up throughout (sampled for 3 s).
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let rows = hosts(&lab);
        assert!(rows.iter().all(|h| h.state == "up"), "{rows:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(wisp_tests::lab::procs::is_alive(
        lab.router_pid().unwrap() as i32
    ));
}

#[test]
fn ipmi_power_off_stops_the_real_genie_and_a_magic_packet_brings_it_back() {
    let lab = Lab::start(LabSpec {
        hosts: 2,
        wol_listener: true,
        ..LabSpec::default()
    })
    .unwrap();
    lab.wait_all_up_with_metrics().unwrap();
    let o = lab.ipmitool(2, &["chassis", "power", "off"]).unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(lab.host_pids(2).unwrap().is_empty());
    poll(WAIT, "h2 no longer up", |last| {
        let rows = hosts(&lab);
        let h = host(&rows, "h2");
        *last = format!("{h:?}");
        (h.state != "up").then_some(())
    })
    .unwrap();

    let mac = wisp_tests::lab::mac_string(&lab.hosts()[1].mac);
    let o = lab
        .exec_in(&lab.core_ns(), "etherwake", &["-i", "br0", &mac])
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    wait_state(&lab, "h2", "up");
    assert_eq!(lab.genie_pids(2).unwrap().len(), 1);
    assert_eq!(host(&hosts(&lab), "h1").state, "up");
}
