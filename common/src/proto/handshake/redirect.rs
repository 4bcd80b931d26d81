//! A follower router's side: read the genie's Hello and turn it away with
//! `NotLeader`, naming the leader when known. Nothing is proven either way: a follower
//! grants nothing, and the genie authenticates the router it goes to next.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};

use super::accept::AcceptError;
use super::LeaderRef;
use crate::proto::frame::{read_frame, write_frame};
use crate::proto::{GenieMsg, RouterMsg, MAX_FRAME_BYTES};
use crate::HostId;

/// Reads the Hello of the genie at `peer` and answers that `me` does not lead;
/// returns the host the genie said it is. A timeout, if wanted, wraps this call.
pub async fn redirect<S>(
    stream: &mut S,
    peer: SocketAddr,
    me: &str,
    leader: Option<LeaderRef>,
) -> Result<HostId, AcceptError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let hello = match read_frame(stream, MAX_FRAME_BYTES).await {
        Ok(Some(m)) => m,
        Ok(None) => return Err(AcceptError::Closed { peer }),
        Err(source) => return Err(AcceptError::Frame { peer, source }),
    };
    let GenieMsg::Hello { host, .. } = hello else {
        return Err(AcceptError::Unexpected {
            peer,
            expected: "hello",
            got: hello.kind(),
        });
    };
    let reason = match &leader {
        Some(l) => format!(
            "router {me} is not the leader; the leader is {} at {}",
            l.name, l.link
        ),
        None => format!(
            "router {me} is not the leader, and no leader is known yet (an election is under way)"
        ),
    };
    write_frame(
        stream,
        &RouterMsg::NotLeader { reason, leader },
        MAX_FRAME_BYTES,
    )
    .await
    .map_err(|source| AcceptError::Frame { peer, source })?;
    Ok(host)
}
