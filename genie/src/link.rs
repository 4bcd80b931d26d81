//! The link to the router: connect, mutual HMAC handshake
//! (`wisp_common::proto::handshake::initiate`), then every frame sealed with the
//! session's keys (`wisp_common::proto::session`: a frame that fails its MAC or comes
//! out of order ends the link, logged at ERROR), a full report at once, heartbeats,
//! full reports and immediate VM reports, while commands run in their own tasks.
//! Reconnects with jittered exponential backoff; `gen` keeps rising across sessions.
//!
//! Resume. Every heartbeat period the loop samples CLOCK_MONOTONIC and CLOCK_BOOTTIME
//! (`crate::resume`), in the session and between attempts alike. When the samples show
//! the host slept (BOOTTIME jumped) or this process was frozen (a gap of
//! `max(5 × heartbeat, 2 s)`), the link drops its connection at once, without waiting
//! for TCP to notice it is dead, reconnects without backoff (same instance, `gen` goes
//! on), and sends `resumed` in the first report of the new link, a full one.
//!
//! Several routers. genie.toml may list every router of a replicated cluster; only
//! the leader welcomes a genie. A follower answers the Hello with `NotLeader`, naming
//! the leader when it knows it: the genie goes there next, at once. Any other failure
//! moves on to the next router of the list. The backoff doubles only when a whole round
//! of the list was unreachable; while some router answers "not the leader" an election
//! is under way, and the genie asks again every [`NOT_LEADER_RETRY`]. None of this
//! touches the VMs: only the self-fence lease (off by default) ever stops them.
//!
//! Power abilities (`PowerCaps`) are learned by a task of their own at start, every
//! [`power_caps::RELEARN_EVERY`], after a resume and after WoL was armed; the first full
//! report of each link carries them, later ones only when they changed.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::{Interval, MissedTickBehavior};
use wisp_common::proto::frame::FrameError;
use wisp_common::proto::handshake::{self, Identity, InitiateError, Welcome};
use wisp_common::proto::session::{SealedReader, SealedWriter, SessionKeys};
use wisp_common::proto::{GenieMsg, PowerCaps, Report, Resumed, RouterMsg, MAX_FRAME_BYTES};
use wisp_common::secret::Secret;
use wisp_common::time::unix_ms;
use wisp_common::HostId;

use crate::commands::{self, Hypervisor};
use crate::host_sleep::Power;
use crate::lease::LeaseHandle;
use crate::metrics::MetricsSource;
use crate::power_caps::{self, CapsProbe};
use crate::report::Reporter;
use crate::resume::ResumeDetector;
use crate::wol_relay::WolRelayer;

/// Connect and each handshake step must finish within this; a router that takes longer
/// is as good as absent. (Shared: the router's patience after its own network fault
/// is derived from it and from [`BACKOFF_MAX`].)
pub const HANDSHAKE_TIMEOUT: Duration = wisp_common::proto::GENIE_LINK_TIMEOUT;
/// Reconnect backoff bounds.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = wisp_common::proto::GENIE_BACKOFF_MAX;
/// The wait before asking again when every router answered "not the leader" and none
/// named one: an election is under way and ends within a lease TTL.
pub const NOT_LEADER_RETRY: Duration = Duration::from_millis(200);
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
    /// The handshake's own errors already name the router and the host.
    #[error(transparent)]
    Handshake(#[from] InitiateError),
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
    #[error("router at {router} closed the connection during the session")]
    Closed { router: String },
    /// A frame that is not the router's next one: someone between us injects,
    /// modifies or replays frames.
    #[error("frame from the router at {router} refused; closing the link")]
    Forged {
        router: String,
        #[source]
        source: FrameError,
    },
}

impl LinkError {
    /// Auth problems need an operator; plain connectivity problems fix themselves.
    fn is_auth(&self) -> bool {
        matches!(self, Self::Handshake(e) if e.is_auth()) || matches!(self, Self::Forged { .. })
    }

    /// A follower router's answer: `Some(leader's link address, if named)`.
    fn not_leader(&self) -> Option<Option<&str>> {
        match self {
            Self::Handshake(InitiateError::NotLeader { leader, .. }) => {
                Some(leader.as_ref().map(|l| l.link.as_str()))
            }
            _ => None,
        }
    }
}

/// What the link needs from the config.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub host: HostId,
    /// Every router's genie link address (one for a single router); never empty.
    pub routers: Vec<String>,
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
    /// A resume noticed and not yet told: goes out in the next link's first report.
    resumed: Option<Resumed>,
    /// Poked to learn the power abilities again now.
    caps_stale: Arc<Notify>,
    /// The router tried or talked to now (errors and logs name it).
    at: String,
    /// Where the next attempt goes (see [`Routers`]).
    routers: Routers,
}

/// Which router to try next: a leader a follower named, else the list in turn.
#[derive(Debug)]
struct Routers {
    list: Vec<String>,
    next: usize,
    named: Option<String>,
    /// Failures in a row where no router answered at all.
    unreachable: usize,
}

impl Routers {
    fn new(list: Vec<String>) -> Self {
        Self {
            list,
            next: 0,
            named: None,
            unreachable: 0,
        }
    }

    /// The address to connect to now.
    fn target(&mut self) -> String {
        if let Some(n) = self.named.take() {
            // Rotation goes on after the named router, if it is in the list.
            if let Some(i) = self.list.iter().position(|r| *r == n) {
                self.next = i;
            }
            return n;
        }
        self.list
            .get(self.next % self.list.len().max(1))
            .cloned()
            .unwrap_or_default()
    }

    /// After a failed attempt on `at`: where to go next and how long to wait first
    /// (`None`: the usual backoff, which the caller doubles).
    fn failed(&mut self, at: &str, not_leader: Option<Option<&str>>) -> Option<Duration> {
        self.next = (self.next + 1) % self.list.len().max(1);
        match not_leader {
            Some(Some(leader)) if leader != at => {
                self.unreachable = 0;
                self.named = Some(leader.to_owned());
                Some(Duration::ZERO)
            }
            Some(_) => {
                self.unreachable = 0;
                Some(NOT_LEADER_RETRY)
            }
            None => {
                self.unreachable += 1;
                if self.unreachable >= self.list.len() {
                    self.unreachable = 0;
                    None
                } else {
                    // The next router may well be up: try it without waiting long.
                    Some(BACKOFF_MIN)
                }
            }
        }
    }

    fn welcomed(&mut self) {
        self.unreachable = 0;
    }
}

/// The session's sending half: every frame sealed.
type Writer = SealedWriter<OwnedWriteHalf>;

/// What the reader task hands the session: a frame, a clean end, or a frame error.
type Inbound = Result<Option<RouterMsg>, FrameError>;

/// Why a connection ended.
enum End {
    Failed(LinkError),
    Resumed(Resumed),
}

impl<M: MetricsSource, H: Hypervisor, P: Power + CapsProbe + WolRelayer> Link<M, H, P> {
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
        let routers = Routers::new(cfg.routers.clone());
        Self {
            at: cfg.routers.first().cloned().unwrap_or_default(),
            routers,
            cfg,
            reporter,
            hv,
            power: Arc::new(power),
            lease,
            changes,
            out_tx,
            out_rx,
            resumed: None,
            caps_stale: Arc::new(Notify::new()),
        }
    }

    /// Runs until `shutdown` becomes true (or its sender is dropped).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let period = Duration::from_millis(self.cfg.heartbeat_ms.max(1));
        let mut detector = ResumeDetector::new(period);
        let mut sampler = tokio::time::interval(period);
        sampler.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let (caps_tx, caps) = watch::channel(None);
        let _learner = AbortOnDrop(tokio::spawn(power_caps::keep_learning(
            self.power.clone(),
            caps_tx,
            self.caps_stale.clone(),
        )));
        let mut backoff = BACKOFF_MIN;
        let mut failures: u32 = 0;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let mut welcomed = false;
            let end = {
                let session = self.session(&mut welcomed, &caps);
                tokio::pin!(session);
                // Shutdown wins at any point, the handshake included; then the clocks,
                // so that after a freeze the resume is seen before the session writes
                // into its dead socket. Dropping the session closes the socket.
                loop {
                    tokio::select! {
                        biased;
                        _ = shutdown.changed() => {
                            tracing::info!("link closed for shutdown");
                            return;
                        }
                        _ = sampler.tick() => {
                            if let Some(r) = detector.tick() {
                                break End::Resumed(r);
                            }
                        }
                        r = &mut session => break End::Failed(match r {
                            Err(e) => e,
                            Ok(never) => match never {},
                        }),
                    }
                }
            };
            let e = match end {
                End::Resumed(r) => {
                    self.resumed_now(r);
                    backoff = BACKOFF_MIN;
                    failures = 0;
                    continue;
                }
                End::Failed(e) => e,
            };
            log_failure(&e, welcomed, failures);
            failures += 1;
            if welcomed {
                backoff = BACKOFF_MIN;
                failures = 0;
                self.routers.welcomed();
            }
            let wait = match self.routers.failed(&self.at, e.not_leader()) {
                Some(d) => {
                    backoff = BACKOFF_MIN;
                    jitter(d)
                }
                None => {
                    let d = jitter(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    d
                }
            };
            let wait = tokio::time::sleep(wait);
            tokio::pin!(wait);
            // The clocks are watched while waiting too: a resume ends the wait.
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => break,
                    _ = sampler.tick() => {
                        if let Some(r) = detector.tick() {
                            self.resumed_now(r);
                            backoff = BACKOFF_MIN;
                            failures = 0;
                            break;
                        }
                    }
                    _ = &mut wait => break,
                }
            }
        }
    }

    /// The host (or this process) was away: say so once, tell the next link, and learn
    /// the power abilities again (a resume may come with a changed NIC state).
    fn resumed_now(&mut self, r: Resumed) {
        tracing::info!(
            away_ms = r.away_ms,
            how = ?r.how,
            "resumed after {} ms away ({:?}); dropping the link and reconnecting now",
            r.away_ms,
            r.how
        );
        self.resumed = Some(r);
        self.caps_stale.notify_one();
    }

    /// One connection: connect, handshake, then reports out and commands in until the
    /// link fails. It never ends otherwise: shutdown or a resume drops it from outside.
    async fn session(
        &mut self,
        welcomed: &mut bool,
        caps: &watch::Receiver<Option<PowerCaps>>,
    ) -> Result<Infallible, LinkError> {
        self.at = self.routers.target();
        let mut stream = self.connect().await?;
        let incoming_addr = self
            .cfg
            .address
            .or_else(|| stream.local_addr().ok().map(|a| a.ip()))
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let (welcome, keys) = self.handshake(&mut stream).await?;
        *welcomed = true;
        // Console sessions died with the previous link (the router ends its side then).
        crate::console_session::detach_all();
        self.lease.renew();
        self.lease.set_lease_ms(welcome.lease_ms);
        let mut timers = Timers::new(&welcome, &self.cfg);
        let (rd, wr) = stream.into_split();
        let mut wr = SealedWriter::new(wr, keys.seal);
        let (_reader, mut inbound) = spawn_reader(SealedReader::new(rd, keys.open));
        // The power abilities last sent on this link: each link starts with none.
        let mut caps_sent: Option<PowerCaps> = None;
        // The first report of a link is a full one, at once: the router learns the
        // VMs (and a resume) without waiting for a timer.
        let first = self.full_report(caps, &mut caps_sent);
        self.send_report(&mut wr, first).await?;
        loop {
            let msg = tokio::select! {
                r = inbound.recv() => {
                    let m = self.received(r)?;
                    self.obey(m, incoming_addr);
                    continue;
                }
                _ = timers.heartbeat.tick() => GenieMsg::Report(self.reporter.heartbeat(unix_ms())),
                _ = timers.full.tick() => {
                    let r = self.full_report(caps, &mut caps_sent);
                    self.send_report(&mut wr, r).await?;
                    continue;
                }
                _ = self.changes.notified() => {
                    let vms = self.hv.statuses();
                    GenieMsg::Report(self.reporter.vms(unix_ms(), vms))
                }
                Some(m) = self.out_rx.recv() => m,
                _ = timers.scan.tick() => {
                    self.hv.scan();
                    continue;
                }
            };
            self.send(&mut wr, &msg).await?;
        }
    }

    /// Metrics and VMs, plus the power abilities when this link has not seen them yet
    /// (or they changed) and a resume not yet told.
    fn full_report(
        &mut self,
        caps: &watch::Receiver<Option<PowerCaps>>,
        caps_sent: &mut Option<PowerCaps>,
    ) -> Report {
        let vms = self.hv.statuses();
        let mut r = self.reporter.full(unix_ms(), vms);
        let now = caps.borrow().clone();
        if now.is_some() && now != *caps_sent {
            r.power = now.clone().map(Box::new);
            *caps_sent = now;
        }
        r.resumed = self.resumed;
        r.virt = self.hv.virt().map(Box::new);
        r
    }

    /// Sends a full report; a resume it carried counts as told once it is written.
    async fn send_report(&mut self, wr: &mut Writer, r: Report) -> Result<(), LinkError> {
        let told = r.resumed.is_some();
        self.send(wr, &GenieMsg::Report(r)).await?;
        if told {
            self.resumed = None;
        }
        Ok(())
    }

    async fn connect(&self) -> Result<TcpStream, LinkError> {
        let router = &self.at;
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(router))
            .await
            .map_err(|_| self.timeout("connect"))?
            .map_err(|source| LinkError::Connect {
                router: router.clone(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn handshake(&self, stream: &mut TcpStream) -> Result<(Welcome, SessionKeys), LinkError> {
        let me = Identity {
            host: &self.cfg.host,
            instance: self.cfg.instance,
            genie_version: env!("CARGO_PKG_VERSION"),
            secret: &self.cfg.secret,
        };
        let (w, keys) = handshake::initiate(stream, &self.at, me, HANDSHAKE_TIMEOUT).await?;
        tracing::info!(
            router = %self.at,
            session = w.session,
            heartbeat_ms = w.heartbeat_ms,
            metrics_ms = w.metrics_ms,
            lease_ms = w.lease_ms,
            "connected to the router"
        );
        Ok((w, keys))
    }

    /// Any frame from the router renews the lease; the end of the stream or a bad
    /// frame ends the session.
    fn received(&self, r: Option<Inbound>) -> Result<RouterMsg, LinkError> {
        let router = self.at.clone();
        match r {
            Some(Ok(Some(m))) => {
                self.lease.renew();
                Ok(m)
            }
            Some(Ok(None)) | None => Err(LinkError::Closed { router }),
            Some(Err(e @ (FrameError::Forged { .. } | FrameError::OutOfOrder { .. }))) => {
                Err(LinkError::Forged { router, source: e })
            }
            Some(Err(e @ (FrameError::Malformed { .. } | FrameError::TooLarge { .. }))) => {
                Err(LinkError::Malformed { router, source: e })
            }
            Some(Err(source)) => Err(LinkError::Frame { router, source }),
        }
    }

    /// Runs a command in its own task; acks need nothing beyond the lease renewal.
    fn obey(&self, m: RouterMsg, incoming_addr: IpAddr) {
        match m {
            RouterMsg::Ack { .. } => {}
            RouterMsg::Command { id, command } => {
                match &command {
                    // Keystrokes may be passwords: never logged.
                    wisp_common::proto::Command::ConsoleInput { session, bytes } => {
                        tracing::trace!(command = id, session, len = bytes.len(), "console input");
                    }
                    _ => tracing::info!(command = id, ?command, "command from router"),
                }
                let (hv, power, out) = (self.hv.clone(), self.power.clone(), self.out_tx.clone());
                let stale = self.caps_stale.clone();
                tokio::spawn(async move {
                    commands::dispatch(&hv, &*power, incoming_addr, id, command, &out, &stale)
                        .await;
                });
            }
            other => {
                tracing::warn!(router = %self.at, msg = ?other, "unexpected message after the handshake; ignored")
            }
        }
    }

    /// A router that stops reading must not wedge the session (and with it the lease
    /// renewals): a write that cannot finish in time ends the session.
    async fn send(&self, wr: &mut Writer, msg: &GenieMsg) -> Result<(), LinkError> {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, wr.send(msg, MAX_FRAME_BYTES)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(LinkError::Frame {
                router: self.at.clone(),
                source,
            }),
            Err(_) => Err(self.timeout("a report write")),
        }
    }

    fn timeout(&self, step: &'static str) -> LinkError {
        LinkError::Timeout {
            router: self.at.clone(),
            step,
            timeout_ms: HANDSHAKE_TIMEOUT.as_millis() as u64,
        }
    }
}

/// Auth failures are loud every time; connectivity failures are loud at first, then
/// about once a minute while the router stays away.
fn log_failure(e: &LinkError, welcomed: bool, failures: u32) {
    let msg = commands::chain(e);
    if e.is_auth() {
        tracing::error!(error = %msg, "authentication with the router failed");
    } else if e.not_leader().is_some() {
        // Expected while routers elect a leader: said once, then quietly.
        if failures == 0 || failures % 30 == 29 {
            tracing::info!(error = %msg, "that router does not lead; following the leader");
        } else {
            tracing::debug!(error = %msg, "that router does not lead; following the leader");
        }
    } else if welcomed {
        tracing::warn!(error = %msg, "link to the router lost; reconnecting");
    } else if failures == 0 || failures % 30 == 29 {
        // At the backoff ceiling, 30 attempts are about a minute: visible, but no log
        // flood while it is away.
        tracing::warn!(error = %msg, attempts = failures + 1, "cannot reach the router; retrying");
    } else {
        tracing::debug!(error = %msg, "cannot reach the router; retrying");
    }
}

/// The session's clocks, at the rates the router welcomed us with.
struct Timers {
    heartbeat: Interval,
    full: Interval,
    scan: Interval,
}

impl Timers {
    fn new(w: &Welcome, cfg: &LinkConfig) -> Self {
        // 0 from the router means "keep your configured rate".
        let period = |ms: u64, dflt: u64| Duration::from_millis(if ms == 0 { dflt } else { ms });
        let mut t = Self {
            heartbeat: tokio::time::interval(period(w.heartbeat_ms, cfg.heartbeat_ms)),
            full: tokio::time::interval(period(w.metrics_ms, cfg.metrics_ms)),
            scan: tokio::time::interval(SCAN_EVERY),
        };
        for i in [&mut t.heartbeat, &mut t.full, &mut t.scan] {
            i.set_missed_tick_behavior(MissedTickBehavior::Delay);
        }
        // The session sends its first full report itself, at once: neither interval
        // fires immediately.
        t.heartbeat.reset();
        t.full.reset();
        t
    }
}

/// Frames are read by their own task: read_frame is not cancel-safe, so it cannot sit
/// in the session's select without risking a half-read frame. The task ends with the
/// stream or when the returned guard is dropped.
fn spawn_reader(mut rd: SealedReader<OwnedReadHalf>) -> (AbortOnDrop, mpsc::Receiver<Inbound>) {
    let (tx, rx) = mpsc::channel::<Inbound>(16);
    let task = tokio::spawn(async move {
        loop {
            let r = rd.recv::<RouterMsg>(MAX_FRAME_BYTES).await;
            let stop = !matches!(r, Ok(Some(_)));
            if tx.send(r).await.is_err() || stop {
                return;
            }
        }
    });
    (AbortOnDrop(task), rx)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> Routers {
        Routers::new(vec!["a:1".into(), "b:1".into(), "c:1".into()])
    }

    #[test]
    fn a_named_leader_is_tried_at_once_and_the_rotation_goes_on_after_it() {
        let mut r = list();
        assert_eq!(r.target(), "a:1");
        assert_eq!(r.failed("a:1", Some(Some("c:1"))), Some(Duration::ZERO));
        assert_eq!(r.target(), "c:1");
        // The named leader died meanwhile: next comes the router after it.
        assert_eq!(r.failed("c:1", None), Some(BACKOFF_MIN));
        assert_eq!(r.target(), "a:1");
        // A leader outside the list (a new router) is followed too.
        r.failed("a:1", Some(Some("d:1")));
        assert_eq!(r.target(), "d:1");
    }

    #[test]
    fn a_follower_naming_itself_or_nobody_means_wait_a_little_and_ask_the_next() {
        let mut r = list();
        assert_eq!(r.target(), "a:1");
        assert_eq!(r.failed("a:1", Some(None)), Some(NOT_LEADER_RETRY));
        assert_eq!(r.target(), "b:1");
        // A stale leader key can name the very router that answered: not a redirect.
        assert_eq!(r.failed("b:1", Some(Some("b:1"))), Some(NOT_LEADER_RETRY));
        assert_eq!(r.target(), "c:1");
    }

    #[test]
    fn the_backoff_grows_only_after_a_whole_round_was_unreachable() {
        let mut r = list();
        for at in ["a:1", "b:1"] {
            assert_eq!(r.target(), at);
            assert_eq!(r.failed(at, None), Some(BACKOFF_MIN), "{at}");
        }
        assert_eq!(r.target(), "c:1");
        assert_eq!(r.failed("c:1", None), None, "all three unreachable");
        assert_eq!(r.target(), "a:1");
        // One router alone: every failure is a whole round, as before.
        let mut one = Routers::new(vec!["a:1".into()]);
        assert_eq!(one.target(), "a:1");
        assert_eq!(one.failed("a:1", None), None);
        assert_eq!(one.target(), "a:1");
    }
}
