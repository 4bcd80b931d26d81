//! The protocol v1 handshake, written once: [`initiate`] is the genie's side,
//! [`accept`] the router's. Both run over any `AsyncRead + AsyncWrite` stream (TCP
//! today, TLS or an in-memory duplex in tests), so the daemons, their tests and the
//! benches all speak the same code.
//!
//! ```text
//! genie (initiate)                         router (accept)
//!   Hello{protocol, host, instance, nonce} ->   version + inventory check
//!                                          <- Challenge{nonce, proof} | Refused
//!   verify the router's proof; Auth{proof} ->   verify the genie's proof
//!                                          <- Welcome | Refused   (sent by the caller)
//! ```
//!
//! A follower of a replicated router runs [`redirect`] instead: it reads the Hello and
//! answers `NotLeader`, naming the leader when it knows it; nothing is proven, since
//! nothing is granted (the genie authenticates whichever router it goes to next).
//!
//! `accept` stops before `Welcome`: the router first registers the session, and only
//! then tells the genie its session number and rates. Each side has its own error
//! enum because each names its peer its own way ("router at …", "peer …"). The secret
//! is never sent, logged or put in an error; only proofs over fresh nonces cross the
//! wire.

mod accept;
mod initiate;
mod redirect;
#[cfg(test)]
mod tests;

pub use accept::{accept, AcceptError, Greeted};
pub use initiate::{initiate, Identity, InitiateError};
pub use redirect::redirect;

use serde::{Deserialize, Serialize};

use super::RouterMsg;

/// The leading router, as a follower names it to a genie: its name and the address
/// of its genie link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderRef {
    pub name: String,
    pub link: String,
}

/// What the router tells a genie it welcomes (the fields of `RouterMsg::Welcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome {
    pub session: u64,
    pub heartbeat_ms: u64,
    pub metrics_ms: u64,
    /// 0 disables the genie's self-fence.
    pub lease_ms: u64,
}

impl From<Welcome> for RouterMsg {
    fn from(w: Welcome) -> Self {
        RouterMsg::Welcome {
            session: w.session,
            heartbeat_ms: w.heartbeat_ms,
            metrics_ms: w.metrics_ms,
            lease_ms: w.lease_ms,
        }
    }
}
