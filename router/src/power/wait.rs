//! The power code's polling period and how it reports times. Polling itself is
//! `wisp_common::wait::until`, on the injected tokio clock: power commands verify their
//! effect by asking again (the BMC, the cluster model) until it shows or time is up.

use std::time::Duration;

/// How often a verification asks again. IPMI status costs 50–130 ms in the lab, so a
/// tighter loop would only queue calls; 100 ms adds at most a tenth of a second to a
/// measured time.
pub const POLL: Duration = Duration::from_millis(100);

pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
