//! The orchestrator's metric names, and the gauges refreshed from its
//! projections (runners and nodes by state).

use crate::domain::nodes::NodeState;
use std::time::Duration;
use stratavore_runtime::Shutdown;

/// Runners by state (a gauge, refreshed from the `runners` projection).
pub const RUNNERS: &str = "stratavore_runners";
/// Restarts scheduled, by project and profile.
pub const RESTARTS_TOTAL: &str = "stratavore_runner_restarts_total";
/// Attempts lost with their node and offered again, by project and profile.
pub const RELAUNCHES_TOTAL: &str = "stratavore_runner_relaunches_total";
/// Claims answered `revoke` (a stale, duplicate or cancelled claim).
pub const OFFERS_REVOKED_TOTAL: &str = "stratavore_offers_revoked_total";
/// Seconds from an attempt's offer to the decision to start it (a
/// histogram).
pub const PLACEMENT_SECONDS: &str = "stratavore_placement_seconds";
/// Tokens used, by project, profile and kind (input, output, cache_creation, cache_read).
pub const TOKENS_TOTAL: &str = "stratavore_tokens_total";
/// Cost in millionths of a USD (counters are integers), by project and
/// profile.
pub const COST_MICRO_USD_TOTAL: &str = "stratavore_cost_micro_usd_total";
/// Launches decided, by outcome (approved, or the rejection reason).
pub const LAUNCHES_TOTAL: &str = "stratavore_launches_total";
/// Nodes by state (`up`, `draining`, `lost`; a gauge from the `nodes`
/// projection).
pub const NODES: &str = "stratavore_nodes";
/// Seconds since this replica last received a node's heartbeat, by node.
pub const NODE_HEARTBEAT_AGE_SECONDS: &str = "stratavore_node_heartbeat_age_seconds";
/// Node incarnations this replica declared lost (a loss another replica
/// recorded first is not counted here).
pub const NODE_LOSSES_TOTAL: &str = "stratavore_node_losses_total";

/// The states the gauge always reports (0 when none is in it), so a
/// dashboard's series do not vanish.
const STATES: &[&str] = stratavore_events::runner::RUNNER_STATES;

/// Refresh the runners-by-state and nodes-by-state gauges every `interval`
/// until shutdown.
pub async fn state_gauges(pool: sqlx::PgPool, interval: Duration, shutdown: Shutdown) {
    loop {
        let counts: Result<Vec<(String, i64)>, _> =
            sqlx::query_as("SELECT state, count(*) FROM runners GROUP BY state")
                .fetch_all(&pool)
                .await;
        match counts {
            Ok(counts) => set_by_state(RUNNERS, STATES.iter().copied(), &counts),
            Err(e) => tracing::debug!(error = %e, "cannot count runners"),
        }
        let nodes = match pool.acquire().await {
            Ok(mut conn) => crate::node_store::count_by_state(&mut conn)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match nodes {
            Ok(counts) => set_by_state(NODES, NodeState::ALL.iter().map(|s| s.as_str()), &counts),
            Err(e) => tracing::debug!(error = %e, "cannot count nodes"),
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

fn set_by_state<'a>(
    gauge: &'static str,
    states: impl Iterator<Item = &'a str>,
    counts: &[(String, i64)],
) {
    for state in states {
        let n = counts
            .iter()
            .find(|(s, _)| s == state)
            .map_or(0, |(_, n)| *n);
        metrics::gauge!(gauge, "state" => state.to_owned()).set(n as f64);
    }
}
