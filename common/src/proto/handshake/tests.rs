//! Both sides of the handshake against each other over an in-memory duplex, plus the
//! deliberately wrong peers (other secret, unknown host, bad first frame, old
//! protocol, silent router) that only raw frames can play.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::DuplexStream;

use super::*;
use crate::proto::auth::{self, Role};
use crate::proto::frame::{read_frame, write_body, write_frame};
use crate::proto::{GenieMsg, Nonce, Proof, RouterMsg, MAX_FRAME_BYTES, PROTOCOL_VERSION};
use crate::secret::Secret;
use crate::HostId;
use tokio::io::AsyncWriteExt;

const STEP: Duration = Duration::from_secs(5);

fn peer() -> SocketAddr {
    "127.0.0.1:1".parse().unwrap()
}

fn h(name: &str) -> HostId {
    HostId::new(name).unwrap()
}

fn welcome() -> Welcome {
    Welcome {
        session: 7,
        heartbeat_ms: 200,
        metrics_ms: 1000,
        lease_ms: 3000,
    }
}

/// The real genie side, run in its own task.
fn genie(
    mut s: DuplexStream,
    host: &str,
    secret: &[u8],
) -> tokio::task::JoinHandle<Result<Welcome, InitiateError>> {
    let (host, secret) = (h(host), Secret::from_bytes(secret.to_vec()));
    tokio::spawn(async move {
        let me = Identity {
            host: &host,
            instance: 5,
            genie_version: "t",
            secret: &secret,
        };
        initiate(&mut s, "r:1", me, STEP).await.map(|(w, _)| w)
    })
}

/// A genie with another secret that answers the challenge anyway (a real one hangs
/// up), so the router's check of the genie's proof is what is tested.
async fn stubborn_genie(mut s: DuplexStream, secret: &[u8], host: &str) -> Option<RouterMsg> {
    let (host, secret) = (h(host), Secret::from_bytes(secret.to_vec()));
    let gn = Nonce::random();
    let hello = GenieMsg::Hello {
        protocol: PROTOCOL_VERSION,
        host: host.clone(),
        instance: 1,
        genie_version: "t".into(),
        nonce: gn,
    };
    write_frame(&mut s, &hello, MAX_FRAME_BYTES).await.unwrap();
    let m: RouterMsg = read_frame(&mut s, MAX_FRAME_BYTES).await.unwrap()?;
    let RouterMsg::Challenge { nonce, .. } = m else {
        return Some(m);
    };
    let proof = auth::proof(&secret, Role::Genie, &host, &nonce, &gn);
    let auth = GenieMsg::Auth { proof };
    write_frame(&mut s, &auth, MAX_FRAME_BYTES).await.unwrap();
    read_frame(&mut s, MAX_FRAME_BYTES).await.unwrap()
}

#[tokio::test]
async fn same_secret_both_sides_agree_and_the_genie_gets_the_welcome() {
    let (mut r, g) = tokio::io::duplex(4096);
    let g = genie(g, "h1", b"s3cret");
    let secret = Secret::from_bytes(b"s3cret".to_vec());
    let ok = accept(&mut r, peer(), &secret, |h| h.as_str() == "h1")
        .await
        .unwrap();
    assert_eq!(
        (ok.host.as_str(), ok.instance, ok.genie_version.as_str()),
        ("h1", 5, "t")
    );
    // Welcome is the first sealed frame.
    let w: RouterMsg = welcome().into();
    let mut keys = ok.keys;
    let body = keys.seal.seal(&w).unwrap();
    write_body(&mut r, &body, MAX_FRAME_BYTES).await.unwrap();
    assert_eq!(g.await.unwrap().unwrap(), welcome());
}

#[tokio::test]
async fn an_unsealed_welcome_is_refused() {
    let (mut r, g) = tokio::io::duplex(4096);
    let g = genie(g, "h1", b"s3cret");
    let secret = Secret::from_bytes(b"s3cret".to_vec());
    accept(&mut r, peer(), &secret, |_| true).await.unwrap();
    let w: RouterMsg = welcome().into();
    write_frame(&mut r, &w, MAX_FRAME_BYTES).await.unwrap();
    let e = g.await.unwrap().unwrap_err();
    assert!(matches!(e, InitiateError::Malformed { .. }), "{e}");
}

#[tokio::test]
async fn handshake_frames_are_limited_to_a_few_kib_and_long_reasons_are_cut() {
    // A Hello of 5 KiB is refused before it is read.
    let (mut r, mut g) = tokio::io::duplex(16 << 10);
    g.write_all(&(5u32 << 10).to_be_bytes()).await.unwrap();
    let e = accept(&mut r, peer(), &Secret::from_bytes(b"x".to_vec()), |_| true)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            AcceptError::Frame {
                source: crate::proto::frame::FrameError::TooLarge { .. },
                ..
            }
        ),
        "{e}"
    );
    // A router's refusal of 3 KiB is logged cut to a few hundred characters.
    let (mut r, g) = tokio::io::duplex(16 << 10);
    let g = genie(g, "h1", b"x");
    let _hello: GenieMsg = read_frame(&mut r, MAX_FRAME_BYTES).await.unwrap().unwrap();
    let refused = RouterMsg::Refused {
        reason: "A".repeat(3000),
    };
    write_frame(&mut r, &refused, MAX_FRAME_BYTES)
        .await
        .unwrap();
    let e = g.await.unwrap().unwrap_err().to_string();
    assert!(
        e.len() < 500 && e.contains("more bytes"),
        "{} bytes: {e:.80}",
        e.len()
    );
}

#[tokio::test]
async fn genie_proof_with_another_secret_is_refused_with_reason() {
    let (mut r, g) = tokio::io::duplex(4096);
    let g = tokio::spawn(stubborn_genie(g, b"wrong", "h1"));
    let secret = Secret::from_bytes(b"s3cret".to_vec());
    let err = accept(&mut r, peer(), &secret, |_| true).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("h1") && text.contains("authentication failed"),
        "{text}"
    );
    assert!(
        !text.contains("s3cret") && !text.contains("wrong"),
        "{text}"
    );
    assert_eq!(err.host(), Some(&h("h1")));
    match g.await.unwrap() {
        Some(RouterMsg::Refused { reason }) => assert!(reason.contains("authentication")),
        other => panic!("genie got {other:?}"),
    }
}

#[tokio::test]
async fn a_router_with_another_secret_gets_no_proof_and_both_sides_say_so() {
    let (mut r, g) = tokio::io::duplex(4096);
    let g = genie(g, "h1", b"pa55word");
    let secret = Secret::from_bytes(b"0therpass".to_vec());
    let err = accept(&mut r, peer(), &secret, |_| true).await.unwrap_err();
    assert!(
        matches!(err, AcceptError::ClosedAfterChallenge { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("secrets probably differ"), "{err}");
    let e = g.await.unwrap().unwrap_err();
    assert!(e.is_auth(), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("r:1")
            && text.contains("h1")
            && text.contains("failed to prove the cluster secret"),
        "{text}"
    );
    assert!(
        !text.contains("pa55word") && !text.contains("0therpass"),
        "{text}"
    );
}

#[tokio::test]
async fn unknown_host_is_refused_and_the_genie_sees_the_reason() {
    let (mut r, g) = tokio::io::duplex(4096);
    let g = genie(g, "ghost", b"x");
    let s = Secret::from_bytes(b"x".to_vec());
    let e = accept(&mut r, peer(), &s, |h| h.as_str() == "h1")
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("not in the router's inventory"),
        "{e}"
    );
    let e = g.await.unwrap().unwrap_err();
    assert!(e.is_auth(), "{e}");
    assert!(
        e.to_string()
            .contains("refused host ghost: host ghost is not in the router's inventory"),
        "{e}"
    );
}

#[tokio::test]
async fn bad_first_frame_and_old_protocol_are_refused() {
    let s = Secret::from_bytes(b"x".to_vec());
    let (mut r, mut g) = tokio::io::duplex(4096);
    let auth = GenieMsg::Auth {
        proof: Proof::from_bytes([0; 32]),
    };
    write_frame(&mut g, &auth, MAX_FRAME_BYTES).await.unwrap();
    let e = accept(&mut r, peer(), &s, |_| true).await.unwrap_err();
    assert!(
        matches!(
            e,
            AcceptError::Unexpected {
                expected: "hello",
                got: "auth",
                ..
            }
        ),
        "{e}"
    );

    let (mut r, mut g) = tokio::io::duplex(4096);
    let hello = GenieMsg::Hello {
        protocol: PROTOCOL_VERSION + 1,
        host: h("h1"),
        instance: 1,
        genie_version: "future".into(),
        nonce: Nonce::random(),
    };
    write_frame(&mut g, &hello, MAX_FRAME_BYTES).await.unwrap();
    let e = accept(&mut r, peer(), &s, |_| true).await.unwrap_err();
    assert!(e.to_string().contains("is not supported"), "{e}");
    let answer: Option<RouterMsg> = read_frame(&mut g, MAX_FRAME_BYTES).await.unwrap();
    assert!(
        matches!(answer, Some(RouterMsg::Refused { .. })),
        "{answer:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_router_times_out_naming_the_step() {
    let (_r, g) = tokio::io::duplex(4096);
    let e = genie(g, "h1", b"x").await.unwrap().unwrap_err();
    assert_eq!(
        e.to_string(),
        "router at r:1 did not answer challenge within 5000 ms"
    );
    assert!(!e.is_auth());
}

#[tokio::test]
async fn a_follower_turns_the_genie_away_naming_the_leader_and_nothing_is_proven() {
    let (mut r, g) = tokio::io::duplex(4096);
    let genie = genie(g, "h1", b"s3cret");
    let leader = LeaderRef {
        name: "r1".into(),
        link: "10.0.0.1:7100".into(),
    };
    let host = redirect(&mut r, peer(), "r2", Some(leader.clone()))
        .await
        .unwrap();
    assert_eq!(host, h("h1"));
    match genie.await.unwrap().unwrap_err() {
        InitiateError::NotLeader {
            reason,
            leader: got,
            ..
        } => {
            assert_eq!(got, Some(leader));
            assert!(
                reason.contains("r2 is not the leader") && reason.contains("r1 at 10.0.0.1:7100"),
                "{reason}"
            );
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }
}

#[tokio::test]
async fn a_follower_without_a_known_leader_says_so_and_it_is_not_an_auth_problem() {
    let (mut r, g) = tokio::io::duplex(4096);
    let genie = genie(g, "h1", b"s3cret");
    redirect(&mut r, peer(), "r2", None).await.unwrap();
    let e = genie.await.unwrap().unwrap_err();
    assert!(!e.is_auth(), "{e}");
    assert!(e.to_string().contains("no leader is known yet"), "{e}");
    assert!(matches!(e, InitiateError::NotLeader { leader: None, .. }));
}
