//! `plan()`: from a cluster snapshot to an ordered list of migrations, wakes and sleeps.
//!
//! Steps, each working on the state left by the previous one:
//! 1. place VMs that have no host (largest predicted demand first, best fit);
//! 2. relieve overloaded hosts: move the fewest, smallest-memory VMs that bring the host
//!    back to `target`, waking the most efficient sleeping host when nothing fits;
//! 3. restore the failover reserve by waking hosts;
//! 4. consolidate: empty lightly loaded hosts (cheapest to empty and least efficient
//!    first) when all their VMs fit elsewhere under `target` and the reserve still holds;
//! 5. put empty hosts to sleep (unless the reserve needs them);
//! 6. order the migrations into batches.

mod batch;
mod fit;
mod state;
pub mod types;

use crate::model::{ClusterView, HostIx, PlanPower, VmIx};
use crate::policy::Policy;
use state::{State, NONE};
use types::{MoveReason, Placement, Plan};

/// Plans consolidation for `view` under `policy`. Pure: no I/O, no clock.
pub fn plan(view: &ClusterView, policy: &Policy) -> Plan {
    let mut s = State::new(view, policy);
    let mut wake_order = wake_order(view);
    let mut out = Plan::default();

    place_new(&mut s, &mut wake_order, &mut out);
    let stuck = relieve_overloads(&mut s, &mut wake_order);
    let stuck = settle(&mut s, &mut wake_order, stuck);
    out.unresolved_overloads = stuck.iter().map(|&h| HostIx(h as u32)).collect();
    // While some overload has no room, nothing is emptied or put to sleep: that room
    // would be the first thing the next plan wakes again.
    let (emptied, sleep) = if out.unresolved_overloads.is_empty() {
        (consolidate(&mut s), choose_sleepers(&mut s))
    } else {
        (0, Vec::new())
    };

    let n_over = s
        .moves
        .iter()
        .filter(|m| m.from != NONE && m.reason == MoveReason::Overload)
        .count();
    let n_cons = s
        .moves
        .iter()
        .filter(|m| m.reason == MoveReason::Consolidate)
        .count();
    for m in s.moves.iter().filter(|m| m.from == NONE) {
        out.placements.push(Placement {
            vm: VmIx(m.vm),
            to: HostIx(m.to),
            waits_for_wake: s.waking[m.to as usize],
        });
    }
    out.migrations = batch::order(&s, policy.max_parallel_migrations);
    out.wake = s.woken.iter().map(|&h| HostIx(h)).collect();
    out.sleep = sleep.iter().map(|&h| HostIx(h)).collect();
    out.reason = format!(
        "{} placements, {} overload moves, {} consolidation moves emptying {} hosts, \
         wake {}, sleep {}, {} unresolved overloads",
        out.placements.len(),
        n_over,
        n_cons,
        emptied,
        out.wake.len(),
        out.sleep.len(),
        out.unresolved_overloads.len()
    );
    out
}

/// Hosts the planner may wake, best first: most MIPS per watt at full load (the point a
/// consolidated host runs at), then the quickest to wake.
fn wake_order(view: &ClusterView) -> Vec<u32> {
    let mut hs: Vec<u32> = (0..view.hosts.len() as u32)
        .filter(|&h| view.hosts[h as usize].power.wakeable())
        .collect();
    hs.sort_by(|&a, &b| {
        let (ha, hb) = (&view.hosts[a as usize], &view.hosts[b as usize]);
        let ea = ha.cpu / ha.power_model.max_w().max(1e-9);
        let eb = hb.cpu / hb.power_model.max_w().max(1e-9);
        eb.total_cmp(&ea)
            .then(ha.wake_latency_s.total_cmp(&hb.wake_latency_s))
            .then(a.cmp(&b))
    });
    hs.reverse(); // popped from the back
    hs
}

fn wake_one(s: &mut State, wake_order: &mut Vec<u32>) -> Option<u32> {
    let at = wake_order.len().checked_sub(1)?;
    let h = wake_order[at];
    wake_at(s, wake_order, at);
    Some(h)
}

/// A destination for VM `v` away from `avoid`, waking hosts while none fits.
fn dest_or_wake(
    s: &mut State,
    wake_order: &mut Vec<u32>,
    v: usize,
    avoid: u32,
    spread: bool,
) -> Option<u32> {
    if let Some(h) = s.find_dest(v, avoid, spread, u16::MAX) {
        return Some(h);
    }
    if s.policy.squeeze_before_wake && avoid != NONE {
        if let Some(h) = s.find_squeeze(v, avoid) {
            return Some(h);
        }
    }
    // A VM bigger than any host would wake everything: only wake a host it fits on empty
    // (with the headroom `find_dest` asks for), so that every wake gets used.
    let vm = &s.view.vms[v];
    loop {
        // The best host to wake that the VM may run on: waking one it may not would
        // leave that host idle.
        let at = wake_order.iter().rposition(|&h| s.may_host(v, h))?;
        let h = wake_order[at];
        let host = &s.view.hosts[h as usize];
        if s.need[v] > s.policy.target * host.cpu
            || vm.mem_mb as f64 > s.policy.mem_target * host.mem_mb as f64
        {
            return None;
        }
        wake_at(s, wake_order, at);
        if let Some(h) = s.find_dest(v, avoid, spread, u16::MAX) {
            return Some(h);
        }
    }
}

/// Wakes the host at position `at` of `wake_order` (the back is the best).
fn wake_at(s: &mut State, wake_order: &mut Vec<u32>, at: usize) {
    let h = wake_order.remove(at);
    let hu = h as usize;
    s.live[hu] = true;
    s.waking[hu] = true;
    s.woken.push(h);
    s.set_dest_ok(hu, true);
}

fn place_new(s: &mut State, wake_order: &mut Vec<u32>, out: &mut Plan) {
    let mut new: Vec<usize> = (0..s.view.vms.len())
        .filter(|&v| s.vm_host[v] == NONE)
        .collect();
    new.sort_by(|&a, &b| s.pred[b].total_cmp(&s.pred[a]).then(a.cmp(&b)));
    for v in new {
        // First placements pack tightly: nothing runs yet, so there is no burst to spread.
        match dest_or_wake(s, wake_order, v, NONE, false) {
            Some(h) => {
                s.shift(v, h, MoveReason::Overload);
                // A VM that just started is not moved in the same plan (nor soon after:
                // `check::apply` stamps it like a migration).
                s.frozen[v] = true;
            }
            None => out.unplaced.push(VmIx(v as u32)),
        }
    }
}

/// Picks the VM to move off host `h` to remove `(cpu, mem)` of excess: of the VMs that
/// remove it all on their own (one migration), the one with the least CPU (then the least
/// memory), which leaves the host fullest; otherwise the one that removes the most.
/// (Least memory first was the rule before: about 0.5 % more energy on PlanetLab.)
fn pick_victim(s: &State, h: usize, cpu: f64, mem: f64, tried: &[u32]) -> Option<usize> {
    let mut best_single: Option<(f64, f64, usize)> = None;
    let mut best_part: Option<(f64, usize)> = None;
    for &v in &s.host_vms[h] {
        let vu = v as usize;
        if s.frozen[vu] || tried.contains(&v) {
            continue;
        }
        let (p, m) = (s.pred[vu], s.view.vms[vu].mem_mb as f64);
        if p >= cpu && m >= mem {
            // Least CPU (the host stays fullest), then least memory (migration time).
            if best_single.is_none_or(|(bm, bp, _)| (p, m) < (bp, bm)) {
                best_single = Some((m, p, vu));
            }
        } else {
            let gain = if cpu > 0.0 { (p / cpu).min(1.0) } else { 0.0 }
                + if mem > 0.0 { (m / mem).min(1.0) } else { 0.0 };
            if best_part.is_none_or(|(bg, _)| gain > bg) {
                best_part = Some((gain, vu));
            }
        }
    }
    best_single.map(|(_, _, v)| v).or(best_part.map(|(_, v)| v))
}

/// First pass over overloaded hosts, worst first. Returns those still overloaded.
fn relieve_overloads(s: &mut State, wake_order: &mut Vec<u32>) -> Vec<usize> {
    let mut over: Vec<(f64, usize)> = (0..s.view.hosts.len())
        .filter(|&h| s.live[h])
        .filter_map(|h| {
            let (c, m) = s.excess(h);
            (c > 0.0 || m > 0.0).then(|| (c / s.view.hosts[h].cpu.max(1e-9), h))
        })
        .collect();
    over.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut stuck = Vec::new();
    for (_, h) in over {
        if !shed(s, wake_order, h) {
            stuck.push(h);
        }
    }
    stuck
}

/// Retries the overloads that found no room and restores the reserve, until neither
/// changes anything. Hosts handled after a stuck one may have made room for it (they
/// shed load, a host was woken for them or for the reserve); an overload now outranks
/// the reserve for a failure that may never come, and the reserve is then restored by
/// waking more. Settling here is what makes planning again right after this plan find
/// nothing more to do. Returns the overloads that stay unresolved.
fn settle(s: &mut State, wake_order: &mut Vec<u32>, mut stuck: Vec<usize>) -> Vec<usize> {
    const MAX_ROUNDS: usize = 8;
    restore_reserve(s, wake_order);
    for _ in 0..MAX_ROUNDS {
        if stuck.is_empty() {
            break;
        }
        let before = (s.moves.len(), s.woken.len());
        stuck.retain(|&h| !shed(s, wake_order, h));
        restore_reserve(s, wake_order);
        if (s.moves.len(), s.woken.len()) == before {
            break;
        }
    }
    stuck
}

/// Moves VMs off host `h` until it is back under `target`. False if it stays above `upper`.
fn shed(s: &mut State, wake_order: &mut Vec<u32>, h: usize) -> bool {
    let mut tried: Vec<u32> = Vec::new();
    loop {
        // Shed down to `target` (not just `upper`) so the host does not overload
        // again at the next small rise: that gap is the hysteresis.
        let host = &s.view.hosts[h];
        let cpu_ex = s.cpu[h] - s.policy.target * host.cpu;
        let mem_ex = s.mem[h] - s.policy.mem_target * host.mem_mb as f64;
        if cpu_ex <= 1e-9 && mem_ex <= 1e-9 {
            break;
        }
        let Some(v) = pick_victim(s, h, cpu_ex.max(0.0), mem_ex.max(0.0), &tried) else {
            break;
        };
        tried.push(v as u32);
        if let Some(to) = dest_or_wake(s, wake_order, v, h as u32, s.policy.spread) {
            s.shift(v, to, MoveReason::Overload);
            s.frozen[v] = true;
        }
    }
    let (c, m) = s.excess(h);
    c <= 1e-9 && m <= 1e-9
}

fn restore_reserve(s: &mut State, wake_order: &mut Vec<u32>) {
    while !s.reserve_holds() {
        if wake_one(s, wake_order).is_none() {
            break;
        }
    }
}

/// Empties lightly loaded hosts whose VMs all fit elsewhere. Returns how many.
fn consolidate(s: &mut State) -> usize {
    let p = s.policy;
    let view = s.view;
    // Hosts less efficient than the best running ones are emptied up to a higher load:
    // their VMs serve more MIPS per watt on a better host.
    let best_tier = (0..view.hosts.len())
        .filter(|&h| s.live[h])
        .map(|h| s.index.tier(h as u32))
        .min()
        .unwrap_or(0);
    let lower_of = |s: &State, h: usize| -> f64 {
        if s.index.tier(h as u32) > best_tier {
            p.lower.max(p.lower_less_efficient)
        } else {
            p.lower
        }
    };
    let mut cands: Vec<usize> = (0..view.hosts.len())
        .filter(|&h| {
            let host = &view.hosts[h];
            s.live[h]
                && !s.waking[h]
                && !s.host_vms[h].is_empty()
                && s.host_vms[h].len() <= p.max_evacuation_vms
                && (s.cpu[h] < lower_of(s, h) * host.cpu || p.lower_mean > 0.0)
                && view.now_s - host.power_changed_at_s >= p.min_awake_s
                && s.host_vms[h].iter().all(|&v| !s.frozen[v as usize])
        })
        .collect();
    // Least efficient first (a G4 before a G5), then the cheapest to empty: the memory
    // to copy is the migration time. (Ordering by VM count instead was tried: fewer
    // migrations in the first consolidation, but worse energy for the day.)
    let eff = |h: usize| view.hosts[h].cpu / view.hosts[h].power_model.max_w().max(1e-9);
    let cost = |s: &State, h: usize| -> f64 {
        s.host_vms[h]
            .iter()
            .map(|&v| view.vms[v as usize].mem_mb as f64)
            .sum()
    };
    let mut keyed: Vec<(f64, f64, f64, usize)> = cands
        .drain(..)
        .map(|h| (eff(h), cost(s, h), s.cpu[h], h))
        .collect();
    keyed.sort_by(|a, b| {
        a.0.total_cmp(&b.0)
            .then(a.1.total_cmp(&b.1))
            .then(a.2.total_cmp(&b.2))
            .then(a.3.cmp(&b.3))
    });

    let mut emptied = 0;
    let mut budget = p.max_consolidation_migrations;
    // Peak demand of the VMs on running hosts (moves within them do not change it).
    let live_peak: f64 = (0..view.vms.len())
        .filter(|&v| s.vm_host[v] != NONE && s.live[s.vm_host[v] as usize])
        .map(|v| s.peak[v])
        .sum();
    for (_, _, _, h) in keyed {
        let n = s.host_vms[h].len();
        // Either the host itself is light, or the running hosts as a whole are: emptying
        // it must leave their mean predicted CPU below `lower_mean`.
        if s.cpu[h] >= lower_of(s, h) * view.hosts[h].cpu {
            let cap: f64 = (0..view.hosts.len())
                .filter(|&x| s.live[x] && x != h)
                .map(|x| view.hosts[x].cpu)
                .sum();
            if cap <= 0.0 || live_peak / cap > p.lower_mean {
                continue;
            }
        }
        // Earlier evacuations in this plan may have filled it with (frozen) VMs since the
        // candidates were chosen: a VM moves at most once per plan.
        if n > budget || s.host_vms[h].iter().any(|&v| s.frozen[v as usize]) {
            continue;
        }
        let keep = s.moves.len();
        s.set_dest_ok(h, false);
        let mut vms = s.host_vms[h].clone();
        vms.sort_by(|&a, &b| {
            s.pred[b as usize]
                .total_cmp(&s.pred[a as usize])
                .then(a.cmp(&b))
        });
        let mut ok = true;
        // Never onto a less efficient host: that would undo what emptying it is for.
        let max_tier = s.index.tier(h as u32);
        for v in vms {
            match s.find_dest(v as usize, h as u32, p.spread_consolidation, max_tier) {
                Some(to) => s.shift(v as usize, to, MoveReason::Consolidate),
                None => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            s.live[h] = false;
            if !s.reserve_holds() {
                s.live[h] = true;
                ok = false;
            }
        }
        if ok {
            for i in keep..s.moves.len() {
                let v = s.moves[i].vm as usize;
                s.frozen[v] = true;
            }
            budget -= n;
            emptied += 1;
            // It stays out of the index: it is going to sleep.
        } else {
            s.rollback(keep);
            s.set_dest_ok(h, true);
        }
    }
    emptied
}

/// Empty running hosts to put to sleep, least efficient first, while the reserve holds.
fn choose_sleepers(s: &mut State) -> Vec<u32> {
    let view = s.view;
    let mut empty: Vec<usize> = (0..view.hosts.len())
        .filter(|&h| view.hosts[h].power == PlanPower::On && s.host_vms[h].is_empty())
        .collect();
    empty.sort_by(|&a, &b| {
        let ea = view.hosts[a].cpu / view.hosts[a].power_model.max_w().max(1e-9);
        let eb = view.hosts[b].cpu / view.hosts[b].power_model.max_w().max(1e-9);
        ea.total_cmp(&eb).then(a.cmp(&b))
    });
    let mut out = Vec::new();
    for h in empty {
        if !s.live[h] {
            // Emptied by consolidation: already checked against the reserve.
            out.push(h as u32);
            continue;
        }
        if view.now_s - view.hosts[h].power_changed_at_s < s.policy.min_awake_s {
            continue;
        }
        s.live[h] = false;
        if s.reserve_holds() {
            s.set_dest_ok(h, false);
            out.push(h as u32);
        } else {
            s.live[h] = true;
        }
    }
    out
}

/// The reserve test the planner uses, on an unmodified view.
pub(crate) fn reserve_holds(view: &ClusterView, policy: &Policy) -> bool {
    State::new(view, policy).reserve_holds()
}
