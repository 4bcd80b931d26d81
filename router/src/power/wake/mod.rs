//! `router wake HOST`, the energy mode's wakes and its drills: the host's wake methods
//! (`wake = ["wol", "ipmi"]`, default WoL then IPMI) tried in order, each verified by
//! proof of life in two stages (`proof.rs`): the BMC seeing chassis power on within
//! `wake_power_proof_ms` (else the next method at once), then the genie heard within
//! `wake_boot_ms`. Once power was seen on, no other method is tried: power is on.
//!
//! The host is `Waking` meanwhile and `Up` with its `standby` flag cleared once heard.
//! A wake that worked records its times in the host's stored wake book (`book.rs`). A
//! host that wakes by no method is marked (`Down` if the BMC says off, else
//! `Unreachable`), quarantined (`quarantine.rs`), and the caller gets `WakeFailed`.

pub mod book;
pub(crate) mod commands;
mod proof;
mod relay;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{timeout, Instant};
use wisp_bmc::{Bmc, PowerAction, PowerState};
use wisp_common::error::chain;
use wisp_common::HostId;

use super::commands::{RecordWake, RecordWakeFailure, StartWake};
use super::quarantine::SetQuarantine;
use super::status::query;
use super::wait::ms;
use super::{PowerError, PowerPlane};
/// The method is the API's word and the energy executor's alike.
pub use crate::api::types::WakeMethod;
use crate::api::types::{WakeAttempt, WakeOutcome};
use crate::cluster::ClusterHandle;
use crate::config::WakeVia;
use crate::events::EventKind;
use crate::model::host::HostStatus;
use commands::{RecordDrilled, RecordWakeTime, WakePolicy};
use proof::{Limits, Verdict};

/// How long the BMC's power reading before a wake may take: a status call costs
/// 50–130 ms in the lab, and a BMC slower than this must not hold up the magic packets
/// (its power is then not watched, and the genie gets the boot wait).
pub const BASELINE: Duration = Duration::from_secs(2);

/// What to do besides the host's own policy.
#[derive(Debug, Clone, Default)]
pub struct WakeOpts {
    /// Overrides `wake_boot_ms`.
    pub boot: Option<Duration>,
    /// Methods in this order instead of the host's policy (a drill's rotation).
    pub methods: Option<Vec<WakeVia>>,
    /// A drill: recorded as one.
    pub drill: bool,
}

/// Wakes `host` by its policy, `boot` being the wait for its genie once power is on.
pub async fn wake(
    cluster: &ClusterHandle,
    power: &PowerPlane,
    host: &HostId,
    boot: Duration,
) -> Result<WakeOutcome, PowerError> {
    let opts = WakeOpts {
        boot: Some(boot),
        ..Default::default()
    };
    wake_with(cluster, power, host, opts).await
}

/// The methods a wake of `host` tries, in order: `list` (the host's `wake` key or a
/// drill's rotation), or WoL then IPMI; either way only those the power plane can use
/// (WoL needs the host's MAC and a waker or a relay, IPMI a BMC client).
pub fn usable_methods(
    power: &PowerPlane,
    relay: bool,
    host: &HostId,
    list: Option<&[WakeVia]>,
) -> Vec<WakeVia> {
    list.unwrap_or(&[WakeVia::Wol, WakeVia::Ipmi])
        .iter()
        .copied()
        .filter(|m| match m {
            WakeVia::Wol => power.mac(host).is_some() && (power.waker().is_some() || relay),
            WakeVia::Ipmi => power.bmc(host).is_some(),
        })
        .collect()
}

/// The state one wake carries from attempt to attempt.
struct Run {
    start: Instant,
    attempts: Vec<WakeAttempt>,
    wol_packets: u32,
    wol_error: Option<String>,
    wol_relays: u32,
    /// From the start to the genie heard, once it was.
    total_ms: Option<u64>,
}

impl Run {
    fn failed(&mut self, method: WakeVia, sent: Instant, power: Option<u64>, error: String) {
        self.attempts.push(WakeAttempt {
            method,
            started_ms: ms(sent - self.start),
            power_seen_ms: power,
            heard_ms: None,
            error: Some(error),
        });
    }

    fn tried(&self) -> String {
        self.attempts
            .iter()
            .map(|a| format!("{}: {}", a.method, a.error.as_deref().unwrap_or("worked")))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Wakes `host` with `opts`.
pub async fn wake_with(
    cluster: &ClusterHandle,
    power: &PowerPlane,
    host: &HostId,
    opts: WakeOpts,
) -> Result<WakeOutcome, PowerError> {
    let start = Instant::now();
    let cfg = cluster.config();
    let lim = Limits {
        power_proof: Duration::from_millis(cfg.wake_power_proof_ms),
        boot: opts.boot.unwrap_or(Duration::from_millis(cfg.wake_boot_ms)),
        resume: Duration::from_millis(cfg.wake_resume_ms),
    };
    let relay = cfg.wol_relay;
    let own = cluster
        .run(WakePolicy { host: host.clone() })
        .await
        .ok_or(PowerError::Shutdown)?
        .ok_or_else(|| PowerError::UnknownHost {
            host: host.to_string(),
        })?;
    let policy = opts.methods.clone().or(own);
    let methods = usable_methods(power, relay, host, policy.as_deref());
    let bmc = power.bmc(host);
    let (waker, mac) = (power.waker(), power.mac(host));
    if methods.is_empty() {
        // Nothing to send: a config matter, not a failed wake (no quarantine), unless
        // the host is up anyway.
        let up = cluster
            .snapshot()
            .host(host)
            .is_some_and(|h| h.status == HostStatus::Up && h.linked());
        if !up {
            return Err(PowerError::NoWakePath { host: host.clone() });
        }
    }
    let already_up = cluster
        .run(StartWake { host: host.clone() })
        .await
        .ok_or(PowerError::Shutdown)?
        .ok_or_else(|| PowerError::UnknownHost {
            host: host.to_string(),
        })?;
    if already_up {
        return Ok(outcome(
            host,
            WakeMethod::AlreadyUp,
            Run {
                start,
                attempts: Vec::new(),
                wol_packets: 0,
                wol_error: None,
                wol_relays: 0,
                total_ms: None,
            },
            None,
            0,
            format!("host {host} is already up (its genie is connected): nothing sent"),
            opts.drill,
        ));
    }
    let Some(mac) = mac.filter(|_| !methods.is_empty()) else {
        let e = PowerError::NoWakePath { host: host.clone() };
        return fail(
            cluster,
            host,
            bmc.as_ref(),
            e.to_string(),
            start,
            &opts,
            &[],
        )
        .await;
    };

    // Before anything is sent: a BMC that already reads "on" cannot prove a wake.
    let before = match &bmc {
        Some(b) => Some(timeout(BASELINE.min(lim.power_proof), b.power_status()).await),
        None => None,
    };
    let why_not = match &before {
        None => Some("no BMC, power not watched".to_owned()),
        Some(Ok(Ok(PowerState::On))) => {
            Some("the BMC read power on before the wake (S3 shows as on), power not watched".into())
        }
        Some(Ok(Err(e))) => Some(format!(
            "BMC not reachable ({}), power not watched",
            chain(e)
        )),
        Some(Err(_)) => Some("BMC gave no answer, power not watched".into()),
        Some(Ok(Ok(PowerState::Off))) => None,
    };
    let read_on = matches!(before, Some(Ok(Ok(PowerState::On))));
    let watch_bmc = if why_not.is_none() { bmc.clone() } else { None };

    let mut run = Run {
        start,
        attempts: Vec::new(),
        wol_packets: 0,
        wol_error: None,
        wol_relays: 0,
        total_ms: None,
    };
    let n = methods.len();
    for (k, &via) in methods.iter().enumerate() {
        let sent = Instant::now();
        let mut wol = None;
        let sent_what = match via {
            WakeVia::Wol => {
                let mut s = relay::send(cluster, waker.clone(), host, mac, relay).await;
                run.wol_packets += s.packets;
                run.wol_error = s.error.clone();
                if s.packets == 0 {
                    // Nothing left the router: only the relay can have sent it.
                    let (r, line) = s.relayed().await;
                    run.wol_relays += r;
                    if r == 0 {
                        let why = format!(
                            "magic packets not sent ({}{})",
                            s.error.as_deref().unwrap_or("?"),
                            line.map(|l| format!("; {l}")).unwrap_or_default()
                        );
                        run.failed(via, sent, None, why.clone());
                        note_failed(cluster, host, via, &why, k + 1 < n).await;
                        continue;
                    }
                }
                let what = format!("magic packets sent ({} by the router)", s.packets);
                wol = Some(s);
                what
            }
            WakeVia::Ipmi => {
                let Some(b) = &bmc else { continue };
                if let Err(source) = b.power(PowerAction::On).await {
                    let e = PowerError::Bmc {
                        host: host.clone(),
                        action: "on",
                        source,
                    };
                    let why = format!("IPMI power-on failed: {}", chain(&e));
                    run.failed(via, sent, None, why.clone());
                    note_failed(cluster, host, via, &why, k + 1 < n).await;
                    continue;
                }
                format!("IPMI power-on accepted by {}", b.address())
            }
        };
        let lim_here = Limits {
            boot: if read_on {
                lim.resume.min(lim.boot)
            } else {
                lim.boot
            },
            ..lim
        };
        cluster
            .record(
                EventKind::Wake,
                Some(host.clone()),
                None,
                format!(
                    "host {host}: {}wake {}/{n} by {via}: {sent_what}; {}",
                    if opts.drill { "drill: " } else { "" },
                    k + 1,
                    match &why_not {
                        None => format!(
                            "watching the BMC for power on (up to {} ms) and the genie (up to {} ms)",
                            ms(lim.power_proof.min(lim.boot)),
                            ms(lim_here.boot)
                        ),
                        Some(w) => format!("{w}; waiting up to {} ms for the genie", ms(lim_here.boot)),
                    }
                ),
            )
            .await;
        let verdict = proof::watch(
            cluster,
            host,
            via,
            watch_bmc.clone(),
            why_not.clone(),
            start,
            sent,
            lim_here,
        )
        .await;
        if let Some(s) = wol.as_mut() {
            let (n, line) = s.relayed().await;
            run.wol_relays += n;
            if let Some(line) = line.filter(|_| n == 0) {
                // Tolerated: the router's own packets went out.
                cluster
                    .record(
                        EventKind::Wake,
                        Some(host.clone()),
                        None,
                        format!("host {host}: {line}"),
                    )
                    .await;
            }
        }
        match verdict {
            Verdict::Heard { power_ms, heard_ms } => {
                run.attempts.push(WakeAttempt {
                    method: via,
                    started_ms: ms(sent - start),
                    power_seen_ms: power_ms,
                    heard_ms: Some(heard_ms),
                    error: None,
                });
                return finish(cluster, host, via, run, power_ms, heard_ms, &opts).await;
            }
            Verdict::StillOff { after_ms } => {
                let why = format!("the BMC still reported power off after {after_ms} ms");
                run.failed(via, sent, None, why.clone());
                note_failed(cluster, host, via, &why, k + 1 < n).await;
            }
            Verdict::NotHeard {
                power_ms,
                waited_ms,
                note,
            } => {
                let why = format!(
                    "genie not heard within {waited_ms} ms ({})",
                    match power_ms {
                        Some(p) => format!("power seen on after {p} ms"),
                        None => note.unwrap_or_else(|| "power not seen".into()),
                    }
                );
                run.failed(via, sent, power_ms, why.clone());
                if power_ms.is_some() {
                    // Power is on: another way of turning it on cannot help.
                    break;
                }
                note_failed(cluster, host, via, &why, k + 1 < n).await;
            }
        }
    }
    let tried = run.tried();
    fail(cluster, host, bmc.as_ref(), tried, start, &opts, &methods).await
}

async fn note_failed(cluster: &ClusterHandle, host: &HostId, via: WakeVia, why: &str, more: bool) {
    cluster
        .record(
            EventKind::Wake,
            Some(host.clone()),
            None,
            format!(
                "host {host}: wake by {via} did not work: {why}{}",
                if more { "; trying the next method" } else { "" }
            ),
        )
        .await;
}

#[allow(clippy::too_many_arguments)]
fn outcome(
    host: &HostId,
    method: WakeMethod,
    run: Run,
    power_seen_ms: Option<u64>,
    heard_ms: u64,
    message: String,
    drill: bool,
) -> WakeOutcome {
    let fallback = run.attempts.len() > 1;
    let registered_ms = run.total_ms.unwrap_or(0);
    WakeOutcome {
        host: host.clone(),
        method,
        wol_packets: run.wol_packets,
        wol_error: run.wol_error,
        fallback,
        registered_ms,
        message,
        wol_relays: run.wol_relays,
        power_seen_ms,
        heard_ms: (method != WakeMethod::AlreadyUp).then_some(heard_ms),
        attempts: run.attempts,
        drill,
    }
}

async fn finish(
    cluster: &ClusterHandle,
    host: &HostId,
    via: WakeVia,
    mut run: Run,
    power_ms: Option<u64>,
    heard_ms: u64,
    opts: &WakeOpts,
) -> Result<WakeOutcome, PowerError> {
    // Measured when the genie was heard, before the records below (store writes).
    let total = ms(run.start.elapsed());
    run.total_ms = Some(total);
    let how = match via {
        WakeVia::Wol => "Wake-on-LAN",
        WakeVia::Ipmi => "IPMI power-on",
    };
    let before: Vec<String> = run
        .attempts
        .iter()
        .filter_map(|a| Some(format!("{} {}", a.method, a.error.as_deref()?)))
        .collect();
    let message = format!(
        "host {host} {}woke by {how}{}: {}, genie heard {heard_ms} ms after the {via} attempt ({total} ms in all{})",
        if opts.drill { "(drill) " } else { "" },
        if before.is_empty() {
            String::new()
        } else {
            format!(" (fallback after {})", before.join("; "))
        },
        power_ms
            .map(|p| format!("chassis power on after {p} ms"))
            .unwrap_or_else(|| "chassis power not seen".into()),
        if run.wol_relays > 0 {
            format!(", magic packets relayed by {} genie(s)", run.wol_relays)
        } else {
            String::new()
        }
    );
    cluster
        .run(RecordWake {
            host: host.clone(),
            message: message.clone(),
        })
        .await
        .ok_or(PowerError::Shutdown)?
        .map_err(PowerError::Store)?;
    // The measured time is worth keeping but not worth failing a wake over: a store
    // failure is logged by the model.
    let _ = cluster
        .run(RecordWakeTime {
            host: host.clone(),
            method: via,
            attempt_ms: heard_ms,
            total_ms: total,
            drill: opts.drill,
        })
        .await;
    if opts.drill {
        let failed: Vec<WakeVia> = run
            .attempts
            .iter()
            .filter(|a| a.error.is_some())
            .map(|a| a.method)
            .collect();
        if !failed.is_empty() {
            let _ = cluster
                .run(RecordDrilled {
                    host: host.clone(),
                    methods: failed,
                })
                .await;
        }
    }
    Ok(outcome(
        host,
        via.into(),
        run,
        power_ms,
        heard_ms,
        message,
        opts.drill,
    ))
}

async fn fail(
    cluster: &ClusterHandle,
    host: &HostId,
    bmc: Option<&Arc<dyn Bmc>>,
    tried: String,
    start: Instant,
    opts: &WakeOpts,
    methods: &[WakeVia],
) -> Result<WakeOutcome, PowerError> {
    let seen = match bmc {
        Some(b) => query(b, host).await.ok(),
        None => None,
    };
    let after = start.elapsed();
    cluster
        .run(RecordWakeFailure {
            host: host.clone(),
            seen,
            message: format!("host {host} failed to wake after {} ms: {tried}", ms(after)),
        })
        .await
        .ok_or(PowerError::Shutdown)?;
    if opts.drill && !methods.is_empty() {
        let _ = cluster
            .run(RecordDrilled {
                host: host.clone(),
                methods: methods.to_vec(),
            })
            .await;
    }
    let reason = format!(
        "{}failed to wake by every method ({tried})",
        if opts.drill { "a wake drill " } else { "" }
    );
    let _ = cluster
        .run(SetQuarantine {
            host: host.clone(),
            reason,
        })
        .await;
    Err(PowerError::WakeFailed {
        host: host.clone(),
        tried: format!("{tried}; quarantined until `router power clear {host}`"),
        after,
    })
}
