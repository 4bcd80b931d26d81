//! Replicated routers end to end on the lab (issue 10): a 3-member etcd, three
//! routers, three hosts whose real genies list every router, two guest VMs.
//!
//! The leading router is killed (SIGKILL: no goodbye to etcd, no goodbye to the
//! genies). Another router takes over, every genie reconnects to it, and the VMs keep
//! running where they were, the same qemu processes. Then a host loses its power
//! silently: the new leader proves it off over IPMI and restarts its VM elsewhere.
//! Last, a host is cut off from the network together with its BMC: no BMC can prove
//! it off, but its genie, cut from etcd too, kills its VMs before its etcd lease can
//! expire, and the leader restarts them once the lease is gone plus the margin.
//! Last, a host is cut off from the network together with its BMC: no BMC can prove
//! it off, but its genie, cut from etcd too, kills its VMs before its etcd lease can
//! expire, and the leader restarts them once the lease is gone plus the margin.
//! Throughout, an independent QMP census of every host (the witness sockets, not the
//! router) is sampled: never two running copies of a VM, and none lost.
//!
//! Needs `cargo build --workspace --bins` first, root, ip, ipmi_sim, ipmitool, qemu
//! and Debian's etcd-server; fails loudly without them.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use wisp_tests::lab::ha::{HaLab, HaLabSpec};
use wisp_tests::lab::{poll, Census, WAIT};

/// A takeover waits out the old leader's lease (2 s), then the genies come back;
/// a failover adds detection, a BMC round trip and a qemu start. Generous.
const FAILOVER_WAIT: Duration = Duration::from_secs(60);

/// The census, failing at once (with every router's log) if a VM runs twice.
fn census(ha: &HaLab) -> Census {
    let c = ha
        .lab
        .census()
        .unwrap_or_else(|e| panic!("census failed: {e}"));
    assert!(
        c.twice().is_empty(),
        "a VM runs twice: {:?}\ncensus: {:?}\n{}",
        c.twice(),
        c.seen,
        ha.logs(30)
    );
    c
}

fn wait_census(ha: &HaLab, timeout: Duration, what: &str, ok: impl Fn(&Census) -> bool) -> Census {
    poll(timeout, what, |last| {
        let c = census(ha);
        *last = format!("{:?}", c.seen);
        ok(&c).then_some(c)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", ha.logs(40)))
}

fn pid_of(c: &Census, vm: &str) -> i32 {
    c.seen
        .iter()
        .find(|s| s.vm == vm && s.status == "running")
        .unwrap_or_else(|| panic!("{vm} not running: {:?}", c.seen))
        .pid
}

/// `router status --json` of router `k`.
fn status(ha: &HaLab, k: usize) -> serde_json::Value {
    ha.lab
        .router_json_at(&ha.routers[k].api, &["status", "--json"])
        .unwrap_or_else(|e| panic!("status of {}: {e}\n{}", ha.routers[k].name, ha.logs(30)))
}

#[test]
fn the_leader_killed_another_takes_over_genies_follow_vms_run_on_and_a_later_power_loss_is_failed_over(
) {
    // Every genie keeps a liveness lease of 4 s in etcd; the router-granted
    // self-fence lease stays off, as by default: the routers' absence must never kill
    // a VM.
    let ha = HaLab::start(HaLabSpec::default()).unwrap();
    let lead = ha.leader().unwrap();
    let follower = (lead + 1) % 3;
    let s = status(&ha, follower);
    assert_eq!(s["role"], "follower", "{s}");
    assert_eq!(s["leader"], ha.routers[lead].name.as_str(), "{s}");
    // The CLI on the follower's own socket, with no token: the same answer.
    let local = ha.routers[follower].local_api();
    let s = ha
        .lab
        .router_json_at(&local, &["status", "--json"])
        .unwrap_or_else(|e| panic!("status on {local}: {e}\n{}", ha.logs(30)));
    assert_eq!(s["role"], "follower", "{s}");
    assert_eq!(s["leader"], ha.routers[lead].name.as_str(), "{s}");

    // VMs are created through a follower, on its TCP API and on its socket: it
    // forwards to the leader.
    for (vm, host, api) in [
        ("vm1", "h1", ha.routers[follower].api.clone()),
        ("vm2", "h2", local),
    ] {
        ha.create_guest_vm_at(&api, vm, host)
            .unwrap_or_else(|e| panic!("create {vm} via a follower at {api}: {e}"));
    }
    let before = wait_census(&ha, WAIT, "vm1 on h1 and vm2 on h2", |c| {
        c.each_once(&["vm1", "vm2"])
            && c.running_on("vm1") == vec!["h1".to_string()]
            && c.running_on("vm2") == vec!["h2".to_string()]
    });
    let pids = (pid_of(&before, "vm1"), pid_of(&before, "vm2"));

    // The leader dies without a word.
    let mut ha = ha;
    let t0 = Instant::now();
    ha.routers[lead].kill();
    let new = poll(FAILOVER_WAIT, "another router to lead", |last| {
        let c = census(&ha);
        *last = format!("{:?}", c.seen);
        (0..3).filter(|&k| k != lead).find(|&k| {
            ha.lab
                .router_json_at(&ha.routers[k].api, &["status", "--json"])
                .is_ok_and(|s| s["role"] == "leader")
        })
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", ha.logs(40)));
    let took_over = t0.elapsed();
    ha.wait_hosts_up(new)
        .unwrap_or_else(|e| panic!("genies did not follow: {e}\n{}", ha.logs(40)));
    eprintln!(
        "takeover: {} leads {} ms after {} was killed; every genie back {} ms after",
        ha.routers[new].name,
        took_over.as_millis(),
        ha.routers[lead].name,
        t0.elapsed().as_millis()
    );
    // The VMs ran through it all: the same qemu processes, once each.
    let after = census(&ha);
    assert!(after.each_once(&["vm1", "vm2"]), "{:?}", after.seen);
    assert_eq!(
        (pid_of(&after, "vm1"), pid_of(&after, "vm2")),
        pids,
        "a VM was restarted across the takeover"
    );
    let third = (0..3).find(|&k| k != lead && k != new).unwrap();
    let s = status(&ha, third);
    assert_eq!(
        (s["role"].as_str(), s["leader"].as_str()),
        (Some("follower"), Some(ha.routers[new].name.as_str())),
        "{s}"
    );

    // Now h1 loses its power silently: the new leader proves it off over IPMI and
    // restarts vm1 elsewhere; vm2 is untouched.
    ha.lab.silent_power_loss(1).unwrap();
    let t1 = Instant::now();
    let c = wait_census(&ha, FAILOVER_WAIT, "vm1 running again away from h1", |c| {
        c.each_once(&["vm1", "vm2"]) && c.running_on("vm1")[0] != "h1"
    });
    eprintln!(
        "silent power loss of h1 after the takeover: vm1 runs on {} {} ms later",
        c.running_on("vm1")[0],
        t1.elapsed().as_millis()
    );
    assert_eq!(pid_of(&c, "vm2"), pids.1, "vm2 was disturbed");
    assert_eq!(ha.lab.chassis_power(1).unwrap(), "off");
    // And it stays that way: no second copy appears, none is lost.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let c = census(&ha);
        assert!(
            c.each_once(&["vm1", "vm2"]),
            "{:?}\n{}",
            c.seen,
            ha.logs(30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // h2 is cut off with its BMC: only its genie's etcd lease can prove it empty.
    let on_h2: Vec<&str> = ["vm1", "vm2"]
        .into_iter()
        .filter(|v| c.running_on(v) == vec!["h2".to_string()])
        .collect();
    assert!(!on_h2.is_empty(), "vm2 runs on h2: {:?}", c.seen);
    ha.lab.cut_host_link(2).unwrap();
    ha.lab.cut_bmc(2).unwrap();
    let t2 = Instant::now();
    let c = wait_census(&ha, FAILOVER_WAIT, "h2's VMs running on h3", |c| {
        c.each_once(&["vm1", "vm2"])
            && c.running_on("vm1") == vec!["h3".to_string()]
            && c.running_on("vm2") == vec!["h3".to_string()]
    });
    eprintln!(
        "h2 and its BMC cut off: {on_h2:?} run on h3 {} ms later (etcd lease 4 s + margin 1 s)",
        t2.elapsed().as_millis()
    );
    // Its genie killed them itself (no qemu left there), and the leader said why.
    assert!(c.on_host("h2").is_empty(), "{:?}", c.seen);
    let events = ha
        .lab
        .router_cli_at(
            &ha.routers[new].api,
            &["events", "--json", "--limit", "200"],
        )
        .unwrap();
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(events.contains("etcd lease expired"), "{events}");
}
