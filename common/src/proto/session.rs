//! Every frame after the handshake is authenticated with per-session keys, so a relay
//! that passed the handshake through can neither inject, modify, replay, reorder nor
//! drop a frame unnoticed (issue 12).
//!
//! Keys: HKDF-SHA256 over the cluster secret, salted with both handshake nonces, one
//! key per direction (the info names the direction and the host), so a frame of one
//! direction or one session is worthless in another. Frame body on the wire:
//! `json | seq (8 bytes, big-endian) | HMAC-SHA256(key, seq | json)`; each side
//! counts from 0 per direction and accepts only the next number. The length prefix is
//! [`super::frame`]'s.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use serde::{de::DeserializeOwned, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};

use super::auth::Nonce;
use super::frame::{self, FrameError};
use crate::secret::Secret;
use crate::HostId;

type HmacSha256 = Hmac<Sha256>;

const SEQ: usize = 8;
const TAG: usize = 32;

/// One direction's key.
#[derive(Clone)]
struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// Which end of the link we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Genie,
    Router,
}

/// The keys of one end: [`Sealer`] for what it sends, [`Opener`] for what it reads.
#[derive(Debug)]
pub struct SessionKeys {
    pub seal: Sealer,
    pub open: Opener,
}

impl SessionKeys {
    /// Derives `side`'s keys of the session that `genie_nonce` and `router_nonce`
    /// started for `host`.
    pub fn derive(
        secret: &Secret,
        side: Side,
        host: &HostId,
        genie_nonce: &Nonce,
        router_nonce: &Nonce,
    ) -> Self {
        let mut salt = [0u8; 64];
        salt[..32].copy_from_slice(genie_nonce.as_bytes());
        salt[32..].copy_from_slice(router_nonce.as_bytes());
        let hk = Hkdf::<Sha256>::new(Some(&salt), secret.expose());
        let key = |dir: &[u8]| {
            let mut info = b"wisp-frame-v1\0".to_vec();
            info.extend_from_slice(dir);
            info.push(0);
            info.extend_from_slice(host.as_str().as_bytes());
            let mut k = [0u8; 32];
            // 32 bytes is far below HKDF-SHA256's 8160-byte limit: cannot fail.
            hk.expand(&info, &mut k).expect("32 bytes of HKDF output");
            Key(k)
        };
        let (g2r, r2g) = (key(b"genie-to-router"), key(b"router-to-genie"));
        let (seal, open) = match side {
            Side::Genie => (g2r, r2g),
            Side::Router => (r2g, g2r),
        };
        Self {
            seal: Sealer { key: seal, seq: 0 },
            open: Opener { key: open, seq: 0 },
        }
    }
}

fn mac(key: &Key, seq: u64, json: &[u8]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(&key.0).expect("hmac takes any key length");
    m.update(&seq.to_be_bytes());
    m.update(json);
    m
}

/// Seals the frames one end sends.
#[derive(Debug)]
pub struct Sealer {
    key: Key,
    seq: u64,
}

impl Sealer {
    /// The body of the next frame carrying `msg`.
    pub fn seal<T: Serialize>(&mut self, msg: &T) -> Result<Vec<u8>, FrameError> {
        let mut body = serde_json::to_vec(msg).map_err(|e| FrameError::Malformed {
            len: 0,
            reason: e.to_string(),
        })?;
        let tag = mac(&self.key, self.seq, &body).finalize().into_bytes();
        body.extend_from_slice(&self.seq.to_be_bytes());
        body.extend_from_slice(&tag);
        self.seq += 1;
        Ok(body)
    }
}

/// Checks the frames one end reads.
#[derive(Debug)]
pub struct Opener {
    key: Key,
    seq: u64,
}

impl Opener {
    /// The message in `body`, if its MAC verifies and its number is the next one.
    pub fn open<T: DeserializeOwned>(&mut self, body: &[u8]) -> Result<T, FrameError> {
        if body.len() < SEQ + TAG {
            return Err(FrameError::Forged { seq: self.seq });
        }
        let (json, trailer) = body.split_at(body.len() - SEQ - TAG);
        let (seq, tag) = trailer.split_at(SEQ);
        let got = u64::from_be_bytes(seq.try_into().expect("8 bytes"));
        // The MAC first: an unauthenticated number says nothing about order.
        if mac(&self.key, got, json).verify_slice(tag).is_err() {
            return Err(FrameError::Forged { seq: got });
        }
        if got != self.seq {
            return Err(FrameError::OutOfOrder {
                got,
                expected: self.seq,
            });
        }
        self.seq += 1;
        frame::decode(json)
    }
}

/// Writes sealed frames to `W`.
#[derive(Debug)]
pub struct SealedWriter<W> {
    pub inner: W,
    sealer: Sealer,
}

impl<W: AsyncWrite + Unpin> SealedWriter<W> {
    pub fn new(inner: W, sealer: Sealer) -> Self {
        Self { inner, sealer }
    }

    /// Seals and writes `msg` (at most `max` bytes of body) and flushes.
    pub async fn send<T: Serialize>(&mut self, msg: &T, max: usize) -> Result<(), FrameError> {
        let body = self.sealer.seal(msg)?;
        frame::write_body(&mut self.inner, &body, max + SEQ + TAG).await
    }
}

/// Reads sealed frames from `R`.
#[derive(Debug)]
pub struct SealedReader<R> {
    pub inner: R,
    opener: Opener,
}

impl<R: AsyncRead + Unpin> SealedReader<R> {
    pub fn new(inner: R, opener: Opener) -> Self {
        Self { inner, opener }
    }

    /// The next message; `Ok(None)` on a clean end of stream between frames. Not
    /// cancel-safe (like [`frame::read_frame`]): read from a task of its own.
    pub async fn recv<T: DeserializeOwned>(&mut self, max: usize) -> Result<Option<T>, FrameError> {
        match frame::read_body(&mut self.inner, max + SEQ + TAG).await? {
            Some(body) => self.opener.open(&body).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{GenieMsg, Report, MAX_FRAME_BYTES};

    fn pair() -> (SessionKeys, SessionKeys) {
        let s = Secret::from_bytes(b"session-test-secret-0123".to_vec());
        let h = HostId::new("h1").unwrap();
        let (g, r) = (Nonce::random(), Nonce::random());
        (
            SessionKeys::derive(&s, Side::Genie, &h, &g, &r),
            SessionKeys::derive(&s, Side::Router, &h, &g, &r),
        )
    }

    fn report(gen: u64) -> GenieMsg {
        GenieMsg::Report(Report {
            gen,
            ..Default::default()
        })
    }

    #[test]
    fn frames_open_in_order_on_the_other_side_only() {
        let (mut genie, mut router) = pair();
        let a = genie.seal.seal(&report(1)).unwrap();
        let b = genie.seal.seal(&report(2)).unwrap();
        assert_eq!(router.open.open::<GenieMsg>(&a).unwrap(), report(1));
        assert_eq!(router.open.open::<GenieMsg>(&b).unwrap(), report(2));
        // A genie's frame reflected back to it does not open: directions differ.
        let c = genie.seal.seal(&report(3)).unwrap();
        assert!(matches!(
            genie.open.open::<GenieMsg>(&c),
            Err(FrameError::Forged { .. })
        ));
    }

    #[test]
    fn tampered_replayed_reordered_and_injected_frames_are_refused() {
        let (mut genie, mut router) = pair();
        let f0 = genie.seal.seal(&report(1)).unwrap();
        let f1 = genie.seal.seal(&report(2)).unwrap();
        let f2 = genie.seal.seal(&report(3)).unwrap();

        // Modified: one bit of the JSON.
        let mut bad = f0.clone();
        bad[10] ^= 1;
        assert!(matches!(
            router.open.open::<GenieMsg>(&bad),
            Err(FrameError::Forged { seq: 0 })
        ));
        // A modified sequence number breaks the MAC too.
        let mut bad = f0.clone();
        let at = bad.len() - TAG - 1;
        bad[at] ^= 1;
        assert!(matches!(
            router.open.open::<GenieMsg>(&bad),
            Err(FrameError::Forged { .. })
        ));
        // Injected: a plain JSON frame, and one sealed with another session's key.
        let plain = serde_json::to_vec(&report(9)).unwrap();
        assert!(router.open.open::<GenieMsg>(&plain).is_err());
        let (mut other, _) = pair();
        let foreign = other.seal.seal(&report(9)).unwrap();
        assert!(matches!(
            router.open.open::<GenieMsg>(&foreign),
            Err(FrameError::Forged { .. })
        ));
        assert!(router.open.open::<GenieMsg>(&[]).is_err());

        // Reordered: frame 1 before frame 0.
        assert!(matches!(
            router.open.open::<GenieMsg>(&f1),
            Err(FrameError::OutOfOrder {
                got: 1,
                expected: 0
            })
        ));
        // In order it opens; replayed it does not; a dropped frame shows as a gap.
        router.open.open::<GenieMsg>(&f0).unwrap();
        assert!(matches!(
            router.open.open::<GenieMsg>(&f0),
            Err(FrameError::OutOfOrder {
                got: 0,
                expected: 1
            })
        ));
        assert!(matches!(
            router.open.open::<GenieMsg>(&f2),
            Err(FrameError::OutOfOrder {
                got: 2,
                expected: 1
            })
        ));
    }

    #[tokio::test]
    async fn sealed_streams_round_trip() {
        let (genie, router) = pair();
        let (a, b) = tokio::io::duplex(4096);
        let mut w = SealedWriter::new(a, genie.seal);
        let mut r = SealedReader::new(b, router.open);
        w.send(&report(1), MAX_FRAME_BYTES).await.unwrap();
        w.send(&report(2), MAX_FRAME_BYTES).await.unwrap();
        drop(w);
        assert_eq!(
            r.recv::<GenieMsg>(MAX_FRAME_BYTES).await.unwrap(),
            Some(report(1))
        );
        assert_eq!(
            r.recv::<GenieMsg>(MAX_FRAME_BYTES).await.unwrap(),
            Some(report(2))
        );
        assert_eq!(r.recv::<GenieMsg>(MAX_FRAME_BYTES).await.unwrap(), None);
    }
}
