//! The node's side of liveness, as DESIGN.md section 4 sets it: every
//! shim's lease reaches half the TTL past the publish time of the last
//! heartbeat the broker confirmed, and is renewed from nothing else; a node
//! whose last confirm is older than half the TTL ends its incarnation.
//! Pure: instants are `CLOCK_BOOTTIME` durations since boot, passed in.

use std::time::Duration;

/// What the node knows of its own liveness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseClock {
    ttl: Duration,
    /// Publish time of the newest confirmed heartbeat.
    last_confirmed: Option<Duration>,
    /// When the incarnation began: the fence counts from it until a first
    /// heartbeat is confirmed.
    since: Duration,
}

impl LeaseClock {
    /// An incarnation begun at `now`, with `ttl` until a `start` says
    /// otherwise.
    #[must_use]
    pub fn new(ttl: Duration, now: Duration) -> Self {
        Self {
            ttl,
            last_confirmed: None,
            since: now,
        }
    }

    /// The TTL the orchestrator's `start` carried.
    pub fn set_ttl(&mut self, ttl: Duration) {
        self.ttl = ttl;
    }

    /// The TTL in use.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A heartbeat published at `published_at` was confirmed. Confirms of
    /// older heartbeats arriving late move nothing back.
    pub fn confirmed(&mut self, published_at: Duration) {
        self.last_confirmed = Some(
            self.last_confirmed
                .map_or(published_at, |t| t.max(published_at)),
        );
    }

    /// The lease deadline every shim may be given now: half the TTL past the
    /// last confirmed heartbeat; none before the first confirm.
    #[must_use]
    pub fn lease_deadline(&self) -> Option<Duration> {
        self.last_confirmed.map(|t| t + self.ttl / 2)
    }

    /// Whether the incarnation must end: its last confirm (or its start, if
    /// none came) is older than half the TTL, so every lease it gave has
    /// run out and the orchestrator may already count it lost.
    #[must_use]
    pub fn is_fenced(&self, now: Duration) -> bool {
        let last = self.last_confirmed.unwrap_or(self.since);
        now.saturating_sub(last) > self.ttl / 2
    }

    /// How long ago the last confirm was published, if any came.
    #[must_use]
    pub fn confirm_age(&self, now: Duration) -> Option<Duration> {
        self.last_confirmed.map(|t| now.saturating_sub(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn leases_reach_half_the_ttl_past_the_last_confirmed_publish() {
        let mut c = LeaseClock::new(s(30), s(100));
        assert_eq!(
            c.lease_deadline(),
            None,
            "nothing confirmed, nothing to give"
        );
        c.confirmed(s(101));
        assert_eq!(c.lease_deadline(), Some(s(116)));
        // A late confirm of an older heartbeat moves nothing back.
        c.confirmed(s(99));
        assert_eq!(c.lease_deadline(), Some(s(116)));
        c.set_ttl(s(10));
        assert_eq!(c.lease_deadline(), Some(s(106)));
    }

    #[test]
    fn a_node_fences_itself_once_its_last_confirm_is_older_than_half_the_ttl() {
        let mut c = LeaseClock::new(s(30), s(100));
        assert!(!c.is_fenced(s(115)));
        assert!(c.is_fenced(s(116)), "no confirm since the start");
        c.confirmed(s(110));
        assert!(!c.is_fenced(s(125)));
        assert!(c.is_fenced(s(126)));
        assert_eq!(c.confirm_age(s(126)), Some(s(16)));
    }
}
