//! In-flight work finishes exactly once after a leader takeover (issue 10): three
//! replicated routers on a 3-member etcd, three hosts, and the leading router SIGKILLed
//! in the middle of
//! 1. a live migration it started (`router vm migrate`, slowed to ~16 s);
//! 2. a failover: a host powered off through its BMC, the leader killed once it has
//!    proven the host off and sent the restart elsewhere (qemu starts are slowed in the
//!    lab's qemu wrapper, so the restart is still in flight);
//! 3. a `vm create`, then a `vm start` (the same slowed starts).
//!
//! A sampler takes a census of every host's qemu processes all the time, from before
//! the kill until the new leader has settled: never two copies of a VM running, never
//! a second qemu started for it, and the events say the operation happened once.
//!
//! Needs `cargo build --workspace --bins` first, root, ip, ipmi_sim, ipmitool, qemu
//! and Debian's etcd-server; fails loudly without them.
#![allow(clippy::unwrap_used)]

use std::process::Child;
use std::time::{Duration, Instant};

use wisp_tests::lab::ha::{HaLab, HaLabSpec};
use wisp_tests::lab::sampler::{Sampler, Samples};
use wisp_tests::lab::{poll, Census, EventRow, WAIT};

/// A takeover waits out the old leader's lease (2 s), then the genies come back; then
/// a slowed qemu start or a migration. Generous: never a timing goal.
const SETTLE: Duration = Duration::from_secs(90);

/// How long a settled VM is watched for a late second copy.
const WATCH: Duration = Duration::from_secs(8);

/// Every qemu start on a slowed host waits this long: longer than a takeover (about
/// 2 s, more on a loaded machine), so the old leader's start is still in flight when
/// the new leader looks.
const START_DELAY: Duration = Duration::from_secs(8);

fn lab(router_extra: &str) -> HaLab {
    HaLab::start(HaLabSpec {
        router_extra: format!("lease_ms = 0\n{router_extra}"),
        ..HaLabSpec::default()
    })
    .unwrap()
}

/// `router events --json` of router `k`.
fn events(ha: &HaLab, k: usize) -> Vec<EventRow> {
    let v = ha
        .lab
        .router_json_at(&ha.routers[k].api, &["events", "--json", "--limit", "1000"])
        .unwrap_or_else(|e| panic!("events of {}: {e}\n{}", ha.routers[k].name, ha.logs(30)));
    serde_json::from_value(v).unwrap()
}

/// Events of `kind` about `vm`.
fn count(evs: &[EventRow], kind: &str, vm: &str) -> usize {
    evs.iter()
        .filter(|e| e.kind == kind && e.vm.as_deref() == Some(vm))
        .count()
}

fn about(evs: &[EventRow], vm: &str) -> String {
    evs.iter()
        .filter(|e| e.vm.as_deref() == Some(vm))
        .map(|e| format!("  {} {:?} {}\n", e.kind, e.host, e.message))
        .collect()
}

/// SIGKILLs the leader `lead` and waits for another router to lead; returns it.
fn kill_leader(ha: &mut HaLab, lead: usize) -> usize {
    let t0 = Instant::now();
    ha.routers[lead].kill();
    let new = poll(SETTLE, "another router to lead", |last| {
        (0..ha.routers.len()).filter(|&k| k != lead).find(|&k| {
            match ha
                .lab
                .router_json_at(&ha.routers[k].api, &["status", "--json"])
            {
                Ok(s) => {
                    *last = format!("{}: {s}", ha.routers[k].name);
                    s["role"] == "leader"
                }
                Err(e) => {
                    *last = e.to_string();
                    false
                }
            }
        })
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", ha.logs(40)));
    eprintln!(
        "{} SIGKILLed; {} leads {} ms later",
        ha.routers[lead].name,
        ha.routers[new].name,
        t0.elapsed().as_millis()
    );
    new
}

/// Fails (with the census and every router's log) if any VM ever had more than
/// `max_procs` qemu processes at once, or ran on two hosts at once.
fn assert_never_twice(ha: &HaLab, s: &Samples, max_procs: usize) {
    assert!(s.errors.is_empty(), "census errors: {:?}", s.errors);
    assert!(s.count > 10, "only {} samples", s.count);
    let twice = s.ran_twice();
    assert!(
        twice.is_empty(),
        "a VM ran twice: {twice:?}\n{}",
        ha.logs(40)
    );
    let over = s.over_procs(max_procs);
    assert!(
        over.is_empty(),
        "more than {max_procs} qemu for a VM at once: {over:?}\n{}",
        ha.logs(40)
    );
}

/// Waits until `vm` runs on `host` (any host if `None`) as the only qemu of it, then
/// keeps watching for [`WATCH`]: it must stay that way. Returns its host.
fn settle(ha: &HaLab, sampler: &Sampler, vm: &str, host: Option<&str>) -> String {
    let once = |c: &Census| {
        let copies: Vec<_> = c.seen.iter().filter(|s| s.vm == vm).collect();
        match copies[..] {
            [s] if s.status == "running" && host.is_none_or(|h| h == s.host) => {
                Some(s.host.clone())
            }
            _ => None,
        }
    };
    let at = poll(SETTLE, &format!("{vm} running once"), |last| {
        let c = sampler.fresh();
        *last = format!("{:?}", c.seen);
        once(&c)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", ha.logs(60)));
    let until = Instant::now() + WATCH;
    while Instant::now() < until {
        let c = sampler.fresh();
        assert_eq!(
            once(&c).as_deref(),
            Some(at.as_str()),
            "{vm} did not stay once on {at}: {:?}\n{}",
            c.seen,
            ha.logs(40)
        );
    }
    at
}

/// The CLI's exit code and stderr (it lost its router, so any result is allowed; it
/// is printed for the record).
fn collect(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    format!(
        "exit {:?}: {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

#[test]
fn a_leader_killed_mid_migration_leaves_the_vm_migrated_once() {
    // 128 MiB of non-zero guest memory at 8 MiB/s: ~16 s of copying, so the kill
    // lands in the middle.
    let mut ha = lab("[migration]\nmax_bandwidth_mib_s = 8\n");
    let lead = ha.leader().unwrap();
    let guest = ha.lab.filled_guest(128).unwrap();
    let guest = guest.to_string_lossy().into_owned();
    let api = ha.routers[lead].api.clone();
    let args = [
        "vm", "create", "vm1", "--mem", "160", "--kernel", &guest, "--host", "h1",
    ];
    ha.lab
        .router_json_at(&api, &[&args[..], &["--json"]].concat())
        .unwrap();
    // The counter moves once the guest has filled its memory.
    let before = ha.lab.wait_counter_above(1, "vm1", 0).unwrap();

    let sampler = Sampler::start(ha.lab.census_probe(), &["vm1"]);
    let cli = ha
        .lab
        .spawn_router_cli_at(&api, &["vm", "migrate", "vm1", "--to", "h2", "--json"])
        .unwrap();
    poll(WAIT, "the migration of vm1 to be under way", |last| {
        let v = ha
            .lab
            .router_json_at(&api, &["vm", "show", "vm1", "--json"])
            .ok()?;
        let sent = v["migration"]["transferred_bytes"].as_u64().unwrap_or(0);
        let c = sampler.fresh();
        let dst = c.seen.iter().any(|s| s.vm == "vm1" && s.host == "h2");
        *last = format!("sent {sent}, census {:?}", c.seen);
        (dst && sent >= 4 << 20).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", ha.logs(40)));
    let new = kill_leader(&mut ha, lead);
    let at = settle(&ha, &sampler, "vm1", None);
    let cli = collect(cli);
    let s = sampler.finish();
    eprintln!("migrate CLI: {cli}\n{} samples", s.count);
    // Two qemu at most at once (source and destination), one running.
    assert_never_twice(&ha, &s, 2);
    let evs = events(&ha, new);
    eprintln!("vm1 events:\n{}", about(&evs, "vm1"));
    assert_eq!(
        at,
        "h2",
        "the migration did not complete\n{}",
        about(&evs, "vm1")
    );
    assert_eq!(
        count(&evs, "vm_migrated", "vm1"),
        1,
        "not migrated exactly once:\n{}",
        about(&evs, "vm1")
    );
    assert_eq!(
        count(&evs, "vm_restarted", "vm1"),
        0,
        "{}",
        about(&evs, "vm1")
    );
    // No restart elsewhere either ("failover" events that only account a moment of
    // downtime around the adoption are fine).
    let restarts = evs
        .iter()
        .filter(|e| e.kind == "failover" && e.vm.as_deref() == Some("vm1"))
        .filter(|e| e.message.starts_with("restarting") || e.message.starts_with("placing"))
        .count();
    assert_eq!(restarts, 0, "{}", about(&evs, "vm1"));
    // Exactly the source and the destination, ever; and the guest went on counting:
    // it was moved, not restarted.
    assert_eq!(s.pids_of("vm1").len(), 2, "{:?}", s.pids_of("vm1"));
    let after = ha.lab.guest_counter(2, "vm1").unwrap();
    assert!(
        after > before,
        "counter {before} -> {after}: the guest restarted"
    );
}

#[test]
fn a_leader_killed_mid_failover_restarts_the_vm_once() {
    let mut ha = lab("");
    let lead = ha.leader().unwrap();
    ha.create_guest_vm(lead, "vm1", "h1").unwrap();
    poll(WAIT, "vm1 running on h1", |_| {
        ha.lab
            .census()
            .ok()
            .filter(|c| c.running_on("vm1") == vec!["h1".to_string()])
    })
    .unwrap();
    // The restart elsewhere will be slow: h2 and h3 start qemu after a delay.
    for i in [2, 3] {
        ha.lab.set_qemu_start_delay(i, Some(START_DELAY)).unwrap();
    }
    let sampler = Sampler::start(ha.lab.census_probe(), &["vm1"]);
    let t0 = Instant::now();
    let off = ha.lab.ipmitool(1, &["chassis", "power", "off"]).unwrap();
    assert!(off.status.success(), "{off:?}");
    // The leader proved h1 off and is restarting vm1 elsewhere: its start is in the
    // wrapper's delay on the chosen host.
    let api = ha.routers[lead].api.clone();
    let target = poll(SETTLE, "the leader to restart vm1 elsewhere", |last| {
        let evs: Vec<EventRow> = serde_json::from_value(
            ha.lab
                .router_json_at(&api, &["events", "--json", "--limit", "200"])
                .ok()?,
        )
        .ok()?;
        *last = about(&evs, "vm1");
        let i = [2, 3]
            .into_iter()
            .find(|&i| ha.lab.qemu_start_in_flight(i))?;
        evs.iter()
            .any(|e| e.kind == "failover" && e.message.contains("proven off"))
            .then_some(i)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", ha.logs(40)));
    eprintln!(
        "h1 off; restart of vm1 on h{target} in flight {} ms later",
        t0.elapsed().as_millis()
    );
    let new = kill_leader(&mut ha, lead);
    let at = settle(&ha, &sampler, "vm1", None);
    let s = sampler.finish();
    eprintln!("{} samples; vm1 runs on {at}", s.count);
    assert_never_twice(&ha, &s, 1);
    let evs = events(&ha, new);
    eprintln!("vm1 events:\n{}", about(&evs, "vm1"));
    assert_eq!(at, format!("h{target}"), "{}", about(&evs, "vm1"));
    // The copy on h1 and one restarted copy, never a second start.
    assert_eq!(s.pids_of("vm1").len(), 2, "{:?}", s.pids_of("vm1"));
    let restarts = evs
        .iter()
        .filter(|e| {
            e.kind == "failover"
                && e.vm.as_deref() == Some("vm1")
                && e.message.starts_with("restarting")
        })
        .count();
    assert_eq!(restarts, 1, "{}", about(&evs, "vm1"));
}

#[test]
fn a_leader_killed_mid_create_and_mid_start_starts_the_vm_once() {
    let mut ha = lab("");
    let mut lead = ha.leader().unwrap();
    ha.lab.set_qemu_start_delay(2, Some(START_DELAY)).unwrap();
    let sampler = Sampler::start(ha.lab.census_probe(), &["vm1", "vm2"]);

    // 1. `vm create vm1 --host h2`, the leader killed while qemu starts.
    let guest = ha.lab.guest_elf().to_string_lossy().into_owned();
    let api = ha.routers[lead].api.clone();
    let cli = ha
        .lab
        .spawn_router_cli_at(
            &api,
            &[
                "vm", "create", "vm1", "--mem", "64", "--kernel", &guest, "--host", "h2",
            ],
        )
        .unwrap();
    poll(WAIT, "vm1's qemu start in flight on h2", |_| {
        ha.lab.qemu_start_in_flight(2).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", ha.logs(40)));
    let new = kill_leader(&mut ha, lead);
    lead = new;
    let at = settle(&ha, &sampler, "vm1", Some("h2"));
    eprintln!("create CLI: {}; vm1 runs on {at}", collect(cli));
    let s = sampler.now();
    assert_never_twice(&ha, &s, 1);
    assert_eq!(
        s.pids_of("vm1").len(),
        1,
        "started twice: {:?}",
        s.pids_of("vm1")
    );

    // 2. vm2 created on h3 and stopped, then `vm start vm2` while h3 is slow, and the
    // new leader killed in turn. Its lease still holds its old term: wait for every
    // host to be with it first.
    ha.wait_hosts_up(lead).unwrap();
    ha.create_guest_vm(lead, "vm2", "h3").unwrap();
    settle(&ha, &sampler, "vm2", Some("h3"));
    let api = ha.routers[lead].api.clone();
    ha.lab
        .router_json_at(&api, &["vm", "stop", "vm2", "--force", "--json"])
        .unwrap();
    poll(WAIT, "vm2 stopped", |_| {
        (!sampler.fresh().seen.iter().any(|s| s.vm == "vm2")).then_some(())
    })
    .unwrap();
    ha.lab.set_qemu_start_delay(3, Some(START_DELAY)).unwrap();
    let before = sampler.now().pids_of("vm2").len();
    let cli = ha
        .lab
        .spawn_router_cli_at(&api, &["vm", "start", "vm2"])
        .unwrap();
    poll(WAIT, "vm2's qemu start in flight on h3", |_| {
        ha.lab.qemu_start_in_flight(3).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", ha.logs(40)));
    let new = kill_leader(&mut ha, lead);
    let at = settle(&ha, &sampler, "vm2", Some("h3"));
    eprintln!("start CLI: {}; vm2 runs on {at}", collect(cli));
    let s = sampler.finish();
    eprintln!("{} samples", s.count);
    assert_never_twice(&ha, &s, 1);
    assert_eq!(
        s.pids_of("vm2").len(),
        before + 1,
        "vm2 started more than once: {:?}",
        s.pids_of("vm2")
    );
    let evs = events(&ha, new);
    eprintln!("events:\n{}{}", about(&evs, "vm1"), about(&evs, "vm2"));
    assert_eq!(
        count(&evs, "vm_created", "vm1"),
        1,
        "{}",
        about(&evs, "vm1")
    );
    // vm1 stayed where it was through the second takeover.
    assert_eq!(s.pids_of("vm1").len(), 1, "{:?}", s.pids_of("vm1"));
}
