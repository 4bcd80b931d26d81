//! The genie's own liveness lease in etcd (replicated routers, `etcd = [...]` in
//! genie.toml): liveness that does not hang on one router.
//!
//! The genie grants itself an etcd lease of `etcd_ttl_ms`, keeps its key
//! `/wisp/<cluster>/genies/<host>` on it, and renews it every TTL/3 (putting the key
//! on it again each time: a second genie under the same name must not leave the key
//! on a lease of its own that expires while this one lives). It self-fences
//! (kills its VMs) only when it cannot renew: a dedicated self-fence lease
//! ([`crate::lease`], an OS thread on CLOCK_BOOTTIME) is renewed by every successful
//! etcd renewal and runs out [`local_deadline`] after it, which is before etcd can
//! expire the key. Why before: etcd expires the lease no earlier than TTL after it
//! *received* the last renewal, which is after we *sent* it; we count from when the
//! answer *arrived*, at most one bounded request ([`REQUEST`]) after the sending, and
//! keep another request's worth as margin. The leader takes the key's absence (plus
//! its `lease_margin_ms`) as proof that this host runs nothing (`router::ha::liveness`).
//!
//! A genie that stops (SIGTERM, upgrade) leaves its VMs running and does not revoke
//! its lease: revoking would tell the router "expired" while the VMs still run. The
//! lease then expires by itself; like the router-granted lease, this proof assumes a
//! genie that is gone for good took its host down with it, or that the BMC answers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wisp_common::etcd::{genie_key, EtcdClient, EtcdError};
use wisp_common::HostId;

use crate::lease::{Fence, LeaseHandle};

/// One etcd call (every endpoint tried included) ends within this.
pub const REQUEST: Duration = Duration::from_millis(500);

/// A failed grant or renewal is tried again this soon.
const RETRY: Duration = Duration::from_millis(250);

/// The genie's etcd lease TTL unless genie.toml says otherwise.
pub const DEFAULT_TTL_MS: u64 = 4000;

/// The self-fence deadline after a successful renewal: TTL less two requests.
pub fn local_deadline(ttl: Duration) -> Duration {
    ttl.saturating_sub(REQUEST * 2)
}

#[derive(Debug, thiserror::Error)]
pub enum LivenessError {
    #[error("genie.toml etcd: cannot use the endpoints")]
    Etcd(#[source] EtcdError),
    #[error("cannot start the etcd liveness thread")]
    Spawn(#[source] std::io::Error),
}

/// What the liveness lease needs.
#[derive(Debug, Clone)]
pub struct LivenessConfig {
    pub endpoints: Vec<String>,
    pub cluster: String,
    pub host: HostId,
    pub instance: u64,
    pub ttl: Duration,
}

/// The running liveness lease; dropping it stops renewing (without revoking).
#[derive(Debug)]
pub struct Liveness {
    stop: Arc<AtomicBool>,
}

impl Drop for Liveness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Starts keeping the key alive. `lease` is a self-fence lease of
/// [`local_deadline`]`(ttl)` that only this renews; `kill` is what it kills when etcd
/// says the lease is gone before the local deadline ran out.
pub fn spawn(
    cfg: LivenessConfig,
    lease: LeaseHandle,
    kill: Arc<dyn Fence>,
) -> Result<Liveness, LivenessError> {
    let client = EtcdClient::new(&cfg.endpoints, REQUEST)
        .map_err(LivenessError::Etcd)?
        .bounded(REQUEST);
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    std::thread::Builder::new()
        .name("wisp-liveness".into())
        .spawn(move || keep_alive(&cfg, &client, &lease, &*kill, &s))
        .map_err(LivenessError::Spawn)?;
    Ok(Liveness { stop })
}

fn keep_alive(
    cfg: &LivenessConfig,
    client: &EtcdClient,
    lease: &LeaseHandle,
    kill: &dyn Fence,
    stop: &AtomicBool,
) {
    let key = genie_key(&cfg.cluster, cfg.host.as_str());
    let value = serde_json::json!({ "instance": cfg.instance }).to_string();
    let mut id: Option<i64> = None;
    let mut failing = false;
    while !stop.load(Ordering::Relaxed) {
        let r = match id {
            None => client
                .lease_grant(cfg.ttl)
                .and_then(|l| client.put(&key, value.as_bytes(), l.id).map(|_| l.id))
                .map(|got| {
                    tracing::info!(%key, lease = got, ttl_ms = cfg.ttl.as_millis() as u64, "liveness lease in etcd held");
                    id = Some(got);
                }),
            Some(l) => match put_then_renew(client, &key, &value, l) {
                Ok(Some(_)) => Ok(()),
                Ok(None) => {
                    // etcd let it expire before our own deadline ran out (it should
                    // not): the router may already restart our VMs, so they go now.
                    let n = kill.kill_all();
                    tracing::error!(%key, killed = n, "etcd says the liveness lease expired; VMs killed, taking a new one");
                    id = None;
                    continue;
                }
                Err(e) => Err(e),
            },
        };
        let wait = match r {
            Ok(()) => {
                lease.renew();
                if failing {
                    tracing::info!(%key, "liveness lease renewed again");
                }
                failing = false;
                cfg.ttl / 3
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(%key, error = %wisp_common::error::chain(&e),
                        "cannot renew the liveness lease in etcd; VMs are killed if this lasts {} ms",
                        local_deadline(cfg.ttl).as_millis());
                }
                failing = true;
                RETRY
            }
        };
        std::thread::sleep(wait);
    }
}

/// Puts our key back on our lease, then renews the lease: another genie under our
/// name (a reinstalled server) may have put the key on its own lease, which then
/// expires while we live, and the leader would take that as proof that we ran
/// nothing. A failed put shows in the renewal right after (an expired lease), or is
/// tried again at the next one.
fn put_then_renew(
    client: &EtcdClient,
    key: &str,
    value: &str,
    lease: i64,
) -> Result<Option<Duration>, EtcdError> {
    let _ = client.put(key, value.as_bytes(), lease);
    client.lease_keepalive(lease)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_deadline_leaves_two_requests_before_etcd_can_expire_the_lease() {
        assert_eq!(
            local_deadline(Duration::from_millis(4000)),
            Duration::from_millis(3000)
        );
        assert!(local_deadline(Duration::from_millis(4000)) > Duration::from_millis(4000) / 3);
    }
}
