//! The fake routers' frames after the handshake, sealed as the real router's: the
//! session keys of each accepted connection are kept by its genie's address (set by
//! [`super::router_handshake`]), and `read_frame`/`write_frame` here have the
//! signatures of `wisp_common::proto::frame`'s, so the tests read as before. A
//! connection without keys (before or without a handshake) speaks plain frames.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use serde::{de::DeserializeOwned, Serialize};
use tokio::net::TcpStream;
use wisp_common::proto::frame::{self, FrameError};
use wisp_common::proto::session::{Opener, Sealer, SessionKeys};

type Keys = (Option<Sealer>, Option<Opener>);

// Test support only: a registry keyed by connection, so that the tests keep their
// `&mut TcpStream` (the product code holds its keys in its sealed halves).
static SESSIONS: Mutex<Option<HashMap<SocketAddr, Keys>>> = Mutex::new(None);

/// Keeps `keys` for the connection `s`.
pub fn register(s: &TcpStream, keys: SessionKeys) {
    let peer = s.peer_addr().unwrap();
    SESSIONS
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(peer, (Some(keys.seal), Some(keys.open)));
}

fn take<R>(s: &TcpStream, f: impl FnOnce(&mut Keys) -> Option<R>) -> Option<R> {
    let peer = s.peer_addr().ok()?;
    let mut g = SESSIONS.lock().unwrap();
    g.get_or_insert_with(HashMap::new)
        .get_mut(&peer)
        .and_then(f)
}

fn put(s: &TcpStream, f: impl FnOnce(&mut Keys)) {
    if let Ok(peer) = s.peer_addr() {
        if let Some(k) = SESSIONS
            .lock()
            .unwrap()
            .get_or_insert_with(HashMap::new)
            .get_mut(&peer)
        {
            f(k);
        }
    }
}

/// Writes one frame, sealed when the connection has keys.
pub async fn write_frame<S: std::borrow::BorrowMut<TcpStream>, T: Serialize>(
    s: &mut S,
    msg: &T,
    max: usize,
) -> Result<(), FrameError> {
    let s = s.borrow_mut();
    match take(s, |k| k.0.take()) {
        None => frame::write_frame(s, msg, max).await,
        Some(mut sealer) => {
            let body = sealer.seal(msg);
            put(s, |k| k.0 = Some(sealer));
            frame::write_body(s, &body?, max + 40).await
        }
    }
}

/// Reads one frame, opened when the connection has keys; `Ok(None)` at a clean end.
pub async fn read_frame<S: std::borrow::BorrowMut<TcpStream>, T: DeserializeOwned>(
    s: &mut S,
    max: usize,
) -> Result<Option<T>, FrameError> {
    let s = s.borrow_mut();
    match take(s, |k| k.1.take()) {
        None => frame::read_frame(s, max).await,
        Some(mut opener) => {
            let body = frame::read_body(s, max + 40).await;
            let r = match body {
                Ok(Some(b)) => opener.open(&b).map(Some),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            };
            put(s, |k| k.1 = Some(opener));
            r
        }
    }
}
