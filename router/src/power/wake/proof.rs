//! Proof of life after one wake attempt, in two stages.
//!
//! (a) **Power**: the BMC is asked every [`BMC_POLL`] whether chassis power is on. Still
//! off after `wake_power_proof_ms` means this method did nothing: the wake moves on at
//! once instead of waiting out a boot. Skipped when there is no BMC, when it cannot be
//! reached, or when it already read "on" before the wake (many BMCs show S3 as on, so
//! "on" proves nothing then).
//!
//! (b) **Genie heard**: any report accepted from the host since the wake started, on
//! its old session (a resumed host) or a new one (a booted host). Waited for up to
//! `wake_boot_ms` from the attempt (`wake_resume_ms` when the BMC read "on" before).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use wisp_bmc::{Bmc, PowerState};
use wisp_common::error::chain;
use wisp_common::HostId;

use super::commands::HeardSince;
use crate::cluster::ClusterHandle;
use crate::config::WakeVia;
use crate::events::EventKind;
use crate::power::wait::{ms, POLL};

/// How often stage (a) asks the BMC: a status call costs 50–130 ms in the lab, so
/// 250 ms keeps at most one call in flight and adds a quarter second at most to the
/// time power is seen.
pub const BMC_POLL: Duration = Duration::from_millis(250);

/// The deadlines of one attempt.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub power_proof: Duration,
    pub boot: Duration,
    pub resume: Duration,
}

/// What the watch saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The genie was heard.
    Heard {
        power_ms: Option<u64>,
        heard_ms: u64,
    },
    /// The BMC still said off at the power-proof deadline.
    StillOff { after_ms: u64 },
    /// No genie within the deadline; `power_ms` if power was seen on, `note` on why
    /// stage (a) was skipped.
    NotHeard {
        power_ms: Option<u64>,
        waited_ms: u64,
        note: Option<String>,
    },
}

/// The BMC's latest answer, as the poller saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    NoAnswer,
    Off,
    On { after_ms: u64 },
    Failed(String),
}

/// Aborts the poller when the watch ends, however it ends.
struct Poller(JoinHandle<()>);

impl Drop for Poller {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn poll_bmc(bmc: Arc<dyn Bmc>, sent: Instant) -> (Poller, watch::Receiver<Seen>) {
    let (tx, rx) = watch::channel(Seen::NoAnswer);
    let task = tokio::spawn(async move {
        loop {
            let next = Instant::now() + BMC_POLL;
            let seen = match bmc.power_status().await {
                Ok(PowerState::On) => Seen::On {
                    after_ms: ms(sent.elapsed()),
                },
                Ok(PowerState::Off) => Seen::Off,
                Err(e) => Seen::Failed(chain(&e)),
            };
            let done = !matches!(seen, Seen::Off);
            if tx.send(seen).is_err() || done {
                return;
            }
            tokio::time::sleep_until(next).await;
        }
    });
    (Poller(task), rx)
}

/// Watches the attempt `via` sent at `sent` of a wake started at `since`. `bmc` is
/// `None` when stage (a) cannot be used from the start (`why_not` says why).
#[allow(clippy::too_many_arguments)]
pub(super) async fn watch(
    cluster: &ClusterHandle,
    host: &HostId,
    via: WakeVia,
    bmc: Option<Arc<dyn Bmc>>,
    why_not: Option<String>,
    since: Instant,
    sent: Instant,
    lim: Limits,
) -> Verdict {
    let proof = lim.power_proof.min(lim.boot);
    let deadline = sent + lim.boot;
    let (_poller, mut seen) = match bmc {
        Some(b) => {
            let (p, rx) = poll_bmc(b, sent);
            (Some(p), Some(rx))
        }
        None => (None, None),
    };
    let mut note = why_not;
    let mut power_ms = None;
    loop {
        let heard = cluster
            .run(HeardSince {
                host: host.clone(),
                since,
            })
            .await
            .unwrap_or(false);
        if heard {
            // The BMC may have answered "on" while the genie was being asked.
            if let Some(Seen::On { after_ms }) = seen.as_ref().map(|rx| rx.borrow().clone()) {
                power_ms = power_ms.or(Some(after_ms));
            }
            return Verdict::Heard {
                power_ms,
                heard_ms: ms(sent.elapsed()),
            };
        }
        let now = Instant::now();
        if let Some(rx) = &mut seen {
            let s = rx.borrow_and_update().clone();
            match s {
                Seen::On { after_ms } => {
                    power_ms = Some(after_ms);
                    seen = None;
                    cluster
                        .record(
                            EventKind::Wake,
                            Some(host.clone()),
                            None,
                            format!(
                                "host {host}: chassis power on {after_ms} ms after {via}; waiting up to {} ms for its genie",
                                ms(lim.boot)
                            ),
                        )
                        .await;
                }
                Seen::Failed(e) => {
                    note = Some(format!("BMC not reachable ({e}), power not watched"));
                    seen = None;
                }
                Seen::Off if now >= sent + proof => {
                    return Verdict::StillOff {
                        after_ms: ms(now - sent),
                    };
                }
                Seen::NoAnswer if now >= sent + proof => {
                    note = Some(format!(
                        "BMC gave no answer within {} ms, power not watched",
                        ms(proof)
                    ));
                    seen = None;
                }
                _ => {}
            }
        }
        if now >= deadline {
            return Verdict::NotHeard {
                power_ms,
                waited_ms: ms(now - sent),
                note,
            };
        }
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(now))).await;
    }
}
