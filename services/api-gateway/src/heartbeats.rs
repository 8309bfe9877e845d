//! The latest heartbeat of each node this gateway has heard, in memory.
//!
//! Heartbeats are telemetry, not state (DESIGN.md section 1): they are never
//! written to the database, so each gateway replica knows only what it heard
//! itself since it started, and the API says so (a node none was heard from
//! shows no heartbeat). [`crate::live_consumer`] fills the cache; the nodes
//! API reads it.

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use stratavore_events::process::NodeHeartbeat;

/// A heartbeat and when this gateway received it.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenHeartbeat {
    /// What the node said.
    pub heartbeat: NodeHeartbeat,
    /// When it arrived, by the gateway's clock: ages are measured on one
    /// clock, so a node whose clock is off does not look fresher or older.
    pub received_at: DateTime<Utc>,
}

impl SeenHeartbeat {
    /// Seconds since it arrived, never negative (a wall clock stepped back
    /// must not make a heartbeat arrive in the future).
    pub fn age_seconds(&self, now: DateTime<Utc>) -> f64 {
        let millis = (now - self.received_at).num_milliseconds().max(0);
        // Ages are far below 2^53 ms, so the conversion is exact.
        millis as f64 / 1000.0
    }
}

/// Whether `new` is later than `old` from the same node: a later
/// incarnation (UUIDv7, so they sort by when the node made them), or a
/// later heartbeat of the same one. A heartbeat delayed in the broker, or
/// one of an incarnation the node has since left, must not hide a newer one.
pub fn supersedes(new: &NodeHeartbeat, old: &NodeHeartbeat) -> bool {
    (new.incarnation, new.seq) > (old.incarnation, old.seq)
}

/// The latest heartbeat per node; clones share one map.
#[derive(Debug, Clone, Default)]
pub struct HeartbeatCache {
    latest: Arc<RwLock<HashMap<String, SeenHeartbeat>>>,
}

impl HeartbeatCache {
    /// Keep `heartbeat` if it is the node's latest; true when it was kept.
    pub fn record(&self, heartbeat: NodeHeartbeat, received_at: DateTime<Utc>) -> bool {
        // Every update replaces one entry whole, so a panic elsewhere while
        // the lock was held cannot have left the map torn.
        let mut latest = self.latest.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(seen) = latest.get(&heartbeat.node)
            && !supersedes(&heartbeat, &seen.heartbeat)
        {
            return false;
        }
        latest.insert(
            heartbeat.node.clone(),
            SeenHeartbeat {
                heartbeat,
                received_at,
            },
        );
        true
    }

    /// The latest heartbeat heard from `node`.
    pub fn latest(&self, node: &str) -> Option<SeenHeartbeat> {
        let latest = self.latest.read().unwrap_or_else(PoisonError::into_inner);
        latest.get(node).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use uuid::Uuid;

    fn beat(node: &str, incarnation: Uuid, seq: u64) -> NodeHeartbeat {
        NodeHeartbeat {
            node: node.into(),
            incarnation,
            seq,
            interval_ms: 2000,
            capacity: 4,
            draining: false,
            runners: vec![],
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn a_later_heartbeat_replaces_the_last_and_an_earlier_one_is_ignored() {
        let cache = HeartbeatCache::default();
        let inc = Uuid::now_v7();
        assert!(cache.record(beat("n1", inc, 5), at(0)));
        assert!(!cache.record(beat("n1", inc, 4), at(1)), "delayed");
        assert!(!cache.record(beat("n1", inc, 5), at(1)), "duplicate");
        assert!(cache.record(beat("n1", inc, 6), at(2)));
        let seen = cache.latest("n1").unwrap();
        assert_eq!((seen.heartbeat.seq, seen.received_at), (6, at(2)));
        assert_eq!(cache.latest("n2"), None);
    }

    #[test]
    fn a_new_incarnation_starts_again_from_seq_zero_and_the_old_one_cannot_come_back() {
        let cache = HeartbeatCache::default();
        let old = Uuid::now_v7();
        let new = Uuid::now_v7();
        assert!(old < new, "UUIDv7 sort by creation");
        cache.record(beat("n1", old, 900), at(0));
        assert!(cache.record(beat("n1", new, 0), at(1)));
        assert!(!cache.record(beat("n1", old, 901), at(2)));
        assert_eq!(cache.latest("n1").unwrap().heartbeat.incarnation, new);
    }

    #[test]
    fn nodes_are_kept_apart() {
        let cache = HeartbeatCache::default();
        cache.record(beat("n1", Uuid::now_v7(), 3), at(0));
        assert!(cache.record(beat("n2", Uuid::now_v7(), 1), at(0)));
        assert_eq!(cache.latest("n1").unwrap().heartbeat.seq, 3);
        assert_eq!(cache.latest("n2").unwrap().heartbeat.seq, 1);
    }

    #[test]
    fn the_age_counts_from_arrival_and_is_never_negative() {
        let seen = SeenHeartbeat {
            heartbeat: beat("n1", Uuid::now_v7(), 0),
            received_at: at(10),
        };
        assert_eq!(
            seen.age_seconds(at(12) + chrono::Duration::milliseconds(500)),
            2.5
        );
        assert_eq!(seen.age_seconds(at(9)), 0.0, "clock stepped back");
    }
}
