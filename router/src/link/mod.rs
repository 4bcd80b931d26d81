//! The genie link: a TCP listener that authenticates genies and one task per
//! connection that feeds reports to the cluster task and carries commands back.
//!
//! Other tasks never touch a socket: they hold a [`GenieLink`] handle and send it
//! requests; the connection task owns the stream and the table of commands in flight.

mod conn;
pub mod refusals;
pub mod slots;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};
use wisp_common::proto::{Command, MigrationProgress, Outcome};
use wisp_common::secret::Secret;

use crate::cluster::ClusterHandle;
use crate::ha::gate::Gate;

/// Settings told to every genie in `Welcome`, and where each host's genie must
/// connect from.
#[derive(Debug, Clone)]
pub struct WelcomeParams {
    pub heartbeat_ms: u64,
    pub metrics_ms: u64,
    pub lease_ms: u64,
    /// Each host's configured `address`. A genie is welcomed only from its host's
    /// address: a second genie elsewhere under a quiet host's name (a cut-off host
    /// still runs its VMs) would report no VMs, and the router would start them again.
    pub addresses: std::sync::Arc<std::collections::HashMap<wisp_common::HostId, std::net::IpAddr>>,
}

/// Each host's configured address, for [`WelcomeParams::addresses`].
pub fn host_addresses(
    config: &crate::config::RouterConfig,
) -> std::sync::Arc<std::collections::HashMap<wisp_common::HostId, std::net::IpAddr>> {
    std::sync::Arc::new(
        config
            .hosts
            .iter()
            .map(|h| (h.name.clone(), h.address))
            .collect(),
    )
}

/// A handshake must finish within this; a slow or silent peer cannot hold a slot.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Commands queued per connection before senders wait: commands are rare (placement,
/// migration, power), so a small queue only fills if the genie is stuck.
const LINK_QUEUE: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("host {host} has no genie connected")]
    NotConnected { host: String },
    #[error("the link to host {host} closed before the command finished")]
    Closed { host: String },
}

/// A request to a connection task.
#[derive(Debug)]
pub struct LinkRequest {
    command: Command,
    reply: oneshot::Sender<Outcome>,
    progress: Option<mpsc::Sender<MigrationProgress>>,
}

impl LinkRequest {
    /// The command asked for (tests that play the genie look at it).
    pub fn command(&self) -> &Command {
        &self.command
    }

    /// Answers the command as a genie would.
    pub fn answer(self, outcome: Outcome) {
        let _ = self.reply.send(outcome);
    }
}

/// Handle to one genie connection.
#[derive(Debug, Clone)]
pub struct GenieLink {
    host: String,
    tx: mpsc::Sender<LinkRequest>,
}

impl GenieLink {
    /// Sends `command` and waits for the genie's final outcome. Progress messages go
    /// to `progress` when given.
    pub async fn command(
        &self,
        command: Command,
        progress: Option<mpsc::Sender<MigrationProgress>>,
    ) -> Result<Outcome, LinkError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(LinkRequest {
                command,
                reply,
                progress,
            })
            .await
            .map_err(|_| LinkError::NotConnected {
                host: self.host.clone(),
            })?;
        rx.await.map_err(|_| LinkError::Closed {
            host: self.host.clone(),
        })
    }

    /// Resolves once the connection behind this handle has ended.
    pub async fn closed(&self) {
        self.tx.closed().await
    }

    /// A handle whose requests come out of the returned queue (tests play the genie).
    #[cfg(any(test, feature = "fake"))]
    pub fn fake(host: &str) -> (Self, mpsc::Receiver<LinkRequest>) {
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        let link = Self {
            host: host.into(),
            tx,
        };
        (link, rx)
    }

    /// A handle whose connection is already gone (for tests of the model).
    pub fn detached() -> Self {
        let (tx, _) = mpsc::channel(1);
        Self {
            host: "detached".into(),
            tx,
        }
    }
}

/// Accepts genies until `shutdown` turns true. Nothing is written to a genie after
/// `gate` closes (a replicated router's term is over).
pub async fn serve(
    listener: TcpListener,
    secret: Arc<Secret>,
    cluster: ClusterHandle,
    params: WelcomeParams,
    gate: Gate,
    mut shutdown: watch::Receiver<bool>,
) {
    info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "genie link listening");
    let (refused, refusals_task) = refusals::spawn(cluster.clone(), shutdown.clone());
    // Beyond the handshake slots a connection is closed at once and counted as refused.
    let slots = slots::Slots::default();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let slot = match slots.take(peer.ip()) {
                        Ok(s) => s,
                        Err(why) => {
                            refused.report(peer.ip(), None, why);
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    if let Err(e) = conn::dead_peer_detection(&stream) {
                        warn!(%peer, error = %e, "cannot set TCP keepalive on a genie connection");
                    }
                    tokio::spawn(conn::run(
                        stream,
                        peer,
                        conn::Accepting { secret: secret.clone(), slot, refused: refused.clone() },
                        cluster.clone(),
                        params.clone(),
                        gate.clone(),
                        shutdown.clone(),
                    ));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed on the genie link");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    let _ = refusals_task.await;
}
