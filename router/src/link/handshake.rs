//! The router's side of the handshake: version check, inventory check, mutual
//! HMAC challenge–response. Every refusal tells the genie why and is logged with the
//! host name and peer address; the secret itself is never logged or sent.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};
use wisp_common::proto::auth::{self, Role};
use wisp_common::proto::frame::{read_frame, write_frame, FrameError};
use wisp_common::proto::{GenieMsg, Nonce, RouterMsg, MAX_FRAME_BYTES, PROTOCOL_VERSION};
use wisp_common::secret::Secret;
use wisp_common::HostId;

/// An authenticated genie, ready for `Welcome`.
#[derive(Debug)]
pub struct Greeted {
    pub host: HostId,
    pub instance: u64,
    pub genie_version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
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
        got: String,
    },
    #[error("host {host} (peer {peer}) closed the connection after our challenge: it could not verify the router's proof, so the cluster secrets probably differ")]
    ClosedAfterChallenge { peer: SocketAddr, host: String },
    #[error("peer {peer} (host {host}) refused: {reason}")]
    Refused {
        peer: SocketAddr,
        host: String,
        reason: String,
    },
}

/// Runs the handshake on `stream`. `known` says whether a host is in the inventory.
pub async fn accept<S>(
    stream: &mut S,
    peer: SocketAddr,
    secret: &Secret,
    known: impl Fn(&HostId) -> bool,
) -> Result<Greeted, HandshakeError>
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
        return Err(HandshakeError::Unexpected {
            peer,
            expected: "hello",
            got: kind(&hello),
        });
    };
    if protocol != PROTOCOL_VERSION {
        let reason = format!(
            "protocol version {protocol} is not supported; this router speaks {PROTOCOL_VERSION}"
        );
        return refuse(stream, peer, &host, reason).await;
    }
    if !known(&host) {
        let reason = format!("host {host} is not in the router's inventory");
        return refuse(stream, peer, &host, reason).await;
    }
    let router_nonce = Nonce::random();
    let router_proof = auth::proof(secret, Role::Router, &host, &genie_nonce, &router_nonce);
    write(
        stream,
        peer,
        &RouterMsg::Challenge {
            nonce: router_nonce,
            proof: router_proof,
        },
    )
    .await?;
    let reply = match read(stream, peer).await {
        Err(HandshakeError::Closed { peer }) => {
            return Err(HandshakeError::ClosedAfterChallenge {
                peer,
                host: host.to_string(),
            })
        }
        other => other?,
    };
    let GenieMsg::Auth { proof } = reply else {
        return Err(HandshakeError::Unexpected {
            peer,
            expected: "auth",
            got: kind(&reply),
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
        return refuse(stream, peer, &host, reason).await;
    }
    Ok(Greeted {
        host,
        instance,
        genie_version,
    })
}

async fn refuse<S: AsyncWrite + Unpin>(
    stream: &mut S,
    peer: SocketAddr,
    host: &HostId,
    reason: String,
) -> Result<Greeted, HandshakeError> {
    // Best effort: the peer may already be gone, the refusal is logged either way.
    let _ = write_frame(
        stream,
        &RouterMsg::Refused {
            reason: reason.clone(),
        },
        MAX_FRAME_BYTES,
    )
    .await;
    Err(HandshakeError::Refused {
        peer,
        host: host.to_string(),
        reason,
    })
}

async fn read<S: AsyncRead + Unpin>(
    s: &mut S,
    peer: SocketAddr,
) -> Result<GenieMsg, HandshakeError> {
    match read_frame(s, MAX_FRAME_BYTES).await {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(HandshakeError::Closed { peer }),
        Err(source) => Err(HandshakeError::Frame { peer, source }),
    }
}

async fn write<S: AsyncWrite + Unpin>(
    s: &mut S,
    peer: SocketAddr,
    m: &RouterMsg,
) -> Result<(), HandshakeError> {
    write_frame(s, m, MAX_FRAME_BYTES)
        .await
        .map_err(|source| HandshakeError::Frame { peer, source })
}

fn kind(m: &GenieMsg) -> String {
    match m {
        GenieMsg::Hello { .. } => "hello",
        GenieMsg::Auth { .. } => "auth",
        GenieMsg::Report(_) => "report",
        GenieMsg::Progress { .. } => "progress",
        GenieMsg::Reply { .. } => "reply",
    }
    .into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn genie_side(
        mut s: tokio::io::DuplexStream,
        secret: Secret,
        host: &str,
    ) -> Option<RouterMsg> {
        let host = HostId::new(host).unwrap();
        let gn = Nonce::random();
        write_frame(
            &mut s,
            &GenieMsg::Hello {
                protocol: PROTOCOL_VERSION,
                host: host.clone(),
                instance: 1,
                genie_version: "t".into(),
                nonce: gn,
            },
            MAX_FRAME_BYTES,
        )
        .await
        .unwrap();
        let m: RouterMsg = read_frame(&mut s, MAX_FRAME_BYTES).await.unwrap()?;
        let RouterMsg::Challenge { nonce, proof } = m else {
            return Some(m);
        };
        // A genie with the wrong secret cannot verify the router either; it answers anyway
        // so the router's check is what is tested.
        let _ = auth::verify(&secret, Role::Router, &host, &gn, &nonce, &proof);
        let p = auth::proof(&secret, Role::Genie, &host, &nonce, &gn);
        write_frame(&mut s, &GenieMsg::Auth { proof: p }, MAX_FRAME_BYTES)
            .await
            .unwrap();
        read_frame(&mut s, MAX_FRAME_BYTES).await.unwrap()
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    #[tokio::test]
    async fn right_secret_is_accepted() {
        let (mut a, b) = tokio::io::duplex(4096);
        let secret = Secret::from_bytes(b"s3cret".to_vec());
        let g = tokio::spawn(genie_side(b, secret.clone(), "h1"));
        let ok = accept(&mut a, peer(), &secret, |_| true).await.unwrap();
        assert_eq!(ok.host.as_str(), "h1");
        drop(a);
        assert_eq!(g.await.unwrap(), None);
    }

    #[tokio::test]
    async fn wrong_secret_is_refused_with_reason() {
        let (mut a, b) = tokio::io::duplex(4096);
        let g = tokio::spawn(genie_side(b, Secret::from_bytes(b"wrong".to_vec()), "h1"));
        let err = accept(
            &mut a,
            peer(),
            &Secret::from_bytes(b"s3cret".to_vec()),
            |_| true,
        )
        .await
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("h1") && text.contains("authentication failed"),
            "{text}"
        );
        assert!(
            !text.contains("s3cret") && !text.contains("wrong"),
            "{text}"
        );
        match g.await.unwrap() {
            Some(RouterMsg::Refused { reason }) => assert!(reason.contains("authentication")),
            other => panic!("genie got {other:?}"),
        }
    }

    #[tokio::test]
    async fn unknown_host_and_bad_first_frame_are_refused() {
        let (mut a, b) = tokio::io::duplex(4096);
        let s = Secret::from_bytes(b"x".to_vec());
        let g = tokio::spawn(genie_side(b, s.clone(), "ghost"));
        let e = accept(&mut a, peer(), &s, |h| h.as_str() == "h1")
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("not in the router's inventory"),
            "{e}"
        );
        assert!(matches!(g.await.unwrap(), Some(RouterMsg::Refused { .. })));

        let (mut a, mut b) = tokio::io::duplex(4096);
        write_frame(
            &mut b,
            &GenieMsg::Auth {
                proof: wisp_common::proto::Proof::from_bytes([0; 32]),
            },
            MAX_FRAME_BYTES,
        )
        .await
        .unwrap();
        let e = accept(&mut a, peer(), &s, |_| true).await.unwrap_err();
        assert!(
            matches!(
                e,
                HandshakeError::Unexpected {
                    expected: "hello",
                    ..
                }
            ),
            "{e}"
        );
    }
}
