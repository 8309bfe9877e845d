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

/// What the node knows when an offer comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfferFacts {
    /// Slots in use: claims not yet started or revoked, and live attempts.
    pub used: u64,
    /// Runners it takes at once.
    pub capacity: u32,
    /// Whether it drains.
    pub draining: bool,
}

/// What a node does with an offer.
#[derive(Debug, Clone, PartialEq)]
pub enum OfferDecision {
    /// Claim it.
    Claim(ProcessClaim),
    /// It is full or draining: send the offer back where it came from
    /// (`target`), for another node or for later. The offer consumers
    /// close at the next look, so this happens to few offers.
    Bounce {
        /// A root key or this node's id.
        target: String,
    },
    /// Not for this node (outside its roots): nothing.
    Ignore,
}

/// An offer is claimed when its path lies in a root this node serves and
/// the node has room and does not drain; one it cannot take goes back to
/// the queue it came from.
#[must_use]
pub fn decide_offer(
    me: &NodeIdentity,
    roots: &[String],
    offer: &OfferAttempt,
    facts: OfferFacts,
) -> OfferDecision {
    let Some(root) = roots
        .iter()
        .find(|r| serves(std::slice::from_ref(r), &offer.path))
    else {
        return OfferDecision::Ignore;
    };
    if facts.draining || facts.used >= u64::from(facts.capacity) {
        let target = if offer.target.is_empty() {
            stratavore_events::process::root_key(root)
        } else {
            offer.target.clone()
        };
        return OfferDecision::Bounce { target };
    }
    OfferDecision::Claim(ProcessClaim {
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
            target: String::new(),
        }
    }

    const ROOM: OfferFacts = OfferFacts {
        used: 0,
        capacity: 2,
        draining: false,
    };

    #[test]
    fn a_full_or_draining_node_sends_the_offer_back_where_it_came_from() {
        let roots = vec!["/srv/a".to_owned()];
        let full = OfferFacts { used: 2, ..ROOM };
        assert_eq!(
            decide_offer(&me(), &roots, &offer("/srv/a/web"), full),
            OfferDecision::Bounce {
                target: stratavore_events::process::root_key("/srv/a")
            }
        );
        let mut for_me = offer("/srv/a/web");
        for_me.target = "n1".into();
        let draining = OfferFacts {
            draining: true,
            ..ROOM
        };
        assert_eq!(
            decide_offer(&me(), &roots, &for_me, draining),
            OfferDecision::Bounce {
                target: "n1".into()
            }
        );
        assert!(matches!(
            decide_offer(&me(), &roots, &offer("/srv/a/web"), ROOM),
            OfferDecision::Claim(_)
        ));
        assert_eq!(
            decide_offer(&me(), &roots, &offer("/srv/b/web"), full),
            OfferDecision::Ignore
        );
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
        let OfferDecision::Claim(claim) = decide_offer(&me(), &roots, &offer("/srv/p/web"), ROOM)
        else {
            panic!("not claimed");
        };
        assert_eq!((claim.attempt, claim.incarnation), (2, me().incarnation));
        for path in ["/srv/other/web", "/srv/pweb", "/srv/p/../etc"] {
            assert_eq!(
                decide_offer(&me(), &roots, &offer(path), ROOM),
                OfferDecision::Ignore,
                "{path}"
            );
        }
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
