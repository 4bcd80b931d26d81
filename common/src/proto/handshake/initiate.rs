//! The genie's side of the handshake: send Hello, check the router's proof before
//! proving anything ourselves (an impostor learns nothing), answer with our proof,
//! and wait for Welcome. Every read is bounded by the step timeout, so a silent
//! router cannot hold the genie; every error names the router and, where it matters,
//! the host and what to check.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::{LeaderRef, Welcome};
use crate::proto::auth::{self, Role};
use crate::proto::frame::{read_frame, write_frame, FrameError};
use crate::proto::session::{SessionKeys, Side};
use crate::proto::{GenieMsg, Nonce, RouterMsg, MAX_HANDSHAKE_FRAME_BYTES, PROTOCOL_VERSION};
use crate::secret::Secret;
use crate::HostId;

#[derive(Debug, thiserror::Error)]
pub enum InitiateError {
    #[error("router at {router} did not answer {step} within {timeout_ms} ms")]
    Timeout {
        router: String,
        step: &'static str,
        timeout_ms: u64,
    },
    #[error("link to the router at {router} failed")]
    Frame {
        router: String,
        #[source]
        source: FrameError,
    },
    #[error("router at {router} sent a malformed frame; reconnecting")]
    Malformed {
        router: String,
        #[source]
        source: FrameError,
    },
    #[error("router at {router} closed the connection during the handshake")]
    Closed { router: String },
    #[error("router at {router} sent {got} during {step}")]
    Unexpected {
        router: String,
        step: &'static str,
        got: &'static str,
    },
    #[error(
        "router at {router} failed to prove the cluster secret for host {host}: \
         wrong secret on one side, or an impostor; not authenticating to it"
    )]
    RouterAuth { router: String, host: HostId },
    #[error("router at {router} refused host {host}: {reason}")]
    Refused {
        router: String,
        host: HostId,
        reason: String,
    },
    /// A follower of a replicated router: try `leader`, or another router.
    #[error("router at {router}: {reason}")]
    NotLeader {
        router: String,
        reason: String,
        leader: Option<LeaderRef>,
    },
}

impl InitiateError {
    /// Auth problems need an operator; plain connectivity problems fix themselves.
    pub fn is_auth(&self) -> bool {
        matches!(self, Self::RouterAuth { .. } | Self::Refused { .. })
    }
}

/// Who the genie says it is.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub host: &'a HostId,
    /// Random per genie process start.
    pub instance: u64,
    pub genie_version: &'a str,
    pub secret: &'a Secret,
}

/// A refusal's reason is the router's text: a hostile router could send a megabyte of
/// it, to be logged at every retry. This much is plenty for a real reason.
const MAX_REASON_CHARS: usize = 300;

/// Runs the genie's side of the handshake on `stream`, connected to the router at
/// `router` (used in errors only). Each answer must arrive within `step_timeout`.
/// Returns the welcome and the session's keys, which seal every later frame.
pub async fn initiate<S>(
    stream: &mut S,
    router: &str,
    me: Identity<'_>,
    step_timeout: Duration,
) -> Result<(Welcome, SessionKeys), InitiateError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let steps = Steps {
        router,
        host: me.host,
        timeout: step_timeout,
    };
    let our_nonce = Nonce::random();
    let hello = GenieMsg::Hello {
        protocol: PROTOCOL_VERSION,
        host: me.host.clone(),
        instance: me.instance,
        genie_version: me.genie_version.to_owned(),
        nonce: our_nonce,
    };
    steps.write(stream, &hello).await?;
    let router_nonce = match steps.read(stream, "challenge").await? {
        RouterMsg::Challenge { nonce, proof } => {
            // The router proved with (theirs = our nonce, own = its nonce).
            if !auth::verify(me.secret, Role::Router, me.host, &our_nonce, &nonce, &proof) {
                return Err(InitiateError::RouterAuth {
                    router: router.to_owned(),
                    host: me.host.clone(),
                });
            }
            nonce
        }
        other => return Err(steps.not_expected("challenge", other)),
    };
    let proof = auth::proof(me.secret, Role::Genie, me.host, &router_nonce, &our_nonce);
    steps.write(stream, &GenieMsg::Auth { proof }).await?;
    let keys = SessionKeys::derive(me.secret, Side::Genie, me.host, &our_nonce, &router_nonce);
    // Welcome is the first sealed frame; a refusal of our proof comes unsealed (the
    // router refuses before it has keys), so the raw frame is looked at first.
    let body = steps.read_body(stream, "welcome").await?;
    let mut open = keys.open;
    let msg = match open.open::<RouterMsg>(&body) {
        Ok(m) => m,
        Err(sealed_err) => match crate::proto::frame::decode::<RouterMsg>(&body) {
            Ok(m @ RouterMsg::Refused { .. }) => m,
            _ => {
                return Err(InitiateError::Malformed {
                    router: router.to_owned(),
                    source: sealed_err,
                })
            }
        },
    };
    let keys = SessionKeys {
        seal: keys.seal,
        open,
    };
    match msg {
        RouterMsg::Welcome {
            session,
            heartbeat_ms,
            metrics_ms,
            lease_ms,
        } => Ok((
            Welcome {
                session,
                heartbeat_ms,
                metrics_ms,
                lease_ms,
            },
            keys,
        )),
        other => Err(steps.not_expected("welcome", other)),
    }
}

/// Cuts `s` to [`MAX_REASON_CHARS`], saying how much was left out.
fn truncate(s: String) -> String {
    match s.char_indices().nth(MAX_REASON_CHARS) {
        None => s,
        Some((at, _)) => format!("{}… ({} more bytes)", &s[..at], s.len() - at),
    }
}

/// The context every step's error needs.
struct Steps<'a> {
    router: &'a str,
    host: &'a HostId,
    timeout: Duration,
}

impl Steps<'_> {
    async fn write<S: AsyncWrite + Unpin>(
        &self,
        s: &mut S,
        m: &GenieMsg,
    ) -> Result<(), InitiateError> {
        write_frame(s, m, MAX_HANDSHAKE_FRAME_BYTES)
            .await
            .map_err(|source| InitiateError::Frame {
                router: self.router.to_owned(),
                source,
            })
    }

    async fn read<S: AsyncRead + Unpin>(
        &self,
        s: &mut S,
        step: &'static str,
    ) -> Result<RouterMsg, InitiateError> {
        let router = self.router.to_owned();
        // Before the router is authenticated, a frame is a Challenge or a refusal.
        match tokio::time::timeout(self.timeout, read_frame(s, MAX_HANDSHAKE_FRAME_BYTES)).await {
            Err(_) => Err(InitiateError::Timeout {
                router,
                step,
                timeout_ms: self.timeout.as_millis() as u64,
            }),
            Ok(Ok(Some(m))) => Ok(m),
            Ok(Ok(None)) => Err(InitiateError::Closed { router }),
            Ok(Err(e @ (FrameError::Malformed { .. } | FrameError::TooLarge { .. }))) => {
                Err(InitiateError::Malformed { router, source: e })
            }
            Ok(Err(source)) => Err(InitiateError::Frame { router, source }),
        }
    }

    /// One raw frame (the sealed Welcome), within the step timeout.
    async fn read_body<S: AsyncRead + Unpin>(
        &self,
        s: &mut S,
        step: &'static str,
    ) -> Result<Vec<u8>, InitiateError> {
        let router = self.router.to_owned();
        let read = crate::proto::frame::read_body(s, MAX_HANDSHAKE_FRAME_BYTES);
        match tokio::time::timeout(self.timeout, read).await {
            Err(_) => Err(InitiateError::Timeout {
                router,
                step,
                timeout_ms: self.timeout.as_millis() as u64,
            }),
            Ok(Ok(Some(b))) => Ok(b),
            Ok(Ok(None)) => Err(InitiateError::Closed { router }),
            Ok(Err(e @ FrameError::TooLarge { .. })) => {
                Err(InitiateError::Malformed { router, source: e })
            }
            Ok(Err(source)) => Err(InitiateError::Frame { router, source }),
        }
    }

    /// A `Refused` (with its reason), a `NotLeader` (with the leader) or any other message where `step` was due.
    fn not_expected(&self, step: &'static str, got: RouterMsg) -> InitiateError {
        let router = self.router.to_owned();
        match got {
            RouterMsg::Refused { reason } => InitiateError::Refused {
                router,
                host: self.host.clone(),
                reason: truncate(reason),
            },
            RouterMsg::NotLeader { reason, leader } => InitiateError::NotLeader {
                router,
                reason,
                leader,
            },
            other => InitiateError::Unexpected {
                router,
                step,
                got: other.kind(),
            },
        }
    }
}
