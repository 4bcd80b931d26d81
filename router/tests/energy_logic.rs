//! Energy mode's logic without a cluster: the model copy → planner view (units, power
//! states, frozen VMs), the planner on such views (pack and sleep; wake when the
//! reserve is short), and the executor's order and failure handling with a
//! hand-written fake [`Actuator`].
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use router::config::energy::EnergyConfig;
use router::energy::executor::{execute, Actuator, ExecError, Extras};
use router::energy::view::{build, watts, Observed, ObservedHost, ObservedVm, Records};
use router::model::host::HostStatus;
use wisp_common::{HostId, VmId, VmRunState};
use wisp_planner::{plan, PlanPower, SleepDepth};

fn h(s: &str) -> HostId {
    HostId::new(s).unwrap()
}
fn v(s: &str) -> VmId {
    VmId::new(s).unwrap()
}

fn host(name: &str, status: HostStatus, vms: &[&str]) -> ObservedHost {
    ObservedHost {
        id: h(name),
        status,
        linked: status == HostStatus::Up,
        maintenance: status == HostStatus::Maintenance,
        standby: status == HostStatus::Standby,
        quarantined: false,
        cpus: Some(2),
        cpu_percent: Some(10.0),
        vcpus: 8,
        mem_mib: 256,
        vms: vms
            .iter()
            .map(|n| (v(n), VmRunState::Running, 1000, 1, 64))
            .collect(),
        depth: None,
        can_ram: true,
        expected_wake_ms: None,
    }
}

fn vm(name: &str, on: &str, mem: u64) -> ObservedVm {
    ObservedVm {
        id: v(name),
        vcpus: 1,
        mem_mib: mem,
        host: Some(h(on)),
        busy: false,
        only_on: None,
    }
}

fn cfg() -> EnergyConfig {
    EnergyConfig {
        min_awake_s: Some(0.0),
        min_vm_move_interval_s: Some(5.0),
        ..EnergyConfig::default()
    }
}

/// Three idle hosts with one VM each.
fn spread() -> Observed {
    Observed {
        energy_mode: true,
        hosts: vec![
            host("h1", HostStatus::Up, &["vm1"]),
            host("h2", HostStatus::Up, &["vm2"]),
            host("h3", HostStatus::Up, &["vm3"]),
        ],
        vms: vec![
            vm("vm1", "h1", 64),
            vm("vm2", "h2", 64),
            vm("vm3", "h3", 64),
        ],
        wake_wanted: BTreeSet::new(),
    }
}

#[test]
fn view_maps_states_units_and_frozen_vms() {
    let mut obs = spread();
    obs.hosts.push(host("h4", HostStatus::Standby, &[]));
    obs.hosts.push(host("h5", HostStatus::Maintenance, &[]));
    obs.hosts.push(host("h6", HostStatus::Waking, &[]));
    obs.hosts.push(host("h7", HostStatus::Unreachable, &[]));
    obs.vms[1].busy = true; // vm2: a migration in flight
    obs.vms.push(vm("lost", "h4", 64)); // placed on a sleeping host
    obs.hosts[2]
        .vms
        .push((v("foreign"), VmRunState::Running, 0, 2, 128));

    let mut rec = Records::default();
    // vm1 used half a core for 10 s.
    rec.update(&obs, 0.0);
    obs.hosts[0].vms[0].2 = 1000 + 5000;
    rec.update(&obs, 10.0);
    let snap = build(&obs, &rec, &cfg(), 100.0);

    let power: Vec<PlanPower> = snap.view.hosts.iter().map(|x| x.power).collect();
    assert_eq!(
        power,
        [
            PlanPower::On,
            PlanPower::On,
            PlanPower::On,
            PlanPower::Asleep,
            PlanPower::Unavailable,
            PlanPower::Waking,
            PlanPower::Unavailable
        ]
    );
    assert_eq!(snap.view.hosts[0].cpu, 2.0, "host CPU = its CPUs");
    assert_eq!(snap.view.hosts[0].mem_mb, 256);
    let ix = |n: &str| snap.vms.iter().position(|x| x.as_str() == n).unwrap();
    let vm1 = &snap.view.vms[ix("vm1")];
    assert!((vm1.cpu_now - 0.5).abs() < 1e-9, "{vm1:?}");
    assert_eq!(vm1.cpu_max, 1.0);
    assert_eq!(vm1.last_moved_at_s, None, "free to move");
    assert_eq!(
        snap.view.vms[ix("vm2")].last_moved_at_s,
        Some(100.0),
        "busy: frozen"
    );
    assert_eq!(
        snap.view.vms[ix("lost")].host,
        None,
        "its host is asleep: to place"
    );
    let f = &snap.view.vms[ix("foreign")];
    assert_eq!(
        (f.mem_mb, f.last_moved_at_s),
        (128, Some(100.0)),
        "unmanaged: frozen"
    );
    assert_eq!(snap.host(f.host.unwrap()).as_str(), "h3");

    // Watts: awake hosts by the model at their load, asleep at standby (idle if on),
    // maintenance and unreachable counted nowhere.
    let w = watts(&obs, &cfg());
    let c = cfg();
    let on = c.idle_watts + (c.max_watts - c.idle_watts) * 0.1;
    assert!((w[0].1.unwrap().actual - on).abs() < 1e-9);
    assert_eq!(w[3].1.unwrap().actual, c.standby_watts);
    assert_eq!(w[3].1.unwrap().all_on, c.idle_watts);
    assert!(w[4].1.is_none() && w[6].1.is_none());
}

#[test]
fn idle_spread_cluster_is_packed_and_one_host_sleeps_keeping_the_reserve() {
    let obs = spread();
    let mut rec = Records::default();
    rec.update(&obs, 0.0);
    let snap = build(&obs, &rec, &cfg(), 60.0);
    let p = plan(&snap.view, &cfg().policy());
    assert!(!p.migrations.is_empty(), "{p:?}");
    assert_eq!(p.sleep.len(), 1, "N+1: one empty host stays awake: {p:?}");
    let sleeper = snap.host(p.sleep[0]);
    assert!(
        p.migrations.iter().all(|m| m.to != p.sleep[0]),
        "nothing moves onto the host that sleeps: {p:?}"
    );
    assert!(
        p.migrations.iter().any(|m| snap.host(m.from) == sleeper),
        "the sleeper is emptied by the plan: {p:?}"
    );
    assert!(p.wake.is_empty());
}

#[test]
fn a_vm_is_packed_only_onto_hosts_that_have_its_networks_and_cpu_model() {
    // Each VM may run only where it is (say each host has its own network): nothing
    // can be emptied, so nothing moves and nothing sleeps.
    let mut obs = spread();
    for (i, vm) in obs.vms.iter_mut().enumerate() {
        vm.only_on = Some(vec![h(&format!("h{}", i + 1))]);
    }
    let mut rec = Records::default();
    rec.update(&obs, 0.0);
    let snap = build(&obs, &rec, &cfg(), 60.0);
    assert_eq!(
        snap.view.vms[0].only_on,
        Some(vec![snap.view.vms[0].host.unwrap()])
    );
    let p = plan(&snap.view, &cfg().policy());
    assert!(p.migrations.is_empty() && p.sleep.is_empty(), "{p:?}");

    // vm1 and vm2 may also run on h3, vm3 only there: packing can only move vm1 or
    // vm2, and only onto h3.
    obs.vms[0].only_on = Some(vec![h("h1"), h("h3")]);
    obs.vms[1].only_on = Some(vec![h("h2"), h("h3")]);
    let snap = build(&obs, &rec, &cfg(), 60.0);
    let p = plan(&snap.view, &cfg().policy());
    assert!(!p.migrations.is_empty(), "{p:?}");
    for m in &p.migrations {
        let vm = snap.vm(m.vm).as_str();
        let to = snap.host(m.to).as_str();
        assert!(vm != "vm3" && to == "h3", "{vm} moved to {to}: {p:?}");
    }
}

#[test]
fn short_reserve_wakes_the_sleeping_host() {
    // Packed: vm1..3 on h1, a big VM on h2, h3 asleep: running free memory is
    // 64 + 64 < one host (256), so the reserve is short.
    let obs = Observed {
        energy_mode: true,
        hosts: vec![
            host("h1", HostStatus::Up, &["vm1", "vm2", "vm3"]),
            host("h2", HostStatus::Up, &["big"]),
            host("h3", HostStatus::Standby, &[]),
        ],
        vms: vec![
            vm("vm1", "h1", 64),
            vm("vm2", "h1", 64),
            vm("vm3", "h1", 64),
            vm("big", "h2", 192),
        ],
        wake_wanted: BTreeSet::new(),
    };
    let snap = build(&obs, &Records::default(), &cfg(), 60.0);
    let p = plan(&snap.view, &cfg().policy());
    let woken: Vec<&str> = p.wake.iter().map(|x| snap.host(*x).as_str()).collect();
    assert_eq!(woken, ["h3"], "{p:?}");
    assert!(p.sleep.is_empty(), "{p:?}");
}

/// Records every call; fails the ones it is told to.
#[derive(Default)]
struct FakeActuator {
    calls: Mutex<Vec<String>>,
    fail_wake: Vec<HostId>,
    fail_migrate: Vec<VmId>,
}

impl FakeActuator {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl Actuator for FakeActuator {
    async fn wake(&self, host: HostId) -> Result<String, ExecError> {
        self.calls.lock().unwrap().push(format!("wake {host}"));
        if self.fail_wake.contains(&host) {
            return Err(ExecError::NotEmpty {
                host,
                why: "fake wake failure".into(),
            });
        }
        Ok(format!("{host} woke by Wake-on-LAN (fake)"))
    }
    async fn migrate(&self, vm: VmId, to: HostId) -> Result<String, ExecError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("migrate {vm} {to}"));
        if self.fail_migrate.contains(&vm) {
            return Err(ExecError::NotEmpty {
                host: to,
                why: "fake migration failure".into(),
            });
        }
        Ok(String::new())
    }
    async fn sleep(&self, host: HostId, depth: Option<SleepDepth>) -> Result<String, ExecError> {
        let d = depth.map(|d| format!(" {}", d.label())).unwrap_or_default();
        self.calls.lock().unwrap().push(format!("sleep {host}{d}"));
        Ok(String::new())
    }
    async fn deepen(&self, host: HostId) -> Result<String, ExecError> {
        self.calls.lock().unwrap().push(format!("deepen {host}"));
        Ok(String::new())
    }
}

#[tokio::test]
async fn executor_runs_batches_then_sleeps() {
    let obs = spread();
    let snap = build(&obs, &Records::default(), &cfg(), 60.0);
    let p = plan(&snap.view, &cfg().policy());
    let act = Arc::new(FakeActuator::default());
    let rep = execute(act.clone(), &snap, &p, &Extras::default()).await;
    let calls = act.calls();
    assert_eq!(rep.moved.len(), p.migrations.len(), "{calls:?}");
    assert_eq!(rep.slept.len(), 1);
    assert!(rep.errors.is_empty(), "{rep:?}");
    // Sleeps come after every migration.
    let last_move = calls
        .iter()
        .rposition(|c| c.starts_with("migrate"))
        .unwrap();
    let first_sleep = calls.iter().position(|c| c.starts_with("sleep")).unwrap();
    assert!(last_move < first_sleep, "{calls:?}");
}

#[tokio::test]
async fn failed_migration_keeps_its_source_awake() {
    let obs = spread();
    let snap = build(&obs, &Records::default(), &cfg(), 60.0);
    let p = plan(&snap.view, &cfg().policy());
    let out_of_sleeper = p
        .migrations
        .iter()
        .find(|m| m.from == p.sleep[0])
        .map(|m| snap.vm(m.vm).clone())
        .unwrap();
    let act = Arc::new(FakeActuator {
        fail_migrate: vec![out_of_sleeper.clone()],
        ..Default::default()
    });
    let rep = execute(act.clone(), &snap, &p, &Extras::default()).await;
    assert!(rep.slept.is_empty(), "{rep:?}");
    assert_eq!(rep.errors.len(), 1, "{rep:?}");
    assert!(rep.errors[0].contains("fake migration failure"), "{rep:?}");
    assert_eq!(rep.skipped.len(), 1, "{rep:?}");
    assert!(!act.calls().iter().any(|c| c.starts_with("sleep")));
}

#[tokio::test]
async fn wakes_come_first_and_a_failed_wake_skips_moves_to_it() {
    // A plan with a wake and a move waiting for it: the failover code's request
    // (extra wake) plus a hand-made plan.
    let obs = Observed {
        energy_mode: true,
        hosts: vec![
            host("h1", HostStatus::Up, &["vm1"]),
            host("h2", HostStatus::Standby, &[]),
            host("h3", HostStatus::Standby, &[]),
        ],
        vms: vec![vm("vm1", "h1", 64)],
        wake_wanted: BTreeSet::new(),
    };
    let snap = build(&obs, &Records::default(), &cfg(), 60.0);
    let ix = |n: &str| {
        wisp_planner::HostIx(snap.hosts.iter().position(|x| x.as_str() == n).unwrap() as u32)
    };
    let p = wisp_planner::Plan {
        wake: vec![ix("h2")],
        migrations: vec![wisp_planner::Migration {
            vm: wisp_planner::VmIx(0),
            from: ix("h1"),
            to: ix("h2"),
            reason: wisp_planner::MoveReason::Overload,
            batch: 0,
            waits_for_wake: true,
        }],
        ..Default::default()
    };
    let act = Arc::new(FakeActuator {
        fail_wake: vec![h("h2")],
        ..Default::default()
    });
    let rep = execute(
        act.clone(),
        &snap,
        &p,
        &Extras {
            wakes: vec![h("h3")],
            ..Extras::default()
        },
    )
    .await;
    let calls = act.calls();
    assert!(calls.iter().all(|c| c.starts_with("wake")), "{calls:?}");
    assert_eq!(rep.woken.len(), 1, "{rep:?}");
    assert_eq!(rep.woken[0].0.as_str(), "h3");
    assert!(rep.woken[0].1.contains("Wake-on-LAN"));
    assert_eq!(rep.skipped.len(), 1, "{rep:?}");
    assert!(rep.skipped[0].contains("did not wake"), "{rep:?}");
}

#[test]
fn guests_burning_cpu_wake_a_host_and_move_a_vm_there() {
    // Three VMs on a 2-CPU host each start using 0.9 cores: 2.7 > 2, overloaded; the
    // only other host sleeps. The reserve is off here so that CPU alone decides.
    let mut obs = Observed {
        energy_mode: true,
        hosts: vec![
            host("h1", HostStatus::Up, &["vm1", "vm2", "vm3"]),
            host("h2", HostStatus::Standby, &[]),
        ],
        vms: vec![
            vm("vm1", "h1", 64),
            vm("vm2", "h1", 64),
            vm("vm3", "h1", 64),
        ],
        wake_wanted: BTreeSet::new(),
    };
    let cfg = EnergyConfig {
        reserve_hosts: Some(0),
        ..cfg()
    };
    let mut rec = Records::default();
    for t in 0..=60u64 {
        for v in &mut obs.hosts[0].vms {
            v.2 = 900 * t;
        }
        rec.update(&obs, t as f64);
        if t % 10 == 0 {
            rec.meter.end_round();
        }
    }
    let snap = build(&obs, &rec, &cfg, 60.0);
    assert!(
        (snap.view.vms[0].cpu_now - 0.9).abs() < 1e-9,
        "{:?}",
        snap.view.vms[0]
    );
    assert!(snap.view.vms[0].cpu_history.len() >= 5);
    let p = plan(&snap.view, &cfg.policy());
    let woken: Vec<&str> = p.wake.iter().map(|x| snap.host(*x).as_str()).collect();
    assert_eq!(woken, ["h2"], "{p:?}");
    assert!(
        p.migrations.iter().any(|m| snap.host(m.to).as_str() == "h2"
            && m.waits_for_wake
            && m.reason == wisp_planner::MoveReason::Overload),
        "{p:?}"
    );
    assert!(p.sleep.is_empty());
}

/// The router's sleep-depth choice: a host that cannot suspend to RAM is put to sleep
/// soft-off; a suspended host is kept suspended while it may be needed soon (the
/// reserve), and once it is not needed and its grace has passed it is powered off;
/// the executor carries both out.
#[tokio::test]
async fn sleep_depth_is_chosen_per_host_and_suspended_hosts_are_deepened() {
    use router::api::types::SuspendMode;
    use router::energy::depth::{to_deepen, DepthBook};

    let mut obs = spread();
    // h4 and h5 sleep suspended; h3 cannot suspend to RAM.
    for name in ["h4", "h5"] {
        let mut s = host(name, HostStatus::Standby, &[]);
        s.depth = Some(SuspendMode::Ram);
        obs.hosts.push(s);
    }
    obs.hosts[2].can_ram = false;
    let cfg = EnergyConfig {
        s3_grace_s: 600.0,
        ..cfg()
    };
    let policy = wisp_planner::Policy {
        reserve_hosts: 1,
        ..cfg.policy()
    };
    let mut book = DepthBook::default();
    let snap = build(&obs, &Records::default(), &cfg, 0.0);
    book.record(&snap);
    let h3 = wisp_planner::HostIx(2);
    let chosen = book.choose(&snap, &obs, &cfg, &policy, &[h3]);
    // One host is the reserve: it stays in S3; h3 (going to sleep) can only be off.
    assert_eq!(chosen[&h("h3")].depth, SleepDepth::Off, "{chosen:?}");
    assert!(
        chosen[&h("h3")].why.contains("cannot suspend"),
        "{chosen:?}"
    );
    let s3: Vec<_> = ["h4", "h5"]
        .iter()
        .filter(|n| chosen[&h(n)].depth == SleepDepth::Suspend)
        .collect();
    assert_eq!(
        s3.len(),
        2,
        "within the grace both stay suspended: {chosen:?}"
    );
    assert!(to_deepen(&obs, &chosen).is_empty());

    // After the grace, the host outside the reserve goes to S5.
    let snap = build(&obs, &Records::default(), &cfg, 700.0);
    book.record(&snap);
    let chosen = book.choose(&snap, &obs, &cfg, &policy, &[]);
    let deepen = to_deepen(&obs, &chosen);
    assert_eq!(deepen.len(), 1, "{chosen:?}");
    let kept: Vec<_> = ["h4", "h5"]
        .iter()
        .filter(|n| chosen[&h(n)].depth == SleepDepth::Suspend)
        .collect();
    assert_eq!(kept.len(), 1, "the reserve stays quick to wake: {chosen:?}");

    // The executor sleeps at the chosen depth and powers the other off.
    let act = Arc::new(FakeActuator::default());
    let extras = Extras {
        depths: [(h("h3"), SleepDepth::Off)].into_iter().collect(),
        deepen: deepen.clone(),
        ..Extras::default()
    };
    let p = wisp_planner::Plan {
        sleep: vec![h3],
        ..wisp_planner::Plan::default()
    };
    let rep = execute(act.clone(), &snap, &p, &extras).await;
    assert_eq!(rep.deepened, deepen);
    assert_eq!(
        act.calls(),
        vec!["sleep h3 S5".to_owned(), format!("deepen {}", deepen[0])]
    );
}
