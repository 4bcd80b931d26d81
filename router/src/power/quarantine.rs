//! Quarantine: a host that failed to wake by every configured method is marked, with
//! the reason, in its stored flags. The energy planner sees it as unavailable (never
//! chosen to sleep or to wake, counted as unavailable while asleep), drills skip it,
//! and only the operator clears it (`router power clear HOST`): a wake path that
//! failed once is not trusted again by a machine.

use serde::{Deserialize, Serialize};
use wisp_common::time::unix_ms;
use wisp_common::HostId;

use crate::cluster::{ClusterHandle, Command, Model};
use crate::events::EventKind;
use crate::store::StoreError;

/// Why and since when a host is quarantined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quarantine {
    pub reason: String,
    pub at_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    #[error("no host named {host} in the inventory")]
    UnknownHost { host: HostId },
    #[error("host {host} is not quarantined: nothing to clear")]
    NotQuarantined { host: HostId },
    #[error("could not store the change (the host stays quarantined)")]
    Store(#[source] StoreError),
    #[error("the router is shutting down")]
    Shutdown,
}

impl QuarantineError {
    /// The HTTP status that says whose fault it is.
    pub fn status(&self) -> u16 {
        match self {
            Self::UnknownHost { .. } => 404,
            Self::NotQuarantined { .. } => 409,
            Self::Store(_) | Self::Shutdown => 503,
        }
    }
}

/// What `router power clear` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClearReport {
    pub host: HostId,
    /// The reason the quarantine had.
    pub was: String,
    pub message: String,
}

/// Quarantines `host` with `reason` (stored) and records the `Error` event.
pub(crate) struct SetQuarantine {
    pub host: HostId,
    pub reason: String,
}

impl Command for SetQuarantine {
    type Output = Result<(), StoreError>;
    const NAME: &'static str = "quarantine a host";
    fn apply(self, m: &mut Model) -> Self::Output {
        let q = Quarantine {
            reason: self.reason.clone(),
            at_ms: unix_ms(),
        };
        let h = self.host;
        let stored = m.update(|p| p.hosts.entry(h.clone()).or_default().quarantine = Some(q));
        m.event(
            EventKind::Error,
            Some(h.clone()),
            None,
            format!(
                "host {h} quarantined: {}; the energy mode leaves it alone until `router power clear {h}`",
                self.reason
            ),
        );
        stored.map(|_| ())
    }
}

/// Clears `host`'s quarantine; refuses an unknown host or one not quarantined.
pub(crate) struct ClearQuarantine {
    pub host: HostId,
}

impl Command for ClearQuarantine {
    type Output = Result<ClearReport, QuarantineError>;
    const NAME: &'static str = "clear a quarantine";
    fn apply(self, m: &mut Model) -> Self::Output {
        let h = self.host;
        if !m.cluster.hosts.contains_key(&h) {
            return Err(QuarantineError::UnknownHost { host: h });
        }
        let Some(was) = m.persisted.hosts.get(&h).and_then(|r| r.quarantine.clone()) else {
            return Err(QuarantineError::NotQuarantined { host: h });
        };
        m.update(|p| p.hosts.entry(h.clone()).or_default().quarantine = None)
            .map_err(QuarantineError::Store)?;
        let message = format!(
            "host {h}: quarantine cleared by the operator (it was: {})",
            was.reason
        );
        m.event(EventKind::Power, Some(h.clone()), None, message.clone());
        Ok(ClearReport {
            host: h,
            was: was.reason,
            message,
        })
    }
}

/// `router power clear HOST`.
pub async fn clear(cluster: &ClusterHandle, host: &HostId) -> Result<ClearReport, QuarantineError> {
    cluster
        .run(ClearQuarantine { host: host.clone() })
        .await
        .ok_or(QuarantineError::Shutdown)?
}
