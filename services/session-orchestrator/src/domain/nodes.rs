//! Supervisor nodes as the orchestrator decides about them: a client's
//! drain (or the lifting of it) is accepted for a node that is known and
//! not lost, and refused otherwise.

use stratavore_events::process::{DrainNode, NodeDrainChanged, NodeDrainRefused};
use uuid::Uuid;

/// A node's state, as the `nodes` projection names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Its latest incarnation heartbeats (or has not been found lost).
    Up,
    /// It takes no new offers.
    Draining,
    /// Its latest incarnation was declared lost and it has not registered
    /// again.
    Lost,
}

impl NodeState {
    /// The name stored in the projection and used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Draining => "draining",
            Self::Lost => "lost",
        }
    }

    /// Read a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "up" => Some(Self::Up),
            "draining" => Some(Self::Draining),
            "lost" => Some(Self::Lost),
            _ => None,
        }
    }

    /// Every state, for gauges that report zeros too.
    pub const ALL: [Self; 3] = [Self::Up, Self::Draining, Self::Lost];
}

/// Accept or refuse a drain command for a node in `state` (None: no node
/// of that id ever registered).
pub fn decide_drain(
    state: Option<NodeState>,
    cmd: &DrainNode,
    command_id: Uuid,
) -> Result<NodeDrainChanged, NodeDrainRefused> {
    let refuse = |reason: &str, message: String| NodeDrainRefused {
        command_id,
        node: cmd.node.clone(),
        draining: cmd.draining,
        reason: reason.to_owned(),
        message,
    };
    match state {
        None => Err(refuse("not_found", format!("no node {}", cmd.node))),
        // A lost node takes nothing anyway, and nothing would deliver the
        // drain: it registers again, then can be drained.
        Some(NodeState::Lost) => Err(refuse(
            "node_lost",
            format!(
                "node {} is lost; it can be drained once it is back",
                cmd.node
            ),
        )),
        Some(NodeState::Up | NodeState::Draining) => Ok(NodeDrainChanged {
            command_id,
            node: cmd.node.clone(),
            draining: cmd.draining,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(draining: bool) -> DrainNode {
        DrainNode {
            node: "n1".into(),
            draining,
        }
    }

    #[test]
    fn an_unknown_node_is_not_found_and_a_lost_one_is_refused() {
        let r = decide_drain(None, &drain(true), Uuid::nil()).unwrap_err();
        assert_eq!(r.reason, "not_found");
        let r = decide_drain(Some(NodeState::Lost), &drain(true), Uuid::nil()).unwrap_err();
        assert_eq!(r.reason, "node_lost");
        assert!(r.message.contains("n1"), "{}", r.message);
    }

    #[test]
    fn a_known_node_is_drained_or_undrained_as_asked_even_when_already_so() {
        for state in [NodeState::Up, NodeState::Draining] {
            for draining in [true, false] {
                let ok = decide_drain(Some(state), &drain(draining), Uuid::from_u128(3)).unwrap();
                assert_eq!((ok.draining, ok.command_id), (draining, Uuid::from_u128(3)));
            }
        }
    }

    #[test]
    fn state_names_round_trip() {
        for s in NodeState::ALL {
            assert_eq!(NodeState::parse(s.as_str()), Some(s));
        }
        assert_eq!(NodeState::parse("gone"), None);
    }
}
