//! The counters and histograms that code elsewhere feeds (IPMI calls, migrations,
//! outages, refused connections, events by kind). They are process-wide statics of
//! atomics on purpose: they are write-only telemetry that no logic ever reads, any
//! task (an accept loop, a BMC call) must be able to count without holding a handle,
//! and a scrape only reads them. Gauges (hosts, VMs, watts) are not here: a scrape
//! reads those from the cluster snapshot and the energy status.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A monotonically increasing count.
#[derive(Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Counter {
    fn default() -> Self {
        Self::new()
    }
}

/// A count per label value (a small, fixed set of values: listeners, event kinds).
#[derive(Debug)]
pub struct LabeledCounter(Mutex<BTreeMap<&'static str, u64>>);

impl LabeledCounter {
    pub const fn new() -> Self {
        Self(Mutex::new(BTreeMap::new()))
    }
    pub fn inc(&self, label: &'static str) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(label).or_insert(0) += 1;
    }
    pub fn values(&self) -> Vec<(&'static str, u64)> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(k, v)| (*k, *v)).collect()
    }
}

impl Default for LabeledCounter {
    fn default() -> Self {
        Self::new()
    }
}

/// Bucket bounds in seconds for latencies from milliseconds (an IPMI call) to
/// minutes (a failover that waits for a host to be proven off).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// A Prometheus histogram: cumulative buckets, a sum and a count.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    data: Mutex<HistData>,
}

#[derive(Debug, Clone, Default)]
pub struct HistData {
    /// Non-cumulative count per bound (`bounds.len()` entries; +Inf is `count`).
    pub buckets: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub const fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            data: Mutex::new(HistData {
                buckets: Vec::new(),
                sum: 0.0,
                count: 0,
            }),
        }
    }

    pub fn observe(&self, v: f64) {
        let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
        let mut d = self.data.lock().unwrap_or_else(|p| p.into_inner());
        if d.buckets.len() != self.bounds.len() {
            d.buckets = vec![0; self.bounds.len()];
        }
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            d.buckets[i] += 1;
        }
        d.sum += v;
        d.count += 1;
    }

    pub fn observe_ms(&self, ms: u64) {
        self.observe(ms as f64 / 1000.0);
    }

    /// Cumulative `(le, count)` pairs, then the sum and the total count.
    pub fn read(&self) -> (Vec<(f64, u64)>, f64, u64) {
        let d = self.data.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut acc = 0;
        let cum = self
            .bounds
            .iter()
            .enumerate()
            .map(|(i, b)| {
                acc += d.buckets.get(i).copied().unwrap_or(0);
                (*b, acc)
            })
            .collect();
        (cum, d.sum, d.count)
    }
}

/// Connections refused at an accept path (bad handshake, bad token, over a limit),
/// by listener (`genie`, `api`, ...). Call [`refused_connection`].
pub static REFUSED_CONNECTIONS: LabeledCounter = LabeledCounter::new();
/// Every event the router recorded, by kind (counted by the metrics sampler).
pub static EVENTS: LabeledCounter = LabeledCounter::new();
/// IPMI requests (status and chassis control) and their latency.
pub static IPMI_SECONDS: Histogram = Histogram::new(LATENCY_BUCKETS);
pub static IPMI_ERRORS: Counter = Counter::new();
/// Live migrations that completed, that failed, their bytes, downtime and duration.
pub static MIGRATIONS_OK: Counter = Counter::new();
pub static MIGRATIONS_FAILED: Counter = Counter::new();
pub static MIGRATION_BYTES: Counter = Counter::new();
pub static MIGRATION_DOWNTIME_SECONDS: Histogram = Histogram::new(LATENCY_BUCKETS);
pub static MIGRATION_SECONDS: Histogram = Histogram::new(LATENCY_BUCKETS);
/// How long a host was silent when the router declared it unreachable.
pub static DETECTION_SECONDS: Histogram = Histogram::new(LATENCY_BUCKETS);
/// How long a VM was down from its last sight to running again (SLA incidents).
pub static OUTAGE_SECONDS: Histogram = Histogram::new(LATENCY_BUCKETS);

/// Records a live migration's end: `(total_ms, downtime_ms)` if it completed.
pub fn migration_ended(done: Option<(u64, u64)>, bytes: u64) {
    match done {
        Some((total_ms, downtime_ms)) => {
            MIGRATIONS_OK.inc();
            MIGRATION_BYTES.add(bytes);
            MIGRATION_SECONDS.observe_ms(total_ms);
            MIGRATION_DOWNTIME_SECONDS.observe_ms(downtime_ms);
        }
        None => MIGRATIONS_FAILED.inc(),
    }
}

/// Counts one refused connection on `listener` (a fixed name such as `genie`).
pub fn refused_connection(listener: &'static str) {
    REFUSED_CONNECTIONS.inc(listener);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        static H: Histogram = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.5, 1.7, 9.0] {
            H.observe(v);
        }
        let (b, sum, n) = H.read();
        assert_eq!(b, vec![(1.0, 1), (2.0, 3)]);
        assert_eq!(n, 4);
        assert!((sum - 12.7).abs() < 1e-9);
    }
}
