//! Refused genie-link connections are counted, not recorded one by one: each used to
//! write an fsynced event through the cluster task, and 1,000 connect-and-close made
//! every real host unreachable (issue 12). Connections report their refusal here
//! without waiting (a full queue drops the report, and the flood with it). The first
//! refusal from a source in a minute is logged and recorded at once, with its host
//! and whole reason (an operator fixing a wrong secret sees it now); the rest of that
//! minute's are summed up in one line and event per source: "N refused connections in
//! the last minute from ADDR: reason".

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::warn;

use wisp_common::HostId;

use crate::cluster::ClusterHandle;
use crate::events::EventKind;

/// How often the counts are summed up.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);
/// Refusals queued before new ones are dropped: a flood is summed up, not stored.
const QUEUE: usize = 1024;
/// Sources named per summary; the rest are counted together.
const MAX_SOURCES: usize = 16;

/// One refused connection.
#[derive(Debug)]
pub struct Refusal {
    pub from: IpAddr,
    /// The host the peer claimed to be, once its Hello was read.
    pub host: Option<HostId>,
    pub reason: String,
}

/// Where connections report refusals.
#[derive(Debug, Clone)]
pub struct Refusals(mpsc::Sender<Refusal>);

impl Refusals {
    /// Counts a refusal; never waits.
    pub fn report(&self, from: IpAddr, host: Option<HostId>, reason: String) {
        let _ = self.0.try_send(Refusal { from, host, reason });
    }
}

#[derive(Debug, Default)]
struct Tally {
    count: u64,
    /// The first reason of the minute: what an operator looks at.
    reason: String,
}

/// The counter and its task, which sums up every [`SUMMARY_EVERY`] until `shutdown`.
pub fn spawn(
    cluster: ClusterHandle,
    mut shutdown: watch::Receiver<bool>,
) -> (Refusals, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Refusal>(QUEUE);
    let task = tokio::spawn(async move {
        let mut tally: BTreeMap<IpAddr, Tally> = BTreeMap::new();
        let mut tick = tokio::time::interval(SUMMARY_EVERY);
        tick.reset();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                r = rx.recv() => match r {
                    Some(r) => {
                        let t = tally.entry(r.from).or_default();
                        t.count += 1;
                        if t.count == 1 {
                            t.reason.clone_from(&r.reason);
                            warn!(from = %r.from, host = ?r.host.as_ref().map(|h| h.as_str()), "genie connection refused: {}", r.reason);
                            cluster.record(EventKind::GenieRefused, r.host, None, r.reason).await;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    for msg in summaries(std::mem::take(&mut tally)) {
                        warn!("{msg}");
                        cluster.record(EventKind::ConnectionsRefused, None, None, msg).await;
                    }
                }
            }
        }
    });
    (Refusals(tx), task)
}

/// One line per source with more than the one already told (the busiest first), the
/// rest summed in one more line.
fn summaries(tally: BTreeMap<IpAddr, Tally>) -> Vec<String> {
    let mut rows: Vec<(IpAddr, Tally)> = tally.into_iter().filter(|(_, t)| t.count > 1).collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1.count));
    let mut out = Vec::new();
    let mut rest = (0u64, 0usize);
    for (i, (ip, t)) in rows.into_iter().enumerate() {
        if i < MAX_SOURCES {
            out.push(format!(
                "{} refused connections in the last minute from {ip}: {}",
                t.count, t.reason
            ));
        } else {
            rest.0 += t.count;
            rest.1 += 1;
        }
    }
    if rest.1 > 0 {
        out.push(format!(
            "{} more refused connections in the last minute from {} other sources",
            rest.0, rest.1
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_source_busiest_first() {
        let mut t = BTreeMap::new();
        t.insert(
            IpAddr::from([10, 0, 0, 1]),
            Tally {
                count: 1,
                reason: "told at once".into(),
            },
        );
        t.insert(
            IpAddr::from([10, 0, 0, 3]),
            Tally {
                count: 2,
                reason: "closed during the handshake".into(),
            },
        );
        t.insert(
            IpAddr::from([10, 0, 0, 2]),
            Tally {
                count: 1000,
                reason: "wrong secret".into(),
            },
        );
        let s = summaries(t);
        assert_eq!(
            s,
            [
                "1000 refused connections in the last minute from 10.0.0.2: wrong secret",
                "2 refused connections in the last minute from 10.0.0.3: closed during the handshake"
            ]
        );
    }
}
