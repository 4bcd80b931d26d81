//! The router's side of the handshake: version check, inventory check, mutual
//! HMAC challenge–response. Every refusal is sent to the genie with its reason and
//! returned as an error naming the peer and host, so the caller can log it; the secret
//! itself is never logged or sent.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::proto::auth::{self, Role};
use crate::proto::frame::{read_frame, write_frame, FrameError};
use crate::proto::session::{SessionKeys, Side};
use crate::proto::{GenieMsg, Nonce, RouterMsg, MAX_HANDSHAKE_FRAME_BYTES, PROTOCOL_VERSION};
use crate::secret::Secret;
use crate::HostId;

/// An authenticated genie, ready for `Welcome`, which is the first frame sealed with
/// `keys` (every later frame is too, both ways).
#[derive(Debug)]
pub struct Greeted {
    pub host: HostId,
    pub instance: u64,
    pub genie_version: String,
    pub keys: SessionKeys,
}

#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("peer {peer}: handshake frame error")]
    Frame {
        peer: SocketAddr,
        #[source]
        source: FrameError,
    },
    #[error("peer {peer} closed the connection during the handshake")]
    Closed { peer: SocketAddr },
    #[error("peer {peer} sent {got} where {expected} was expected")]
    Unexpected {
        peer: SocketAddr,
        expected: &'static str,
        got: &'static str,
    },
    #[error("host {host} (peer {peer}) closed the connection after our challenge: it could not verify the router's proof, so the cluster secrets probably differ")]
    ClosedAfterChallenge { peer: SocketAddr, host: HostId },
    #[error("peer {peer} (host {host}) refused: {reason}")]
    Refused {
        peer: SocketAddr,
        host: HostId,
        reason: String,
    },
}

impl AcceptError {
    /// The host the peer claimed to be, once its Hello was read.
    pub fn host(&self) -> Option<&HostId> {
        match self {
            Self::ClosedAfterChallenge { host, .. } | Self::Refused { host, .. } => Some(host),
            _ => None,
        }
    }
}

/// Runs the router's side of the handshake on `stream` with the genie at `peer`.
/// `known` says whether a host is in the inventory. On success the caller sends
/// `Welcome`; a timeout, if wanted, wraps this call.
pub async fn accept<S>(
    stream: &mut S,
    peer: SocketAddr,
    secret: &Secret,
    known: impl Fn(&HostId) -> bool,
) -> Result<Greeted, AcceptError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let hello = read(stream, peer).await?;
    let GenieMsg::Hello {
        protocol,
        host,
        instance,
        genie_version,
        nonce: genie_nonce,
    } = hello
    else {
        return Err(AcceptError::Unexpected {
            peer,
            expected: "hello",
            got: hello.kind(),
        });
    };
    if protocol != PROTOCOL_VERSION {
        let reason = format!(
            "protocol version {protocol} is not supported; this router speaks {PROTOCOL_VERSION}"
        );
        return Err(refuse(stream, peer, host, reason).await);
    }
    if !known(&host) {
        let reason = format!("host {host} is not in the router's inventory");
        return Err(refuse(stream, peer, host, reason).await);
    }
    let router_nonce = Nonce::random();
    let router_proof = auth::proof(secret, Role::Router, &host, &genie_nonce, &router_nonce);
    let challenge = RouterMsg::Challenge {
        nonce: router_nonce,
        proof: router_proof,
    };
    write_frame(stream, &challenge, MAX_HANDSHAKE_FRAME_BYTES)
        .await
        .map_err(|source| AcceptError::Frame { peer, source })?;
    let reply = match read(stream, peer).await {
        // A genie that cannot verify our proof hangs up instead of answering.
        Err(AcceptError::Closed { peer }) => {
            return Err(AcceptError::ClosedAfterChallenge { peer, host })
        }
        other => other?,
    };
    let GenieMsg::Auth { proof } = reply else {
        return Err(AcceptError::Unexpected {
            peer,
            expected: "auth",
            got: reply.kind(),
        });
    };
    if !auth::verify(
        secret,
        Role::Genie,
        &host,
        &router_nonce,
        &genie_nonce,
        &proof,
    ) {
        let reason = "authentication failed: the genie's proof does not match the cluster \
                      secret (check secret_file on both sides)"
            .to_string();
        return Err(refuse(stream, peer, host, reason).await);
    }
    let keys = SessionKeys::derive(secret, Side::Router, &host, &genie_nonce, &router_nonce);
    Ok(Greeted {
        host,
        instance,
        genie_version,
        keys,
    })
}

/// Tells the genie why it is refused and returns the matching error.
async fn refuse<S: AsyncWrite + Unpin>(
    stream: &mut S,
    peer: SocketAddr,
    host: HostId,
    reason: String,
) -> AcceptError {
    // Best effort: the peer may already be gone, the refusal is logged either way.
    let msg = RouterMsg::Refused {
        reason: reason.clone(),
    };
    let _ = write_frame(stream, &msg, MAX_HANDSHAKE_FRAME_BYTES).await;
    AcceptError::Refused { peer, host, reason }
}

async fn read<S: AsyncRead + Unpin>(s: &mut S, peer: SocketAddr) -> Result<GenieMsg, AcceptError> {
    // Before authentication a frame is a Hello or an Auth: a few hundred bytes.
    match read_frame(s, MAX_HANDSHAKE_FRAME_BYTES).await {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(AcceptError::Closed { peer }),
        Err(source) => Err(AcceptError::Frame { peer, source }),
    }
}
