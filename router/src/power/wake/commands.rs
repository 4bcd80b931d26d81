//! The wake's own commands to the cluster task: whether the host was heard since the
//! wake started, which genies could relay magic packets, and recording measured times
//! and drills in the host's stored wake book.

use std::net::IpAddr;

use tokio::time::Instant;
use wisp_common::HostId;

use crate::cluster::{Command, Model};
use crate::config::WakeVia;
use crate::link::GenieLink;
use crate::model::host::HostStatus;
use crate::store::StoreError;

/// Whether `host`'s genie was heard (any accepted report, or a new connection) at or
/// after `since`, on its old session (a resumed host) or a new one (a booted host).
pub(crate) struct HeardSince {
    pub host: HostId,
    pub since: Instant,
}

impl Command for HeardSince {
    type Output = bool;
    const NAME: &'static str = "check a wake was heard";
    fn apply(self, m: &mut Model) -> Self::Output {
        m.cluster
            .hosts
            .get(&self.host)
            .is_some_and(|e| e.link.is_some() && e.last_report.is_some_and(|t| t >= self.since))
    }
}

/// Up genies that could send magic packets for `target`, best first: those whose
/// address is in the target's subnet (a /24, or a /64 for IPv6: the config carries no
/// prefix length), then the others, each group by name.
pub(crate) struct RelayLinks {
    pub target: HostId,
}

impl Command for RelayLinks {
    type Output = Vec<(HostId, GenieLink)>;
    const NAME: &'static str = "find WoL relays";
    fn apply(self, m: &mut Model) -> Self::Output {
        let Some(t) = m.cluster.hosts.get(&self.target) else {
            return Vec::new();
        };
        let addr = t.cfg.address;
        let mut v: Vec<(bool, HostId, GenieLink)> = m
            .cluster
            .hosts
            .values()
            .filter(|h| h.cfg.name != self.target && h.status() == HostStatus::Up)
            .filter_map(|h| {
                let l = h.link.as_ref()?;
                Some((
                    !same_subnet(h.cfg.address, addr),
                    h.cfg.name.clone(),
                    l.handle.clone(),
                ))
            })
            .collect();
        v.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        v.into_iter().map(|(_, h, l)| (h, l)).collect()
    }
}

/// Same /24 (IPv4) or /64 (IPv6).
pub fn same_subnet(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a.octets()[..3] == b.octets()[..3],
        (IpAddr::V6(a), IpAddr::V6(b)) => a.segments()[..4] == b.segments()[..4],
        _ => false,
    }
}

/// Records a wake that worked: `attempt_ms` for `method`, `total_ms` for the wake.
pub(crate) struct RecordWakeTime {
    pub host: HostId,
    pub method: WakeVia,
    pub attempt_ms: u64,
    pub total_ms: u64,
    pub drill: bool,
}

impl Command for RecordWakeTime {
    type Output = Result<(), StoreError>;
    const NAME: &'static str = "record a wake time";
    fn apply(self, m: &mut Model) -> Self::Output {
        let now = wisp_common::time::unix_ms();
        m.update(|p| {
            let b = &mut p.hosts.entry(self.host).or_default().wake;
            b.record(self.method, self.attempt_ms, self.total_ms, now);
            if self.drill {
                b.drilled_ms.insert(self.method, now);
            }
        })
    }
}

/// Records that `methods` were drilled now (a drill that failed by them).
pub(crate) struct RecordDrilled {
    pub host: HostId,
    pub methods: Vec<WakeVia>,
}

impl Command for RecordDrilled {
    type Output = Result<(), StoreError>;
    const NAME: &'static str = "record a drill";
    fn apply(self, m: &mut Model) -> Self::Output {
        let now = wisp_common::time::unix_ms();
        m.update(|p| {
            let b = &mut p.hosts.entry(self.host).or_default().wake;
            for w in self.methods {
                b.drilled_ms.insert(w, now);
            }
        })
    }
}

/// The host's own `wake` list, if it has one (outer `None`: not in the inventory).
pub(crate) struct WakePolicy {
    pub host: HostId,
}

impl Command for WakePolicy {
    type Output = Option<Option<Vec<WakeVia>>>;
    const NAME: &'static str = "read a wake policy";
    fn apply(self, m: &mut Model) -> Self::Output {
        let h = m.cluster.hosts.get(&self.host)?;
        Some(h.cfg.wake.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert!(same_subnet(ip("10.77.0.11"), ip("10.77.0.12")));
        assert!(!same_subnet(ip("10.77.1.11"), ip("10.77.0.12")));
        assert!(same_subnet(ip("fd00::1"), ip("fd00::2")));
        assert!(!same_subnet(ip("fd00::1"), ip("10.77.0.12")));
    }
}
