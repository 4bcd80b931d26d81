//! A single router away for about its genies' self-fence lease (issue 10: a helper
//! once saw two qemu of one VM during a router restart with the router down longer
//! than the lease). Genies that hear nothing for `lease_ms` (the lab's 3000) kill
//! their VMs; the router, back, restarts them. The danger is a router that restarts a
//! VM elsewhere before the old copy is dead: it cannot know when its predecessor's last
//! renewal went out, so it must count a full lease from its own start; a frozen router
//! wakes up with a clock that ran on and acks queued in its sockets.
//!
//! Rounds: the router SIGKILLed (then started again) or frozen (SIGSTOP, then SIGCONT)
//! for just under, about and well over the lease, with a VM on each of three hosts,
//! and in some rounds a host losing its power silently at the same moment. A sampler
//! counts every VM's qemu processes on all hosts all the time: never two at once.
//!
//! Needs `cargo build --workspace --bins` first, root, ip, ipmi_sim, ipmitool and qemu;
//! fails loudly without them.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use wisp_tests::lab::sampler::Sampler;
use wisp_tests::lab::{poll, procs, Lab, LabSpec};

const VMS: [&str; 3] = ["vm1", "vm2", "vm3"];

/// Generous on a loaded 2-core machine: never a timing goal.
const RECOVER: Duration = Duration::from_secs(90);

/// How long a recovered cluster is watched for a late second copy.
const WATCH: Duration = Duration::from_secs(4);

#[derive(Debug, Clone, Copy)]
enum Away {
    /// SIGKILL, then a new `router serve`.
    Killed,
    /// SIGSTOP, then SIGCONT: the same process wakes up with a stale view.
    Frozen,
    /// SIGKILL for longer than the lease (every genie fences), a new router, and that
    /// one SIGKILLed too while it restarts the fenced VMs (qemu starts slowed so the
    /// kill lands mid-start), then a third: it finds starts it did not send in flight.
    KilledMidRestart,
}

/// (how, for how long in ms, host powered off meanwhile). The lab's lease is 3000 ms.
const ROUNDS: [(Away, u64, Option<usize>); 10] = [
    (Away::KilledMidRestart, 4000, None),
    (Away::KilledMidRestart, 4000, Some(2)),
    (Away::Killed, 2500, None),
    (Away::Killed, 3000, Some(1)),
    (Away::Killed, 3500, None),
    (Away::Killed, 8000, Some(2)),
    (Away::Frozen, 2500, Some(3)),
    (Away::Frozen, 3000, None),
    (Away::Frozen, 3500, Some(1)),
    (Away::Frozen, 8000, None),
];

/// The slowed qemu start of the [`Away::KilledMidRestart`] rounds: longer than a
/// router restart plus the genies' reconnection, so the next router finds the start
/// still in flight.
const START_DELAY: Duration = Duration::from_secs(10);

fn logs(lab: &Lab) -> String {
    format!(
        "--- router ---\n{}\n{}",
        lab.router_log_tail(40),
        lab.genie_log_tails(10)
    )
}

/// Waits until every VM runs exactly once (one qemu, QMP `running`) for [`WATCH`] on
/// end: a genie whose lease ran out while the router was away may still fence its VMs
/// after a first "once", and the router restarts them.
fn every_vm_once(lab: &Lab, sampler: &Sampler, what: &str) {
    let once = |c: &wisp_tests::lab::Census| {
        VMS.iter().all(|vm| {
            let copies: Vec<_> = c.seen.iter().filter(|s| &s.vm == vm).collect();
            matches!(copies[..], [s] if s.status == "running")
        })
    };
    let mut since: Option<Instant> = None;
    poll(RECOVER, what, |last| {
        let c = sampler.fresh();
        *last = format!("{:?}", c.seen);
        if !once(&c) {
            since = None;
            return None;
        }
        let t = *since.get_or_insert_with(Instant::now);
        (t.elapsed() >= WATCH).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(lab)));
}

/// Every host powered on (over IPMI) and up at the router.
fn every_host_up(lab: &Lab) {
    poll(RECOVER, "every host up again", |last| {
        for i in 1..=3 {
            let out = lab.ipmitool(i, &["chassis", "power", "status"]).ok()?;
            if String::from_utf8_lossy(&out.stdout).contains("is off") {
                let on = lab.ipmitool(i, &["chassis", "power", "on"]).unwrap();
                assert!(on.status.success(), "{on:?}");
            }
        }
        let hs = lab.hosts_json().ok()?;
        *last = format!("{:?}", hs.iter().map(|h| &h.state).collect::<Vec<_>>());
        (hs.len() == 3 && hs.iter().all(|h| h.state == "up")).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(lab)));
}

#[test]
fn a_router_away_for_about_the_lease_never_leaves_two_qemu_of_a_vm() {
    let mut lab = Lab::start_with_witness(LabSpec::vms(3)).unwrap();
    lab.wait_all_up_with_metrics().unwrap();
    for (k, vm) in VMS.iter().enumerate() {
        lab.create_guest_vm(vm, 64, Some(k + 1), 0).unwrap();
    }
    let sampler = Sampler::start(lab.census_probe(), &VMS);
    every_vm_once(&lab, &sampler, "every VM running");
    for (n, (away, ms, off)) in ROUNDS.into_iter().enumerate() {
        eprintln!("round {n}: router {away:?} for {ms} ms, host off: {off:?}");
        let t0 = Instant::now();
        let pid = lab.router_pid().unwrap() as i32;
        match away {
            Away::Killed | Away::KilledMidRestart => lab.kill_router(),
            Away::Frozen => procs::signal(pid, Signal::SIGSTOP),
        }
        if let Some(i) = off {
            lab.silent_power_loss(i).unwrap();
        }
        // The fault's length itself (what the round is about), not a wait for a
        // condition.
        std::thread::sleep(Duration::from_millis(ms).saturating_sub(t0.elapsed()));
        match away {
            Away::Killed => lab.start_router().unwrap(),
            Away::Frozen => procs::signal(pid, Signal::SIGCONT),
            Away::KilledMidRestart => {
                for i in 1..=3 {
                    lab.set_qemu_start_delay(i, Some(START_DELAY)).unwrap();
                }
                lab.start_router().unwrap();
                let busy = poll(RECOVER, "the new router to restart a fenced VM", |_| {
                    (1..=3).find(|&i| lab.qemu_start_in_flight(i))
                })
                .unwrap_or_else(|e| panic!("{e}\n{}", logs(&lab)));
                eprintln!("round {n}: a start on h{busy} in flight: the router killed again");
                lab.kill_router();
                lab.start_router().unwrap();
            }
        }
        every_vm_once(&lab, &sampler, &format!("round {n}: every VM running once"));
        for i in 1..=3 {
            lab.set_qemu_start_delay(i, None).unwrap();
        }
        every_host_up(&lab);
        every_vm_once(
            &lab,
            &sampler,
            &format!("round {n}: every VM once, hosts up"),
        );
        let s = sampler.now();
        let restarts: Vec<String> = VMS
            .iter()
            .map(|vm| format!("{vm}: {} qemu so far", s.pids_of(vm).len()))
            .collect();
        eprintln!(
            "round {n} done in {} ms; {}; {} samples",
            t0.elapsed().as_millis(),
            restarts.join(", "),
            s.count
        );
        assert!(
            s.over_procs(1).is_empty(),
            "round {n}: two qemu of a VM at once: {:?}\n{}",
            s.over_procs(1),
            logs(&lab)
        );
    }
    let s = sampler.finish();
    assert!(s.errors.is_empty(), "census errors: {:?}", s.errors);
    assert!(s.count > 100, "only {} samples", s.count);
    assert!(s.ran_twice().is_empty(), "{:?}", s.ran_twice());
    assert!(s.over_procs(1).is_empty(), "{:?}", s.over_procs(1));
    // The rounds over the lease did make the genies fence: otherwise this test proved
    // nothing about a restart racing a self-fence.
    for vm in VMS {
        assert!(
            s.pids_of(vm).len() > 1,
            "{vm} was never restarted: the lease never ran out? {:?}",
            s.pids_of(vm)
        );
    }
}
