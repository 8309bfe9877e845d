//! Which node incarnations are alive, counted in ticks, not seconds
//! (DESIGN.md section 4, "Liveness"): each replica reads its own ticks and
//! every node's heartbeats from one queue, in the order the broker got
//! them. Each of its ticks adds one to every node's count of missed
//! heartbeats, a node's heartbeat resets its own count, and a node whose
//! count reaches K is convicted. A replica that receives no ticks (cut off,
//! stalled, just starting) counts nothing, so it convicts no one.
//!
//! Pure: the shell feeds it heartbeats, ticks and what the `nodes`
//! projection knows, and records the convictions it returns.

use std::collections::BTreeMap;
use uuid::Uuid;

/// The least K with (K - 1) x `interval_ms` at least `window_ms` (the
/// liveness TTL plus the grace): a node convicted at its K-th missed tick
/// sent its last heartbeat at least `window_ms` before.
pub fn ticks_to_convict(interval_ms: u64, window_ms: u64) -> u32 {
    let interval = interval_ms.max(1);
    let k = window_ms.div_ceil(interval).saturating_add(1);
    u32::try_from(k).unwrap_or(u32::MAX)
}

/// A node incarnation found lost: record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conviction {
    /// The node.
    pub node: String,
    /// Its incarnation that stopped heartbeating.
    pub incarnation: Uuid,
    /// Ticks counted since its last heartbeat.
    pub missed: u32,
}

/// What is counted of one node: its latest known incarnation only.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Watched {
    incarnation: Uuid,
    missed: u32,
    /// Its loss is recorded (by this replica or another): it is not
    /// counted any more, and nothing of this incarnation revives it.
    lost: bool,
}

/// Missed-heartbeat counts of every known node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Liveness {
    k: u32,
    nodes: BTreeMap<String, Watched>,
}

impl Liveness {
    /// Counts that convict at `k` missed ticks (at least 1).
    pub fn new(k: u32) -> Self {
        Self {
            k: k.max(1),
            nodes: BTreeMap::new(),
        }
    }

    /// The K this counts to.
    pub fn k(&self) -> u32 {
        self.k
    }

    /// Make `incarnation` of `node` the watched one if it is newer than
    /// what is known (incarnations are UUIDv7s: they sort by time).
    /// Returns the node's entry when `incarnation` is the current one.
    fn current(&mut self, node: &str, incarnation: Uuid, lost: bool) -> Option<&mut Watched> {
        let fresh = Watched {
            incarnation,
            missed: 0,
            lost,
        };
        let watched = self.nodes.entry(node.to_owned()).or_insert(fresh.clone());
        if incarnation > watched.incarnation {
            *watched = fresh;
        }
        (watched.incarnation == incarnation).then_some(watched)
    }

    /// A node's heartbeat: its count goes back to zero, and a new
    /// incarnation becomes the one watched. A heartbeat of an older
    /// incarnation, or of one already lost, changes nothing.
    pub fn heartbeat(&mut self, node: &str, incarnation: Uuid) {
        if let Some(watched) = self.current(node, incarnation, false)
            && !watched.lost
        {
            watched.missed = 0;
        }
    }

    /// What the `nodes` projection says of a node: a registered node that
    /// never heartbeats is counted from the next tick, and a loss another
    /// replica recorded stops the count here.
    pub fn known(&mut self, node: &str, incarnation: Uuid, lost: bool) {
        if let Some(watched) = self.current(node, incarnation, lost)
            && lost
        {
            watched.lost = true;
        }
    }

    /// One tick of this replica's own: every node not known lost misses one
    /// more heartbeat. Returns every node at K or more whose loss is not
    /// recorded yet (again at each tick until [`Self::recorded`] is called, so
    /// a failed record is retried).
    pub fn tick(&mut self) -> Vec<Conviction> {
        let mut convicted = Vec::new();
        for (node, watched) in &mut self.nodes {
            if watched.lost {
                continue;
            }
            watched.missed = watched.missed.saturating_add(1);
            if watched.missed >= self.k {
                convicted.push(Conviction {
                    node: node.clone(),
                    incarnation: watched.incarnation,
                    missed: watched.missed,
                });
            }
        }
        convicted
    }

    /// The loss of `incarnation` of `node` is in the log: stop counting it.
    pub fn recorded(&mut self, node: &str, incarnation: Uuid) {
        self.known(node, incarnation, true);
    }

    /// The ticks `node` has missed, when it is watched and not lost.
    pub fn missed(&self, node: &str) -> Option<u32> {
        self.nodes.get(node).filter(|w| !w.lost).map(|w| w.missed)
    }

    /// Whether the watched incarnation of `node` is lost.
    pub fn is_lost(&self, node: &str) -> bool {
        self.nodes.get(node).is_some_and(|w| w.lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inc(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn ticks(l: &mut Liveness, n: u32) -> Vec<Conviction> {
        let mut last = Vec::new();
        for _ in 0..n {
            last = l.tick();
        }
        last
    }

    #[test]
    fn k_is_the_least_count_whose_ticks_cover_the_ttl_and_the_grace() {
        // (K - 1) x 200 >= 1200.
        assert_eq!(ticks_to_convict(200, 1_200), 7);
        // (K - 1) x 2000 >= 35000: 17.5 rounds up.
        assert_eq!(ticks_to_convict(2_000, 35_000), 19);
        assert_eq!(ticks_to_convict(1_000, 1_000), 2);
        assert_eq!(
            ticks_to_convict(0, 10),
            11,
            "a zero interval counts as 1 ms"
        );
    }

    #[test]
    fn a_node_that_stops_heartbeating_is_convicted_at_its_kth_missed_tick() {
        let mut l = Liveness::new(3);
        l.heartbeat("a", inc(1));
        assert!(ticks(&mut l, 2).is_empty());
        assert_eq!(l.missed("a"), Some(2));
        assert_eq!(
            l.tick(),
            vec![Conviction {
                node: "a".into(),
                incarnation: inc(1),
                missed: 3
            }]
        );
    }

    #[test]
    fn each_heartbeat_resets_the_count_so_a_live_node_is_never_convicted() {
        let mut l = Liveness::new(3);
        for _ in 0..100 {
            l.heartbeat("a", inc(1));
            assert!(ticks(&mut l, 2).is_empty());
        }
        assert_eq!(l.missed("a"), Some(2));
    }

    #[test]
    fn without_ticks_nobody_is_convicted_however_many_heartbeats_are_missed() {
        let mut l = Liveness::new(2);
        l.heartbeat("a", inc(1));
        l.known("b", inc(2), false);
        // A replica cut off from the broker, stalled or starting: no ticks
        // arrive, so time passing alone counts nothing.
        assert_eq!(l.missed("a"), Some(0));
        assert_eq!(l.missed("b"), Some(0));
    }

    #[test]
    fn a_registered_node_that_never_heartbeats_is_counted_from_the_first_tick() {
        let mut l = Liveness::new(2);
        l.known("a", inc(1), false);
        assert!(l.tick().is_empty());
        assert_eq!(l.tick().len(), 1);
    }

    #[test]
    fn a_conviction_is_returned_each_tick_until_its_loss_is_recorded() {
        let mut l = Liveness::new(1);
        l.heartbeat("a", inc(1));
        assert_eq!(l.tick().len(), 1);
        assert_eq!(l.tick()[0].missed, 2, "recording failed: tried again");
        l.recorded("a", inc(1));
        assert!(ticks(&mut l, 5).is_empty());
        assert!(l.is_lost("a"));
        assert_eq!(l.missed("a"), None);
    }

    #[test]
    fn a_heartbeat_of_a_lost_incarnation_does_not_revive_it_but_a_new_incarnation_is_watched_afresh()
     {
        let mut l = Liveness::new(2);
        l.heartbeat("a", inc(1));
        ticks(&mut l, 2);
        l.recorded("a", inc(1));
        l.heartbeat("a", inc(1));
        assert!(l.is_lost("a"), "a lost incarnation stays lost");
        assert!(ticks(&mut l, 3).is_empty());
        // It registered again.
        l.heartbeat("a", inc(2));
        assert!(!l.is_lost("a"));
        assert_eq!(l.missed("a"), Some(0));
        assert!(l.tick().is_empty());
        assert_eq!(l.tick()[0].incarnation, inc(2));
    }

    #[test]
    fn a_heartbeat_of_an_old_incarnation_after_a_new_one_does_not_reset_the_count() {
        let mut l = Liveness::new(3);
        l.heartbeat("a", inc(2));
        ticks(&mut l, 2);
        // A late heartbeat of the incarnation before.
        l.heartbeat("a", inc(1));
        assert_eq!(l.missed("a"), Some(2));
        let convicted = l.tick();
        assert_eq!(convicted.len(), 1);
        assert_eq!(convicted[0].incarnation, inc(2));
    }

    #[test]
    fn a_loss_another_replica_recorded_stops_the_count_here() {
        let mut l = Liveness::new(3);
        l.heartbeat("a", inc(1));
        ticks(&mut l, 2);
        l.known("a", inc(1), true);
        assert!(ticks(&mut l, 5).is_empty());
        // What the projection says of an older incarnation changes nothing.
        l.heartbeat("b", inc(5));
        l.known("b", inc(4), true);
        assert_eq!(l.missed("b"), Some(0));
    }

    #[test]
    fn a_newer_registration_in_the_projection_restarts_the_count() {
        let mut l = Liveness::new(3);
        l.heartbeat("a", inc(1));
        ticks(&mut l, 2);
        l.known("a", inc(2), false);
        assert_eq!(l.missed("a"), Some(0));
        assert!(ticks(&mut l, 2).is_empty());
    }

    #[test]
    fn nodes_are_counted_independently() {
        let mut l = Liveness::new(2);
        l.heartbeat("a", inc(1));
        l.heartbeat("b", inc(2));
        l.tick();
        l.heartbeat("b", inc(2));
        let convicted = l.tick();
        assert_eq!(
            convicted
                .iter()
                .map(|c| c.node.as_str())
                .collect::<Vec<_>>(),
            ["a"]
        );
    }
}
