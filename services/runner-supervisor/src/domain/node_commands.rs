//! What the node does with each command of the orchestrator, decided from
//! the command and what the node knows: claim an offer, accept a `start`,
//! or do nothing. Pure; the handlers load the facts and append the result.

use stratavore_events::process::{ClaimAnswer, OfferAttempt, ProcessClaim};
use uuid::Uuid;

/// Who this node is right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// Its stable id.
    pub node: String,
    /// The incarnation it registered last.
    pub incarnation: Uuid,
}

/// Whether `path` lies in one of `roots` (lexically; the spawn checks the
/// real path again).
#[must_use]
pub fn serves(roots: &[String], path: &str) -> bool {
    roots.iter().map(|r| r.trim_end_matches('/')).any(|root| {
        path == root
            || path
                .strip_prefix(root)
                .is_some_and(|rest| rest.starts_with('/') && !rest.split('/').any(|w| w == ".."))
    })
}

/// An offer is claimed when its path lies in a root this node serves.
/// Capacity is not decided here: a node at capacity stops consuming offers.
#[must_use]
pub fn decide_offer(
    me: &NodeIdentity,
    roots: &[String],
    offer: &OfferAttempt,
) -> Option<ProcessClaim> {
    serves(roots, &offer.path).then(|| ProcessClaim {
        runner_id: offer.runner_id,
        attempt: offer.attempt,
        node: me.node.clone(),
        incarnation: me.incarnation,
    })
}

/// What the node knows about an attempt when a `start` comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartFacts {
    /// The offer was received (and not revoked).
    pub offer_known: bool,
    /// A spawn of this attempt was already recorded.
    pub already_spawning: bool,
}

/// A `start` is honoured only when it names this node and its current
/// incarnation (an older incarnation's claims died with it), for an offer
/// it holds, once.
#[must_use]
pub fn decide_start(
    me: &NodeIdentity,
    answer: &ClaimAnswer,
    facts: StartFacts,
) -> Option<ProcessClaim> {
    let mine = answer.node == me.node && answer.incarnation == me.incarnation;
    (mine && facts.offer_known && !facts.already_spawning).then(|| ProcessClaim {
        runner_id: answer.runner_id,
        attempt: answer.attempt,
        node: me.node.clone(),
        incarnation: me.incarnation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> NodeIdentity {
        NodeIdentity {
            node: "n1".into(),
            incarnation: Uuid::from_u128(7),
        }
    }

    fn offer(path: &str) -> OfferAttempt {
        OfferAttempt {
            runner_id: Uuid::from_u128(1),
            attempt: 2,
            project: "web".into(),
            path: path.into(),
            profile: "demo".into(),
            session_id: "s".into(),
            resume: false,
            prompt: "p".into(),
            model: None,
            permission: None,
            allowed_tools: Vec::new(),
            usage_baseline: Default::default(),
        }
    }

    fn answer(incarnation: Uuid) -> ClaimAnswer {
        ClaimAnswer {
            runner_id: Uuid::from_u128(1),
            attempt: 2,
            node: "n1".into(),
            incarnation,
            ttl_ms: 30_000,
        }
    }

    const FRESH: StartFacts = StartFacts {
        offer_known: true,
        already_spawning: false,
    };

    #[test]
    fn an_offer_in_a_served_root_is_claimed_by_the_current_incarnation() {
        let roots = vec!["/srv/p/".to_owned()];
        let claim = decide_offer(&me(), &roots, &offer("/srv/p/web")).unwrap();
        assert_eq!((claim.attempt, claim.incarnation), (2, me().incarnation));
        assert!(decide_offer(&me(), &roots, &offer("/srv/other/web")).is_none());
        assert!(decide_offer(&me(), &roots, &offer("/srv/pweb")).is_none());
        assert!(decide_offer(&me(), &roots, &offer("/srv/p/../etc")).is_none());
    }

    #[test]
    fn a_start_for_another_incarnation_or_a_second_start_spawns_nothing() {
        assert!(decide_start(&me(), &answer(me().incarnation), FRESH).is_some());
        assert!(decide_start(&me(), &answer(Uuid::from_u128(6)), FRESH).is_none());
        let again = StartFacts {
            already_spawning: true,
            ..FRESH
        };
        assert!(decide_start(&me(), &answer(me().incarnation), again).is_none());
        let revoked = StartFacts {
            offer_known: false,
            ..FRESH
        };
        assert!(decide_start(&me(), &answer(me().incarnation), revoked).is_none());
    }
}
