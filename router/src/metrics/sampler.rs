//! Metrics derived by watching the published snapshots: events counted by kind, and
//! detection latency (how long a host had been silent when it turned unreachable).
//! Watching from outside keeps the model free of telemetry.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::watch;

use super::registry as r;
use crate::cluster::ClusterHandle;
use crate::model::host::HostStatus;

/// The cluster task publishes every 100 ms; sampling as often sees each transition.
const PERIOD: Duration = Duration::from_millis(100);

/// Runs until shutdown.
pub async fn run(c: ClusterHandle, mut shutdown: watch::Receiver<bool>) {
    // Only events of this run count: the snapshot also holds those loaded from the
    // store at start.
    let first = c.snapshot();
    let started_ms = wisp_common::time::unix_ms().saturating_sub(
        first
            .taken_at
            .saturating_duration_since(first.router_started)
            .as_millis() as u64,
    );
    let mut last_event: Option<(u64, usize)> = Some((started_ms, 0));
    let mut last_status: BTreeMap<wisp_common::HostId, HostStatus> = BTreeMap::new();
    loop {
        let snap = c.snapshot();
        // Events: count those after the last one counted (newest at the end).
        let evs = &snap.events;
        let start = match last_event {
            None => 0,
            Some((at, same_ms)) => {
                // Skip events older than the watermark and those at it already counted.
                let first_at = evs.partition_point(|e| e.at_ms < at);
                let at_count = evs[first_at..].iter().take_while(|e| e.at_ms == at).count();
                first_at + same_ms.min(at_count)
            }
        };
        for e in &evs[start.min(evs.len())..] {
            r::EVENTS.inc(e.kind.as_str());
        }
        if let Some(newest) = evs.last() {
            let same = evs
                .iter()
                .rev()
                .take_while(|e| e.at_ms == newest.at_ms)
                .count();
            last_event = Some((newest.at_ms, same));
        }
        for h in &snap.hosts {
            let before = last_status.insert(h.name.clone(), h.status);
            let was_alive = matches!(before, Some(HostStatus::Up | HostStatus::Suspect));
            if was_alive && h.status == HostStatus::Unreachable {
                if let Some(age) = h.report_age_ms {
                    r::DETECTION_SECONDS.observe_ms(age);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(PERIOD) => {}
            _ = shutdown.changed() => return,
        }
    }
}
