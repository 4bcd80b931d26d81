//! Measured wake times per host, kept in the store with the host's flags so they
//! survive restarts: per method (from that attempt's send to the genie heard), per
//! wake as a whole (from the request to the genie heard, failed attempts included),
//! and when each method was last drilled. The energy planner reads
//! [`WakeBook::expected_ms`] for its reserve.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::WakeVia;

/// Samples kept per series: enough for a median that one odd wake does not move,
/// small enough for `state.json`.
pub const KEEP: usize = 8;

/// The newest wake times of one series, ms, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Samples {
    #[serde(default)]
    pub ms: Vec<u64>,
    /// When the newest was taken (unix ms).
    #[serde(default)]
    pub last_at_ms: u64,
}

impl Samples {
    pub fn push(&mut self, ms: u64, at_ms: u64) {
        self.ms.push(ms);
        let extra = self.ms.len().saturating_sub(KEEP);
        self.ms.drain(..extra);
        self.last_at_ms = at_ms;
    }

    /// The median (the lower of the two middle ones for an even count).
    pub fn median(&self) -> Option<u64> {
        let mut v = self.ms.clone();
        v.sort_unstable();
        v.get(v.len().checked_sub(1)? / 2).copied()
    }

    pub fn last(&self) -> Option<u64> {
        self.ms.last().copied()
    }
}

/// One host's wake record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WakeBook {
    /// From an attempt's send to the genie heard, by the method that worked.
    #[serde(default)]
    pub methods: BTreeMap<WakeVia, Samples>,
    /// From the wake request to the genie heard.
    #[serde(default)]
    pub total: Samples,
    /// When each method was last drilled (unix ms), whatever the result.
    #[serde(default)]
    pub drilled_ms: BTreeMap<WakeVia, u64>,
}

impl WakeBook {
    pub fn is_empty(&self) -> bool {
        self.methods.is_empty() && self.total.ms.is_empty() && self.drilled_ms.is_empty()
    }

    /// Records a wake that worked by `method`.
    pub fn record(&mut self, method: WakeVia, attempt_ms: u64, total_ms: u64, at_ms: u64) {
        self.methods
            .entry(method)
            .or_default()
            .push(attempt_ms, at_ms);
        self.total.push(total_ms, at_ms);
    }

    /// How long a wake of this host is expected to take, from the request to its
    /// genie heard: the median of its measured wakes; `None` before the first.
    pub fn expected_ms(&self) -> Option<u64> {
        self.total.median()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_window() {
        let mut b = WakeBook::default();
        assert_eq!(b.expected_ms(), None);
        assert!(b.is_empty());
        for (i, ms) in [900, 100, 500].into_iter().enumerate() {
            b.record(WakeVia::Wol, ms, ms + 10, i as u64);
        }
        assert_eq!(b.expected_ms(), Some(510));
        assert_eq!(b.methods[&WakeVia::Wol].median(), Some(500));
        for i in 0..20 {
            b.record(WakeVia::Ipmi, 7, 7, 100 + i);
        }
        assert_eq!(b.total.ms.len(), KEEP);
        assert_eq!(b.expected_ms(), Some(7));
        assert_eq!(b.methods[&WakeVia::Ipmi].last_at_ms, 119);
        // The store keeps it as JSON with the methods' words as keys.
        let j = serde_json::to_string(&b).unwrap_or_default();
        assert!(j.contains("\"wol\"") && j.contains("\"ipmi\""), "{j}");
        assert_eq!(serde_json::from_str::<WakeBook>(&j).ok(), Some(b));
    }
}
