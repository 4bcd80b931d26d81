//! The simulator's side of sleep depth: what `wisp_planner::depth::choose` is told
//! about the simulated cluster after each plan (the engine carries the choice out).

use wisp_planner::depth::{DepthHost, DepthInput};
use wisp_planner::{HostIx, PlanPower, Policy, SleepDepth};

use crate::report::StepSample;
use crate::scenario::Scenario;

/// What the per-host depth policy looks back over: the peak of demand over 2 h, the
/// swing of running hosts over 3 h; a suspended host unneeded for 1 h is powered off.
const DEPTH_PEAK_S: f64 = 7200.0;
const DEPTH_SWING_S: f64 = 10_800.0;
const DEPTH_S3_GRACE_S: f64 = 3600.0;

/// The depth policy's view of the simulated cluster after this round's plan.
#[allow(clippy::too_many_arguments)]
pub(crate) fn depth_input(
    scenario: &Scenario,
    policy: &Policy,
    t: f64,
    asleep: &[usize],
    depth_of: &[Option<SleepDepth>],
    unneeded_since: &[f64],
    power: &[PlanPower],
    sleeping_now: &[bool],
    total_hist: &[f64],
    series: &[StepSample],
) -> DepthInput {
    let dt = scenario.step_s.max(1e-9);
    let peak_n = ((DEPTH_PEAK_S / dt).ceil() as usize).max(1);
    let swing_n = ((DEPTH_SWING_S / dt).ceil() as usize).max(1);
    let recent_peak_demand = total_hist[total_hist.len().saturating_sub(peak_n)..]
        .iter()
        .copied()
        .fold(0.0, f64::max);
    let on: Vec<usize> = series[series.len().saturating_sub(swing_n)..]
        .iter()
        .map(|s| s.hosts_on)
        .collect();
    let swing_hosts = match (on.iter().max(), on.iter().min()) {
        (Some(a), Some(b)) => a - b,
        _ => 0,
    };
    let running_cpu = (0..scenario.hosts.len())
        .filter(|&h| power[h] == PlanPower::On && !sleeping_now[h])
        .map(|h| scenario.hosts[h].cpu_mips)
        .sum();
    let hosts = asleep
        .iter()
        .map(|&h| {
            let ht = &scenario.hosts[h];
            DepthHost {
                host: HostIx(h as u32),
                cpu: ht.cpu_mips,
                mips_per_watt: ht.cpu_mips / ht.power.max_w().max(1e-9),
                can_suspend: ht.sleep.s3.is_some(),
                wake_s3_s: ht.sleep.at(SleepDepth::Suspend).wake_s,
                wake_s5_s: ht.sleep.s5.wake_s,
                current: depth_of[h],
                unneeded_since_s: unneeded_since[h],
            }
        })
        .collect();
    DepthInput {
        now_s: t,
        hosts,
        running_cpu,
        recent_peak_demand,
        swing_hosts,
        reserve_hosts: policy.reserve_hosts,
        target: policy.target,
        s3_grace_s: DEPTH_S3_GRACE_S,
    }
}
