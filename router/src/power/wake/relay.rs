//! Sending the magic packets of one WoL attempt: a burst from the router's own
//! `wol_interface` (the waker) and, with `wol_relay`, the same from one up genie
//! (`Command::SendWol`), preferably one on the target's subnet, since magic packets
//! are broadcasts that stop at a router. A relay that fails or refuses is tolerated:
//! the attempt counts as sent if either path sent something.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use wisp_bmc::{MacAddr, Waker};
use wisp_common::error::chain;
use wisp_common::proto::{Command as GenieCommand, Outcome, WolRelay};
use wisp_common::HostId;

use super::commands::RelayLinks;
use crate::cluster::ClusterHandle;

/// Frames of each kind a relaying genie sends: the same burst as the router's waker,
/// so a single lost frame does not lose the wake.
pub const RELAY_BURST: u32 = 3;

/// A relay's answer is awaited this long at most: sending a burst takes milliseconds,
/// so a genie slower than this is stuck and the wake must not wait for it.
pub const RELAY_TIMEOUT: Duration = Duration::from_secs(3);

/// What the router itself sent, and the relay still answering.
pub(super) struct WolSend {
    /// Packets the router's waker sent.
    pub packets: u32,
    /// Why the router's own send failed (or that it has no `wol_interface`).
    pub error: Option<String>,
    relay: Option<JoinHandle<(HostId, Result<(), String>)>>,
}

impl WolSend {
    /// Waits for the relay (bounded by [`RELAY_TIMEOUT`]): `(genies that relayed,
    /// a line on the relay)`.
    pub async fn relayed(&mut self) -> (u32, Option<String>) {
        let Some(h) = self.relay.take() else {
            return (0, None);
        };
        match h.await {
            Ok((g, Ok(()))) => (1, Some(format!("relayed by the genie of {g}"))),
            Ok((g, Err(e))) => (0, Some(format!("relay by the genie of {g} failed: {e}"))),
            Err(e) => (0, Some(format!("relay task failed: {e}"))),
        }
    }
}

impl Drop for WolSend {
    fn drop(&mut self) {
        if let Some(h) = self.relay.take() {
            h.abort();
        }
    }
}

/// Starts the relay (if asked and a genie is up) and sends from the router.
pub(super) async fn send(
    cluster: &ClusterHandle,
    waker: Option<Arc<dyn Waker>>,
    host: &HostId,
    mac: MacAddr,
    relay: bool,
) -> WolSend {
    let relay = if relay {
        let links = cluster
            .run(RelayLinks {
                target: host.clone(),
            })
            .await
            .unwrap_or_default();
        links.into_iter().next().map(|(g, link)| {
            tokio::spawn(async move {
                let cmd = GenieCommand::SendWol(WolRelay {
                    mac,
                    burst: RELAY_BURST,
                });
                let r = match tokio::time::timeout(RELAY_TIMEOUT, link.command(cmd, None)).await {
                    Err(_) => Err(format!("no answer within {RELAY_TIMEOUT:?}")),
                    Ok(Err(e)) => Err(chain(&e)),
                    Ok(Ok(Outcome::Done)) => Ok(()),
                    Ok(Ok(Outcome::Failed { error })) => Err(error),
                    Ok(Ok(other)) => Err(format!("unexpected answer {other:?}")),
                };
                (g, r)
            })
        })
    } else {
        None
    };
    let (packets, error) = match waker {
        Some(w) => match w.wake(mac).await {
            Ok(r) => (r.raw_frames + r.udp_packets, None),
            Err(e) => (0, Some(chain(&e))),
        },
        None => (0, Some("no wol_interface configured".into())),
    };
    WolSend {
        packets,
        error,
        relay,
    }
}
