//! Tests of the lab itself, without genie or router: namespaces and addresses, BMCs
//! answering real `ipmitool`, IPMI power wired to the host's processes, Wake-on-LAN
//! through the listener, the tiny qemu guest, and a teardown that leaves nothing.
//!
//! "Genie" here is a stand-in long-running process (`sleep infinity`), so these tests
//! prove the lab whatever state the genie is in. They need root, ip, ipmi_sim,
//! ipmitool, qemu, tcpdump, etherwake and wakeonlan, and fail loudly without them.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use wisp_tests::lab::{
    mac_string, poll, procs, query_status, GenieMode, Lab, LabSpec, Power, WAIT,
};
use wisp_tests::wol;

fn spec(hosts: usize) -> LabSpec {
    LabSpec {
        hosts,
        wol_listener: true,
        start_router: false,
        genie: GenieMode::StandIn(vec!["sleep".into(), "infinity".into()]),
        bin_dir: Some(
            Path::new(env!("CARGO_BIN_EXE_wisp-lab-chassis"))
                .parent()
                .unwrap()
                .to_owned(),
        ),
        ..LabSpec::default()
    }
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn power_status(lab: &Lab, i: usize) -> String {
    let o = lab.ipmitool(i, &["chassis", "power", "status"]).unwrap();
    assert!(
        o.status.success(),
        "ipmitool: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(&o).trim().to_owned()
}

/// Waits until host `i` runs exactly its stand-in genie.
fn wait_standin(lab: &Lab, i: usize) {
    poll(WAIT, &format!("stand-in genie on h{i}"), |last| {
        let p = lab.genie_pids(i).unwrap();
        *last = format!("{p:?}");
        (p.len() == 1).then_some(())
    })
    .unwrap();
}

#[test]
fn network_comes_up_and_hosts_reach_the_core() {
    let lab = Lab::start(spec(2)).unwrap();
    let core = lab.core_ns();
    for h in lab.hosts() {
        let mac = lab
            .exec_in(&h.ns, "cat", &["/sys/class/net/eth0/address"])
            .unwrap();
        assert_eq!(stdout(&mac).trim(), mac_string(&h.mac));
        for ns in [&h.ns, &h.bmc_ns] {
            let ping = lab
                .exec_in(ns, "ping", &["-c", "1", "-W", "5", "10.77.0.1"])
                .unwrap();
            assert!(ping.status.success(), "{ns} cannot ping the core: {ping:?}");
        }
        let ping = lab
            .exec_in(&core, "ping", &["-c", "1", "-W", "5", &h.ip.to_string()])
            .unwrap();
        assert!(ping.status.success(), "core cannot ping {}: {ping:?}", h.ip);
        let lo = lab
            .exec_in(&h.ns, "ip", &["-br", "link", "show", "lo"])
            .unwrap();
        assert!(stdout(&lo).contains("UNKNOWN") || stdout(&lo).contains("UP"));
    }
    // The BMC password is not readable by others and not in lan.conf's mode either.
    use std::os::unix::fs::PermissionsExt;
    let h = &lab.hosts()[0];
    for f in [&h.bmc.password_file, &h.bmc.lan_conf] {
        assert_eq!(
            std::fs::metadata(f).unwrap().permissions().mode() & 0o077,
            0
        );
    }
}

#[test]
fn ipmi_power_off_and_on_drive_the_hosts_processes() {
    let lab = Lab::start(spec(2)).unwrap();
    wait_standin(&lab, 1);
    assert_eq!(power_status(&lab, 1), "Chassis Power is on");
    let before = lab.genie_pids(1).unwrap();

    let o = lab.ipmitool(1, &["chassis", "power", "off"]).unwrap();
    assert!(o.status.success(), "{o:?}");
    assert_eq!(power_status(&lab, 1), "Chassis Power is off");
    assert!(procs::wait_gone(&before, WAIT).is_empty());
    assert!(lab.host_pids(1).unwrap().is_empty());
    // Host 2 is untouched.
    assert_eq!(lab.genie_pids(2).unwrap().len(), 1);

    let o = lab.ipmitool(1, &["chassis", "power", "on"]).unwrap();
    assert!(o.status.success(), "{o:?}");
    assert_eq!(power_status(&lab, 1), "Chassis Power is on");
    wait_standin(&lab, 1);
    assert_ne!(lab.genie_pids(1).unwrap(), before);

    // Soft off and cycle.
    let o = lab.ipmitool(2, &["chassis", "power", "soft"]).unwrap();
    assert!(o.status.success(), "{o:?}");
    poll(WAIT, "h2 soft off", |_| {
        lab.host_pids(2).unwrap().is_empty().then_some(())
    })
    .unwrap();
    assert_eq!(power_status(&lab, 2), "Chassis Power is off");
    let old = lab.genie_pids(1).unwrap();
    let o = lab.ipmitool(1, &["chassis", "power", "cycle"]).unwrap();
    assert!(o.status.success(), "{o:?}");
    poll(WAIT, "h1 power cycled", |_| {
        let now = lab.genie_pids(1).unwrap();
        (now.len() == 1 && now != old).then_some(())
    })
    .unwrap();
}

#[test]
fn magic_packets_wake_an_off_host_by_both_methods() {
    let lab = Lab::start(spec(3)).unwrap();
    let core = lab.core_ns();
    lab.power_off(2).unwrap();
    lab.power_off(3).unwrap();
    assert_eq!(power_status(&lab, 2), "Chassis Power is off");

    // EtherType 0x0842 with etherwake; tcpdump as an outside witness of the frame.
    let cap = lab.tcpdump(&core, "br0", "ether proto 0x0842").unwrap();
    let mac2 = mac_string(&lab.hosts()[1].mac);
    let o = lab
        .exec_in(&core, "etherwake", &["-i", "br0", &mac2])
        .unwrap();
    assert!(o.status.success(), "etherwake: {o:?}");
    wait_standin(&lab, 2);
    assert_eq!(lab.power_state(2).unwrap(), Power::On);
    assert_eq!(power_status(&lab, 2), "Chassis Power is on");
    let frames = cap.stop().unwrap();
    assert!(
        frames
            .iter()
            .any(|f| wol::parse_frame(f).map(|(m, _)| m) == Some(lab.hosts()[1].mac)),
        "tcpdump saw no magic packet for h2 among {} frames",
        frames.len()
    );

    // UDP port 9 broadcast with wakeonlan.
    let mac3 = mac_string(&lab.hosts()[2].mac);
    let o = lab
        .exec_in(&core, "wakeonlan", &["-i", "10.77.0.255", &mac3])
        .unwrap();
    assert!(o.status.success(), "wakeonlan: {o:?}");
    wait_standin(&lab, 3);

    // The listener logs a wake after the power-on it reports has returned, so the
    // stand-in genie can be seen before the line is written: wait for the lines.
    let want = [
        format!("wake h2 ({mac2}) by ethertype-0x0842"),
        format!("wake h3 ({mac3}) by udp-9"),
    ];
    poll(WAIT, "the WoL listener's log of both wakes", |last| {
        let log = std::fs::read_to_string(lab.wol_log()).unwrap_or_default();
        *last = log.clone();
        want.iter().all(|w| log.contains(w.as_str())).then_some(())
    })
    .unwrap();
    // h1 was on all along and must not have been restarted.
    assert_eq!(lab.genie_pids(1).unwrap().len(), 1);
}

#[test]
fn tiny_guest_runs_in_qemu_and_dies_with_its_host() {
    let lab = Lab::start(LabSpec {
        wol_listener: false,
        ..spec(1)
    })
    .unwrap();
    let vm = lab.start_qemu_vm(1, "vm1", 64).unwrap();
    assert_eq!(query_status(&vm.qmp).unwrap(), "running");
    assert_eq!(query_status(&vm.witness).unwrap(), "running");
    let first = lab.guest_counter(1, "vm1").unwrap();
    poll(WAIT, "the guest counter to advance", |last| {
        let now = lab.guest_counter(1, "vm1").unwrap();
        *last = format!("{first} -> {now}");
        (now != first).then_some(())
    })
    .unwrap();
    assert!(lab.host_pids(1).unwrap().contains(&(vm.pid as i32)));

    // The chassis suspend helper (what the genie runs) freezes the host, VM included:
    // off as IPMI sees it, the qemu still there.
    let chassis = env!("CARGO_BIN_EXE_wisp-lab-chassis");
    let h = lab.hosts()[0].clone();
    let o = lab
        .exec_in(&h.ns, chassis, &[h.dir.to_str().unwrap(), "suspend"])
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    poll(WAIT, "h1 suspended", |_| {
        (lab.power_state(1).unwrap() == Power::Suspended).then_some(())
    })
    .unwrap();
    assert!(lab.is_frozen(1).unwrap());
    assert!(procs::is_alive(vm.pid as i32));
    assert_eq!(power_status(&lab, 1), "Chassis Power is off");

    // Power on resumes the same qemu, whose guest goes on counting.
    let o = lab.ipmitool(1, &["chassis", "power", "on"]).unwrap();
    assert!(o.status.success(), "{o:?}");
    assert_eq!(lab.qemu_pid(1, "vm1").unwrap(), vm.pid as i32);
    let before = lab.guest_counter(1, "vm1").unwrap();
    lab.wait_counter_above(1, "vm1", before).unwrap();

    // And the VM dies with its host.
    lab.power_off(1).unwrap();
    assert!(procs::wait_gone(&[vm.pid as i32], WAIT).is_empty());
    assert_eq!(power_status(&lab, 1), "Chassis Power is off");
}

#[test]
fn drop_leaves_no_namespace_and_no_process() {
    let lab = Lab::start(spec(2)).unwrap();
    let vm = lab.start_qemu_vm(2, "vm9", 64).unwrap();
    wait_standin(&lab, 1);
    let namespaces = lab.namespaces().to_vec();
    let mut pids: Vec<i32> = vec![
        lab.bmc_pid(1).unwrap() as i32,
        lab.bmc_pid(2).unwrap() as i32,
        lab.wol_pid().unwrap() as i32,
        vm.pid as i32,
    ];
    pids.extend(lab.genie_pids(1).unwrap());
    pids.extend(lab.genie_pids(2).unwrap());
    let dir = lab.dir().to_owned();
    drop(lab);

    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let list = stdout(&list);
    for ns in &namespaces {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns)),
            "{ns} left behind"
        );
    }
    let alive = procs::wait_gone(&pids, Duration::from_secs(5));
    assert!(alive.is_empty(), "processes left behind: {alive:?}");
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn missing_binaries_are_a_loud_error() {
    let e = Lab::start(LabSpec {
        bin_dir: Some("/nonexistent-wisp-bins".into()),
        ..LabSpec::default()
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("cargo build --workspace --bins"), "{e}");
    assert!(e.contains("/nonexistent-wisp-bins"), "{e}");
}
