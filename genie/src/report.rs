//! Building reports: heartbeats, full reports and VM-only reports, each with the next
//! generation number of this genie instance.

use wisp_common::proto::{Report, VmStatus};

use crate::metrics::MetricsSource;

/// Owns the generation counter (strictly increasing for the life of the process, across
/// reconnects) and the metrics source.
#[derive(Debug)]
pub struct Reporter<M> {
    gen: u64,
    metrics: M,
}

impl<M: MetricsSource> Reporter<M> {
    pub fn new(metrics: M) -> Self {
        Self { gen: 0, metrics }
    }

    fn next_gen(&mut self) -> u64 {
        self.gen += 1;
        self.gen
    }

    /// The last generation handed out (0 before the first report).
    pub fn gen(&self) -> u64 {
        self.gen
    }

    /// A heartbeat: no metrics, no VMs.
    pub fn heartbeat(&mut self, now_ms: u64) -> Report {
        Report {
            gen: self.next_gen(),
            sent_at_ms: now_ms,
            metrics: None,
            vms: None,
            power: None,
            resumed: None,
            virt: None,
        }
    }

    /// Metrics and the full VM list. A metrics failure is logged and the report still
    /// goes out (the VM list and the liveness matter more).
    pub fn full(&mut self, now_ms: u64, vms: Vec<VmStatus>) -> Report {
        let metrics = match self.metrics.sample() {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(error = %e, "host metrics unavailable for this report");
                None
            }
        };
        Report {
            gen: self.next_gen(),
            sent_at_ms: now_ms,
            metrics,
            vms: Some(vms),
            power: None,
            resumed: None,
            virt: None,
        }
    }

    /// The VM list only (sent at once when a VM changes state).
    pub fn vms(&mut self, now_ms: u64, vms: Vec<VmStatus>) -> Report {
        Report {
            gen: self.next_gen(),
            sent_at_ms: now_ms,
            metrics: None,
            vms: Some(vms),
            power: None,
            resumed: None,
            virt: None,
        }
    }

    pub fn metrics_mut(&mut self) -> &mut M {
        &mut self.metrics
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::fakes::FakeMetrics;

    #[test]
    fn gen_strictly_increases_over_all_kinds() {
        let mut fm = FakeMetrics::default();
        fm.next.mem_total_bytes = 42;
        let mut r = Reporter::new(fm);
        let a = r.heartbeat(1);
        let b = r.full(2, vec![]);
        let c = r.vms(3, vec![]);
        let d = r.heartbeat(4);
        assert_eq!([a.gen, b.gen, c.gen, d.gen], [1, 2, 3, 4]);
        assert!(a.metrics.is_none() && a.vms.is_none());
        assert_eq!(b.metrics.unwrap().mem_total_bytes, 42);
        assert_eq!(b.vms, Some(vec![]));
        assert!(c.metrics.is_none() && c.vms.is_some());
        assert_eq!(d.sent_at_ms, 4);
    }

    #[test]
    fn metrics_failure_still_reports() {
        let mut r = Reporter::new(FakeMetrics {
            fail: true,
            ..Default::default()
        });
        let f = r.full(1, vec![]);
        assert!(f.metrics.is_none());
        assert_eq!(f.vms, Some(vec![]));
        assert_eq!(r.metrics_mut().samples, 1);
    }
}
