//! Shared by the router's tests and benches that play genies: a genie that connects
//! and runs the real handshake (`wisp_common::proto::handshake::initiate`), and the one
//! deliberately wrong genie the tests need (wrong secret, answering anyway). After the
//! handshake every frame is sealed with the session's keys: [`sealed`] gives the
//! played genies the same `read_frame`/`write_frame` calls over sealed halves.
#![allow(dead_code, clippy::unwrap_used)]

// The router itself on loopback (temp dir, secret, router.toml, daemon): rig.rs.
pub mod rig;
// The power plane with fake BMCs and waker, and the genie link: power_rig.rs.
pub mod power_rig;
// Half-sent API requests and the check that they were cut: loris.rs.
pub mod loris;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use wisp_common::proto::auth::{self, Role};
use wisp_common::proto::frame::{read_frame, write_frame};
use wisp_common::proto::handshake::{self, Identity};
use wisp_common::proto::{GenieMsg, Nonce, RouterMsg, MAX_FRAME_BYTES, PROTOCOL_VERSION};
use wisp_common::secret::Secret;
use wisp_common::HostId;

/// Each handshake step must be answered within this (as in the genie).
const STEP: Duration = Duration::from_secs(5);

pub mod sealed;

/// A genie the router welcomed (so the router's proof verified with our secret).
#[derive(Debug)]
pub struct Welcomed {
    pub stream: sealed::SealedStream,
    pub heartbeat_ms: u64,
}

/// Connects to `link` as genie `host` (instance `instance`) and runs the handshake
/// with `secret`. `Err` is the handshake error's text (a refusal names its reason).
pub async fn genie_handshake(
    link: SocketAddr,
    host: &str,
    secret: &[u8],
    instance: u64,
) -> Result<Welcomed, String> {
    genie_handshake_from(link, None, host, secret, instance).await
}

/// [`genie_handshake`] from the source address `from` (a loopback address such as
/// 127.0.0.2: another machine, as far as the router can tell).
pub async fn genie_handshake_from(
    link: SocketAddr,
    from: Option<std::net::IpAddr>,
    host: &str,
    secret: &[u8],
    instance: u64,
) -> Result<Welcomed, String> {
    let mut stream = match from {
        None => TcpStream::connect(link).await.unwrap(),
        Some(ip) => {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind(SocketAddr::new(ip, 0)).unwrap();
            sock.connect(link).await.unwrap()
        }
    };
    let host = HostId::new(host).unwrap();
    let secret = Secret::from_bytes(secret.to_vec());
    let me = Identity {
        host: &host,
        instance,
        genie_version: "fake",
        secret: &secret,
    };
    let (w, keys) = handshake::initiate(&mut stream, &link.to_string(), me, STEP)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Welcomed {
        stream: sealed::SealedStream::new(stream, keys),
        heartbeat_ms: w.heartbeat_ms,
    })
}

/// A genie whose secret differs from the router's but that answers the challenge
/// anyway (a real genie hangs up when the router's proof does not verify), so the
/// router's own check of the genie's proof is tested. Returns the router's answer.
pub async fn stubborn_genie(link: SocketAddr, host: &str, secret: &[u8]) -> Option<RouterMsg> {
    let mut s = TcpStream::connect(link).await.unwrap();
    let host = HostId::new(host).unwrap();
    let secret = Secret::from_bytes(secret.to_vec());
    let gn = Nonce::random();
    let hello = GenieMsg::Hello {
        protocol: PROTOCOL_VERSION,
        host: host.clone(),
        instance: 42,
        genie_version: "fake".into(),
        nonce: gn,
    };
    write_frame(&mut s, &hello, MAX_FRAME_BYTES).await.unwrap();
    let ch: RouterMsg = read_frame(&mut s, MAX_FRAME_BYTES).await.unwrap()?;
    let RouterMsg::Challenge { nonce, .. } = ch else {
        return Some(ch);
    };
    let proof = auth::proof(&secret, Role::Genie, &host, &nonce, &gn);
    write_frame(&mut s, &GenieMsg::Auth { proof }, MAX_FRAME_BYTES)
        .await
        .unwrap();
    read_frame(&mut s, MAX_FRAME_BYTES).await.unwrap()
}
