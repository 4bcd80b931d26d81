//! Property tests of `plan()` over seeded random clusters: no overcommit (also between
//! batches), the failover reserve, stability, frozen VMs, safe sleeps, bounded batches,
//! VMs only where they may run.
#![allow(clippy::unwrap_used)]

mod common;

use common::{random_cluster, Rng};
use wisp_planner::check::{apply, host_loads, overcommitted, reserve_holds};
use wisp_planner::{plan, ClusterView, MoveReason, Plan, PlanPower, Policy};

const CASES: u64 = 600;

fn policies() -> Vec<Policy> {
    let base = Policy::default();
    vec![
        base.clone(),
        Policy {
            spread: false,
            reserve_hosts: 0,
            ..base.clone()
        },
        Policy {
            target: 0.8,
            lower: 0.5,
            max_parallel_migrations: 2,
            prediction: wisp_planner::Prediction {
                window: 4,
                k_stddev: 1.5,
            },
            ..base
        },
    ]
}

fn for_all(mut f: impl FnMut(u64, &ClusterView, &Policy, &Plan)) {
    for (pi, policy) in policies().iter().enumerate() {
        for case in 0..CASES {
            let seed = 0x5EED_0000 + case * 7 + pi as u64 * 1_000_003;
            let view = random_cluster(&mut Rng::new(seed));
            let p = plan(&view, policy);
            f(seed, &view, policy, &p);
        }
    }
}

#[test]
fn no_plan_overcommits_a_host() {
    let mut moves = 0;
    for_all(|seed, view, policy, p| {
        moves += p.migrations.len();
        let before: Vec<_> = overcommitted(view, policy);
        let after_view = apply(view, p);
        let loads_before = host_loads(view, policy);
        let loads_after = host_loads(&after_view, policy);
        for h in overcommitted(&after_view, policy) {
            // A failed host's VMs are failover's business, not the planner's.
            if view.hosts[h.get()].power == PlanPower::Unavailable {
                continue;
            }
            // Only a host that was already over and could not be relieved may stay over,
            // and never worse than before.
            assert!(
                before.contains(&h) && p.unresolved_overloads.contains(&h),
                "seed {seed}: plan overcommits host {h:?}: {p:#?}"
            );
            assert!(loads_after[h.get()].0 <= loads_before[h.get()].0 + 1e-6);
        }
        // Destinations are filled to `target` at most, or to `upper` when a VM shed by an
        // overloaded host squeezes in instead of waking a host.
        for m in &p.migrations {
            let squeeze = policy.squeeze_before_wake && m.reason == MoveReason::Overload;
            let limit = if squeeze { policy.upper } else { policy.target };
            let h = m.to.get();
            assert!(
                loads_after[h].0 <= limit * view.hosts[h].cpu + 1e-6,
                "seed {seed}: {m:?} fills host {h} beyond {limit}"
            );
        }
        // Executing batch by batch never puts a host above `upper` on the way.
        let mut partial = view.clone();
        for pl in &p.placements {
            partial.vms[pl.vm.get()].host = Some(pl.to);
        }
        for b in 0..p.batches() {
            for m in p.migrations.iter().filter(|m| m.batch == b) {
                partial.vms[m.vm.get()].host = Some(m.to);
            }
            let loads = host_loads(&partial, policy);
            for m in p.migrations.iter().filter(|m| m.batch == b) {
                let h = m.to.get();
                assert!(
                    loads[h].0 <= policy.upper * view.hosts[h].cpu + 1e-6
                        && loads[h].1 <= policy.mem_target * view.hosts[h].mem_mb as f64 + 1e-6,
                    "seed {seed}: batch {b} overfills host {h} before later batches run"
                );
            }
        }
    });
    assert!(
        moves > 100,
        "the random clusters should exercise migrations, got {moves}"
    );
}

#[test]
fn reserve_holds_unless_every_host_is_already_awake() {
    let mut checked = 0;
    for_all(|seed, view, policy, p| {
        if policy.reserve_hosts == 0 {
            return;
        }
        let after = apply(view, p);
        if reserve_holds(&after, policy) {
            checked += 1;
            return;
        }
        // It may fail only when even waking everything could not restore it, in which
        // case the plan wakes everything and puts nothing to sleep.
        assert!(
            p.sleep.is_empty(),
            "seed {seed}: slept hosts while short of reserve"
        );
        assert!(
            after.hosts.iter().all(|h| !h.power.wakeable()),
            "seed {seed}: reserve broken but hosts left asleep: {p:#?}"
        );
    });
    assert!(checked > 100);
}

#[test]
fn planning_again_after_applying_moves_nothing() {
    for_all(|seed, view, policy, p| {
        let after = apply(view, p);
        let again = plan(&after, policy);
        assert!(
            again.migrations.is_empty(),
            "seed {seed}: second plan moves again: first {:?}\nsecond {:#?}",
            p.reason,
            again
        );
        assert!(
            again.sleep.is_empty(),
            "seed {seed}: second plan sleeps {:?}",
            again.sleep
        );
    });
}

#[test]
fn recently_moved_vms_stay_and_moves_are_once() {
    for_all(|seed, view, policy, p| {
        let mut seen = std::collections::HashSet::new();
        for m in &p.migrations {
            let vm = &view.vms[m.vm.get()];
            if let Some(t) = vm.last_moved_at_s {
                assert!(
                    view.now_s - t >= policy.min_vm_move_interval_s,
                    "seed {seed}: moved {:?} {} s after its last move",
                    m.vm,
                    view.now_s - t
                );
            }
            assert_eq!(vm.host, Some(m.from), "seed {seed}");
            assert!(seen.insert(m.vm), "seed {seed}: {:?} moved twice", m.vm);
        }
    });
}

#[test]
fn sleeps_only_empty_running_hosts_and_batches_are_bounded() {
    for_all(|seed, view, policy, p| {
        let after = apply(view, p);
        for &h in &p.sleep {
            assert_eq!(view.hosts[h.get()].power, PlanPower::On, "seed {seed}");
            assert!(
                after.vms.iter().all(|v| v.host != Some(h)),
                "seed {seed}: host {h:?} put to sleep with VMs on it"
            );
        }
        for &h in &p.wake {
            assert!(view.hosts[h.get()].power.wakeable(), "seed {seed}");
        }
        for b in 0..p.batches() {
            let n = p.migrations.iter().filter(|m| m.batch == b).count();
            assert!(n <= policy.max_parallel_migrations, "seed {seed}");
        }
        for m in &p.migrations {
            let to = view.hosts[m.to.get()].power;
            assert!(
                to == PlanPower::On || m.waits_for_wake,
                "seed {seed}: migration to a host that is {to:?} without waiting for it"
            );
        }
    });
}

#[test]
fn vms_go_only_to_hosts_they_may_run_on_and_wakes_serve_them() {
    let mut constrained_moves = 0;
    for_all(|seed, view, _policy, p| {
        let may = |v: usize, h: wisp_planner::HostIx| {
            view.vms[v]
                .only_on
                .as_ref()
                .is_none_or(|hs| hs.contains(&h))
        };
        for m in &p.migrations {
            assert!(
                may(m.vm.get(), m.to),
                "seed {seed}: {m:?} to a host it may not run on"
            );
            constrained_moves += usize::from(view.vms[m.vm.get()].only_on.is_some());
        }
        for pl in &p.placements {
            assert!(
                may(pl.vm.get(), pl.to),
                "seed {seed}: {pl:?} on a host it may not run on"
            );
            constrained_moves += usize::from(view.vms[pl.vm.get()].only_on.is_some());
        }
    });
    // The property is exercised: constrained VMs do move.
    assert!(constrained_moves > 100, "{constrained_moves}");
}
