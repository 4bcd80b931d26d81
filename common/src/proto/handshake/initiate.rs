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
use crate::proto::{GenieMsg, Nonce, RouterMsg, MAX_FRAME_BYTES, PROTOCOL_VERSION};
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

/// Runs the genie's side of the handshake on `stream`, connected to the router at
/// `router` (used in errors only). Each answer must arrive within `step_timeout`.
pub async fn initiate<S>(
    stream: &mut S,
    router: &str,
    me: Identity<'_>,
    step_timeout: Duration,
) -> Result<Welcome, InitiateError>
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
    match steps.read(stream, "welcome").await? {
        RouterMsg::Welcome {
            session,
            heartbeat_ms,
            metrics_ms,
            lease_ms,
        } => Ok(Welcome {
            session,
            heartbeat_ms,
            metrics_ms,
            lease_ms,
        }),
        other => Err(steps.not_expected("welcome", other)),
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
        write_frame(s, m, MAX_FRAME_BYTES)
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
        match tokio::time::timeout(self.timeout, read_frame(s, MAX_FRAME_BYTES)).await {
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

    /// A `Refused` (with its reason), a `NotLeader` (with the leader) or any other message where `step` was due.
    fn not_expected(&self, step: &'static str, got: RouterMsg) -> InitiateError {
        let router = self.router.to_owned();
        match got {
            RouterMsg::Refused { reason } => InitiateError::Refused {
                router,
                host: self.host.clone(),
                reason,
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
