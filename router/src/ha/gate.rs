//! The fence check before every action that leaves etcd.
//!
//! etcd refuses a deposed leader's writes by itself (every write compares the leader
//! key). IPMI, Wake-on-LAN and genie commands have no such referee: a leader that
//! decided to power a host off, then lost its lease before the packet left (a long GC
//! pause, a frozen process, a slow BMC session), would act for a term that is over,
//! maybe after another router already restarted that host's VMs.
//!
//! So the [`Gate`] is asked right before each such send, on the leader's own
//! `CLOCK_BOOTTIME` deadline ([`Fence::remaining`]): a router that does not lead any
//! more sends nothing. A BMC or WoL call that has passed the gate is also bounded by
//! the time left, so a call that hangs in its session set-up cannot send after the
//! deadline from this task. (The IPMI client's worker may still retransmit a request
//! it already sent while the term lasted; a retransmission repeats a decision of a
//! valid term, and the step-down comes a quarter TTL before etcd could let another
//! router in.) A single router's gate is always open.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use wisp_bmc::{
    Bmc, BmcError, BoxFuture, MacAddr, PowerAction, PowerState, WakeError, WakeReport, Waker,
};

use wisp_common::HostId;

use super::leader::{Fence, NotLeader};
use crate::config::RouterConfig;
use crate::power::PowerPlane;

/// Asked before every action outside etcd.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    fence: Option<Fence>,
}

impl Gate {
    /// A single router: it always may act.
    pub fn open() -> Self {
        Self { fence: None }
    }

    /// A replicated router's term: it may act while `fence` holds.
    pub fn fenced(fence: Fence) -> Self {
        Self { fence: Some(fence) }
    }

    /// Whether this router may act now, and for how long at most.
    pub fn check(&self) -> Result<Duration, NotLeader> {
        match &self.fence {
            None => Ok(Duration::MAX),
            Some(f) => f.remaining().map(|(_, left)| left),
        }
    }
}

/// A BMC whose power commands pass the gate; reading the power state does not act.
#[derive(Debug)]
pub struct GatedBmc {
    inner: Arc<dyn Bmc>,
    gate: Gate,
}

impl GatedBmc {
    pub fn new(inner: Arc<dyn Bmc>, gate: Gate) -> Self {
        Self { inner, gate }
    }
}

impl Bmc for GatedBmc {
    fn power_status(&self) -> BoxFuture<'_, Result<PowerState, BmcError>> {
        self.inner.power_status()
    }

    fn power(&self, action: PowerAction) -> BoxFuture<'_, Result<(), BmcError>> {
        Box::pin(async move {
            let addr = self.inner.address();
            let refused = |e: NotLeader| BmcError::Protocol {
                addr,
                stage: "the leader's fence check",
                detail: format!("{action:?} not sent: {e}"),
            };
            let left = self.gate.check().map_err(refused)?;
            match tokio::time::timeout(left, self.inner.power(action)).await {
                Ok(r) => r,
                Err(_) => Err(refused(NotLeader {
                    reason: "the lease ran out while the BMC call was under way".into(),
                })),
            }
        })
    }

    fn address(&self) -> std::net::SocketAddr {
        self.inner.address()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        self.inner.shutdown()
    }
}

/// A Wake-on-LAN sender whose packets pass the gate.
#[derive(Debug)]
pub struct GatedWaker {
    inner: Arc<dyn Waker>,
    gate: Gate,
}

impl GatedWaker {
    pub fn new(inner: Arc<dyn Waker>, gate: Gate) -> Self {
        Self { inner, gate }
    }
}

impl Waker for GatedWaker {
    fn wake(&self, mac: MacAddr) -> BoxFuture<'_, Result<WakeReport, WakeError>> {
        Box::pin(async move {
            let refused = |e: NotLeader| WakeError::NothingSent {
                mac,
                interface: format!("any interface (not sent: {e})"),
            };
            let left = self.gate.check().map_err(refused)?;
            match tokio::time::timeout(left, self.inner.wake(mac)).await {
                Ok(r) => r,
                Err(_) => Err(refused(NotLeader {
                    reason: "the lease ran out while the packets were being sent".into(),
                })),
            }
        })
    }
}

/// `plane` with every BMC and the waker behind `gate` (an open gate changes nothing).
pub fn gated_plane(plane: PowerPlane, config: &RouterConfig, gate: &Gate) -> PowerPlane {
    if gate.fence.is_none() {
        return plane;
    }
    let mut bmcs: HashMap<HostId, Arc<dyn Bmc>> = HashMap::new();
    let mut macs = HashMap::new();
    for h in &config.hosts {
        if let Some(b) = plane.bmc(&h.name) {
            bmcs.insert(h.name.clone(), Arc::new(GatedBmc::new(b, gate.clone())));
        }
        if let Some(m) = plane.mac(&h.name) {
            macs.insert(h.name.clone(), m);
        }
    }
    let waker = plane
        .waker()
        .map(|w| Arc::new(GatedWaker::new(w, gate.clone())) as Arc<dyn Waker>);
    PowerPlane::new(bmcs, waker, macs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ha::leader::FenceToken;
    use wisp_bmc::{FakeBmc, FakeWaker};

    const TOKEN: FenceToken = FenceToken {
        create_revision: 7,
        lease: 9,
    };

    fn bmc() -> Arc<FakeBmc> {
        Arc::new(FakeBmc::new(
            "127.0.0.1:623".parse().unwrap(),
            PowerState::On,
        ))
    }

    #[tokio::test]
    async fn an_open_gate_lets_everything_through() {
        let fake = bmc();
        let b = GatedBmc::new(fake.clone(), Gate::open());
        b.power(PowerAction::Off).await.unwrap();
        assert_eq!(fake.actions(), vec![PowerAction::Off]);
    }

    #[tokio::test]
    async fn the_term_ending_between_the_decision_and_the_send_sends_nothing() {
        let fence = Fence::held_for(TOKEN, Duration::from_millis(150));
        let gate = Gate::fenced(fence);
        let fake = bmc();
        let waker = Arc::new(FakeWaker::new());
        let b = GatedBmc::new(fake.clone(), gate.clone());
        let w = GatedWaker::new(waker.clone(), gate.clone());
        let mac: MacAddr = "02:77:00:00:00:01".parse().unwrap();
        // Decided while the term lasts: read the power, then pause (a GC, a frozen
        // process, a slow BMC) past the deadline before sending.
        assert_eq!(b.power_status().await.unwrap(), PowerState::On);
        assert!(gate.check().is_ok());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let e = b.power(PowerAction::Off).await.unwrap_err().to_string();
        assert!(e.contains("not sent") && e.contains("Off"), "{e}");
        let e = w.wake(mac).await.unwrap_err().to_string();
        assert!(e.contains("not sent"), "{e}");
        assert!(fake.actions().is_empty(), "a deposed leader sent IPMI");
        assert!(waker.wakes().is_empty(), "a deposed leader sent WoL");
    }

    #[tokio::test]
    async fn a_bmc_call_that_outlives_the_term_is_cut_off_at_the_deadline() {
        let fake = bmc();
        fake.set_delay(Duration::from_millis(500));
        let gate = Gate::fenced(Fence::held_for(TOKEN, Duration::from_millis(100)));
        let b = GatedBmc::new(fake.clone(), gate);
        let t = std::time::Instant::now();
        let e = b.power(PowerAction::Off).await.unwrap_err().to_string();
        assert!(e.contains("lease ran out"), "{e}");
        assert!(
            t.elapsed() < Duration::from_millis(400),
            "{:?}",
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(fake.actions().is_empty(), "the cut-off call still acted");
    }
}
