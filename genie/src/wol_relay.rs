//! Sending magic packets for the router from this host's segment
//! (`Command::SendWol`): a router on another L2 segment cannot reach a sleeping host's
//! NIC, a genie beside it can. The packets are wisp-bmc's (`WolWaker`): raw Ethernet
//! frames on `wol_interface` and UDP broadcasts to port 9, `burst` of each.

use std::future::Future;

use wisp_bmc::{WakeError, WakeReport, Waker, WolWaker};
use wisp_common::proto::WolRelay;

/// A relay asks for at most this many packets of each kind: a burst covers a lost
/// frame; more would only flood the segment (and hold a blocking thread for long).
pub const MAX_BURST: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot relay a wake to {mac}: no wol_interface is configured in genie.toml")]
    NoInterface { mac: wisp_common::MacAddr },
    #[error("cannot relay a wake to {mac}: burst {burst} is out of range 1..={MAX_BURST}")]
    Burst {
        mac: wisp_common::MacAddr,
        burst: u32,
    },
    #[error(transparent)]
    Wake(#[from] WakeError),
}

/// Sends a relayed wake; what actually went out is in the report.
pub trait WolRelayer: Send + Sync + 'static {
    fn relay_wol(
        &self,
        relay: WolRelay,
    ) -> impl Future<Output = Result<WakeReport, RelayError>> + Send;
}

/// What must hold before anything is sent: a burst in range and an interface to send
/// on (returned).
pub fn check(interface: Option<&str>, relay: WolRelay) -> Result<&str, RelayError> {
    let WolRelay { mac, burst } = relay;
    if burst == 0 || burst > MAX_BURST {
        return Err(RelayError::Burst { mac, burst });
    }
    interface.ok_or(RelayError::NoInterface { mac })
}

/// Checks the request, then sends with a `WolWaker` on `interface`.
pub async fn relay_with_waker(
    interface: Option<&str>,
    relay: WolRelay,
) -> Result<WakeReport, RelayError> {
    let mut w = WolWaker::new(check(interface, relay)?);
    w.repeats = relay.burst;
    Ok(w.wake(relay.mac).await?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn relay(burst: u32) -> WolRelay {
        WolRelay {
            mac: "02:77:00:00:00:05".parse().unwrap(),
            burst,
        }
    }

    #[tokio::test]
    async fn bad_requests_are_refused_before_anything_is_sent() {
        let e = relay_with_waker(Some("eth0"), relay(0)).await.unwrap_err();
        assert!(e.to_string().contains("burst 0"), "{e}");
        let e = relay_with_waker(Some("eth0"), relay(1000))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("burst 1000"), "{e}");
        let e = relay_with_waker(None, relay(3)).await.unwrap_err();
        assert!(
            e.to_string().contains("no wol_interface")
                && e.to_string().contains("02:77:00:00:00:05"),
            "{e}"
        );
        let e = relay_with_waker(Some("wisp-no-such-if0"), relay(3))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("wisp-no-such-if0"), "{e}");
    }
}
