//! A bounded fuzz run in the test suite: mutated and random inputs through the frame
//! decoder, the sealed-frame opener and both sides of the handshake. None may panic
//! or hang, and no random body may open as a sealed frame. The counts are printed
//! (`cargo test -p wisp-common fuzz -- --nocapture`); `fuzz/` has the cargo-fuzz
//! targets for open-ended runs.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::frame;
use super::handshake::{accept, initiate, Identity};
use super::session::{SessionKeys, Side};
use super::{GenieMsg, Nonce, RouterMsg, PROTOCOL_VERSION};
use crate::secret::Secret;
use crate::HostId;

/// xorshift64*: deterministic, so a failure replays with the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Valid messages of both directions, as JSON: the seeds mutations start from.
fn seeds() -> Vec<Vec<u8>> {
    let h = HostId::new("h1").unwrap();
    let msgs: Vec<Vec<u8>> = vec![
        serde_json::to_vec(&GenieMsg::Hello {
            protocol: PROTOCOL_VERSION,
            host: h.clone(),
            instance: 7,
            genie_version: "0.1.0".into(),
            nonce: Nonce::random(),
        })
        .unwrap(),
        serde_json::to_vec(&GenieMsg::Auth {
            proof: super::Proof::from_bytes([7; 32]),
        })
        .unwrap(),
        serde_json::to_vec(&RouterMsg::Challenge {
            nonce: Nonce::random(),
            proof: super::Proof::from_bytes([1; 32]),
        })
        .unwrap(),
        serde_json::to_vec(&RouterMsg::Refused {
            reason: "no".into(),
        })
        .unwrap(),
        br#"{"type":"report","gen":1,"sent_at_ms":2,"vms":[{"id":"a","state":"running"}]}"#
            .to_vec(),
        b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[".to_vec(),
    ];
    msgs
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut b = seeds[rng.below(seeds.len())].clone();
    match rng.below(5) {
        0 => {
            // Random bytes of a random length.
            let n = rng.below(600);
            b = (0..n).map(|_| rng.next() as u8).collect();
        }
        1 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(b.len());
                if let Some(x) = b.get_mut(i) {
                    *x ^= 1 << rng.below(8);
                }
            }
        }
        2 => b.truncate(rng.below(b.len() + 1)),
        3 => {
            let i = rng.below(b.len() + 1);
            let junk: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
            b.splice(i..i, junk);
        }
        _ => {
            let i = rng.below(b.len());
            let j = rng.below(b.len());
            let (i, j) = (i.min(j), i.max(j));
            let dup = b[i..j].to_vec();
            b.extend_from_slice(&dup);
        }
    }
    b
}

/// A byte stream of frames: mostly honest length prefixes, sometimes lying ones.
fn stream(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let body = mutate(rng, seeds);
        let len = match rng.below(6) {
            0 => rng.next() as u32,
            1 => body.len() as u32 + rng.below(100) as u32,
            _ => body.len() as u32,
        };
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&body);
    }
    out
}

#[test]
fn decoders_and_the_opener_never_panic_nor_open_junk() {
    let seeds = seeds();
    let mut rng = Rng(0x5eed_0001);
    let s = Secret::from_bytes(b"fuzz-secret-0123456789".to_vec());
    let h = HostId::new("h1").unwrap();
    let (g, r) = (Nonce::random(), Nonce::random());
    let mut keys = SessionKeys::derive(&s, Side::Router, &h, &g, &r);
    let mut genie = SessionKeys::derive(&s, Side::Genie, &h, &g, &r);
    let sealed = genie.seal.seal(&GenieMsg::Auth {
        proof: super::Proof::from_bytes([0; 32]),
    });
    let sealed = sealed.unwrap();
    let mut sealed_seeds = seeds.clone();
    sealed_seeds.push(sealed.clone());
    let n = 50_000;
    for _ in 0..n {
        let b = mutate(&mut rng, &sealed_seeds);
        let _ = frame::decode::<GenieMsg>(&b);
        let _ = frame::decode::<RouterMsg>(&b);
        // A mutation may leave the one genuine sealed frame as it was: not junk.
        if b != sealed {
            assert!(
                keys.open.open::<GenieMsg>(&b).is_err(),
                "junk opened: {b:?}"
            );
        }
    }
    println!("fuzz: {n} mutated bodies through decode (both directions) and the opener, clean");
}

#[tokio::test]
async fn both_sides_of_the_handshake_survive_junk() {
    let seeds = seeds();
    let mut rng = Rng(0x5eed_0002);
    let secret = Secret::from_bytes(b"fuzz-secret-0123456789".to_vec());
    let host = HostId::new("h1").unwrap();
    let n = 3_000;
    for _ in 0..n {
        let input = stream(&mut rng, &seeds);
        // The router's side, fed by a hostile genie.
        let (mut r, mut g) = tokio::io::duplex(64 << 10);
        let _ = g.write_all(&input).await;
        drop(g);
        let peer = "127.0.0.1:1".parse().unwrap();
        let done = tokio::time::timeout(
            Duration::from_secs(5),
            accept(&mut r, peer, &secret, |_| true),
        )
        .await;
        assert!(done.is_ok(), "accept hung on {input:?}");
        assert!(done.unwrap().is_err(), "junk authenticated: {input:?}");

        // The genie's side, fed by a hostile router.
        let (mut g, mut r) = tokio::io::duplex(64 << 10);
        let _ = r.write_all(&input).await;
        drop(r);
        let me = Identity {
            host: &host,
            instance: 1,
            genie_version: "f",
            secret: &secret,
        };
        let done = tokio::time::timeout(
            Duration::from_secs(5),
            initiate(&mut g, "r", me, Duration::from_secs(1)),
        )
        .await;
        assert!(done.is_ok(), "initiate hung on {input:?}");
        assert!(done.unwrap().is_err(), "junk welcomed: {input:?}");
    }
    println!("fuzz: {n} junk streams through accept and initiate each, clean");
}
