//! The SLA book on the lab (issue 13): planned actions (stop, start, restart, delete
//! and recreate) and a router restart book no downtime; only an unplanned loss does.
//! The witness is the guest itself (its qemu pid in the host's namespace) next to
//! `router sla --json`.
//!
//! Needs `cargo build --workspace --bins` first, root, ip, ipmi_sim, ipmitool and qemu;
//! fails loudly without them.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use wisp_tests::lab::{poll, Lab, LabSpec, WAIT};

fn sla_row(lab: &Lab, vm: &str) -> serde_json::Value {
    let sla = lab.sla_json().unwrap();
    sla["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["vm"] == vm)
        .cloned()
        .unwrap_or_else(|| panic!("{vm} not in `router sla`: {sla}"))
}

fn assert_no_downtime(lab: &Lab, vm: &str, after: &str) {
    let r = sla_row(lab, vm);
    assert_eq!(r["incidents_total"].as_u64(), Some(0), "{after}: {r}");
    assert_eq!(r["downtime_total_s"].as_f64(), Some(0.0), "{after}: {r}");
}

/// `check` passes again and again for `d` (a wrong booking would show within it).
fn holds_for(d: Duration, mut check: impl FnMut()) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        check();
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_running(lab: &Lab, host: usize, vm: &str) -> i32 {
    poll(WAIT, &format!("{vm} running on h{host}"), |_| {
        lab.qemu_pid(host, vm).ok()
    })
    .unwrap()
}

#[test]
fn planned_actions_and_a_router_restart_book_no_downtime_a_lost_vm_does() {
    // No self-fence lease: the router's absence must not kill the guest here (with
    // the lab's 3 s lease, a genie kills its VMs once the router is gone that long).
    let mut lab = Lab::start_vms(LabSpec::vms(2).router_toml("lease_ms = 0")).unwrap();
    let guest = lab.guest_elf().to_owned();
    lab.vm_create("vm1", 64, &guest, Some("h1")).unwrap();
    let p1 = wait_running(&lab, 1, "vm1");

    // The router goes away for a moment; the guest runs on.
    lab.kill_router();
    holds_for(Duration::from_secs(2), || {
        assert_eq!(lab.qemu_pid(1, "vm1").unwrap(), p1, "the guest runs on");
    });
    lab.start_router().unwrap();
    lab.wait_all_up_with_metrics().unwrap();
    holds_for(Duration::from_secs(2), || {
        assert_eq!(
            lab.qemu_pid(1, "vm1").unwrap(),
            p1,
            "the guest kept running"
        );
        assert_no_downtime(&lab, "vm1", "a router restart");
    });

    // An unplanned loss: its qemu killed. The reconciler restarts it, and the book
    // holds one closed incident.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(p1),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let r = poll(
        WAIT,
        "the SLA to book vm1's loss as one closed incident",
        |_| {
            let r = sla_row(&lab, "vm1");
            (r["incidents_total"].as_u64() == Some(1) && r["down_now"] == false).then_some(r)
        },
    )
    .unwrap();
    let down = r["downtime_total_s"].as_f64().unwrap();
    assert!(down > 0.0, "{r}");
    println!("FIGURE vm1 killed: {down} s of downtime booked");

    // Planned actions add nothing.
    lab.router_ok(&["vm", "stop", "vm1", "--force", "--json"])
        .unwrap();
    lab.router_ok(&["vm", "start", "vm1", "--json"]).unwrap();
    lab.router_ok(&["vm", "restart", "vm1", "--json"]).unwrap();
    // Over a few report periods, so a booked incident would show.
    holds_for(Duration::from_secs(2), || {
        let r = sla_row(&lab, "vm1");
        assert_eq!(
            r["incidents_total"].as_u64(),
            Some(1),
            "stop, start, restart: {r}"
        );
        assert_eq!(
            r["downtime_total_s"].as_f64(),
            Some(down),
            "stop, start, restart: {r}"
        );
    });

    // Deleted and recreated under the same name: a fresh history.
    lab.router_ok(&["vm", "delete", "vm1", "--json"]).unwrap();
    lab.vm_create("vm1", 64, &guest, Some("h2")).unwrap();
    wait_running(&lab, 2, "vm1");
    holds_for(Duration::from_secs(2), || {
        assert_no_downtime(&lab, "vm1", "delete and recreate")
    });
}
