//! Polling with a deadline on the injected tokio clock: power commands verify their
//! effect by asking again (the BMC, the cluster model) until it shows or time is up.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often a verification asks again. IPMI status costs 50–130 ms in the lab, so a
/// tighter loop would only queue calls; 100 ms adds at most a tenth of a second to a
/// measured time.
pub const POLL: Duration = Duration::from_millis(100);

/// Calls `f` until it returns `Some` or `deadline` passes (then one last call).
pub async fn until<T, F, Fut>(deadline: Instant, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
