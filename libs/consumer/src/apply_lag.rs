//! How far behind a service's drain runs: the age, when its transaction
//! committed, of the oldest message the service's last drain transaction
//! applied (now − the message's own time). It covers every hop before
//! the drain (the sender's log, the relay, the broker, the inbox), which
//! the inbox's oldest waiting row does not: a backlog in the broker's
//! queue never shows in the inbox. Shown as the gauge
//! `stratavore_consumer_apply_lag_seconds`; background work of the service
//! (the gateway's embedding worker) yields to the drain while it is high.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The lag last measured, shared by the drain (which records it) and
/// whoever paces itself by it.
#[derive(Debug, Clone, Default)]
pub struct ApplyLag(Arc<Mutex<Option<(Instant, Duration)>>>);

impl ApplyLag {
    /// A drain transaction committed messages the oldest of which was
    /// `lag` old.
    pub fn record(&self, lag: Duration) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), lag));
    }

    /// The lag last recorded, when it was recorded within `fresh`; zero
    /// otherwise: a drain that has applied nothing for a while has had
    /// nothing to apply.
    #[must_use]
    pub fn current(&self, fresh: Duration) -> Duration {
        match *self.0.lock().unwrap_or_else(PoisonError::into_inner) {
            Some((at, lag)) if at.elapsed() <= fresh => lag,
            _ => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_lag_counts_while_it_is_fresh() {
        let lag = ApplyLag::default();
        assert_eq!(lag.current(Duration::from_secs(5)), Duration::ZERO);
        let shared = lag.clone();
        shared.record(Duration::from_millis(2500));
        shared.record(Duration::from_millis(1500));
        assert_eq!(
            lag.current(Duration::from_secs(5)),
            Duration::from_millis(1500)
        );
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            lag.current(Duration::from_millis(10)),
            Duration::ZERO,
            "stale"
        );
    }
}
