//! The planner's working copy of the cluster: per-host loads under the plan built so
//! far, the best-fit index, and the list of moves (which can be rolled back when an
//! evacuation turns out impossible).

use crate::model::{ClusterView, PlanPower};
use crate::plan::fit::{tiers, FitIndex};
use crate::plan::types::MoveReason;
use crate::policy::Policy;
use crate::predict::predict_cpu;

/// Sentinel for "no host".
pub(crate) const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Move {
    pub vm: u32,
    pub from: u32,
    pub to: u32,
    pub reason: MoveReason,
}

#[derive(Debug)]
pub(crate) struct State<'a> {
    pub view: &'a ClusterView,
    pub policy: &'a Policy,
    /// Predicted CPU per VM.
    pub pred: Vec<f64>,
    /// Highest of `cpu_now` and the samples in the prediction window, per VM: what the
    /// cluster-level consolidation test uses, so that a short dip empties nothing.
    pub peak: Vec<f64>,
    /// Room a VM needs on a destination: its prediction with `move_k_stddev`, so a VM
    /// that just moved does not overload its new host at its next burst.
    pub need: Vec<f64>,
    /// Current (planned) host per VM, or NONE.
    pub vm_host: Vec<u32>,
    /// VMs the plan must not move (moved recently, placed or moved by this plan, or on a
    /// host the planner does not manage). A host holding one is not emptied.
    pub frozen: Vec<bool>,
    pub host_vms: Vec<Vec<u32>>,
    pub cpu: Vec<f64>,
    pub mem: Vec<f64>,
    /// Counts as running capacity (On, Waking, or woken by this plan, and not put to sleep).
    pub live: Vec<bool>,
    /// Not up yet: moves to it wait for the wake.
    pub waking: Vec<bool>,
    /// May receive VMs (excluded temporarily while it is being emptied).
    pub dest_ok: Vec<bool>,
    pub index: FitIndex,
    pub moves: Vec<Move>,
    pub woken: Vec<u32>,
    /// Per VM, the hosts it may run on, sorted (`None`: any); from `PlanVm::only_on`.
    allowed: Vec<Option<Vec<u32>>>,
}

impl<'a> State<'a> {
    pub(crate) fn new(view: &'a ClusterView, policy: &'a Policy) -> Self {
        let nh = view.hosts.len();
        let nv = view.vms.len();
        let mut s = State {
            view,
            policy,
            pred: Vec::with_capacity(nv),
            peak: Vec::with_capacity(nv),
            need: Vec::with_capacity(nv),
            vm_host: Vec::with_capacity(nv),
            frozen: Vec::with_capacity(nv),
            host_vms: vec![Vec::new(); nh],
            cpu: vec![0.0; nh],
            mem: vec![0.0; nh],
            live: Vec::with_capacity(nh),
            waking: Vec::with_capacity(nh),
            dest_ok: Vec::with_capacity(nh),
            index: FitIndex::new(tiers(
                &view
                    .hosts
                    .iter()
                    .map(|h| h.cpu / h.power_model.max_w().max(1e-9))
                    .collect::<Vec<_>>(),
                policy.prefer_efficient_hosts,
            )),
            moves: Vec::new(),
            woken: Vec::new(),
            allowed: view
                .vms
                .iter()
                .map(|vm| {
                    vm.only_on.as_ref().map(|hs| {
                        let mut v: Vec<u32> = hs.iter().map(|h| h.0).collect();
                        v.sort_unstable();
                        v.dedup();
                        v
                    })
                })
                .collect(),
        };
        for h in &view.hosts {
            let live = matches!(h.power, PlanPower::On | PlanPower::Waking);
            s.live.push(live);
            s.waking.push(h.power == PlanPower::Waking);
            s.dest_ok.push(live);
        }
        for (i, vm) in view.vms.iter().enumerate() {
            let p = predict_cpu(vm, &policy.prediction);
            s.pred.push(p);
            let dest = crate::policy::Prediction {
                window: policy.prediction.window,
                k_stddev: policy.move_k_stddev,
            };
            s.need.push(predict_cpu(vm, &dest).max(p));
            let w = policy.prediction.window.min(vm.cpu_history.len());
            let recent = &vm.cpu_history[vm.cpu_history.len() - w..];
            s.peak.push(
                recent
                    .iter()
                    .copied()
                    .fold(p, f64::max)
                    .min(vm.cpu_max.max(p)),
            );
            let host = vm.host.map(|h| h.0).filter(|&h| (h as usize) < nh);
            let recently = vm
                .last_moved_at_s
                .is_some_and(|t| view.now_s - t < policy.min_vm_move_interval_s);
            match host {
                Some(h) => {
                    s.vm_host.push(h);
                    s.host_vms[h as usize].push(i as u32);
                    s.cpu[h as usize] += p;
                    s.mem[h as usize] += vm.mem_mb as f64;
                    // VMs on a host that is not running are failover's business.
                    s.frozen.push(recently || !s.live[h as usize]);
                }
                None => {
                    s.vm_host.push(NONE);
                    s.frozen.push(recently);
                }
            }
        }
        for h in 0..nh {
            if s.dest_ok[h] {
                s.index.update(h as u32, s.free_cpu(h));
            }
        }
        s
    }

    /// May VM `v` run on host `h` (its networks and CPU model are there)?
    pub(crate) fn may_host(&self, v: usize, h: u32) -> bool {
        self.allowed[v]
            .as_ref()
            .is_none_or(|hs| hs.binary_search(&h).is_ok())
    }

    /// CPU room left on host `h` before `target`.
    pub(crate) fn free_cpu(&self, h: usize) -> f64 {
        self.policy.target * self.view.hosts[h].cpu - self.cpu[h]
    }

    pub(crate) fn free_mem(&self, h: usize) -> f64 {
        self.policy.mem_target * self.view.hosts[h].mem_mb as f64 - self.mem[h]
    }

    /// CPU above `upper` (positive when overloaded) and memory above `mem_target`.
    pub(crate) fn excess(&self, h: usize) -> (f64, f64) {
        let host = &self.view.hosts[h];
        (
            self.cpu[h] - self.policy.upper * host.cpu,
            self.mem[h] - self.policy.mem_target * host.mem_mb as f64,
        )
    }

    fn refile(&mut self, h: usize) {
        if self.dest_ok[h] {
            self.index.update(h as u32, self.free_cpu(h));
        }
    }

    pub(crate) fn set_dest_ok(&mut self, h: usize, ok: bool) {
        self.dest_ok[h] = ok;
        if ok {
            self.refile(h);
        } else {
            self.index.remove(h as u32);
        }
    }

    /// A destination that fits VM `v` (CPU to `target`, memory), not `avoid`, of tier at
    /// most `max_tier`: the most efficient tier first, within it the roomiest when
    /// `spread`, else the tightest. With `spread`, a VM leaving host `avoid` and
    /// `relieve_onto_kept`, the hosts consolidation keeps are tried first.
    pub(crate) fn find_dest(
        &self,
        v: usize,
        avoid: u32,
        spread: bool,
        max_tier: u16,
    ) -> Option<u32> {
        // Memory rarely binds in practice; the caps keep a pathological view from
        // turning one lookup into a scan of every host, and a tier whose hosts are full
        // in memory from hiding the next tier.
        const PROBES_PER_TIER: usize = 512;
        let need_mem = self.view.vms[v].mem_mb as f64;
        let ok =
            |h: &u32| *h != avoid && self.free_mem(*h as usize) >= need_mem && self.may_host(v, *h);
        let lo = self.need[v];
        if spread && avoid != NONE && self.policy.relieve_onto_kept {
            // A host consolidation keeps: not below `lower`.
            let kept = |h: &u32| {
                ok(h)
                    && self.cpu[*h as usize] >= self.policy.lower * self.view.hosts[*h as usize].cpu
            };
            let found = self
                .index
                .tier_list()
                .iter()
                .take_while(|&&t| t <= max_tier)
                .find_map(|&t| {
                    self.index
                        .roomiest_in_tier(t, lo)
                        .take(PROBES_PER_TIER)
                        .find(kept)
                });
            if found.is_some() {
                return found;
            }
        }
        self.index
            .tier_list()
            .iter()
            .take_while(|&&t| t <= max_tier)
            .find_map(|&t| {
                if spread {
                    self.index
                        .roomiest_in_tier(t, lo)
                        .take(PROBES_PER_TIER)
                        .find(ok)
                } else {
                    self.index
                        .tightest_in_tier(t, lo)
                        .take(PROBES_PER_TIER)
                        .find(ok)
                }
            })
    }

    /// When nothing fits under `target`: a host that takes VM `v` up to `upper`, the
    /// roomiest. Squeezing a running host is cheaper than waking one that the next
    /// consolidation would empty again (that round trip costs a host's worth of moves).
    pub(crate) fn find_squeeze(&self, v: usize, avoid: u32) -> Option<u32> {
        const MAX_PROBES: usize = 512;
        let gap = (self.policy.upper - self.policy.target).max(0.0);
        let max_cap = self.view.hosts.iter().map(|h| h.cpu).fold(0.0, f64::max);
        let need_mem = self.view.vms[v].mem_mb as f64;
        let mut probes = 0;
        for &t in self.index.tier_list() {
            for h in self.index.roomiest_in_tier(t, self.pred[v] - gap * max_cap) {
                probes += 1;
                if probes > MAX_PROBES {
                    return None;
                }
                let hu = h as usize;
                if h == avoid || !self.may_host(v, h) {
                    continue;
                }
                if self.cpu[hu] + self.pred[v] > self.policy.upper * self.view.hosts[hu].cpu {
                    // Roomiest first: the rest of this tier has less room (hosts of one
                    // tier are mostly of one size), so try the next tier.
                    break;
                }
                if self.free_mem(hu) >= need_mem {
                    return Some(h);
                }
            }
        }
        None
    }

    /// Moves VM `v` to `to` in the working state (placement when it has no host).
    pub(crate) fn shift(&mut self, v: usize, to: u32, reason: MoveReason) {
        let from = self.vm_host[v];
        let p = self.pred[v];
        let m = self.view.vms[v].mem_mb as f64;
        if from != NONE {
            let f = from as usize;
            self.cpu[f] -= p;
            self.mem[f] -= m;
            if let Some(pos) = self.host_vms[f].iter().position(|&x| x == v as u32) {
                self.host_vms[f].swap_remove(pos);
            }
            self.refile(f);
        }
        let t = to as usize;
        self.cpu[t] += p;
        self.mem[t] += m;
        self.host_vms[t].push(v as u32);
        self.vm_host[v] = to;
        self.refile(t);
        self.moves.push(Move {
            vm: v as u32,
            from,
            to,
            reason,
        });
    }

    /// Undoes the moves after the first `keep`, newest first.
    pub(crate) fn rollback(&mut self, keep: usize) {
        while self.moves.len() > keep {
            let Some(mv) = self.moves.pop() else { break };
            let v = mv.vm as usize;
            let p = self.pred[v];
            let m = self.view.vms[v].mem_mb as f64;
            let t = mv.to as usize;
            self.cpu[t] -= p;
            self.mem[t] -= m;
            if let Some(pos) = self.host_vms[t].iter().position(|&x| x == mv.vm) {
                self.host_vms[t].swap_remove(pos);
            }
            self.refile(t);
            if mv.from != NONE {
                let f = mv.from as usize;
                self.cpu[f] += p;
                self.mem[f] += m;
                self.host_vms[f].push(mv.vm);
                self.refile(f);
            }
            self.vm_host[v] = mv.from;
        }
    }

    /// Does the running capacity absorb the loss of any one running host?
    ///
    /// Losing host H needs the others' free room to hold H's load:
    /// Σ_{h≠H} free(h) ≥ load(H) ⇔ Σ free ≥ free(H) + load(H) = max(upper·cap(H), load(H)).
    /// So the reserve holds when the total free room covers the largest such value, for
    /// CPU and for memory. (Fragmentation is ignored: VMs are small next to hosts.)
    pub(crate) fn reserve_holds(&self) -> bool {
        let k = self.policy.reserve_hosts as f64;
        if k == 0.0 {
            return true;
        }
        let (mut free_c, mut free_m, mut need_c, mut need_m) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for (h, host) in self.view.hosts.iter().enumerate() {
            if !self.live[h] {
                continue;
            }
            let cap_c = self.policy.upper * host.cpu;
            let cap_m = self.policy.mem_target * host.mem_mb as f64;
            free_c += (cap_c - self.cpu[h]).max(0.0);
            free_m += (cap_m - self.mem[h]).max(0.0);
            need_c = need_c.max(cap_c.max(self.cpu[h]));
            need_m = need_m.max(cap_m.max(self.mem[h]));
        }
        free_c + 1e-6 >= k * need_c && free_m + 1e-6 >= k * need_m
    }
}
