//! Shared by the router's tests and benches that play genies: the genie's side of
//! the protocol v1 handshake, written once.
#![allow(dead_code, clippy::unwrap_used)]

// The router itself on loopback (temp dir, secret, router.toml, daemon): rig.rs.
pub mod rig;

use std::net::SocketAddr;

use tokio::net::TcpStream;
use wisp_common::proto::auth::{self, Role};
use wisp_common::proto::frame::{read_frame, write_frame};
use wisp_common::proto::{GenieMsg, Nonce, RouterMsg, MAX_FRAME_BYTES, PROTOCOL_VERSION};
use wisp_common::secret::Secret;
use wisp_common::HostId;

/// A genie the router welcomed.
#[derive(Debug)]
pub struct Welcomed {
    pub stream: TcpStream,
    /// Whether the router's proof verified with our secret.
    pub router_proof_ok: bool,
    pub heartbeat_ms: u64,
}

/// Connects to `link` as genie `host` (instance `instance`) and runs the handshake
/// with `secret`. `Err` carries the router's unexpected answer (a `Refused`, say).
pub async fn genie_handshake(
    link: SocketAddr,
    host: &str,
    secret: &[u8],
    instance: u64,
) -> Result<Welcomed, String> {
    let mut s = TcpStream::connect(link).await.unwrap();
    let host = HostId::new(host).unwrap();
    let secret = Secret::from_bytes(secret.to_vec());
    let gn = Nonce::random();
    let hello = GenieMsg::Hello {
        protocol: PROTOCOL_VERSION,
        host: host.clone(),
        instance,
        genie_version: "fake".into(),
        nonce: gn,
    };
    write_frame(&mut s, &hello, MAX_FRAME_BYTES).await.unwrap();
    let ch: RouterMsg = read_frame(&mut s, MAX_FRAME_BYTES).await.unwrap().unwrap();
    let RouterMsg::Challenge { nonce, proof } = ch else {
        return Err(format!("{ch:?}"));
    };
    let router_proof_ok = auth::verify(&secret, Role::Router, &host, &gn, &nonce, &proof);
    let p = auth::proof(&secret, Role::Genie, &host, &nonce, &gn);
    write_frame(&mut s, &GenieMsg::Auth { proof: p }, MAX_FRAME_BYTES)
        .await
        .unwrap();
    match read_frame::<_, RouterMsg>(&mut s, MAX_FRAME_BYTES)
        .await
        .unwrap()
    {
        Some(RouterMsg::Welcome { heartbeat_ms, .. }) => Ok(Welcomed {
            stream: s,
            router_proof_ok,
            heartbeat_ms,
        }),
        other => Err(format!("{other:?}")),
    }
}
