//! A runner's logs: its agent's output, read from the transcript on the
//! supervisor node that ran each attempt ([`node_client`]), and while it
//! runs, followed live from the live exchange ([`output_hub`], [`follow`]).
//!
//! The runners read model knows the node of the current attempt only; an
//! earlier attempt is looked for on the nodes the gateway knows, the
//! current attempt's node first (a resumed session runs where its files
//! are), by asking each for one byte of it.

pub mod follow;
pub mod lines;
pub mod node_client;
pub mod output_hub;

use crate::commands::Api;
use crate::http::ApiError;
use crate::node_models::{self, NodeState};
use crate::runner_models::RunnerView;
use node_client::{NodeAddress, NodeReadError, PartRequest};

/// States after which a runner writes nothing more.
pub const TERMINAL_STATES: &[&str] = &["exited", "failed", "lost", "cancelled"];

/// States in which the current attempt runs on no node yet.
const NOT_STARTED_STATES: &[&str] = &["requested", "starting", "restarting", "waiting_quota"];

/// The most nodes an earlier attempt is looked for on.
const PROBE_NODES: i64 = 200;

/// The runner's current attempt (0 before its first offer).
pub fn current_attempt(runner: &RunnerView) -> u32 {
    u32::try_from(runner.attempt).unwrap_or(0)
}

/// Where `attempt` of `runner` can be read; None while it is the current
/// attempt and runs nowhere yet.
pub async fn locate(
    api: &Api,
    runner: &RunnerView,
    attempt: u32,
) -> Result<Option<NodeAddress>, ApiError> {
    if attempt == current_attempt(runner) {
        if let Some(node) = &runner.node {
            return node_address(api, runner, attempt, node).await.map(Some);
        }
        if NOT_STARTED_STATES.contains(&runner.state.as_str()) {
            return Ok(None);
        }
    }
    probe(api, runner, attempt).await.map(Some)
}

/// The address of `node`, which ran `attempt` of `runner`.
async fn node_address(
    api: &Api,
    runner: &RunnerView,
    attempt: u32,
    node: &str,
) -> Result<NodeAddress, ApiError> {
    let facts = node_models::get_node(&api.pool, node)
        .await
        .map_err(ApiError::internal)?;
    let Some(facts) = facts else {
        return Err(ApiError::NodeUnreachable {
            node: node.to_owned(),
            detail: format!("node {node} has not registered with an address the gateway knows"),
        });
    };
    if facts.state() == NodeState::Lost {
        return Err(ApiError::NodeLost {
            node: node.to_owned(),
            detail: format!(
                "attempt {attempt} of runner {}'s transcript is on it and cannot be read until it registers again",
                runner.id
            ),
        });
    }
    match facts.address {
        Some(address) => Ok(NodeAddress {
            node: node.to_owned(),
            address,
        }),
        None => Err(ApiError::NodeUnreachable {
            node: node.to_owned(),
            detail: format!("node {node} registered no address"),
        }),
    }
}

/// Ask the nodes that are not lost, the runner's current node first,
/// which holds `attempt`.
async fn probe(api: &Api, runner: &RunnerView, attempt: u32) -> Result<NodeAddress, ApiError> {
    let mut nodes = node_models::list_nodes(&api.pool, None, PROBE_NODES)
        .await
        .map_err(ApiError::internal)?;
    nodes.sort_by_key(|n| Some(&n.node) != runner.node.as_ref());
    let mut failure: Option<NodeReadError> = None;
    for facts in nodes {
        if facts.state() == NodeState::Lost {
            continue;
        }
        let Some(address) = facts.address else {
            continue;
        };
        let at = NodeAddress {
            node: facts.node,
            address,
        };
        let request = PartRequest {
            runner: runner.id,
            attempt,
            offset: 0,
            limit: Some(1),
        };
        match api.transcripts.open(&at, request).await {
            Ok(_) => return Ok(at),
            Err(NodeReadError::NotThere { .. }) => {}
            Err(e) => {
                tracing::warn!(error = %e, "a node could not be asked for a transcript");
                failure.get_or_insert(e);
            }
        }
    }
    Err(match failure {
        // A node that did not answer may be the one that holds it.
        Some(e) => e.into_api(runner.id),
        None => ApiError::NotFound {
            what: format!(
                "a transcript of attempt {attempt} of runner {} on any node that is not lost",
                runner.id
            ),
        },
    })
}
