//! What a node's loss means for one runner (DESIGN.md section 4, "Sessions
//! live where the agent keeps them"): an attempt placed on the lost
//! incarnation is gone; the runner is relaunched as the next attempt when
//! its session can run elsewhere (not bound yet, or on shared storage), and
//! is lost otherwise, its session resumable once the node is back, never
//! restarted as a new conversation behind the user's back.

use super::{Decision, Runner, RunnerState, ended, reoffer};
use stratavore_events::runner::{AttemptRelaunched, RunnerEvent};
use uuid::Uuid;

/// The reason recorded when a runner or its attempt is lost with its node.
pub(super) const REASON: &str = "node_lost";

/// The loss, and what the runner's session depends on.
pub(super) struct NodeLoss {
    pub node: String,
    pub incarnation: Uuid,
    pub session_node: Option<String>,
    pub shared_storage: bool,
}

/// The node and incarnation the runner's current attempt is placed on,
/// while that attempt is live (claimed, running, paused or stopping).
fn live_placement(r: &Runner) -> Option<&(String, Uuid)> {
    let live = matches!(
        r.state,
        RunnerState::Starting | RunnerState::Running | RunnerState::Paused | RunnerState::Stopping
    );
    r.placement.as_ref().filter(|_| live)
}

impl NodeLoss {
    /// Whether the runner's session can only be resumed on the lost node:
    /// it is bound, storage is not shared, and the node holds its files
    /// (recorded, or, when nothing was recorded, the node its attempt was
    /// placed on).
    fn holds_session(&self, r: &Runner, took_attempt: bool) -> bool {
        r.session_bound
            && !self.shared_storage
            && match &self.session_node {
                Some(n) => *n == self.node,
                None => took_attempt,
            }
    }
}

pub(super) fn decide(
    r: &Runner,
    loss: &NodeLoss,
    d: &mut Decision,
    fresh_session_id: String,
    launch_deadline_ms: i64,
) {
    if r.state.is_terminal() {
        return;
    }
    let took_attempt = match live_placement(r) {
        Some((n, inc)) if *n == loss.node && *inc == loss.incarnation => true,
        // Its attempt lives elsewhere (or on an older incarnation, which
        // the node's registration deals with): this loss is not its own.
        Some(_) => return,
        None => false,
    };
    let stranded = loss.holds_session(r, took_attempt);
    if took_attempt && !stranded && r.state != RunnerState::Stopping {
        d.events.push(RunnerEvent::Relaunched(AttemptRelaunched {
            runner_id: r.id,
            attempt: r.attempt,
            node: loss.node.clone(),
            reason: REASON.to_owned(),
        }));
        reoffer(r, d, fresh_session_id, launch_deadline_ms);
    } else if took_attempt || stranded {
        // Its attempt is gone and it was being stopped anyway, or its
        // session is out of reach: an offer waiting on that node's own
        // queue, or a restart or quota wait that would resume it there,
        // can never run.
        d.events.push(RunnerEvent::Lost(ended(r, REASON, None)));
    }
}
