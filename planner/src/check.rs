//! Applying a plan to a view, and the invariants every plan must keep.
//!
//! Used by the property tests, the simulator, and useful to the daemon to double-check a
//! plan before executing it.

use crate::model::{ClusterView, HostIx, PlanPower};
use crate::plan::types::Plan;
use crate::policy::Policy;

/// The view as it will be once `plan` has been carried out at `view.now_s`: VMs on their
/// new hosts (placed and moved ones stamped with `now_s`), woken hosts `On`, sleeping hosts `Asleep`.
pub fn apply(view: &ClusterView, plan: &Plan) -> ClusterView {
    let mut next = view.clone();
    for p in &plan.placements {
        // A VM that just started counts as just moved: it is not moved again soon.
        let vm = &mut next.vms[p.vm.get()];
        vm.host = Some(p.to);
        vm.last_moved_at_s = Some(view.now_s);
    }
    for m in &plan.migrations {
        let vm = &mut next.vms[m.vm.get()];
        vm.host = Some(m.to);
        vm.last_moved_at_s = Some(view.now_s);
    }
    for &h in &plan.wake {
        let host = &mut next.hosts[h.get()];
        host.power = PlanPower::On;
        host.power_changed_at_s = view.now_s;
    }
    for &h in &plan.sleep {
        let host = &mut next.hosts[h.get()];
        host.power = PlanPower::Asleep;
        host.power_changed_at_s = view.now_s;
    }
    next
}

/// Per-host predicted CPU and memory load (`None` VMs skipped).
pub fn host_loads(view: &ClusterView, policy: &Policy) -> Vec<(f64, f64)> {
    let mut loads = vec![(0.0, 0.0); view.hosts.len()];
    for vm in &view.vms {
        if let Some(h) = vm.host {
            let l = &mut loads[h.get()];
            l.0 += crate::predict::predict_cpu(vm, &policy.prediction);
            l.1 += vm.mem_mb as f64;
        }
    }
    loads
}

/// Hosts whose predicted CPU exceeds `upper` or whose memory exceeds `mem_target`.
pub fn overcommitted(view: &ClusterView, policy: &Policy) -> Vec<HostIx> {
    host_loads(view, policy)
        .iter()
        .enumerate()
        .filter(|(h, (c, m))| {
            let host = &view.hosts[*h];
            *c > policy.upper * host.cpu + 1e-6
                || *m > policy.mem_target * host.mem_mb as f64 + 1e-6
        })
        .map(|(h, _)| HostIx(h as u32))
        .collect()
}

/// Can the running hosts absorb the loss of any one of them (see `Policy::reserve_hosts`)?
pub fn reserve_holds(view: &ClusterView, policy: &Policy) -> bool {
    crate::plan::reserve_holds(view, policy)
}
