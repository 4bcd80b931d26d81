//! A [`Bmc`] that times every request into the IPMI latency histogram.

use std::net::SocketAddr;

use wisp_bmc::{Bmc, BmcError, BoxFuture, PowerAction, PowerState};

use super::registry as r;

/// Wraps a BMC; behaves exactly like it.
#[derive(Debug)]
pub struct Timed<B>(pub B);

async fn timed<T>(
    f: impl std::future::Future<Output = Result<T, BmcError>>,
) -> Result<T, BmcError> {
    let t0 = std::time::Instant::now();
    let out = f.await;
    r::IPMI_SECONDS.observe(t0.elapsed().as_secs_f64());
    if out.is_err() {
        r::IPMI_ERRORS.inc();
    }
    out
}

impl<B: Bmc> Bmc for Timed<B> {
    fn power_status(&self) -> BoxFuture<'_, Result<PowerState, BmcError>> {
        Box::pin(timed(self.0.power_status()))
    }
    fn power(&self, action: PowerAction) -> BoxFuture<'_, Result<(), BmcError>> {
        Box::pin(timed(self.0.power(action)))
    }
    fn address(&self) -> SocketAddr {
        self.0.address()
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        self.0.shutdown()
    }
}
