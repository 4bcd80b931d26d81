//! Hand-built clusters with one obvious right answer each.
#![allow(clippy::unwrap_used)]

use wisp_planner::check::{apply, reserve_holds};
use wisp_planner::{
    plan, ClusterView, HostIx, MoveReason, PlanHost, PlanPower, PlanVm, Policy, PowerModel,
};

fn host(cpu: f64, power: PlanPower, model: PowerModel) -> PlanHost {
    PlanHost {
        cpu,
        mem_mb: 16384,
        power,
        power_model: model,
        wake_latency_s: 20.0,
        power_changed_at_s: 0.0,
    }
}

fn vm(cpu: f64, host: Option<u32>) -> PlanVm {
    PlanVm {
        mem_mb: 1024,
        cpu_max: 2000.0,
        cpu_now: cpu,
        cpu_history: vec![cpu; 6],
        host: host.map(HostIx),
        last_moved_at_s: None,
        only_on: None,
    }
}

fn policy() -> Policy {
    Policy {
        reserve_hosts: 0,
        ..Policy::default()
    }
}

#[test]
fn empties_a_light_host_and_puts_it_to_sleep() {
    // Host 0 at 60 %, host 1 at 10 %: host 1's VM fits on host 0 under the 85 % target.
    let view = ClusterView {
        now_s: 10_000.0,
        hosts: vec![
            host(1000.0, PlanPower::On, PowerModel::hp_ml110_g5()),
            host(1000.0, PlanPower::On, PowerModel::hp_ml110_g5()),
        ],
        vms: vec![vm(300.0, Some(0)), vm(300.0, Some(0)), vm(100.0, Some(1))],
    };
    let p = plan(&view, &policy());
    assert_eq!(p.migrations.len(), 1, "{p:?}");
    assert_eq!(p.migrations[0].vm.0, 2);
    assert_eq!(p.migrations[0].to, HostIx(0));
    assert_eq!(p.migrations[0].reason, MoveReason::Consolidate);
    assert_eq!(p.sleep, vec![HostIx(1)]);
    // With the N+1 reserve, host 1 must stay: host 0 alone cannot lose itself.
    let p = plan(
        &view,
        &Policy {
            reserve_hosts: 1,
            ..Policy::default()
        },
    );
    assert!(p.sleep.is_empty() && p.migrations.is_empty(), "{p:?}");
}

#[test]
fn overload_moves_one_small_vm_and_wakes_the_most_efficient_host() {
    // Host 0 at 120 %; no room on host 1; asleep: a G4 (index 2) and a G5 (index 3).
    let view = ClusterView {
        now_s: 10_000.0,
        hosts: vec![
            host(1000.0, PlanPower::On, PowerModel::hp_ml110_g5()),
            host(1000.0, PlanPower::On, PowerModel::hp_ml110_g5()),
            host(1000.0, PlanPower::Asleep, PowerModel::hp_ml110_g4()),
            host(1330.0, PlanPower::Asleep, PowerModel::hp_ml110_g5()),
        ],
        vms: vec![vm(700.0, Some(0)), vm(500.0, Some(0)), vm(840.0, Some(1))],
    };
    let p = plan(&view, &policy());
    assert_eq!(p.wake, vec![HostIx(3)], "{p:?}");
    assert_eq!(p.migrations.len(), 1, "{p:?}");
    let m = &p.migrations[0];
    // The 500 MIPS VM alone brings host 0 under target; it goes to the woken G5.
    assert_eq!((m.vm.0, m.from, m.to), (1, HostIx(0), HostIx(3)));
    assert!(m.waits_for_wake);
    assert_eq!(m.reason, MoveReason::Overload);
    assert!(p.unresolved_overloads.is_empty());
}

#[test]
fn reserve_is_restored_by_waking() {
    // One running host with load: the reserve needs a second host's worth of room.
    let view = ClusterView {
        now_s: 10_000.0,
        hosts: vec![
            host(1000.0, PlanPower::On, PowerModel::hp_ml110_g5()),
            host(1000.0, PlanPower::Asleep, PowerModel::hp_ml110_g5()),
        ],
        vms: vec![vm(500.0, Some(0))],
    };
    let pol = Policy {
        reserve_hosts: 1,
        ..Policy::default()
    };
    assert!(!reserve_holds(&view, &pol));
    let p = plan(&view, &pol);
    assert_eq!(p.wake, vec![HostIx(1)]);
    assert!(reserve_holds(&apply(&view, &p), &pol));
}

#[test]
fn places_new_vms_and_an_empty_cluster_plans_nothing() {
    let empty = ClusterView::default();
    assert!(plan(&empty, &policy()).is_empty());
    let view = ClusterView {
        now_s: 0.0,
        hosts: vec![host(1000.0, PlanPower::On, PowerModel::hp_ml110_g5())],
        vms: vec![vm(400.0, None), vm(400.0, None), vm(400.0, None)],
    };
    let p = plan(&view, &policy());
    // Two fit under the 85 % target; the third has nowhere to go.
    assert_eq!(p.placements.len(), 2, "{p:?}");
    assert_eq!(p.unplaced.len(), 1);
}

#[test]
fn overload_relief_prefers_a_host_that_stays_on() {
    // Host 0 at 105 % sheds its 300 MIPS VM. Host 1 at 50 % (not below `lower`, so
    // consolidation keeps it) and host 2 at 20 % (light: it will be emptied once its VM,
    // moved a minute ago, may move) both have room. Spread alone picks the roomiest,
    // host 2; `relieve_onto_kept` picks host 1, and host 2 only when host 1 has no room.
    let view = |h1_load: f64| {
        let mut frozen = vm(200.0, Some(2));
        frozen.last_moved_at_s = Some(10_000.0 - 60.0);
        ClusterView {
            now_s: 10_000.0,
            hosts: (0..3)
                .map(|_| host(1000.0, PlanPower::On, PowerModel::hp_ml110_g5()))
                .collect(),
            vms: vec![
                vm(750.0, Some(0)),
                vm(300.0, Some(0)),
                vm(h1_load, Some(1)),
                frozen,
            ],
        }
    };
    let dest = |h1_load: f64, kept: bool| {
        let p = plan(
            &view(h1_load),
            &Policy {
                relieve_onto_kept: kept,
                ..policy()
            },
        );
        assert_eq!(p.migrations.len(), 1, "{p:?}");
        assert_eq!(p.migrations[0].vm.0, 1, "{p:?}");
        assert_eq!(p.migrations[0].reason, MoveReason::Overload);
        p.migrations[0].to.0
    };
    assert_eq!(dest(500.0, false), 2);
    assert_eq!(dest(500.0, true), 1);
    // Host 1 at 60 % has 250 MIPS of room under the 85 % target: not enough.
    assert_eq!(dest(600.0, true), 2);
}

#[test]
fn a_vm_stays_off_hosts_it_may_not_run_on() {
    // The light host 1's VM would go to host 0, but it may run only on hosts 1 and 2
    // (say host 0 lacks its network): host 1 is not emptied.
    let mut light = vm(100.0, Some(1));
    light.only_on = Some(vec![HostIx(1), HostIx(2)]);
    let view = ClusterView {
        now_s: 10_000.0,
        hosts: vec![
            host(1000.0, PlanPower::On, PowerModel::hp_ml110_g5()),
            host(1000.0, PlanPower::On, PowerModel::hp_ml110_g5()),
            host(1000.0, PlanPower::Asleep, PowerModel::hp_ml110_g5()),
        ],
        vms: vec![vm(300.0, Some(0)), vm(300.0, Some(0)), light.clone()],
    };
    let p = plan(&view, &policy());
    assert!(p.migrations.is_empty() && p.sleep.is_empty(), "{p:?}");

    // Overloaded host 0 sheds a VM that may run only on host 3: the plan wakes host 3
    // (the G4, less efficient than the sleeping G5 that would be woken otherwise).
    let mut picky = vm(500.0, Some(0));
    picky.only_on = Some(vec![HostIx(0), HostIx(3)]);
    let view = ClusterView {
        now_s: 10_000.0,
        hosts: vec![
            host(1000.0, PlanPower::On, PowerModel::hp_ml110_g5()),
            host(1000.0, PlanPower::On, PowerModel::hp_ml110_g5()),
            host(1330.0, PlanPower::Asleep, PowerModel::hp_ml110_g5()),
            host(1000.0, PlanPower::Asleep, PowerModel::hp_ml110_g4()),
        ],
        vms: vec![vm(700.0, Some(0)), picky, vm(840.0, Some(1))],
    };
    let p = plan(&view, &policy());
    assert_eq!(p.wake, vec![HostIx(3)], "{p:?}");
    assert_eq!(p.migrations.len(), 1, "{p:?}");
    assert_eq!((p.migrations[0].vm.0, p.migrations[0].to), (1, HostIx(3)));

    // A VM that may run nowhere else is not moved, and wakes nothing.
    let mut stuck = vm(700.0, Some(0));
    stuck.only_on = Some(vec![HostIx(0)]);
    let mut other = vm(500.0, Some(0));
    other.only_on = Some(vec![HostIx(0)]);
    let view = ClusterView {
        vms: vec![stuck, other, vm(840.0, Some(1))],
        ..view
    };
    let p = plan(&view, &policy());
    assert!(p.migrations.is_empty() && p.wake.is_empty(), "{p:?}");
    assert_eq!(p.unresolved_overloads, vec![HostIx(0)]);
}
