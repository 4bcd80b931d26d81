//! Demand prediction: what a VM will likely need over the next planning interval.

use crate::model::PlanVm;
use crate::policy::Prediction;

/// max(now, mean + k·stddev) over the last `window` samples and now, capped at `cpu_max`.
///
/// Taking the max with `now` means a plan never trusts a forecast below what the VM uses
/// right now; the stddev term gives bursty VMs headroom.
pub fn predict_cpu(vm: &PlanVm, p: &Prediction) -> f64 {
    let now = vm.cpu_now.max(0.0);
    let mut pred = now;
    if p.window > 0 && !vm.cpu_history.is_empty() && p.k_stddev != 0.0 {
        let take = p.window.min(vm.cpu_history.len());
        let recent = &vm.cpu_history[vm.cpu_history.len() - take..];
        let n = (take + 1) as f64;
        let mean = (recent.iter().sum::<f64>() + now) / n;
        let var = (recent.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>()
            + (now - mean) * (now - mean))
            / n;
        pred = pred.max(mean + p.k_stddev * var.sqrt());
    }
    if vm.cpu_max > 0.0 {
        pred = pred.min(vm.cpu_max.max(now));
    }
    pred
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(now: f64, hist: &[f64]) -> PlanVm {
        PlanVm {
            mem_mb: 100,
            cpu_max: 1000.0,
            cpu_now: now,
            cpu_history: hist.to_vec(),
            host: None,
            last_moved_at_s: None,
            only_on: None,
        }
    }

    #[test]
    fn never_below_now_and_capped() {
        let p = Prediction {
            window: 4,
            k_stddev: 2.0,
        };
        assert_eq!(predict_cpu(&vm(50.0, &[]), &p), 50.0);
        // Samples 0,100,0,100 and now 50: mean 50, stddev sqrt(2000) ≈ 44.7.
        let got = predict_cpu(&vm(50.0, &[0.0, 100.0, 0.0, 100.0]), &p);
        assert!((got - (50.0 + 2.0 * 2000f64.sqrt())).abs() < 1e-9, "{got}");
        assert_eq!(predict_cpu(&vm(900.0, &[0.0, 1000.0]), &p), 1000.0);
    }
}
