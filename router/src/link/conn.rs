//! One task per genie connection: handshake (`wisp_common::proto::handshake::accept`),
//! then reports in and commands out.
//!
//! The reader half runs in its own task because reading a frame is not cancel-safe
//! inside `select!`; it hands whole messages to this task, which owns the writer half
//! and the table of commands in flight. When the connection ends, for whatever reason,
//! every pending command is answered (its sender sees `Closed`) and the cluster task is
//! told, so nothing waits forever on a dead genie.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};
use wisp_common::proto::frame::FrameError;
use wisp_common::proto::handshake::{self, Welcome};
use wisp_common::proto::session::{SealedReader, SealedWriter};
use wisp_common::proto::{
    CommandId, GenieMsg, MigrationProgress, Outcome, RouterMsg, MAX_FRAME_BYTES,
};
use wisp_common::secret::Secret;

use super::refusals::Refusals;
use super::{GenieLink, WelcomeParams, HANDSHAKE_TIMEOUT, LINK_QUEUE};
use crate::cluster::{ClusterHandle, ConnectError};
use crate::ha::gate::Gate;

/// What a connection needs until it is authenticated: the secret, its handshake slot
/// (given back once the handshake ends) and where to count a refusal.
pub(super) struct Accepting {
    pub secret: Arc<Secret>,
    pub slot: super::slots::Slot,
    pub refused: Refusals,
}

struct Pending {
    reply: oneshot::Sender<Outcome>,
    progress: Option<mpsc::Sender<MigrationProgress>>,
}

/// The configured address and the peer's, an IPv4 peer seen as IPv4-mapped IPv6
/// included.
fn same_address(want: std::net::IpAddr, peer: std::net::IpAddr) -> bool {
    let canon = |a: std::net::IpAddr| match a {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(a),
        v4 => v4,
    };
    canon(want) == canon(peer)
}

/// A genie is idle this long at most: it reports every `heartbeat_ms`, so silence
/// beyond many periods means a dead, cut or frozen peer. By then the fence code has
/// long acted on the silence; this only frees the socket (a cut cable never closes).
fn idle_limit(params: &WelcomeParams) -> Duration {
    Duration::from_millis(params.heartbeat_ms.saturating_mul(20).max(5000))
}

/// Kernel-level dead peer detection on a genie connection: keepalive probes after 2 s
/// idle, 1 s apart, 3 of them; and unacknowledged data gives up after 5 s
/// (TCP_USER_TIMEOUT) instead of Linux's ~15 min of retransmissions to a host that lost
/// power or froze.
pub(super) fn dead_peer_detection(stream: &TcpStream) -> nix::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    setsockopt(stream, sockopt::KeepAlive, &true)?;
    setsockopt(stream, sockopt::TcpKeepIdle, &2)?;
    setsockopt(stream, sockopt::TcpKeepInterval, &1)?;
    setsockopt(stream, sockopt::TcpKeepCount, &3)?;
    setsockopt(stream, sockopt::TcpUserTimeout, &5000)
}

pub(super) async fn run(
    mut stream: TcpStream,
    peer: SocketAddr,
    accepting: Accepting,
    cluster: ClusterHandle,
    params: WelcomeParams,
    gate: Gate,
    mut shutdown: watch::Receiver<bool>,
) {
    let known = cluster.inventory();
    let greeted = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        handshake::accept(&mut stream, peer, &accepting.secret, |h| known.contains(h)),
    )
    .await;
    drop(accepting.slot);
    // A refusal is logged with its whole cause (debug: a flood must not flood the
    // log) and counted; the counter writes one event per source and minute.
    let greeted = match greeted {
        Ok(Ok(g)) => g,
        Ok(Err(e)) => {
            let why = wisp_common::error::chain(&e);
            debug!(%peer, error = %why, "genie refused");
            accepting.refused.report(peer.ip(), e.host().cloned(), why);
            return;
        }
        Err(_) => {
            let why = format!("handshake not finished within {HANDSHAKE_TIMEOUT:?}");
            debug!(%peer, "{why}");
            accepting.refused.report(peer.ip(), None, why);
            return;
        }
    };
    let host = greeted.host.clone();
    if let Some(want) = params.addresses.get(&host) {
        if !same_address(*want, peer.ip()) {
            let reason = format!(
                "a genie for {host} connected from {}, but {host}'s address is {want}: \
                 refused (a second genie under a host's name would hide that host's VMs)",
                peer.ip()
            );
            warn!(%peer, %host, "{reason}");
            // Sealed like the Welcome it replaces (the genie authenticated).
            let (_, w) = stream.into_split();
            let mut w = SealedWriter::new(w, greeted.keys.seal);
            let _ = w
                .send(
                    &RouterMsg::Refused {
                        reason: reason.clone(),
                    },
                    MAX_FRAME_BYTES,
                )
                .await;
            accepting.refused.report(peer.ip(), Some(host), reason);
            return;
        }
    }
    let (tx, mut requests) = mpsc::channel(LINK_QUEUE);
    let link = GenieLink {
        host: host.to_string(),
        tx,
    };
    let session = match cluster
        .connected(
            host.clone(),
            greeted.instance,
            greeted.genie_version.clone(),
            link,
        )
        .await
    {
        Ok(session) => session,
        Err(ConnectError::Stopped) => return,
        Err(ConnectError::NameTaken(e)) => {
            // Said on both sides: the newcomer's genie logs the reason and retries
            // (it may be a restart racing its own old link's close).
            warn!(%peer, error = %e, "genie refused");
            let refused = RouterMsg::Refused {
                reason: e.to_string(),
            };
            // Sealed like the Welcome it replaces: the genie authenticated, and it
            // opens the frame after its Auth with the session's keys.
            let (_, w) = stream.into_split();
            let mut w = SealedWriter::new(w, greeted.keys.seal);
            let _ = w.send(&refused, MAX_FRAME_BYTES).await;
            // Counted and summed up like every refusal: a refused genie retries
            // several times a second, and one event each would flood the log.
            accepting
                .refused
                .report(peer.ip(), Some(host), e.to_string());
            return;
        }
    };
    let welcome: RouterMsg = Welcome {
        session,
        heartbeat_ms: params.heartbeat_ms,
        metrics_ms: params.metrics_ms,
        lease_ms: params.lease_ms,
    }
    .into();
    // From here on every frame is sealed with the session's keys, Welcome first.
    let (read_half, write_half) = stream.into_split();
    let mut write_half = SealedWriter::new(write_half, greeted.keys.seal);
    let read_half = SealedReader::new(read_half, greeted.keys.open);
    if let Err(e) = gate.check() {
        cluster
            .disconnected(host, session, e.to_string(), false)
            .await;
        return;
    }
    if let Err(e) = write_half.send(&welcome, MAX_FRAME_BYTES).await {
        warn!(%host, %peer, error = %e, "could not send welcome");
        cluster
            .disconnected(host, session, "welcome failed".into(), false)
            .await;
        return;
    }
    info!(%host, %peer, session, version = %greeted.genie_version, "genie connected");

    let (in_tx, mut incoming) = mpsc::channel(64);
    let reader = tokio::spawn(read_loop(read_half, in_tx));
    let mut pending: HashMap<CommandId, Pending> = HashMap::new();
    let mut next_id: CommandId = 1;

    let idle = idle_limit(&params);
    // The genie closed the connection itself (a restart or a shutdown says goodbye;
    // a cut cable, a power loss or a frozen host does not).
    let mut goodbye = false;
    let mut heard = tokio::time::Instant::now();
    let reason = loop {
        tokio::select! {
            _ = shutdown.changed() => break "router shutting down".to_string(),
            _ = tokio::time::sleep_until(heard + idle) => {
                break format!("nothing heard for {} ms", idle.as_millis());
            }
            msg = incoming.recv() => {
                heard = tokio::time::Instant::now();
                match msg {
                    None => break "reader ended".to_string(),
                    Some(Err(ReadEnd::Eof)) => {
                        goodbye = true;
                        break "genie closed the connection".to_string();
                    }
                    Some(Err(ReadEnd::Frame(e))) => {
                        let why = wisp_common::error::chain(&e);
                        warn!(%host, %peer, error = %why, "closing genie link: bad frame");
                        break format!("bad frame: {why}");
                    }
                    Some(Ok(GenieMsg::Report(report))) => {
                        let gen = report.gen;
                        // The ack renews the genie's self-fence lease: only a report the
                        // model applied earns one (a replaced session's or a stale one
                        // does not, so that genie's lease runs out as it should).
                        if cluster.report(host.clone(), session, report).await {
                            // An ack renews the genie's lease: a deposed leader gives none.
                            if let Err(e) = gate.check() { break e.to_string() }
                            if let Err(e) = send(&mut write_half, &RouterMsg::Ack { gen }).await {
                                break format!("write failed: {e}");
                            }
                        }
                    }
                    Some(Ok(GenieMsg::Progress { id, progress })) => {
                        if let Some(tx) = pending.get(&id).and_then(|p| p.progress.as_ref()) {
                            let _ = tx.try_send(progress);
                        }
                    }
                    Some(Ok(GenieMsg::Reply { id, outcome })) => match pending.remove(&id) {
                        Some(p) => { let _ = p.reply.send(outcome); }
                        None => debug!(%host, id, "reply to an unknown command"),
                    },
                    Some(Ok(GenieMsg::ConsoleOutput { session, bytes })) => {
                        crate::vms::console_attach::output(session, bytes);
                    }
                    Some(Ok(GenieMsg::ConsoleClosed { session, reason })) => {
                        crate::vms::console_attach::closed(session, reason);
                    }
                    Some(Ok(other)) => {
                        warn!(%host, %peer, "closing genie link: unexpected {:?} after the handshake", std::mem::discriminant(&other));
                        break "unexpected message after handshake".to_string();
                    }
                }
            }
            req = requests.recv() => {
                // Every handle dropped: the router let go of this link (replaced by a
                // newer connection, or its host put to sleep). Close our end; looping
                // on a closed channel would spin.
                let Some(req) = req else { break "the router closed the link".to_string() };
                let id = next_id;
                next_id += 1;
                let msg = RouterMsg::Command { id, command: req.command };
                // Checked right before the send: a deposed leader commands nothing
                // (dropping req.reply tells the caller).
                if let Err(e) = gate.check() { break e.to_string() }
                if let Err(e) = send(&mut write_half, &msg).await {
                    // Dropping req.reply tells the caller the link closed.
                    break format!("write failed: {e}");
                }
                pending.insert(id, Pending { reply: req.reply, progress: req.progress });
            }
        }
    };
    reader.abort();
    drop(pending);
    info!(%host, %peer, session, %reason, "genie link closed");
    cluster.disconnected(host, session, reason, goodbye).await;
}

enum ReadEnd {
    Eof,
    Frame(FrameError),
}

async fn send(w: &mut SealedWriter<OwnedWriteHalf>, msg: &RouterMsg) -> Result<(), FrameError> {
    w.send(msg, MAX_FRAME_BYTES).await
}

async fn read_loop(
    mut r: SealedReader<OwnedReadHalf>,
    tx: mpsc::Sender<Result<GenieMsg, ReadEnd>>,
) {
    loop {
        let item = match r.recv::<GenieMsg>(MAX_FRAME_BYTES).await {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(ReadEnd::Eof),
            Err(e) => Err(ReadEnd::Frame(e)),
        };
        let end = item.is_err();
        if tx.send(item).await.is_err() || end {
            return;
        }
    }
}
