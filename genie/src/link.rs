//! The link to the router: connect, mutual HMAC handshake, then heartbeats, full
//! reports and immediate VM reports, while commands run in their own tasks.
//! Reconnects with jittered exponential backoff; `gen` keeps rising across sessions.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Notify};
use wisp_common::proto::auth::{self, Role};
use wisp_common::proto::frame::{self, FrameError};
use wisp_common::proto::{GenieMsg, Nonce, RouterMsg, MAX_FRAME_BYTES, PROTOCOL_VERSION};
use wisp_common::secret::Secret;
use wisp_common::HostId;

use crate::commands::{self, Hypervisor};
use crate::host_sleep::Power;
use crate::lease::LeaseHandle;
use crate::metrics::MetricsSource;
use crate::report::Reporter;

/// Connect and each handshake step must finish within this; a router that takes longer
/// is as good as absent.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect backoff bounds.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How often vm_dir is scanned for qemus started by someone else (or before a restart).
pub const SCAN_EVERY: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot connect to the router at {router}")]
    Connect {
        router: String,
        #[source]
        source: std::io::Error,
    },
    #[error("router at {router} did not answer {step} within {timeout_ms} ms")]
    Timeout {
        router: String,
        step: &'static str,
        timeout_ms: u64,
    },
    #[error("link to the router at {router} failed")]
    Frame {
        router: String,
        #[source]
        source: FrameError,
    },
    #[error("router at {router} sent a malformed frame; reconnecting")]
    Malformed {
        router: String,
        #[source]
        source: FrameError,
    },
    #[error("router at {router} closed the connection {during}")]
    Closed {
        router: String,
        during: &'static str,
    },
    #[error("router at {router} sent {got} during {step}")]
    Unexpected {
        router: String,
        step: &'static str,
        got: String,
    },
    #[error(
        "router at {router} failed to prove the cluster secret for host {host}: \
         wrong secret on one side, or an impostor; not authenticating to it"
    )]
    RouterAuth { router: String, host: HostId },
    #[error("router at {router} refused host {host}: {reason}")]
    Refused {
        router: String,
        host: HostId,
        reason: String,
    },
}

impl LinkError {
    /// Auth problems need an operator; plain connectivity problems fix themselves.
    fn is_auth(&self) -> bool {
        matches!(self, Self::RouterAuth { .. } | Self::Refused { .. })
    }
}

/// What the link needs from the config.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub host: HostId,
    pub router: String,
    pub secret: Secret,
    /// Used until Welcome says otherwise.
    pub heartbeat_ms: u64,
    pub metrics_ms: u64,
    /// Where incoming migrations listen; None = the local address of the link.
    pub address: Option<IpAddr>,
    pub instance: u64,
}

/// A random instance id for this process.
pub fn random_instance() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("OS random source unavailable");
    u64::from_le_bytes(b)
}

/// Everything a session works with, kept across reconnects.
#[derive(Debug)]
pub struct Link<M, H, P> {
    pub cfg: LinkConfig,
    pub reporter: Reporter<M>,
    pub hv: H,
    pub power: Arc<P>,
    pub lease: LeaseHandle,
    /// Poked when a VM's state changes.
    pub changes: Arc<Notify>,
    out_tx: mpsc::Sender<GenieMsg>,
    out_rx: mpsc::Receiver<GenieMsg>,
}

enum End {
    Shutdown,
}

impl<M: MetricsSource, H: Hypervisor, P: Power> Link<M, H, P> {
    pub fn new(
        cfg: LinkConfig,
        reporter: Reporter<M>,
        hv: H,
        power: P,
        lease: LeaseHandle,
        changes: Arc<Notify>,
    ) -> Self {
        // Replies queue here across reconnects; 64 is many commands' worth.
        let (out_tx, out_rx) = mpsc::channel(64);
        Self {
            cfg,
            reporter,
            hv,
            power: Arc::new(power),
            lease,
            changes,
            out_tx,
            out_rx,
        }
    }

    /// Runs until `shutdown` becomes true (or its sender is dropped).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = BACKOFF_MIN;
        let mut failures: u32 = 0;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let mut welcomed = false;
            // Shutdown wins at any point, the handshake included; dropping the session
            // closes the socket.
            let r = tokio::select! {
                r = self.session(&mut welcomed) => r,
                _ = shutdown.changed() => Ok(End::Shutdown),
            };
            match r {
                Ok(End::Shutdown) => {
                    tracing::info!("link closed for shutdown");
                    return;
                }
                Err(e) => {
                    let msg = commands::chain(&e);
                    if e.is_auth() {
                        tracing::error!(error = %msg, "authentication with the router failed");
                    } else if welcomed {
                        tracing::warn!(error = %msg, "link to the router lost; reconnecting");
                    } else if failures == 0 || failures % 30 == 29 {
                        // Loud on the first failure, then about once a minute at the
                        // backoff ceiling: visible, but no log flood while it is away.
                        tracing::warn!(error = %msg, attempts = failures + 1, "cannot reach the router; retrying");
                    } else {
                        tracing::debug!(error = %msg, "cannot reach the router; retrying");
                    }
                    failures += 1;
                }
            }
            if welcomed {
                backoff = BACKOFF_MIN;
                failures = 0;
            }
            let wait = jitter(backoff);
            backoff = (backoff * 2).min(BACKOFF_MAX);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    async fn session(&mut self, welcomed: &mut bool) -> Result<End, LinkError> {
        let router = self.cfg.router.clone();
        let host = self.cfg.host.clone();
        let t = |step: &'static str| LinkError::Timeout {
            router: router.clone(),
            step,
            timeout_ms: HANDSHAKE_TIMEOUT.as_millis() as u64,
        };
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(&router))
            .await
            .map_err(|_| t("connect"))?
            .map_err(|source| LinkError::Connect {
                router: router.clone(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let incoming_addr = self
            .cfg
            .address
            .or_else(|| stream.local_addr().ok().map(|a| a.ip()))
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let (mut rd, mut wr) = stream.into_split();
        let ferr = |source| LinkError::Frame {
            router: router.clone(),
            source,
        };

        // Handshake.
        let our_nonce = Nonce::random();
        let hello = GenieMsg::Hello {
            protocol: PROTOCOL_VERSION,
            host: host.clone(),
            instance: self.cfg.instance,
            genie_version: env!("CARGO_PKG_VERSION").to_owned(),
            nonce: our_nonce,
        };
        frame::write_frame(&mut wr, &hello, MAX_FRAME_BYTES)
            .await
            .map_err(ferr)?;
        let challenge = self.read_handshake(&mut rd, "challenge").await?;
        let router_nonce = match challenge {
            RouterMsg::Challenge { nonce, proof } => {
                // The router proved with (theirs = our nonce, own = its nonce).
                if !auth::verify(
                    &self.cfg.secret,
                    Role::Router,
                    &host,
                    &our_nonce,
                    &nonce,
                    &proof,
                ) {
                    return Err(LinkError::RouterAuth { router, host });
                }
                nonce
            }
            RouterMsg::Refused { reason } => {
                return Err(LinkError::Refused {
                    router,
                    host,
                    reason,
                })
            }
            other => return Err(unexpected(&router, "challenge", &other)),
        };
        let proof = auth::proof(
            &self.cfg.secret,
            Role::Genie,
            &host,
            &router_nonce,
            &our_nonce,
        );
        frame::write_frame(&mut wr, &GenieMsg::Auth { proof }, MAX_FRAME_BYTES)
            .await
            .map_err(ferr)?;
        let (hb_ms, metrics_ms, lease_ms) = match self.read_handshake(&mut rd, "welcome").await? {
            RouterMsg::Welcome {
                heartbeat_ms,
                metrics_ms,
                lease_ms,
                session,
            } => {
                tracing::info!(router = %router, session, heartbeat_ms, metrics_ms, lease_ms, "connected to the router");
                (heartbeat_ms, metrics_ms, lease_ms)
            }
            RouterMsg::Refused { reason } => {
                return Err(LinkError::Refused {
                    router,
                    host,
                    reason,
                })
            }
            other => return Err(unexpected(&router, "welcome", &other)),
        };
        *welcomed = true;
        self.lease.renew();
        self.lease.set_lease_ms(lease_ms);
        let period = |ms: u64, dflt: u64| Duration::from_millis(if ms == 0 { dflt } else { ms });
        let mut heartbeat = tokio::time::interval(period(hb_ms, self.cfg.heartbeat_ms));
        let mut full = tokio::time::interval(period(metrics_ms, self.cfg.metrics_ms));
        let mut scan = tokio::time::interval(SCAN_EVERY);
        for i in [&mut heartbeat, &mut full, &mut scan] {
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        // The first full report goes out at once (the interval's first tick is immediate);
        // skip the immediate heartbeat so the two do not go out back to back.
        heartbeat.reset();

        // Frames are read by their own task: read_frame is not cancel-safe, so it cannot
        // sit in the select below without risking a half-read frame.
        let (in_tx, mut in_rx) = mpsc::channel::<Result<Option<RouterMsg>, FrameError>>(16);
        let reader = AbortOnDrop(tokio::spawn(async move {
            loop {
                let r = frame::read_frame::<_, RouterMsg>(&mut rd, MAX_FRAME_BYTES).await;
                let stop = !matches!(r, Ok(Some(_)));
                if in_tx.send(r).await.is_err() || stop {
                    return;
                }
            }
        }));

        let result = loop {
            let msg = tokio::select! {
                r = in_rx.recv() => {
                    match r {
                        Some(Ok(Some(m))) => {
                            self.lease.renew();
                            match m {
                                RouterMsg::Ack { .. } => {}
                                RouterMsg::Command { id, command } => {
                                    tracing::info!(command = id, ?command, "command from router");
                                    let (hv, power, out) = (self.hv.clone(), self.power.clone(), self.out_tx.clone());
                                    tokio::spawn(async move {
                                        commands::dispatch(&hv, &*power, incoming_addr, id, command, &out).await;
                                    });
                                }
                                other => tracing::warn!(router = %router, msg = ?other, "unexpected message after the handshake; ignored"),
                            }
                            continue;
                        }
                        Some(Ok(None)) | None => break Err(LinkError::Closed { router: router.clone(), during: "the session" }),
                        Some(Err(e @ (FrameError::Malformed { .. } | FrameError::TooLarge { .. }))) => {
                            break Err(LinkError::Malformed { router: router.clone(), source: e });
                        }
                        Some(Err(e)) => break Err(ferr(e)),
                    }
                }
                _ = heartbeat.tick() => GenieMsg::Report(self.reporter.heartbeat(wisp_common::time::unix_ms())),
                _ = full.tick() => {
                    let vms = self.hv.statuses();
                    GenieMsg::Report(self.reporter.full(wisp_common::time::unix_ms(), vms))
                }
                _ = self.changes.notified() => {
                    let vms = self.hv.statuses();
                    GenieMsg::Report(self.reporter.vms(wisp_common::time::unix_ms(), vms))
                }
                Some(m) = self.out_rx.recv() => m,
                _ = scan.tick() => {
                    self.hv.scan();
                    continue;
                }
            };
            // A router that stops reading must not wedge this loop (and with it the
            // lease renewals): a write that cannot finish in time ends the session.
            match tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                frame::write_frame(&mut wr, &msg, MAX_FRAME_BYTES),
            )
            .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => break Err(ferr(e)),
                Err(_) => break Err(t("a report write")),
            }
        };
        drop(reader);
        result
    }

    async fn read_handshake(
        &self,
        rd: &mut OwnedReadHalf,
        step: &'static str,
    ) -> Result<RouterMsg, LinkError> {
        let router = &self.cfg.router;
        match tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            frame::read_frame::<_, RouterMsg>(rd, MAX_FRAME_BYTES),
        )
        .await
        {
            Err(_) => Err(LinkError::Timeout {
                router: router.clone(),
                step,
                timeout_ms: HANDSHAKE_TIMEOUT.as_millis() as u64,
            }),
            Ok(Ok(Some(m))) => Ok(m),
            Ok(Ok(None)) => Err(LinkError::Closed {
                router: router.clone(),
                during: "the handshake",
            }),
            Ok(Err(e @ (FrameError::Malformed { .. } | FrameError::TooLarge { .. }))) => {
                Err(LinkError::Malformed {
                    router: router.clone(),
                    source: e,
                })
            }
            Ok(Err(source)) => Err(LinkError::Frame {
                router: router.clone(),
                source,
            }),
        }
    }
}

fn unexpected(router: &str, step: &'static str, got: &RouterMsg) -> LinkError {
    let kind = match got {
        RouterMsg::Challenge { .. } => "challenge",
        RouterMsg::Welcome { .. } => "welcome",
        RouterMsg::Refused { .. } => "refused",
        RouterMsg::Command { .. } => "command",
        RouterMsg::Ack { .. } => "ack",
    };
    LinkError::Unexpected {
        router: router.to_owned(),
        step,
        got: kind.to_owned(),
    }
}

/// ±25 % jitter so genies that lost the router together do not reconnect in lockstep.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = if getrandom::fill(&mut b).is_ok() {
        u16::from_le_bytes(b) as f64 / u16::MAX as f64
    } else {
        0.5
    };
    d.mul_f64(0.75 + 0.5 * r)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
